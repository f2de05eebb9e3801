"""Config loader against real files: the upstream reference directory and the default config/.

Expected values are computed independently from the TOML files with tomllib.
"""
from __future__ import annotations

import dataclasses
import shutil
import tomllib
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

from common.rundir import default_run_dir
from common.config import (
    PACKAGED_CONFIG_DIR,
    AxisType,
    ConfigError,
    EvoConfig,
    HomingMethod,
    IoType,
    LagPolicy,
    Logic,
    RoleMissing,
    SafeStopCategory,
    UnknownField,
    load_config,
    load_io,
    resolve_config_dir,
    summarize,
)
from common.config.enums import parse_enum

from tests.helpers import reference_config_dir

REF = reference_config_dir()
DEFAULT = PACKAGED_CONFIG_DIR

# field of an axis file naming a role -> I/O type it needs
ROLE_FIELDS = {("brake", "do_brake"): "do", ("brake", "di_released"): "di",
               ("tailstock", "clamp_role"): "do", ("tailstock", "clamped_role"): "di",
               ("guard", "di_guard"): "di"}


def _toml(p: Path) -> dict:
    return tomllib.loads(p.read_text())


def _named_roles(d: Path) -> dict[str, str]:
    """role -> io type, for every role the axis files of `d` name."""
    out: dict[str, str] = {}
    for f in sorted(d.glob("axis_*.toml")):
        data = _toml(f)
        for (sec, key), t in ROLE_FIELDS.items():
            if key in data.get(sec, {}):
                out[data[sec][key]] = t
    return out


def _io_roles(io_file: Path) -> set[str]:
    return {pt["role"] for g in _toml(io_file).values() for pt in g.get("io", []) if "role" in pt}


def _used_pins(io_file: Path, t: str) -> set[int]:
    return {pt["pin"] for g in _toml(io_file).values() for pt in g.get("io", []) if pt["type"] == t}


def _assert_axis_matches_file(ax, d: Path) -> None:
    data = _toml(d / ax.file)
    assert (ax.id, ax.name, ax.type.value) == (data["axis"]["id"], data["axis"]["name"],
                                               data["axis"]["type"])
    for sec, table in data.items():
        if sec == "axis":
            continue
        obj = getattr(ax, sec)
        assert obj is not None, sec
        for key, val in table.items():
            got = getattr(obj, key)
            if isinstance(got, Enum):
                assert got is parse_enum(type(got), val), (ax.file, sec, key)
            else:
                assert got == val, (ax.file, sec, key)


# --- the upstream reference directory --------------------------------------------------------

def test_reference_parses_without_format_error():
    cfg = load_config(REF, check_roles=False)
    assert isinstance(cfg, EvoConfig)
    assert cfg.machine.name == "Test 8-Axis CNC"
    assert [a.id for a in cfg.axes] == list(range(1, 9))
    assert cfg.system.watchdog.max_restarts == 5
    assert cfg.machine.global_safety.default_safe_stop is SafeStopCategory.SS1
    assert cfg.machine.service_bypass.bypass_axes == (1, 2, 3, 4, 5, 6, 7, 8)
    for ax in cfg.axes:
        _assert_axis_matches_file(ax, REF)


def test_reference_role_check_reports_exactly_the_missing_roles():
    named = _named_roles(REF)
    expected = set(named) - _io_roles(REF / "io.toml")
    assert expected  # upstream ships the inconsistency
    with pytest.raises(RoleMissing) as ei:
        load_config(REF)
    errs = ei.value.errors
    assert all(isinstance(e, RoleMissing) for e in errs)
    assert {e.role for e in errs} == expected
    assert len(errs) == len(expected)  # each role is named once upstream
    for e in errs:
        assert e.file and e.file.startswith("axis_") and e.file in e.message
        assert e.field in e.message and e.role in e.message
    # every missing role appears in the aggregated message
    for role in expected:
        assert role in str(ei.value)


