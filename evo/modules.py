"""The module table: what the watchdog runs, in which order, and how it judges readiness and liveness.

Data, not code: the default machine's table is built from the config; `evo up --modules FILE` loads another.
"""
from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from common.shm.segments import SEGMENTS

# Our packages, by module name (the names of [watchdog.modules.<name>] in config.toml).
PACKAGES: dict[str, str] = {
    "hal": "hal",
    "cu": "control_unit",
    "re": "recipe_executor",
    "grpc": "grpc_bridge",
    "mqtt": "mqtt_bridge",
}
DEFAULT_READY_TIMEOUT_S = 30.0  # generous: a loaded 2-core box can take seconds to start a gRPC server


class ModuleTableError(ValueError):
    """A module table file that cannot be used (the message names the file and the entry)."""


@dataclass(frozen=True)
class ModuleSpec:
    """One supervised program.

    Readiness: every condition given must hold — `notify` (READY=1 on the notify pipe),
    `ready_segments` (their heartbeats advancing), `tcp` (host:port accepting); none given = ready
    once spawned. Liveness once ready: WATCHDOG=1 at least every `watchdog_timeout_s` when
    `notify` and `watchdog_timeout_s > 0`, and the heartbeats of `liveness_segments` advancing
    within `watchdog_timeout_s`. Start order is table order; `wait_ready=False` lets the next
    module start as soon as this one is spawned (no dependency between them). `preload` (ours, and
    `package` entries of a table): spawned at boot with the others so the imports overlap, held at
    a start gate (`EVO_START_GATE_FD`, honoured by `common.module_main`) until its turn; its ready
    timeout counts from then.
    """

    name: str
    argv: tuple[str, ...]
    notify: bool = True
    ready_segments: tuple[str, ...] = ()  # segment keys ("hal_cu")
    tcp: tuple[str, int] | None = None
    liveness_segments: tuple[str, ...] = ()
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    watchdog_timeout_s: float = 2.0  # 0: no liveness check beyond the process being alive
    enabled: bool = True
    wait_ready: bool = True  # the next module in the table starts only once this one is ready
    wrap: bool = False  # run through evo.launch (sets PR_SET_PDEATHSIG for programs that don't)
    # spawned at boot ahead of its turn: imports done, it waits at its start gate (our modules)
    preload: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def readiness(self) -> str:
        """Readable readiness kind: "notify+heartbeat", "tcp", "none", ..."""
        kinds = (["notify"] if self.notify else []) + (["heartbeat"] if self.ready_segments else []) + (
            ["tcp"] if self.tcp else []
        )
        return "+".join(kinds) or "none"

    @property
    def kind(self) -> str:
        """What runs, for `evo status`: "python -m hal" or the program name."""
        if len(self.argv) >= 3 and self.argv[1] == "-m":
            return f"python -m {self.argv[2]}"
        if len(self.argv) >= 2 and Path(self.argv[0]).name.startswith("python"):
            return f"python {Path(self.argv[1]).name}"
        return Path(self.argv[0]).name if self.argv else ""


