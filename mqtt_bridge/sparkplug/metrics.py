"""The Sparkplug metric catalogue: which metric reads what from which sample, its type, unit and alias.

Built once from the configuration (node metrics, one device per axis and per I/O group); names read
as tag paths (`Axes/X/Position`, `IO/DI/Guard door closed`) and are unique across the edge node.
"""
from __future__ import annotations

import enum
import fnmatch
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

from common.config import EvoConfig
from common.config.enums import ModuleName
from common.connector import ConfigurationError
from common.drive_errors import drive_error_text
from common.shm.conversions import decode_str
from common.shm.io_helpers import get_bit
from common.states import (
    CouplingState,
    DriverState,
    GearboxState,
    LoadingState,
    MachineState,
    MotionState,
    OperationalMode,
    PowerState,
    ReState,
    SafetyState,
    axis_error_reasons,
    enum_name,
    machine_error_reasons,
)
from mqtt_bridge.payloads import IO_KINDS, AxisInfo, IoPointInfo, io_points
from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
ANALOG_TYPES = frozenset({pb.Double, pb.Float})


class Source(enum.Enum):
    """Where a metric's value comes from; a metric whose source is not live is null."""

    CU = "cu"
    HAL = "hal"
    RE = "re"
    NODE = "node"  # the bridge itself: source statuses, modules.json, counters


