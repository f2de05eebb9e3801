"""Typed, frozen configuration: config.toml (SystemConfig), machine.toml, axis_NN_*.toml, EvoConfig.

Field names are the TOML keys; defaults and bounds (common.consts) are declared with spec().
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from common.consts import (
    ATTACH_INTERVAL_S_BOUNDS,
    ATTACH_TIMEOUT_S_BOUNDS,
    AXIS_ACCELERATION_BOUNDS,
    AXIS_ID_BOUNDS,
    AXIS_POSITION_BOUNDS,
    AXIS_TIMEOUT_S_BOUNDS,
    AXIS_VELOCITY_BOUNDS,
    AXIS_WINDOW_BOUNDS,
    COMMAND_TIMEOUT_S_BOUNDS,
    COUPLING_RATIO_BOUNDS,
    CPU_AFFINITY_BOUNDS,
    CTRL_FREQUENCY_BOUNDS,
    CTRL_GAIN_BOUNDS,
    CTRL_TIME_CONSTANT_S_BOUNDS,
    CYCLE_TIME_US_BOUNDS,
    MANUAL_TIMEOUT_S_BOUNDS,
    MQTT_KEEPALIVE_S_BOUNDS,
    NET_PORT_BOUNDS,
    PUBLISH_RATE_HZ_BOUNDS,
    RE_TICK_MS_BOUNDS,
    RT_PRIORITY_BOUNDS,
    SAFETY_STOP_TIMEOUT_S_BOUNDS,
    STALE_CYCLES_BOUNDS,
    STALE_READS_BOUNDS,
    TAILSTOCK_FORCE_BOUNDS,
    TORQUE_PERCENT_BOUNDS,
    WD_HAL_READY_TIMEOUT_S_BOUNDS,
    WD_INITIAL_BACKOFF_MS_BOUNDS,
    WD_LIVENESS_TIMEOUT_S_BOUNDS,
    WD_MAX_BACKOFF_S_BOUNDS,
    WD_MAX_RESTARTS_BOUNDS,
    WD_SIGTERM_TIMEOUT_S_BOUNDS,
    WD_STABLE_RUN_S_BOUNDS,
)

from .enums import AxisType, Direction, HomingMethod, LagPolicy, ModuleName, SafeStopCategory
from .io import IoConfig
from .parsing import derived, spec
from .registry import IoRegistry

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# ============================================================================ config.toml ====


@dataclass(frozen=True, kw_only=True)
class ModuleConfig:
    """[watchdog.modules.<name>]"""

    enabled: bool = spec(True)


@dataclass(frozen=True, kw_only=True)
class WatchdogConfig:
    max_restarts: int = spec(5, bounds=WD_MAX_RESTARTS_BOUNDS)
    initial_backoff_ms: int = spec(100, bounds=WD_INITIAL_BACKOFF_MS_BOUNDS)
    max_backoff_s: int = spec(30, bounds=WD_MAX_BACKOFF_S_BOUNDS)
    stable_run_s: int = spec(60, bounds=WD_STABLE_RUN_S_BOUNDS)
    sigterm_timeout_s: float = spec(2.0, bounds=WD_SIGTERM_TIMEOUT_S_BOUNDS)
    hal_ready_timeout_s: float = spec(5.0, bounds=WD_HAL_READY_TIMEOUT_S_BOUNDS)
    watchdog_timeout_s: float = spec(2.0, bounds=WD_LIVENESS_TIMEOUT_S_BOUNDS)
    run_dir: str = spec("")
    log_dir: str = spec("")
    standby: bool = spec(True)
    modules: Mapping[str, ModuleConfig] = spec(factory=lambda: _EMPTY, custom=True)

    def module_enabled(self, name: str | ModuleName) -> bool:
        m = self.modules.get(str(name))
        return True if m is None else m.enabled

    def resolved_run_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """run_dir, else $EVO_RUN_DIR, else the per-user default (common/rundir.py)."""
        from common.rundir import resolve_run_dir

        return resolve_run_dir(self.run_dir, env)

    def resolved_log_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """log_dir, else <run_dir>/log."""
        return Path(self.log_dir) if self.log_dir else self.resolved_run_dir(env) / "log"


@dataclass(frozen=True, kw_only=True)
class HalConfig:
    cycle_time_us: int = spec(1000, bounds=CYCLE_TIME_US_BOUNDS)
    driver: str = spec("sim")
    #: SCHED_FIFO + mlockall by default whenever the OS permits it (issue 15); 0 = normal scheduling
    rt_priority: int = spec(41, bounds=RT_PRIORITY_BOUNDS)
    cpu: int = spec(-1, bounds=CPU_AFFINITY_BOUNDS)
    state_file: str = spec("")
    #: CU heartbeat unchanged this many cycles = stale; 0 = auto by scheduling (common/stale.py)
    stale_reads: int = spec(0, bounds=STALE_CYCLES_BOUNDS)
    #: take a bridge's or the RE's posted command between cycles (acked with its outputs in the process
    #: image, exchanged at the next cycle); false = only at a cycle's start (acked after the exchange)
    commands_between_cycles: bool = spec(True)
    #: free-form options for the selected driver ([hal.driver_args]); the driver validates them
    driver_args: Mapping[str, Any] = spec(factory=lambda: _EMPTY, custom=True)


@dataclass(frozen=True, kw_only=True)
class CuConfig:
    cycle_time_us: int = spec(1000, bounds=CYCLE_TIME_US_BOUNDS)
    #: SCHED_FIFO + mlockall by default whenever the OS permits it (issue 15); 0 = normal scheduling
    rt_priority: int = spec(40, bounds=RT_PRIORITY_BOUNDS)
    cpu: int = spec(-1, bounds=CPU_AFFINITY_BOUNDS)
    hal_attach_timeout_s: float = spec(5.0, bounds=ATTACH_TIMEOUT_S_BOUNDS)
    #: HAL heartbeat frozen this many cycles = safety stop; 0 = auto by scheduling (common/stale.py)
    hal_stale_cycles: int = spec(0, bounds=STALE_CYCLES_BOUNDS)
    feedback_hold_cycles: int = spec(1, bounds=STALE_READS_BOUNDS)
    manual_timeout_s: float = spec(30.0, bounds=MANUAL_TIMEOUT_S_BOUNDS)
    optional_attach_interval_s: float = spec(1.0, bounds=ATTACH_INTERVAL_S_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class ReConfig:
    recipes_dir: str = spec("recipes")
    tick_ms: int = spec(5, bounds=RE_TICK_MS_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class SparkplugConfig:
    """[mqtt.sparkplug]: the MQTT bridge as a Sparkplug B edge node (issue 18), off by default.

    `metrics`: glob patterns over metric names (`Axes/*/Position`); `deadband`: pattern -> absolute
    deadband in the metric's unit, for analog metrics ([mqtt.sparkplug.deadband])."""

    enabled: bool = spec(False)
    group_id: str = spec("evo")
    edge_node_id: str = spec("")  # "" = the machine id
    primary_host_id: str = spec("")  # "" = no primary host: births go out on connect
    metrics: tuple[str, ...] = spec(("*",))
    deadband: Mapping[str, float] = spec(factory=lambda: _EMPTY, custom=True)


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    host: str = spec("127.0.0.1")
    port: int = spec(1883, bounds=NET_PORT_BOUNDS)
    username: str = spec("")
    password: str = spec("")
    tls_ca: str = spec("")
    tls_cert: str = spec("")
    tls_key: str = spec("")
    machine_id: str = spec("")
    telemetry_hz: float = spec(10.0, bounds=PUBLISH_RATE_HZ_BOUNDS)
    homeassistant_discovery: bool = spec(False)
    embedded_broker: bool = spec(False)
    keepalive_s: int = spec(30, bounds=MQTT_KEEPALIVE_S_BOUNDS)
    base_topic: str = spec("evo")
    sparkplug: SparkplugConfig = spec(factory=SparkplugConfig, custom=True)  # [mqtt.sparkplug]