def package_argv(package: str, config_dir: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", package, "--config", str(config_dir))


def default_modules(cfg: Any) -> list[ModuleSpec]:
    """The default machine: HAL → CU → RE → gRPC → [mosquitto] → MQTT, from an EvoConfig."""
    wd = cfg.system.watchdog
    timeout = float(wd.watchdog_timeout_s)
    cdir = Path(cfg.dir)

    def ours(name: str, **kw: Any) -> ModuleSpec:
        return ModuleSpec(name=name, argv=package_argv(PACKAGES[name], cdir), watchdog_timeout_s=timeout,
                          enabled=wd.module_enabled(name), preload=True, **kw)

    mods = [
        ours("hal", ready_segments=("hal_cu",), liveness_segments=("hal_cu",),
             ready_timeout_s=float(wd.hal_ready_timeout_s)),
        ours("cu", liveness_segments=("cu_hal",)),
        # RE and the bridges only read CU/HAL segments (attach retried): start them together.
        ours("re", liveness_segments=("re_cu",), wait_ready=False),
        ours("grpc", liveness_segments=("rpc_cu",), wait_ready=False),
    ]
    mq = cfg.system.mqtt
    if mq.embedded_broker:
        mods.append(ModuleSpec(
            name="mosquitto", argv=("mosquitto", "-c", "{run_dir}/mosquitto.conf"), notify=False,
            tcp=(mq.host, int(mq.port)), watchdog_timeout_s=0.0, wrap=True,
        ))
    z = cfg.system.zenoh
    if z.router:  # issue 14: a Python Zenoh router session for plants without zenohd
        mods.append(ModuleSpec(name="zenoh_router", argv=package_argv("evo.zenoh_router", cdir),
                               watchdog_timeout_s=timeout, preload=True))
    mods.append(ours("mqtt"))
    return mods


_KEYS = {"name", "package", "argv", "notify", "ready_segments", "tcp", "liveness_segments", "ready_timeout_s",
         "watchdog_timeout_s", "enabled", "wait_ready", "wrap", "env", "preload"}


def load_module_table(path: Path, config_dir: Path, default_timeout_s: float = 2.0) -> list[ModuleSpec]:
    """A module table from TOML: `[[module]]` entries with `name` and either `package` (one of ours,
    run as `python -m <package> --config DIR`) or `argv` (any program; `{python}` is this
    interpreter, `{config}` the config dir, `{run_dir}` the run dir). Other keys as ModuleSpec."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ModuleTableError(f"{path}: {e}") from None
    entries = data.get("module")
    if not isinstance(entries, list) or not entries:
        raise ModuleTableError(f"{path}: expected one or more [[module]] entries")
    out: list[ModuleSpec] = []
    for i, e in enumerate(entries):
        where = f"{path}: [[module]] #{i + 1}"
        unknown = set(e) - _KEYS
        if unknown:
            raise ModuleTableError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        name = e.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ModuleTableError(f"{where}: 'name' must be a simple name")
        if any(m.name == name for m in out):
            raise ModuleTableError(f"{where}: duplicate module name {name!r}")
        if ("package" in e) == ("argv" in e):
            raise ModuleTableError(f"{where} ({name}): give exactly one of 'package' or 'argv'")
        try:
            if "package" in e:
                argv = package_argv(str(e["package"]), config_dir)
            else:
                if not isinstance(e["argv"], list) or not e["argv"]:
                    raise ValueError("'argv' must be a non-empty list")
                argv = tuple(str(a).replace("{python}", sys.executable).replace("{config}", str(config_dir))
                             for a in e["argv"])
            for key in (*e.get("ready_segments", ()), *e.get("liveness_segments", ())):
                if key not in SEGMENTS:
                    raise ValueError(f"unknown segment {key!r} (segments: {', '.join(SEGMENTS)})")
            tcp = None
            if "tcp" in e:
                host, _, port = str(e["tcp"]).rpartition(":")
                tcp = (host or "127.0.0.1", int(port))
            spec = ModuleSpec(
                name=name, argv=argv, notify=bool(e.get("notify", True)),
                ready_segments=tuple(e.get("ready_segments", ())), tcp=tcp,
                liveness_segments=tuple(e.get("liveness_segments", ())),
                ready_timeout_s=float(e.get("ready_timeout_s", DEFAULT_READY_TIMEOUT_S)),
                watchdog_timeout_s=float(e.get("watchdog_timeout_s", default_timeout_s)),
                enabled=bool(e.get("enabled", True)), wait_ready=bool(e.get("wait_ready", True)),
                wrap=bool(e.get("wrap", "argv" in e)),
                preload=bool(e.get("preload", "package" in e)),
                env={str(k): str(v) for k, v in dict(e.get("env", {})).items()},
            )
        except (TypeError, ValueError) as err:
            raise ModuleTableError(f"{where} ({name}): {err}") from None
        out.append(spec)
    return out


def expand(spec: ModuleSpec, run_dir: Path) -> ModuleSpec:
    """Substitute `{run_dir}` in argv (known only once the instance is resolved)."""
    return replace(spec, argv=tuple(a.replace("{run_dir}", str(run_dir)) for a in spec.argv))