def test_reference_with_roles_added_loads(tmp_path: Path):
    d = tmp_path / "ref"
    shutil.copytree(REF, d)
    named = _named_roles(REF)
    missing = sorted(set(named) - _io_roles(REF / "io.toml"))
    free = {t: iter(p for p in range(1023, 0, -1) if p not in _used_pins(REF / "io.toml", t))
            for t in ("di", "do")}
    lines = ["", "[Added]", 'name = "Roles the axis files name"', "io = ["]
    for role in missing:
        lines.append(f'    {{ type="{named[role]}", role="{role}", pin={next(free[named[role]])} }},')
    lines.append("]")
    with open(d / "io.toml", "a") as f:
        f.write("\n".join(lines) + "\n")
    cfg = load_config(d)
    assert len(cfg.axes) == 8
    for ax in cfg.axes:
        _assert_axis_matches_file(ax, d)
    reg = cfg.io_registry
    for role in missing:
        assert reg.pin(role).type.value == named[role]
    # upstream spellings mapped onto our enums
    assert cfg.axis(4).control.lag_policy is LagPolicy.UNWANTED  # "Error"
    assert cfg.axis(7).control.lag_policy is LagPolicy.NEUTRAL  # "Warning"
    assert cfg.axis(5).homing.method is HomingMethod.TORQUE_LIMIT
    assert cfg.axis(8).coupling.master_axis == 3
    assert cfg.axis(3).tailstock.coupled_axis == 8
    # defaults of fields the files omit
    assert cfg.axis(2).control.jn == 0.01 and cfg.axis(2).control.gdob == 200.0
    assert cfg.axis(6).homing.torque_limit == 30.0
    assert cfg.axis(1).kinematics.max_acceleration is None
    # homing sensors the files imply but io.toml lacks are warnings, not errors
    assert any("Ref3" in w for w in cfg.warnings)


def test_reference_io_points():
    cfg = load_config(REF, check_roles=False)
    estop = cfg.io_registry.pin("EStop")
    assert (estop.type, estop.pin, estop.logic, estop.debounce_ms, estop.sim) == \
        (IoType.DI, 1, Logic.NC, 100, True)
    start = cfg.io_registry.pin("Start")
    assert (start.enable_pin, start.enable_state, start.enable_timeout_ms) == (3, True, 500)
    relay = cfg.io.point("do", 200)
    assert relay.init is True and relay.keep_estop is True
    valve = cfg.io.point(IoType.DO, 100)
    assert valve.pulse_ms == 500
    pressure = cfg.io.point("ai", 64)
    assert (pressure.min, pressure.max, pressure.unit, pressure.average, pressure.sim) == \
        (0.0, 10.0, "bar", 10, 6.0)
    load_cell = cfg.io.point("ai", 69)
    assert load_cell.curve.preset == "custom" and load_cell.curve.coefficients == (0.2, 0.0, 0.8)
    assert load_cell.offset == 0.5 and load_cell.unit == "kg"
    # counts per type match the file
    for t in IoType:
        assert len(cfg.io.points_of(t)) == len(_used_pins(REF / "io.toml", t.value))
    assert [g.key for g in cfg.io.groups] == list(_toml(REF / "io.toml"))


def test_machine_legacy_is_rejected(tmp_path: Path):
    d = tmp_path / "legacy"
    shutil.copytree(REF, d)
    shutil.copy(REF / "machine_legacy.toml", d / "machine.toml")
    with pytest.raises(UnknownField) as ei:
        load_config(d, check_roles=False)
    e = ei.value
    assert e.file == "machine.toml"
    assert "machine.toml" in str(e)
    unknown = {x.field for x in e.errors if isinstance(x, UnknownField)}
    assert "axes" in unknown and "digital_inputs" in unknown


def test_test_io_fixture_parses_as_io_toml():
    io = load_io(REF / "test_io.toml")
    assert io.groups == ()
    assert io.points_of(IoType.DI) == ()


def test_reference_io_parses_with_load_io():
    io = load_io(REF / "io.toml")
    assert len(io.points) == sum(len(g.get("io", [])) for g in _toml(REF / "io.toml").values())


# --- the default machine ---------------------------------------------------------------------

def test_default_config_loads():
    cfg = load_config(DEFAULT)
    assert cfg.dir == DEFAULT.resolve()
    assert cfg.warnings == ()
    assert [(a.id, a.name, a.type) for a in cfg.axes] == [
        (1, "X", AxisType.LINEAR), (2, "Y", AxisType.LINEAR), (3, "Z", AxisType.LINEAR),
        (4, "Spindle", AxisType.ROTARY)]
    for ax in cfg.axes:
        _assert_axis_matches_file(ax, DEFAULT)
    z = cfg.axis(3)
    assert z.brake is not None and (z.brake.do_brake, z.brake.di_released) == ("BrakeOut3", "BrakeIn3")
    assert cfg.axis(1).brake is None
    assert cfg.system.mqtt.embedded_broker is True
    assert cfg.system.hal.driver == "sim"
    for ax in cfg.axes:
        assert ax.control.out_max == 100.0
    with pytest.raises(KeyError):
        cfg.axis(9)


def test_default_config_every_section_present_and_documented():
    data = _toml(DEFAULT / "config.toml")
    assert set(data) == {"watchdog", "hal", "cu", "re", "mqtt", "grpc", "hmi", "api", "dashboard",
                         "diagnostic", "zenoh"}
    for f in DEFAULT.glob("*.toml"):
        assert f.read_text().startswith("# ╔"), f"{f.name} lacks its header"


