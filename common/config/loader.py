"""Loads a configuration directory (config.toml, machine.toml, io.toml, axis_NN_*.toml) strictly.

Every problem found is collected; one ConfigError carrying all of them is raised, else EvoConfig.
"""
from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from common.consts import DEFAULT_CONFIG_PATH, ENV_CONFIG_DIR, MAX_AXES
from common.files import FileRefused, read_limited
from common.toml_text import MAX_TOML_BYTES, TomlTooDeep, parse_toml

from .enums import HomingMethod, ModuleName
from .errors import (
    AxisIdMismatch,
    ConfigError,
    DuplicateAxisId,
    FileNotFound,
    NoAxesDefined,
    ParseError,
    ValidationError,
)
from .io import IoConfig, parse_io
from .parsing import Collector, Ctx, check_keys, parse_table, type_name
from .registry import IoRegistry
from .zenoh_check import check_zenoh
from .schema import (
    AXIS_REQUIRED_SECTIONS,
    AXIS_SECTIONS,
    MACHINE_SECTIONS,
    SYSTEM_SECTIONS,
    AxisConfig,
    EvoConfig,
    MachineConfig,
    ModuleConfig,
    SystemConfig,
)

__all__ = ["load_config", "load_io", "resolve_config_dir", "PACKAGED_CONFIG_DIR"]

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
AXIS_FILE_RE = re.compile(r"axis_(\d{2})_(.+)\.toml")
_NO_AXES_HINT = ("[[axes]] / axes_dir are not supported: each axis lives in its own "
                 "axis_NN_name.toml next to machine.toml")
_SLUG_RE = re.compile(r"[A-Za-z0-9_-]+")


def resolve_config_dir(cli_arg: str | os.PathLike[str] | None = None) -> Path:
    """--config argument, else $EVO_CONFIG_DIR, else /etc/evo if it exists, else <repo>/config."""
    if cli_arg:
        return Path(cli_arg)
    env = os.environ.get(ENV_CONFIG_DIR)
    if env:
        return Path(env)
    if Path(DEFAULT_CONFIG_PATH).is_dir():
        return Path(DEFAULT_CONFIG_PATH)
    return PACKAGED_CONFIG_DIR


# --- files ----------------------------------------------------------------------------------

def read_toml_file(path: Path, col: Collector, hasher: Any = None,
                   missing: str = "missing mandatory file") -> dict[str, Any] | None:
    """A config file's TOML, or None with the error (file named) in `col`: bounded size, regular files
    only, bounded nesting, syntax errors with line and column. Every config-directory file reads here."""
    name = path.name
    try:
        raw = read_limited(path, MAX_TOML_BYTES)
    except FileNotFoundError:
        col.add(FileNotFound(f"{missing} (looked in {path.parent})", file=name))
        return None
    except FileRefused as e:
        col.add(ParseError(f"refused: {e}", file=name))
        return None
    except OSError as e:
        col.add(ParseError(f"cannot read: {e.strerror or e}", file=name))
        return None
    if hasher is not None:
        hasher.update(name.encode() + b"\0" + raw + b"\0")
    try:
        return parse_toml(raw.decode("utf-8"))
    except TomlTooDeep as e:
        col.add(ParseError(f"refused: {e}", file=name))
    except UnicodeDecodeError as e:
        col.add(ParseError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=name))
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m[1]) if m else None
        text = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        where = f" at line {line}, column {m[2]}" if m else ""
        col.add(ParseError(f"TOML syntax error{where}: {text}", file=name, line=line))
    return None


# --- config.toml ----------------------------------------------------------------------------