@dataclass(frozen=True, kw_only=True)
class GrpcConfig:
    bind: str = spec("127.0.0.1")
    port: int = spec(50051, bounds=NET_PORT_BOUNDS)
    tls_cert: str = spec("")
    tls_key: str = spec("")
    viewer_tokens: tuple[str, ...] = spec(factory=tuple)
    operator_tokens: tuple[str, ...] = spec(factory=tuple)
    max_watch_hz: float = spec(50.0, bounds=PUBLISH_RATE_HZ_BOUNDS)
    command_timeout_s: float = spec(2.0, bounds=COMMAND_TIMEOUT_S_BOUNDS)
    # a non-loopback bind without tokens is refused (common/config/exposure.py) unless this is set
    allow_unauthenticated_remote: bool = spec(False)


@dataclass(frozen=True, kw_only=True)
class HmiConfig:
    """[hmi]: the operator web page and HTTP/JSON API served by the gRPC bridge (issue 17)."""

    enabled: bool = spec(True)
    bind: str = spec("127.0.0.1")
    port: int = spec(8080, bounds=NET_PORT_BOUNDS)
    max_live_hz: float = spec(20.0, bounds=PUBLISH_RATE_HZ_BOUNDS)
    default_live_hz: float = spec(10.0, bounds=PUBLISH_RATE_HZ_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class ZenohConfig:
    """[zenoh]: the MQTT bridge's Zenoh output (issue 14) and the optional router module."""

    enabled: bool = spec(True)
    mode: str = spec("peer")  # "peer" | "client"
    listen: tuple[str, ...] = spec(factory=lambda: ("tcp/127.0.0.1:7447",))
    connect: tuple[str, ...] = spec(factory=tuple)
    multicast_scouting: bool = spec(False)
    gossip_scouting: bool = spec(False)
    key_prefix: str = spec("evo")
    query_timeout_s: float = spec(2.0, bounds=COMMAND_TIMEOUT_S_BOUNDS)
    router: bool = spec(False)  # the watchdog runs a Zenoh router session (module zenoh_router)
    router_listen: tuple[str, ...] = spec(factory=lambda: ("tcp/127.0.0.1:7448",))


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """[api]: accepted (upstream placeholder), no fields yet."""


@dataclass(frozen=True, kw_only=True)
class DashboardConfig:
    """[dashboard]: accepted (upstream placeholder), no fields yet."""


@dataclass(frozen=True, kw_only=True)
class DiagnosticConfig:
    """[diagnostic]: accepted (upstream placeholder), no fields yet."""


@dataclass(frozen=True, kw_only=True)
class SystemConfig:
    """config.toml: one section per program; every section optional."""

    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    hal: HalConfig = field(default_factory=HalConfig)
    cu: CuConfig = field(default_factory=CuConfig)
    re: ReConfig = field(default_factory=ReConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    hmi: HmiConfig = field(default_factory=HmiConfig)
    zenoh: ZenohConfig = field(default_factory=ZenohConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    diagnostic: DiagnosticConfig = field(default_factory=DiagnosticConfig)


SYSTEM_SECTIONS: dict[str, type] = {
    "watchdog": WatchdogConfig, "hal": HalConfig, "cu": CuConfig, "re": ReConfig,
    "mqtt": MqttConfig, "grpc": GrpcConfig, "hmi": HmiConfig, "api": ApiConfig, "dashboard": DashboardConfig,
    "diagnostic": DiagnosticConfig,
    "zenoh": ZenohConfig,
}

# =========================================================================== machine.toml ===


@dataclass(frozen=True, kw_only=True)
class MachineSection:
    """[machine]"""

    name: str = spec()


@dataclass(frozen=True, kw_only=True)
class GlobalSafety:
    """[global_safety]"""

    default_safe_stop: SafeStopCategory = spec()
    safety_stop_timeout: float = spec(bounds=SAFETY_STOP_TIMEOUT_S_BOUNDS)
    recovery_authorization_required: bool = spec()


@dataclass(frozen=True, kw_only=True)
class ServiceBypass:
    """[service_bypass]"""

    bypass_axes: tuple[int, ...] = spec(bounds=AXIS_ID_BOUNDS)
    max_service_velocity: float = spec(bounds=AXIS_VELOCITY_BOUNDS, open_lo=True)


@dataclass(frozen=True, kw_only=True)
class MachineConfig:
    """machine.toml; `name` comes from [machine]."""

    name: str
    global_safety: GlobalSafety
    service_bypass: ServiceBypass

    @property
    def slug(self) -> str:
        """Machine name as an identifier: lower case, [a-z0-9_-] (default MQTT machine_id)."""
        s = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return s or "machine"


MACHINE_SECTIONS: dict[str, type] = {
    "machine": MachineSection, "global_safety": GlobalSafety, "service_bypass": ServiceBypass,
}

# ========================================================================== axis_NN_*.toml ==


@dataclass(frozen=True, kw_only=True)
class AxisSection:
    """[axis]"""

    id: int = spec(bounds=AXIS_ID_BOUNDS)
    name: str = spec()
    type: AxisType = spec()


@dataclass(frozen=True, kw_only=True)
class Kinematics:
    """[kinematics]; linear axes in mm, rotary in deg (per s, per s^2)."""

    max_velocity: float = spec(bounds=AXIS_VELOCITY_BOUNDS, open_lo=True)
    max_acceleration: float | None = spec(None, bounds=AXIS_ACCELERATION_BOUNDS, open_lo=True)
    safe_reduced_speed_limit: float = spec(bounds=AXIS_VELOCITY_BOUNDS)
    min_pos: float = spec(bounds=AXIS_POSITION_BOUNDS)
    max_pos: float = spec(bounds=AXIS_POSITION_BOUNDS)
    in_position_window: float = spec(bounds=AXIS_WINDOW_BOUNDS, open_lo=True)


@dataclass(frozen=True, kw_only=True)
class Control:
    """[control]; output in % of rated torque. A zero gain/frequency disables its stage."""

    kp: float = spec(bounds=CTRL_GAIN_BOUNDS)
    ki: float = spec(bounds=CTRL_GAIN_BOUNDS)
    kd: float = spec(bounds=CTRL_GAIN_BOUNDS)
    tf: float = spec(0.001, bounds=CTRL_TIME_CONSTANT_S_BOUNDS)
    tt: float = spec(0.01, bounds=CTRL_TIME_CONSTANT_S_BOUNDS)
    kvff: float = spec(0.0, bounds=CTRL_GAIN_BOUNDS)
    kaff: float = spec(0.0, bounds=CTRL_GAIN_BOUNDS)
    friction: float = spec(0.0, bounds=CTRL_GAIN_BOUNDS)
    jn: float = spec(0.01, bounds=CTRL_GAIN_BOUNDS)
    bn: float = spec(0.001, bounds=CTRL_GAIN_BOUNDS)
    gdob: float = spec(200.0, bounds=CTRL_FREQUENCY_BOUNDS)
    f_notch: float = spec(0.0, bounds=CTRL_FREQUENCY_BOUNDS)
    bw_notch: float = spec(0.0, bounds=CTRL_FREQUENCY_BOUNDS)
    flp: float = spec(0.0, bounds=CTRL_FREQUENCY_BOUNDS)
    out_max: float = spec(100.0, bounds=TORQUE_PERCENT_BOUNDS, open_lo=True)
    lag_error_limit: float = spec(bounds=AXIS_WINDOW_BOUNDS, open_lo=True)
    lag_policy: LagPolicy = spec(LagPolicy.UNWANTED)


@dataclass(frozen=True, kw_only=True)
class SafeStop:
    """[safe_stop]"""

    category: SafeStopCategory = spec()
    max_decel_safe: float = spec(bounds=AXIS_ACCELERATION_BOUNDS, open_lo=True)
    sto_brake_delay: float = spec(0.1, bounds=AXIS_TIMEOUT_S_BOUNDS)
    ss2_holding_torque: float = spec(0.0, bounds=TORQUE_PERCENT_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class Homing:
    """[homing]"""

    method: HomingMethod = spec()
    speed: float = spec(bounds=AXIS_VELOCITY_BOUNDS)
    torque_limit: float = spec(30.0, bounds=TORQUE_PERCENT_BOUNDS)
    timeout: float = spec(30.0, bounds=AXIS_TIMEOUT_S_BOUNDS, open_lo=True)
    approach_direction: Direction = spec(Direction.POSITIVE)


@dataclass(frozen=True, kw_only=True)
class Brake:
    """[brake] (optional)"""

    do_brake: str = spec(role=True)
    di_released: str = spec(role=True)
    release_timeout: float = spec(2.0, bounds=AXIS_TIMEOUT_S_BOUNDS, open_lo=True)
    engage_timeout: float = spec(1.0, bounds=AXIS_TIMEOUT_S_BOUNDS, open_lo=True)


@dataclass(frozen=True, kw_only=True)
class Tailstock:
    """[tailstock] (optional)"""

    coupled_axis: int = spec(bounds=AXIS_ID_BOUNDS)
    clamp_role: str = spec(role=True)
    clamped_role: str | None = spec(None, role=True)
    max_force: float | None = spec(None, bounds=TAILSTOCK_FORCE_BOUNDS, open_lo=True)


@dataclass(frozen=True, kw_only=True)
class Guard:
    """[guard] (optional)"""

    di_guard: str = spec(role=True)
    stop_on_open: SafeStopCategory = spec(SafeStopCategory.SS1)


@dataclass(frozen=True, kw_only=True)
class Coupling:
    """[coupling] (optional): this axis follows master_axis * ratio."""

    master_axis: int = spec(bounds=AXIS_ID_BOUNDS)
    ratio: float = spec(1.0, bounds=COUPLING_RATIO_BOUNDS)
    max_sync_error: float = spec(bounds=AXIS_WINDOW_BOUNDS, open_lo=True)


AXIS_SECTIONS: dict[str, type] = {
    "axis": AxisSection, "kinematics": Kinematics, "control": Control, "safe_stop": SafeStop,
    "homing": Homing, "brake": Brake, "tailstock": Tailstock, "guard": Guard,
    "coupling": Coupling,
}
AXIS_REQUIRED_SECTIONS = ("axis", "kinematics", "control", "safe_stop", "homing")


@dataclass(frozen=True, kw_only=True)
class AxisConfig:
    """One axis_NN_name.toml; id/name/type come from [axis], `file` is the file name."""

    id: int
    name: str
    type: AxisType
    file: str
    kinematics: Kinematics
    control: Control
    safe_stop: SafeStop
    homing: Homing
    brake: Brake | None = None
    tailstock: Tailstock | None = None
    guard: Guard | None = None
    coupling: Coupling | None = None

# ================================================================================ EvoConfig ==


@dataclass(frozen=True, kw_only=True)
class EvoConfig:
    """A whole, validated configuration directory. Never half-loaded."""

    dir: Path
    system: SystemConfig
    machine: MachineConfig
    io: IoConfig
    axes: tuple[AxisConfig, ...]  # sorted by id
    io_registry: IoRegistry = field(compare=False, repr=False)
    warnings: tuple[str, ...] = ()
    fingerprint: str = ""  # sha256 over the files' bytes (hot-reload change detection)
    _by_id: dict[int, AxisConfig] = derived(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {a.id: a for a in self.axes})

    def axis(self, axis_id: int) -> AxisConfig:
        """Axis by id; KeyError if there is none."""
        return self._by_id[axis_id]

    @property
    def axis_ids(self) -> tuple[int, ...]:
        return tuple(a.id for a in self.axes)

    def axis_vector(self, section: str, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One parameter of every axis as an array in `axes` order (None -> nan), e.g.
        cfg.axis_vector("control", "kp") for the vectorised control law."""
        vals = []
        for a in self.axes:
            sec = getattr(a, section)
            v = None if sec is None else getattr(sec, name)
            vals.append(np.nan if v is None else v)
        return np.asarray(vals, dtype=dtype)

    # resolved paths ---------------------------------------------------------------------------
    def run_dir(self, env: Mapping[str, str] | None = None) -> Path:
        return self.system.watchdog.resolved_run_dir(env)

    def log_dir(self, env: Mapping[str, str] | None = None) -> Path:
        return self.system.watchdog.resolved_log_dir(env)

    def recipes_dir(self) -> Path:
        """[re].recipes_dir, relative paths taken from the configuration directory."""
        p = Path(self.system.re.recipes_dir)
        return p if p.is_absolute() else self.dir / p

    def hal_state_file(self, env: Mapping[str, str] | None = None) -> Path:
        """[hal].state_file, else <run_dir>/hal_state.json (relative: from the run dir)."""
        s = self.system.hal.state_file
        if not s:
            return self.run_dir(env) / "hal_state.json"
        p = Path(s)
        return p if p.is_absolute() else self.run_dir(env) / p

    @property
    def machine_id(self) -> str:
        """[mqtt].machine_id, else the slug of the machine name."""
        return self.system.mqtt.machine_id or self.machine.slug