def test_default_config_matches_dataclass_defaults_except_broker():
    cfg = load_config(DEFAULT)
    from common.config.schema import SystemConfig
    d = SystemConfig()
    for sec in ("hal", "cu", "re", "grpc", "hmi", "zenoh"):
        assert getattr(cfg.system, sec) == getattr(d, sec), sec
    assert d.mqtt.embedded_broker is False
    assert dataclasses.replace(cfg.system.mqtt, embedded_broker=False) == d.mqtt
    assert cfg.system.watchdog.module_enabled("hal") is True


def test_default_roles_and_sim_start_healthy():
    cfg = load_config(DEFAULT)
    reg = cfg.io_registry
    di = np.zeros(16, np.uint64)
    for p in cfg.io.points_of(IoType.DI):
        if p.sim:
            di[p.pin // 64] |= np.uint64(1 << (p.pin % 64))
    assert reg.read_di("EStop", di) is False  # not pressed
    assert reg.read_di("GuardClosed", di) is True
    assert reg.read_di("ReducedSpeed", di) is False
    for n in (1, 2, 3):
        assert reg.read_di(f"LimitMin{n}", di) is False
        assert reg.read_di(f"LimitMax{n}", di) is False
        assert reg.has(f"Ref{n}")
    assert reg.pin("BrakeOut3").type is IoType.DO
    assert reg.pin("BrakeIn3").type is IoType.DI
    # some role-less points exist for recipes, of every type
    for t in IoType:
        assert any(p.role is None for p in cfg.io.points_of(t)), t


def test_frozen_and_typed():
    cfg = load_config(DEFAULT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.machine.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.axis(1).control.kp = 1.0  # type: ignore[misc]
    assert isinstance(cfg.axes, tuple) and isinstance(cfg.io.groups, tuple)
    assert cfg.axis(1).control.lag_policy == "Unwanted"  # StrEnum compares with its spelling


def test_axis_vector_and_paths(monkeypatch: pytest.MonkeyPatch):
    cfg = load_config(DEFAULT)
    kp = cfg.axis_vector("control", "kp")
    assert kp.dtype == np.float64 and list(kp) == [a.control.kp for a in cfg.axes]
    brake_timeout = cfg.axis_vector("brake", "release_timeout")
    assert np.isnan(brake_timeout[0]) and brake_timeout[2] == 2.0
    monkeypatch.delenv("EVO_RUN_DIR", raising=False)
    monkeypatch.setenv("EVO_SHM_PREFIX", "t123")
    base = default_run_dir()  # the per-user default: /run/evo-t123 as root
    assert base.name.startswith("evo-t123") and cfg.run_dir() == base
    assert cfg.log_dir() == base / "log"
    assert cfg.hal_state_file() == base / "hal_state.json"
    monkeypatch.setenv("EVO_RUN_DIR", "/tmp/somewhere")
    assert cfg.run_dir() == Path("/tmp/somewhere")
    assert cfg.recipes_dir() == DEFAULT.resolve() / "recipes"
    assert cfg.machine_id == "evo-demo-gantry"


def test_fingerprint_changes_with_content(tmp_path: Path):
    d = tmp_path / "c"
    shutil.copytree(DEFAULT, d)
    a = load_config(d).fingerprint
    assert a == load_config(d).fingerprint
    p = d / "machine.toml"
    p.write_text(p.read_text().replace("max_service_velocity = 20.0", "max_service_velocity = 21.0"))
    assert load_config(d).fingerprint != a


def test_resolve_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert resolve_config_dir(tmp_path) == tmp_path
    assert resolve_config_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("EVO_CONFIG_DIR", "/some/where")
    assert resolve_config_dir() == Path("/some/where")
    assert resolve_config_dir("/cli") == Path("/cli")
    monkeypatch.delenv("EVO_CONFIG_DIR")
    expected = Path("/etc/evo") if Path("/etc/evo").is_dir() else PACKAGED_CONFIG_DIR
    assert resolve_config_dir() == expected


def test_load_config_without_path_uses_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EVO_CONFIG_DIR", str(DEFAULT))
    assert load_config().machine.name == "Evo Demo Gantry"


def test_summary():
    cfg = load_config(DEFAULT)
    s = summarize(cfg)
    assert "Evo Demo Gantry" in s
    for a in cfg.axes:
        assert a.name in s and a.file in s
    assert "DI 17" in s and "roles: 15" in s
    s_ref = summarize(load_config(REF, check_roles=False))
    assert "warnings: " in s_ref and "Ref3" in s_ref


def test_config_error_is_raised_not_returned(tmp_path: Path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope")