def _parse_system(data: dict[str, Any], col: Collector, file: str) -> SystemConfig | None:
    n0 = len(col.errors)
    check_keys(data, list(SYSTEM_SECTIONS), Ctx(col, file, ""))
    parts: dict[str, Any] = {}
    for name, cls in SYSTEM_SECTIONS.items():
        if name not in data:
            continue
        ctx = Ctx(col, file, name)
        table = data[name]
        kw = parse_table(cls, table, ctx)
        if name == "watchdog" and isinstance(table, dict) and "modules" in table:
            mods = _parse_modules(table["modules"], col, file)
            if kw is not None and mods is not None:
                kw["modules"] = mods
        if name == "hal" and isinstance(table, dict) and "driver_args" in table:
            args = table["driver_args"]
            if isinstance(args, dict):
                if kw is not None:
                    kw["driver_args"] = MappingProxyType(dict(args))
            else:
                ctx.parse_error("driver_args", f"expected a table, got {type_name(args)}")
        if name == "mqtt" and isinstance(table, dict) and "sparkplug" in table:  # issue 18
            from .sparkplug import parse_sparkplug

            spb = parse_sparkplug(table["sparkplug"], col, file)
            if kw is not None and spb is not None:
                kw["sparkplug"] = spb
        if kw is not None:
            parts[name] = cls(**kw)
    if len(col.errors) != n0:
        return None
    sysc = SystemConfig(**parts)
    _check_system(sysc, col, file)
    return sysc if len(col.errors) == n0 else None


def _parse_modules(table: Any, col: Collector, file: str) -> MappingProxyType | None:
    ctx = Ctx(col, file, "watchdog", "modules.")
    if not isinstance(table, dict):
        ctx.parse_error(None, f"expected a table of [watchdog.modules.<name>], got {type_name(table)}")
        return None
    n0 = len(col.errors)
    known = [m.value for m in ModuleName]
    out: dict[str, ModuleConfig] = {}
    for key, sub in table.items():
        if key not in known:
            ctx.unknown(key, known, "modules are " + ", ".join(known))
            continue
        kw = parse_table(ModuleConfig, sub, Ctx(col, file, f"watchdog.modules.{key}"))
        if kw is not None:
            out[key] = ModuleConfig(**kw)
    return MappingProxyType(out) if len(col.errors) == n0 else None


def _check_system(s: SystemConfig, col: Collector, file: str) -> None:
    wd = Ctx(col, file, "watchdog")
    if s.watchdog.initial_backoff_ms > s.watchdog.max_backoff_s * 1000:
        wd.invalid("initial_backoff_ms", f"{s.watchdog.initial_backoff_ms} ms exceeds max_backoff_s"
                                         f" = {s.watchdog.max_backoff_s} s")
    if not s.hal.driver:
        Ctx(col, file, "hal").invalid("driver", "must not be empty")
    mq = Ctx(col, file, "mqtt")
    if bool(s.mqtt.tls_cert) != bool(s.mqtt.tls_key):
        mq.invalid("tls_key" if s.mqtt.tls_cert else "tls_cert",
                   "tls_cert and tls_key go together (both set or both empty)")
    if s.mqtt.machine_id and not _SLUG_RE.fullmatch(s.mqtt.machine_id):
        mq.invalid("machine_id", f"{s.mqtt.machine_id!r}: only letters, digits, '_' and '-'")
    bt = s.mqtt.base_topic
    if not bt or any(c in bt for c in "+#\0") or bt.startswith("/") or bt.endswith("/"):
        mq.invalid("base_topic", f"{bt!r}: must be a non-empty topic without wildcards or "
                                 "leading/trailing '/'")
    g = Ctx(col, file, "grpc")
    if bool(s.grpc.tls_cert) != bool(s.grpc.tls_key):
        g.invalid("tls_key" if s.grpc.tls_cert else "tls_cert",
                  "tls_cert and tls_key go together (both set or both empty)")
    for f in ("viewer_tokens", "operator_tokens"):
        if any(not t for t in getattr(s.grpc, f)):
            g.invalid(f, "tokens must not be empty strings")
    check_zenoh(s.zenoh, Ctx(col, file, "zenoh"))  # issue 14
    h = Ctx(col, file, "hmi")  # issue 17: the operator web page
    if not s.hmi.bind:
        h.invalid("bind", "must not be empty")
    if s.hmi.enabled and s.hmi.port == s.grpc.port:
        h.invalid("port", f"{s.hmi.port} is also [grpc] port; the HMI needs a port of its own")
    if s.hmi.default_live_hz > s.hmi.max_live_hz:
        h.invalid("default_live_hz", f"{s.hmi.default_live_hz:g} exceeds max_live_hz = {s.hmi.max_live_hz:g}")


