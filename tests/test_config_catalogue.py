"""Catalogue of broken configurations: each is refused with the right error class and a message
naming the file and the field. Each case copies the default config/ into tmp_path and mutates it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from common.config import (
    PACKAGED_CONFIG_DIR,
    AxisIdMismatch,
    ConfigError,
    DuplicateAxisId,
    FileNotFound,
    NoAxesDefined,
    ParseError,
    RoleMissing,
    RoleTypeMismatch,
    UnknownField,
    ValidationError,
    load_config,
)


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(PACKAGED_CONFIG_DIR, d, ignore=shutil.ignore_patterns("recipes"))
    # The catalogue edits known `kp` lines; pin them so retuning the default machine's gains
    # never breaks these tests.
    for name, kp in (("axis_01_x.toml", "40.0"), ("axis_02_y.toml", "40.0"), ("axis_03_z.toml", "50.0")):
        f = d / name
        f.write_text(re.sub(r"(?m)^kp = .*$", f"kp = {kp}", f.read_text(), count=1))
    return d


def sub(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write("\n" + text + "\n")


Mutation = Callable[[Path], None]

# id, mutation, expected class, file, section, field (as in e.field), text in message
CASES: list[tuple[str, Mutation, type[ConfigError], str, str | None, str | None, str]] = [
    # ---- UnknownField
    ("unknown-axis-key", lambda d: sub(d / "axis_01_x.toml", 'name = "X"', 'name = "X"\ncolour = "red"'),
     UnknownField, "axis_01_x.toml", "axis", "colour", "unknown field 'colour'"),
    ("unknown-axis-section", lambda d: append(d / "axis_02_y.toml", "[limits]\nx = 1"),
     UnknownField, "axis_02_y.toml", "", "limits", "unknown field 'limits'"),
    ("unknown-control-key-typo", lambda d: sub(d / "axis_03_z.toml", "kp = 50.0", "kpp = 50.0\nkp = 50.0"),
     UnknownField, "axis_03_z.toml", "control", "kpp", "did you mean 'kp'"),
    ("unknown-config-hal-key", lambda d: sub(d / "config.toml", "driver = \"sim\"", "driver = \"sim\"\ncycle_time = 5"),
     UnknownField, "config.toml", "hal", "cycle_time", "unknown field 'cycle_time'"),
    ("unknown-config-section", lambda d: append(d / "config.toml", "[scheduler]\nx = 1"),
     UnknownField, "config.toml", "", "scheduler", "unknown field 'scheduler'"),
    ("unknown-api-key", lambda d: sub(d / "config.toml", "\n[api]\n", "\n[api]\nport = 8080\n"),
     UnknownField, "config.toml", "api", "port", "unknown field 'port'"),
    ("unknown-module", lambda d: append(d / "config.toml", "[watchdog.modules.zenoh]\nenabled = true"),
     UnknownField, "config.toml", "watchdog", "modules.zenoh", "unknown field 'zenoh'"),
    ("unknown-module-key", lambda d: sub(d / "config.toml", "[watchdog.modules.re]\nenabled = true",
                                         "[watchdog.modules.re]\nenabled = true\nautostart = false"),
     UnknownField, "config.toml", "watchdog.modules.re", "autostart", "unknown field 'autostart'"),
    ("machine-axes-array", lambda d: append(d / "machine.toml", '[[axes]]\nid = 1\nfile = "axis_01.toml"'),
     UnknownField, "machine.toml", "", "axes", "unknown field 'axes'"),
    ("machine-axes-dir", lambda d: sub(d / "machine.toml", 'name = "Evo Demo Gantry"',
                                       'name = "Evo Demo Gantry"\naxes_dir = "axes"'),
     UnknownField, "machine.toml", "machine", "axes_dir", "unknown field 'axes_dir'"),
    ("io-point-key", lambda d: sub(d / "io.toml", 'name="Main E-Stop" }', 'name="Main E-Stop", colour="red" }'),
     UnknownField, "io.toml", "Safety", "io[0].colour", "unknown field 'colour'"),
    ("io-key-of-other-type", lambda d: sub(d / "io.toml", '{ type="do", pin=10, name="Clamp valve" }',
                                           '{ type="do", pin=10, logic="NC", name="Clamp valve" }'),
     UnknownField, "io.toml", "Workholding", "io[0].logic", "unknown field 'logic'"),
    ("io-ai-debounce", lambda d: sub(d / "io.toml", 'sim=6.0, name="Air pressure"', 'sim=6.0, debounce=5, name="Air pressure"'),
     UnknownField, "io.toml", "Workholding", "io[4].debounce", "unknown field 'debounce'"),
    ("io-group-key", lambda d: sub(d / "io.toml", 'name = "Safety circuits"', 'name = "Safety circuits"\nlabel = "x"'),
     UnknownField, "io.toml", "Safety", "label", "unknown field 'label'"),
    ("io-top-level-key", lambda d: (d / "io.toml").write_text('version = 2\n' + (d / "io.toml").read_text()),
     UnknownField, "io.toml", "", "version", "unknown field 'version'"),
    # ---- ParseError
    ("toml-syntax", lambda d: sub(d / "axis_02_y.toml", "kp = 40.0", "kp = = 40.0"),
     ParseError, "axis_02_y.toml", None, None, "TOML syntax error at line"),
    ("missing-kp", lambda d: sub(d / "axis_01_x.toml", "kp = 40.0\n", ""),
     ParseError, "axis_01_x.toml", "control", "kp", "missing mandatory field"),
    ("kp-wrong-type", lambda d: sub(d / "axis_01_x.toml", "kp = 40.0", 'kp = "high"'),
     ParseError, "axis_01_x.toml", "control", "kp", "expected number, got string"),
    ("id-wrong-type", lambda d: sub(d / "axis_01_x.toml", "id = 1", "id = 1.0"),
     ParseError, "axis_01_x.toml", "axis", "id", "expected integer"),
    ("bool-wrong-type", lambda d: sub(d / "machine.toml", "recovery_authorization_required = true",
                                      "recovery_authorization_required = 1"),
     ParseError, "machine.toml", "global_safety", "recovery_authorization_required", "expected bool"),
    ("missing-homing-section", lambda d: sub(d / "axis_04_spindle.toml", "[homing]\nmethod = \"NoHoming\"\nspeed = 0.0\ntimeout = 10.0\n", ""),
     ParseError, "axis_04_spindle.toml", "homing", None, "missing mandatory section"),
    ("missing-machine-name", lambda d: sub(d / "machine.toml", 'name = "Evo Demo Gantry"', ""),
     ParseError, "machine.toml", "machine", "name", "missing mandatory field"),
    ("missing-io-pin", lambda d: sub(d / "io.toml", 'pin=1, debounce=20, sim=true, name="Guard door closed"',
                                     'debounce=20, sim=true, name="Guard door closed"'),
     ParseError, "io.toml", "Safety", "io[1].pin", "missing mandatory field"),
    ("io-sim-wrong-type", lambda d: sub(d / "io.toml", 'sim=6.0, name="Air pressure"', 'sim="six", name="Air pressure"'),
     ParseError, "io.toml", "Workholding", "io[4].sim", "expected a number for ai"),
    ("tokens-not-strings", lambda d: sub(d / "config.toml", "viewer_tokens = []", "viewer_tokens = [1, 2]"),
     ParseError, "config.toml", "grpc", "viewer_tokens", "expected array of string"),
    # ---- AxisIdMismatch / DuplicateAxisId / NoAxesDefined / FileNotFound
    ("axis-id-mismatch", lambda d: sub(d / "axis_02_y.toml", "id = 2", "id = 5"),
     AxisIdMismatch, "axis_02_y.toml", "axis", "id", "expected 2"),
    ("duplicate-axis-id", lambda d: shutil.copy(d / "axis_02_y.toml", d / "axis_02_y2.toml"),
     DuplicateAxisId, "axis_02_y2.toml", None, None, "axis_02_y.toml"),
    ("no-axes", lambda d: [p.unlink() for p in d.glob("axis_*.toml")],
     NoAxesDefined, "axis_NN_*.toml", None, None, "no axis_NN_name.toml"),
    ("missing-io-file", lambda d: (d / "io.toml").unlink(),
     FileNotFound, "io.toml", None, None, "missing mandatory file"),
    ("missing-config-file", lambda d: (d / "config.toml").unlink(),
     FileNotFound, "config.toml", None, None, "missing mandatory file"),
    # ---- ValidationError
    ("kp-negative", lambda d: sub(d / "axis_03_z.toml", "kp = 50.0", "kp = -1.0"),
     ValidationError, "axis_03_z.toml", "control", "kp", "-1.0 out of range [0, 1e6]"),
    ("max-velocity-zero", lambda d: sub(d / "axis_01_x.toml", "max_velocity = 500.0", "max_velocity = 0.0"),
     ValidationError, "axis_01_x.toml", "kinematics", "max_velocity", "out of range (0,"),
    ("min-pos-ge-max-pos", lambda d: sub(d / "axis_01_x.toml", "max_pos = 600.0", "max_pos = -5.0"),
     ValidationError, "axis_01_x.toml", "kinematics", "max_pos", "greater than min_pos"),
    ("reduced-speed-above-max", lambda d: sub(d / "axis_02_y.toml", "safe_reduced_speed_limit = 50.0",
                                              "safe_reduced_speed_limit = 900.0"),
     ValidationError, "axis_02_y.toml", "kinematics", "safe_reduced_speed_limit", "exceeds max_velocity"),
    ("bad-lag-policy", lambda d: sub(d / "axis_01_x.toml", 'lag_policy = "Unwanted"', 'lag_policy = "Sometimes"'),
     ValidationError, "axis_01_x.toml", "control", "lag_policy", "'Sometimes' is not one of"),
    ("bad-safe-stop", lambda d: sub(d / "machine.toml", 'default_safe_stop = "SS1"', 'default_safe_stop = "SS3"'),
     ValidationError, "machine.toml", "global_safety", "default_safe_stop", "'SS3' is not one of"),
    ("bad-axis-type", lambda d: sub(d / "axis_01_x.toml", 'type = "linear"', 'type = "linar"'),
     ValidationError, "axis_01_x.toml", "axis", "type", "'linar'"),
    ("axis-number-out-of-range", lambda d: shutil.copy(d / "axis_01_x.toml", d / "axis_65_w.toml"),
     ValidationError, "axis_65_w.toml", None, None, "out of range [01, 64]"),
    ("axis-file-bad-name", lambda d: shutil.copy(d / "axis_01_x.toml", d / "axis_1_x.toml"),
     ValidationError, "axis_1_x.toml", None, None, "axis_NN_name.toml"),
    ("coupling-master-missing", lambda d: append(d / "axis_02_y.toml", "[coupling]\nmaster_axis = 9\nmax_sync_error = 0.5"),
     ValidationError, "axis_02_y.toml", "coupling", "master_axis", "axis 9 does not exist"),
    ("coupling-master-self", lambda d: append(d / "axis_02_y.toml", "[coupling]\nmaster_axis = 2\nmax_sync_error = 0.5"),
     ValidationError, "axis_02_y.toml", "coupling", "master_axis", "its own master"),
    ("coupling-cycle", lambda d: (append(d / "axis_01_x.toml", "[coupling]\nmaster_axis = 2\nmax_sync_error = 0.5"),
                                  append(d / "axis_02_y.toml", "[coupling]\nmaster_axis = 1\nmax_sync_error = 0.5")),
     ValidationError, "axis_01_x.toml", "coupling", "master_axis", "coupling cycle"),
    ("tailstock-axis-unknown", lambda d: append(d / "axis_03_z.toml", '[tailstock]\ncoupled_axis = 7\nclamp_role = "BrakeOut3"'),
     ValidationError, "axis_03_z.toml", "tailstock", "coupled_axis", "axis 7 does not exist"),
    ("homing-speed-too-fast", lambda d: sub(d / "axis_01_x.toml", "speed = 20.0", "speed = 2000.0"),
     ValidationError, "axis_01_x.toml", "homing", "speed", "exceeds [kinematics] max_velocity"),
    ("ss2-torque-above-out-max", lambda d: sub(d / "axis_01_x.toml", "ss2_holding_torque = 0.0", "ss2_holding_torque = 150.0"),
     ValidationError, "axis_01_x.toml", "safe_stop", "ss2_holding_torque", "exceeds [control] out_max"),
    ("notch-without-bandwidth", lambda d: sub(d / "axis_01_x.toml", "f_notch = 0.0", "f_notch = 100.0"),
     ValidationError, "axis_01_x.toml", "control", "bw_notch", "must be > 0"),
    ("bypass-axis-unknown", lambda d: sub(d / "machine.toml", "bypass_axes = [1, 2, 3]", "bypass_axes = [1, 2, 7]"),
     ValidationError, "machine.toml", "service_bypass", "bypass_axes", "[7]"),
    ("bypass-axis-out-of-range", lambda d: sub(d / "machine.toml", "bypass_axes = [1, 2, 3]", "bypass_axes = [0, 1]"),
     ValidationError, "machine.toml", "service_bypass", "bypass_axes", "out of range [1, 64]"),
    ("watchdog-restarts-bound", lambda d: sub(d / "config.toml", "max_restarts = 5", "max_restarts = 100000"),
     ValidationError, "config.toml", "watchdog", "max_restarts", "out of range [0, 1000]"),
    ("cycle-time-bound", lambda d: sub(d / "config.toml", "cycle_time_us = 1000\ndriver", "cycle_time_us = 10\ndriver"),
     ValidationError, "config.toml", "hal", "cycle_time_us", "out of range"),
    ("rt-priority-bound", lambda d: sub(d / "config.toml", "rt_priority = 40\ncpu = -1\nhal_attach", "rt_priority = 100\ncpu = -1\nhal_attach"),
     ValidationError, "config.toml", "cu", "rt_priority", "out of range [0, 99]"),
    ("mqtt-tls-half", lambda d: sub(d / "config.toml", 'tls_ca = ""\ntls_cert = ""', 'tls_ca = ""\ntls_cert = "/x.pem"'),
     ValidationError, "config.toml", "mqtt", "tls_key", "go together"),
    ("mqtt-base-topic-wildcard", lambda d: sub(d / "config.toml", 'base_topic = "evo"', 'base_topic = "evo/#"'),
     ValidationError, "config.toml", "mqtt", "base_topic", "wildcards"),
    ("di-pin-out-of-range", lambda d: sub(d / "io.toml", "role=\"Reset\", pin=3,", "role=\"Reset\", pin=1024,"),
     ValidationError, "io.toml", "Safety", "io[3].pin", "1024 out of range [0, 1023]"),
    ("duplicate-di-pin", lambda d: sub(d / "io.toml", "role=\"Reset\", pin=3,", "role=\"Reset\", pin=2,"),
     ValidationError, "io.toml", "Safety", "io[3].pin", "di pin 2 already used"),
    ("duplicate-role", lambda d: sub(d / "io.toml", 'role="LimitMax1"', 'role="LimitMin1"'),
     ValidationError, "io.toml", "Axes", "io[1].role", "role 'LimitMin1' already assigned"),
    ("enable-pin-not-di", lambda d: sub(d / "io.toml", 'role="Reset", pin=3,', 'role="Reset", pin=3, enable_pin=700,'),
     ValidationError, "io.toml", "Safety", "io[3].enable_pin", "700 is not a di pin"),
    ("enable-state-without-pin", lambda d: sub(d / "io.toml", 'role="Reset", pin=3,', 'role="Reset", pin=3, enable_state=false,'),
     ValidationError, "io.toml", "Safety", "io[3].enable_state", "only valid together with enable_pin"),
    ("average-zero", lambda d: sub(d / "io.toml", "average=10", "average=0"),
     ValidationError, "io.toml", "Workholding", "io[4].average", "0 out of range [1, 1000]"),
    ("average-too-big", lambda d: sub(d / "io.toml", "average=10", "average=1001"),
     ValidationError, "io.toml", "Workholding", "io[4].average", "1001 out of range [1, 1000]"),
    ("ai-min-ge-max", lambda d: sub(d / "io.toml", "min=0.0, max=10.0", "min=10.0, max=10.0"),
     ValidationError, "io.toml", "Workholding", "io[4].max", "must be greater than min"),
    ("ao-init-outside-range", lambda d: sub(d / "io.toml", "init=0.0, name=\"Spindle speed", "init=7000.0, name=\"Spindle speed"),
     ValidationError, "io.toml", "Spindle", "io[0].init", "outside [min, max]"),
    ("curve-not-monotonic", lambda d: sub(d / "io.toml", "curve=[0.0, 0.2, 0.8]", "curve=[0.0, -2.0, 1.0]"),
     ValidationError, "io.toml", "Workholding", "io[4].curve", "not strictly monotonic"),
    ("curve-bad-preset", lambda d: sub(d / "io.toml", "curve=[0.0, 0.2, 0.8]", 'curve="sqrt"'),
     ValidationError, "io.toml", "Workholding", "io[4].curve", "'sqrt' is not one of"),
    ("io-bad-type", lambda d: sub(d / "io.toml", '{ type="do", pin=10, name="Clamp valve" }', '{ type="dio", pin=10 }'),
     ValidationError, "io.toml", "Workholding", "io[0].type", "'dio' is not one of"),
    ("bad-role-name", lambda d: sub(d / "io.toml", 'role="Reset"', 'role="Re set"'),
     ValidationError, "io.toml", "Safety", "io[3].role", "not a role name"),
    # ---- roles (cross-file)
    ("role-missing", lambda d: sub(d / "io.toml", '{ type="di", role="BrakeIn3", pin=30, debounce=10, sim=false, name="Z brake released" },', ""),
     RoleMissing, "axis_03_z.toml", "brake", "di_released", "role 'BrakeIn3' (di) is not defined"),
    ("role-type-mismatch", lambda d: sub(d / "axis_03_z.toml", 'di_released = "BrakeIn3"', 'di_released = "BrakeOut3"'),
     RoleTypeMismatch, "axis_03_z.toml", "brake", "di_released", "must be a di"),
    ("guard-role-missing", lambda d: sub(d / "axis_01_x.toml", 'di_guard = "GuardClosed"', 'di_guard = "GuardClosed1"'),
     RoleMissing, "axis_01_x.toml", "guard", "di_guard", "'GuardClosed1'"),
    ("conventional-role-wrong-type", lambda d: sub(d / "io.toml", '{ type="do", pin=20, name="Lamp green (running)" }',
                                                   '{ type="do", pin=20, role="EStopReset", name="Lamp green (running)" }'),
     RoleTypeMismatch, "io.toml", "Panel", "io[1].role", "di role by convention"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_config_is_refused(cfgdir: Path, case) -> None:
    _id, mutate, cls, file, section, fld, text = case
    mutate(cfgdir)
    with pytest.raises(cls) as ei:
        load_config(cfgdir)
    e = ei.value
    assert type(e) is cls, f"{type(e).__name__}: {e}"
    assert e.file == file, str(e)
    if section is not None:
        assert e.section == section, str(e)
    if fld is not None:
        assert e.field == fld, str(e)
        assert fld.rpartition(".")[2] in e.message, e.message
    assert file in e.message, e.message
    assert text in e.message, e.message
    assert len(e.errors) == 1, str(e)  # no cascade of follow-up errors
    assert e.errors[0] is e


def test_toml_syntax_error_carries_line(cfgdir: Path) -> None:
    sub(cfgdir / "axis_02_y.toml", "kp = 40.0", "kp = = 40.0")
    with pytest.raises(ParseError) as ei:
        load_config(cfgdir)
    lineno = next(i for i, ln in enumerate((cfgdir / "axis_02_y.toml").read_text().splitlines(), 1)
                  if ln.startswith("kp = ="))
    assert ei.value.line == lineno
    assert f"line {lineno}" in str(ei.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFound) as ei:
        load_config(tmp_path / "absent")
    assert "absent" in str(ei.value)


def test_all_errors_are_collected(cfgdir: Path) -> None:
    sub(cfgdir / "axis_01_x.toml", 'name = "X"', 'name = "X"\ncolour = "red"')
    sub(cfgdir / "axis_03_z.toml", "kp = 50.0", "kp = -1.0")
    sub(cfgdir / "io.toml", "average=10", "average=0")
    sub(cfgdir / "config.toml", "max_restarts = 5", "max_restarts = -1")
    with pytest.raises(ConfigError) as ei:
        load_config(cfgdir)
    e = ei.value
    kinds = [(type(x).__name__, x.file, x.field) for x in e.errors]
    assert kinds == [
        ("ValidationError", "config.toml", "max_restarts"),
        ("ValidationError", "io.toml", "io[4].average"),
        ("UnknownField", "axis_01_x.toml", "colour"),
        ("ValidationError", "axis_03_z.toml", "kp"),
    ]
    assert isinstance(e, ValidationError)  # the first one's class
    text = str(e)
    assert text.startswith("4 configuration errors")
    assert (e.file, e.field) == ("config.toml", "max_restarts")  # the first one's location
    for x in e.errors:
        assert x.message in text
        assert str(x) == x.message and x.errors == [x]  # each listed error shows only itself


def test_unknown_field_first_in_a_file_is_the_raised_class(cfgdir: Path) -> None:
    sub(cfgdir / "machine.toml", 'name = "Evo Demo Gantry"', 'axes = 3')
    with pytest.raises(UnknownField) as ei:
        load_config(cfgdir)
    assert ei.value.message.startswith("machine.toml [machine]: unknown field 'axes'")
    assert any(isinstance(x, ParseError) and x.field == "name" for x in ei.value.errors)


def test_check_roles_false_is_a_format_check(cfgdir: Path) -> None:
    sub(cfgdir / "axis_03_z.toml", 'di_released = "BrakeIn3"', 'di_released = "NoSuchRole9"')
    with pytest.raises(RoleMissing):
        load_config(cfgdir)
    cfg = load_config(cfgdir, check_roles=False)
    assert cfg.axis(3).brake.di_released == "NoSuchRole9"


def test_reloading_after_fix_works(cfgdir: Path) -> None:
    sub(cfgdir / "axis_03_z.toml", "kp = 50.0", "kp = -1.0")
    with pytest.raises(ValidationError):
        load_config(cfgdir)
    sub(cfgdir / "axis_03_z.toml", "kp = -1.0", "kp = 50.0")
    assert load_config(cfgdir).axis(3).control.kp == 50.0