@dataclass(slots=True)
class Samples:
    """One scan's inputs (None = that source is not live)."""

    cu: Any = None  # CU_STATUS record
    hal: Any = None  # HAL_IO record
    re: Any = None  # RE_STATUS record
    statuses: Mapping[str, str] | None = None
    modules: Mapping[str, Mapping[str, Any]] | None = None
    refused: int = 0

    def of(self, source: Source) -> Any:
        if source is Source.CU:
            return self.cu
        if source is Source.HAL:
            return self.hal
        if source is Source.RE:
            return self.re
        return self


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: `read(record of its source)` gives a Python value, or None for null."""

    name: str
    datatype: int  # a Sparkplug DataType
    source: Source
    read: Callable[[Any], Any]
    unit: str = ""
    alias: int = 0
    deadband: float = 0.0
    eng_range: tuple[float, float] | None = None  # (engLow, engHigh): the span a tag browser scales to

    @property
    def analog(self) -> bool:
        return self.datatype in ANALOG_TYPES

    def value(self, samples: Samples) -> Any:
        record = samples.of(self.source)
        if record is None:
            return None
        v = self.read(record)
        if isinstance(v, float) and not math.isfinite(v):
            return None  # Sparkplug has is_null for "no value"; NaN would only confuse a historian
        return v


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A Sparkplug device: born while `source` is live, dead (DDEATH) while it is not."""

    id: str
    source: Source
    metrics: tuple[MetricSpec, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    node: tuple[MetricSpec, ...]  # without bdSeq and the Rebirth control (the edge node adds those)
    devices: tuple[DeviceSpec, ...]
    select: tuple[str, ...]
    deadband: Mapping[str, float]
    rebirth_alias: int  # alias of "Node Control/Rebirth"
    next_alias: int  # first alias free for metrics made at birth (modules)

    def module_metrics(self, names: Iterable[str]) -> tuple[MetricSpec, ...]:
        """Metrics of the watchdog's modules known at birth, selected, with aliases after the static ones."""
        out = []
        alias = self.next_alias
        for spec in _module_specs(sorted(names)):
            if _selected(spec.name, self.select):
                out.append(replace(spec, alias=alias, deadband=_deadband_of(spec, self.deadband)))
                alias += 1
        return tuple(out)


def device_id(kind: str, name: str) -> str:
    """A device id: one topic level, no wildcards ("Axis-X", "IO-Safety")."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _axis_specs(info: AxisInfo, travel: tuple[float, float]) -> list[MetricSpec]:
    i, u, p = info.id - 1, info.unit, f"Axes/{info.name}/"
    cu, hal = Source.CU, Source.HAL

    def q(name: str, field: str, unit: str) -> MetricSpec:
        return MetricSpec(p + name, pb.Double, cu, lambda st: float(st["axes"][i][field]), unit)

    def state(name: str, field: str, enum_cls: type) -> MetricSpec:
        return MetricSpec(p + name, pb.String, cu, lambda st: enum_name(enum_cls, st["axes"][i][field]))

    def flag(name: str, field: str) -> MetricSpec:
        return MetricSpec(p + name, pb.Boolean, cu, lambda st: bool(st["axes"][i][field]))

    code = lambda io: int(io["drive_error_code"][i])  # noqa: E731
    return [
        replace(q("Position", "position", u), eng_range=travel),
        q("Velocity", "velocity", f"{u}/s"),
        q("Target position", "target_position", u),
        q("Lag error", "lag_error", u),
        q("Torque", "torque", "%"),
        state("Power", "power", PowerState),
        state("Motion", "motion", MotionState),
        state("Mode", "mode", OperationalMode),
        state("Coupling", "coupling", CouplingState),
        state("Gearbox", "gearbox", GearboxState),
        state("Loading", "loading", LoadingState),
        flag("Referenced", "referenced"),
        flag("Enabled", "enabled"),
        flag("In position", "in_position"),
        flag("Brake released", "brake_released"),
        MetricSpec(p + "Errors", pb.String, cu,
                   lambda st: ", ".join(axis_error_reasons(int(st["axes"][i]["error_flags"])))),
        MetricSpec(p + "Error flags", pb.UInt64, cu, lambda st: int(st["axes"][i]["error_flags"])),
        MetricSpec(p + "Drive/Ready", pb.Boolean, hal, lambda io: bool(io["axes"][i]["drive_ready"])),
        MetricSpec(p + "Drive/Fault", pb.Boolean, hal, lambda io: bool(io["axes"][i]["drive_fault"])),
        MetricSpec(p + "Drive/Error code", pb.UInt32, hal, code),
        MetricSpec(p + "Drive/Error", pb.String, hal, lambda io: drive_error_text(code(io)) if code(io) else ""),
    ]


def _io_spec(kind: str, point: IoPointInfo, span: tuple[float, float]) -> MetricSpec:
    name, pin = f"IO/{kind.upper()}/{point.label}", point.pin
    if kind in ("di", "do"):
        bank, inv = f"{kind}_bank", point.invert
        # banks carry physical levels; a tag shows what the point means (an NC E-stop: pressed = true)
        return MetricSpec(name, pb.Boolean, Source.HAL, lambda io: get_bit(io[bank], pin) ^ inv)
    values = f"{kind}_values"
    return MetricSpec(name, pb.Double, Source.HAL, lambda io: float(io[values][pin]), point.unit, eng_range=span)


def _node_specs(config: EvoConfig) -> list[MetricSpec]:
    cu, re_, hal, node = Source.CU, Source.RE, Source.HAL, Source.NODE
    machine_name = config.machine.name
    return [
        MetricSpec("Node Info/Machine name", pb.String, node, lambda s: machine_name),
        MetricSpec("Node Info/Refused commands", pb.UInt64, node, lambda s: s.refused),
        MetricSpec("Machine/State", pb.String, cu, lambda st: enum_name(MachineState, st["machine_state"])),
        MetricSpec("Machine/Errors", pb.String, cu,
                   lambda st: ", ".join(machine_error_reasons(int(st["machine_errors"])))),
        MetricSpec("Machine/Error flags", pb.UInt64, cu, lambda st: int(st["machine_errors"])),
        MetricSpec("Machine/Message", pb.String, cu, lambda st: decode_str(st["message"])),
        MetricSpec("Machine/Manual allowed", pb.Boolean, cu, lambda st: bool(st["manual_allowed"])),
        MetricSpec("Safety/State", pb.String, cu, lambda st: enum_name(SafetyState, st["safety_state"])),
        MetricSpec("Safety/E-Stop", pb.Boolean, cu, lambda st: bool(st["estop"])),
        MetricSpec("Safety/Reduced speed", pb.Boolean, cu, lambda st: bool(st["reduced_speed"])),
        MetricSpec("Recipe/State", pb.String, re_, lambda st: enum_name(ReState, st["re_state"])),
        MetricSpec("Recipe/Program", pb.String, re_, lambda st: decode_str(st["program_name"])),
        MetricSpec("Recipe/Step", pb.UInt32, re_, lambda st: int(st["current_step"])),
        MetricSpec("Recipe/Step count", pb.UInt32, re_, lambda st: int(st["step_count"])),
        MetricSpec("Recipe/Progress", pb.Double, re_, lambda st: float(f"{float(st['progress']):.6g}"), "%"),
        MetricSpec("Recipe/Cycle count", pb.UInt64, re_, lambda st: int(st["cycle_count"])),
        MetricSpec("Recipe/Error code", pb.UInt32, re_, lambda st: int(st["error_code"])),
        MetricSpec("Recipe/Message", pb.String, re_, lambda st: decode_str(st["message"])),
        MetricSpec("HAL/Driver state", pb.String, hal, lambda io: enum_name(DriverState, io["hal_state"])),
        MetricSpec("HAL/Driver message", pb.String, hal, lambda io: decode_str(io["hal_message"])),
        *(MetricSpec(f"Sources/{k.upper()}", pb.String, node, lambda s, k=k: (s.statuses or {}).get(k, "absent"))
          for k in ("cu", "hal", "re")),
    ]


def _module_specs(names: Iterable[str]) -> list[MetricSpec]:
    out = []
    for name in names:
        def field(key: str, cast: Callable[[Any], Any], name: str = name) -> Callable[[Samples], Any]:
            def read(s: Samples) -> Any:
                entry = (s.modules or {}).get(name)
                v = None if entry is None else entry.get(key)
                try:
                    return None if v is None else cast(v)
                except (TypeError, ValueError):  # modules.json is another process's file: never crash on it
                    return None
            return read

        out.append(MetricSpec(f"Modules/{name}/State", pb.String, Source.NODE, field("state", str)))
        out.append(MetricSpec(f"Modules/{name}/Restarts", pb.UInt32, Source.NODE, field("restarts", int)))
    return out


def _selected(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _deadband_of(spec: MetricSpec, deadband: Mapping[str, float]) -> float:
    if not spec.analog:
        return 0.0
    for pattern, value in deadband.items():  # the first pattern in file order that matches
        if fnmatch.fnmatchcase(spec.name, pattern):
            return value
    return 0.0


def build_catalogue(config: EvoConfig, select: tuple[str, ...], deadband: Mapping[str, float]) -> Catalogue:
    """Every metric of this machine, filtered by `select`, with deadbands and aliases (1, 2, ...).

    Raises ConfigurationError naming the [mqtt.sparkplug] field when a pattern matches no metric
    (a typo would otherwise silently publish nothing) or a deadband names a non-analog metric.
    """
    node = _node_specs(config)
    devices: list[tuple[str, Source, list[MetricSpec]]] = []
    for axis in config.axes:
        info = AxisInfo.of(axis)
        travel = (axis.kinematics.min_pos, axis.kinematics.max_pos)
        devices.append((device_id("Axis", info.name), Source.CU, _axis_specs(info, travel)))
    points = io_points(config.io)
    by_pin = {(kind, p.pin): p for kind in IO_KINDS for p in points[kind]}
    for group in config.io.groups:
        specs = [_io_spec(p.type.value, by_pin[(p.type.value, p.pin)], (p.min, p.max)) for p in group.points]
        devices.append((device_id("IO", group.key), Source.HAL, specs))

    module_templates = _module_specs(m.value for m in ModuleName)
    every = [s for s in node] + [s for _, _, specs in devices for s in specs]
    names = [s.name for s in every]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigurationError(f"[mqtt.sparkplug]: metric names are not unique: {', '.join(dup)} "
                                 "(name the axes / I/O points apart)")
    ids = [d for d, _, _ in devices]
    dup_ids = sorted({d for d in ids if ids.count(d) > 1})
    if dup_ids:
        raise ConfigurationError(f"[mqtt.sparkplug]: device ids are not unique: {', '.join(dup_ids)}")
    known = every + module_templates
    for pattern in select:
        if not any(fnmatch.fnmatchcase(s.name, pattern) for s in known):
            raise ConfigurationError(f"config.toml [mqtt.sparkplug] metrics: pattern {pattern!r} matches no metric "
                                     f"(names look like 'Axes/X/Position', 'IO/DI/<point>', 'Machine/State')")
    for pattern in deadband:
        hits = [s for s in known if fnmatch.fnmatchcase(s.name, pattern)]
        if not hits:
            raise ConfigurationError(f"config.toml [mqtt.sparkplug.deadband] {pattern!r}: matches no metric")
        if not any(s.analog for s in hits):
            raise ConfigurationError(f"config.toml [mqtt.sparkplug.deadband] {pattern!r}: matches no analog "
                                     f"metric (a deadband applies to numbers such as 'Axes/*/Position')")

    alias = 1
    picked_node: list[MetricSpec] = []
    for s in node:
        if _selected(s.name, select):
            picked_node.append(replace(s, alias=alias, deadband=_deadband_of(s, deadband)))
            alias += 1
    picked_devices: list[DeviceSpec] = []
    for did, source, specs in devices:
        chosen = []
        for s in specs:
            if _selected(s.name, select):
                chosen.append(replace(s, alias=alias, deadband=_deadband_of(s, deadband)))
                alias += 1
        if chosen:  # a device with no selected metric is not published at all
            picked_devices.append(DeviceSpec(did, source, tuple(chosen)))
    return Catalogue(tuple(picked_node), tuple(picked_devices), tuple(select), dict(deadband), alias, alias + 1)