# --- machine.toml ---------------------------------------------------------------------------

def _parse_machine(data: dict[str, Any], col: Collector, file: str) -> MachineConfig | None:
    n0 = len(col.errors)
    hints = {"axes": _NO_AXES_HINT, "axes_dir": _NO_AXES_HINT}
    check_keys(data, list(MACHINE_SECTIONS), Ctx(col, file, ""), hints)
    parts: dict[str, Any] = {}
    for name, cls in MACHINE_SECTIONS.items():
        ctx = Ctx(col, file, name)
        if name not in data:
            ctx.parse_error(None, "missing mandatory section")
            continue
        kw = parse_table(cls, data[name], ctx, hints)
        if kw is not None:
            parts[name] = cls(**kw)
    if len(col.errors) != n0:
        return None
    if not parts["machine"].name.strip():
        Ctx(col, file, "machine").invalid("name", "must not be empty")
    sb = parts["service_bypass"]
    dup = sorted({a for a in sb.bypass_axes if sb.bypass_axes.count(a) > 1})
    if dup:
        Ctx(col, file, "service_bypass").invalid("bypass_axes", f"duplicate axis ids {dup}")
    if len(col.errors) != n0:
        return None
    return MachineConfig(name=parts["machine"].name, global_safety=parts["global_safety"],
                         service_bypass=sb)


# --- axis files -----------------------------------------------------------------------------

def _discover_axes(d: Path, col: Collector) -> list[tuple[int, Path]]:
    """(NN, path) of every axis file, sorted by NN; bad names and duplicates are errors."""
    found: dict[int, Path] = {}
    candidates = sorted(d.glob("axis_*.toml"))
    for p in candidates:
        m = AXIS_FILE_RE.fullmatch(p.name)
        if not m:
            col.add(ValidationError("axis files must be named axis_NN_name.toml (NN = 01..64)",
                                    file=p.name))
            continue
        nn = int(m[1])
        if not 1 <= nn <= MAX_AXES:
            col.add(ValidationError(f"axis number {m[1]} out of range [01, {MAX_AXES}]",
                                    file=p.name))
            continue
        if nn in found:
            col.add(DuplicateAxisId(nn, file=p.name, other_file=found[nn].name))
            continue
        found[nn] = p
    if not candidates:
        col.add(NoAxesDefined(f"no axis_NN_name.toml file in {d}", file="axis_NN_*.toml"))
    if len(found) > MAX_AXES:  # unreachable with 2-digit NN in range, kept as a guard
        col.add(ValidationError(f"{len(found)} axes, at most {MAX_AXES}", file="axis_NN_*.toml"))
    return sorted(found.items())


def _parse_axis(data: dict[str, Any], nn: int, col: Collector, file: str) -> AxisConfig | None:
    n0 = len(col.errors)
    check_keys(data, list(AXIS_SECTIONS), Ctx(col, file, ""))
    parts: dict[str, Any] = {}
    for name, cls in AXIS_SECTIONS.items():
        ctx = Ctx(col, file, name)
        if name not in data:
            if name in AXIS_REQUIRED_SECTIONS:
                ctx.parse_error(None, "missing mandatory section")
            continue
        kw = parse_table(cls, data[name], ctx)
        if kw is not None:
            parts[name] = cls(**kw)
    ax = parts.get("axis")
    if ax is not None and ax.id != nn:
        col.add(AxisIdMismatch(file=file, expected=nn, found=ax.id))
    if len(col.errors) != n0:
        return None
    kin, ctl, ss, hom = parts["kinematics"], parts["control"], parts["safe_stop"], parts["homing"]
    k = Ctx(col, file, "kinematics")
    if not kin.min_pos < kin.max_pos:
        k.invalid("max_pos", f"max_pos {kin.max_pos!r} must be greater than min_pos {kin.min_pos!r}")
    if kin.safe_reduced_speed_limit > kin.max_velocity:
        k.invalid("safe_reduced_speed_limit",
                  f"{kin.safe_reduced_speed_limit!r} exceeds max_velocity {kin.max_velocity!r}")
    c = Ctx(col, file, "control")
    if ctl.f_notch > 0 and ctl.bw_notch <= 0:
        c.invalid("bw_notch", "must be > 0 when f_notch is set")
    if ss.ss2_holding_torque > ctl.out_max:
        Ctx(col, file, "safe_stop").invalid(
            "ss2_holding_torque", f"{ss.ss2_holding_torque!r} exceeds [control] out_max {ctl.out_max!r}")
    h = Ctx(col, file, "homing")
    if hom.speed > kin.max_velocity:
        h.invalid("speed", f"{hom.speed!r} exceeds [kinematics] max_velocity {kin.max_velocity!r}")
    if hom.speed <= 0 and hom.method not in (HomingMethod.ABSOLUTE, HomingMethod.NO_HOMING):
        h.invalid("speed", f"must be > 0 for method {hom.method.value}")
    if hom.torque_limit > ctl.out_max:
        h.invalid("torque_limit", f"{hom.torque_limit!r} exceeds [control] out_max {ctl.out_max!r}")
    if "coupling" in parts and parts["coupling"].master_axis == nn:
        Ctx(col, file, "coupling").invalid("master_axis", "an axis cannot be its own master")
    if "coupling" in parts and parts["coupling"].ratio == 0.0:
        Ctx(col, file, "coupling").invalid("ratio", "must not be 0")
    if "tailstock" in parts and parts["tailstock"].coupled_axis == nn:
        Ctx(col, file, "tailstock").invalid("coupled_axis", "an axis cannot be coupled to itself")
    if len(col.errors) != n0:
        return None
    return AxisConfig(id=ax.id, name=ax.name, type=ax.type, file=file, kinematics=kin,
                      control=ctl, safe_stop=ss, homing=hom, brake=parts.get("brake"),
                      tailstock=parts.get("tailstock"), guard=parts.get("guard"),
                      coupling=parts.get("coupling"))


def _check_axes_cross(axes: list[AxisConfig], known: set[int], col: Collector) -> None:
    for ax in axes:
        if ax.coupling is not None and ax.coupling.master_axis not in known:
            Ctx(col, ax.file, "coupling").invalid(
                "master_axis", f"axis {ax.coupling.master_axis} does not exist")
        if ax.tailstock is not None and ax.tailstock.coupled_axis not in known:
            Ctx(col, ax.file, "tailstock").invalid(
                "coupled_axis", f"axis {ax.tailstock.coupled_axis} does not exist")
    # coupling chains must end at a free master
    master = {a.id: a.coupling.master_axis for a in axes if a.coupling is not None}
    by_id = {a.id: a for a in axes}
    reported: set[int] = set()
    for start in master:
        seen = [start]
        cur = master.get(start)
        while cur is not None and cur not in seen:
            seen.append(cur)
            cur = master.get(cur)
        if cur is not None and cur not in reported:
            cycle = seen[seen.index(cur):]
            reported.update(cycle)
            Ctx(col, by_id[cur].file, "coupling").invalid(
                "master_axis", "coupling cycle " + " -> ".join(map(str, cycle + [cur])))


# --- entry points ---------------------------------------------------------------------------

def load_io(path: str | os.PathLike[str]) -> IoConfig:
    """Parse one io.toml-format file (e.g. a fixture) on its own."""
    col = Collector()
    p = Path(path)
    data = read_toml_file(p, col)
    io = parse_io(data, col, p.name) if data is not None else None
    col.raise_if_any()
    assert io is not None
    return io


def load_config(path: str | os.PathLike[str] | None = None, *, check_roles: bool = True) -> EvoConfig:
    """Load and validate a configuration directory (None: resolve_config_dir()).

    check_roles=False skips the cross-file role check (RoleMissing / RoleTypeMismatch) and
    gives a pure format check. Raises the first ConfigError found, with `.errors` = all.
    """
    d = Path(path) if path is not None else resolve_config_dir()
    col = Collector()
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "does not exist"
        col.add(FileNotFound(f"configuration directory {what}", file=str(d)))
        col.raise_if_any()
    h = hashlib.sha256()

    data = read_toml_file(d / "config.toml", col, h)
    system = _parse_system(data, col, "config.toml") if data is not None else None
    data = read_toml_file(d / "machine.toml", col, h)
    machine = _parse_machine(data, col, "machine.toml") if data is not None else None
    data = read_toml_file(d / "io.toml", col, h)
    io = parse_io(data, col, "io.toml") if data is not None else None

    discovered = _discover_axes(d, col)
    known = {nn for nn, _ in discovered}
    axes: list[AxisConfig] = []
    all_axes_ok = True
    for nn, p in discovered:
        data = read_toml_file(p, col, h)
        ax = _parse_axis(data, nn, col, p.name) if data is not None else None
        if ax is None:
            all_axes_ok = False
        else:
            axes.append(ax)
    _check_axes_cross(axes, known, col)

    if machine is not None:
        missing = [a for a in machine.service_bypass.bypass_axes if a not in known]
        if missing and known:
            Ctx(col, "machine.toml", "service_bypass").invalid(
                "bypass_axes", f"axis ids {missing} have no axis file")

    registry = IoRegistry(io) if io is not None else None
    if registry is not None and check_roles:
        for e in registry.check(axes):
            col.add(e)
    if system is not None:  # protected mode: a reachable operator API needs tokens
        from .exposure import check_exposure

        check_exposure(system, col)
    # --- fieldbus network files: part of the config, a bad one starts nothing ---
    if system is not None and system.hal.driver == "canopen":
        from common.fieldbus.canopen_config import check_canopen

        check_canopen(d, system.hal.driver_args, axes, io, col)
    # issue 12: the EtherCAT network file (SubDevices, ESI files, axis / pin blocks)
    if system is not None and system.hal.driver == "ethercat":
        from common.fieldbus.ethercat_config import check_ethercat

        check_ethercat(d, system.hal.driver_args, axes, io, col)
    from common.fieldbus.can_forward_config import check_can_forward

    check_can_forward(d, col)  # issue 13: the MQTT bridge's optional CAN forwarding (can_forward.toml)
    col.raise_if_any()
    assert system is not None and machine is not None and io is not None and registry is not None
    assert all_axes_ok

    warnings = registry.warnings(axes)
    nyquist = 1e6 / system.cu.cycle_time_us / 2.0
    for ax in axes:
        for f in ("f_notch", "flp"):
            v = getattr(ax.control, f)
            if v >= nyquist:
                warnings.append(f"{ax.file} [control] {f}: {v:g} Hz is at or above the Nyquist "
                                f"frequency {nyquist:g} Hz of the {system.cu.cycle_time_us} us "
                                "CU cycle (stage cannot act as intended)")
    return EvoConfig(dir=d.resolve(), system=system, machine=machine, io=io, axes=tuple(axes),
                     io_registry=registry, warnings=tuple(warnings), fingerprint=h.hexdigest())


def format_errors(err: ConfigError) -> str:
    """All errors of a failed load, one per line (what `evo config check` prints)."""
    return "\n".join(e.message for e in err.errors)
