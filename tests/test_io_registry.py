"""IoRegistry and AnalogCurve: NC/NO inversion, inverted DO, bit layout, AI/AO scaling, roles.

Registries are built from real io.toml files written to tmp_path (and from the default config/).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from common.config import (
    PACKAGED_CONFIG_DIR,
    AnalogCurve,
    IoRegistry,
    IoType,
    RoleMissing,
    RoleTypeMismatch,
    ValidationError,
    load_config,
    load_io,
)
from common.config import roles as R

IO_TOML = """
[Test]
name = "registry test points"
io = [
    { type="di", role="EStop", pin=0, logic="NC" },
    { type="di", role="Ref1", pin=1 },
    { type="di", role="LimitMax2", pin=130, logic="NC" },
    { type="di", pin=700, logic="NC", name="free NC input" },
    { type="do", role="BrakeOut1", pin=5 },
    { type="do", role="DoorLock", pin=66, inverted=true },
    { type="do", pin=1023, inverted=true, name="free inverted output" },
    { type="ai", role="Pressure", pin=3, min=0.0, max=10.0, unit="bar" },
    { type="ai", pin=4, min=-20.0, max=120.0, curve=[0.2, 0.0, 0.8], offset=0.5, name="load cell" },
    { type="ao", role="SpindleRef", pin=7, min=0.0, max=6000.0, unit="rpm" },
]
"""


@pytest.fixture
def reg(tmp_path: Path) -> IoRegistry:
    p = tmp_path / "io.toml"
    p.write_text(IO_TOML)
    return IoRegistry(load_io(p))


def banks() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros(16, np.uint64), np.zeros(16, np.uint64), np.zeros(1024, np.float64),
            np.zeros(1024, np.float64))


def set_bit(bank: np.ndarray, pin: int, v: bool) -> None:
    w, b = divmod(pin, 64)
    if v:
        bank[w] |= np.uint64(1 << b)
    else:
        bank[w] &= ~np.uint64(1 << b)


def get_bit(bank: np.ndarray, pin: int) -> bool:
    w, b = divmod(pin, 64)
    return bool((int(bank[w]) >> b) & 1)


def test_nc_and_no_inversion(reg: IoRegistry) -> None:
    di, *_ = banks()
    # physical 0 everywhere: NC contacts read active (pressed / wire cut), NO inactive
    assert reg.read_di("EStop", di) is True
    assert reg.read_di("LimitMax2", di) is True
    assert reg.read_di("Ref1", di) is False
    set_bit(di, 0, True)
    set_bit(di, 130, True)
    set_bit(di, 1, True)
    assert reg.read_di("EStop", di) is False
    assert reg.read_di("LimitMax2", di) is False
    assert reg.read_di("Ref1", di) is True
    # pin 130 is bit 2 of word 2
    assert int(di[2]) == 1 << 2


def test_logical_bank_vectorised_matches_per_pin(reg: IoRegistry) -> None:
    rng = np.random.default_rng(1)
    di = rng.integers(0, 2**63, size=16, dtype=np.uint64)
    logical = reg.di_logical(di)
    for pin in (0, 1, 130, 700, 999):
        assert get_bit(logical, pin) == reg.read_di_pin(pin, di)
    assert reg.read_di_pin(700, di) == (not get_bit(di, 700))
    assert reg.read_di("EStop", di) == get_bit(logical, 0)


def test_do_plain_and_inverted(reg: IoRegistry) -> None:
    _, do, *_ = banks()
    reg.write_do("BrakeOut1", True, do)
    assert get_bit(do, 5) and reg.read_do("BrakeOut1", do) is True
    reg.write_do("BrakeOut1", False, do)
    assert not get_bit(do, 5)
    # inverted: logical True drives the pin low; pin 66 = bit 2 of word 1
    set_bit(do, 66, True)
    reg.write_do("DoorLock", True, do)
    assert not get_bit(do, 66) and reg.read_do("DoorLock", do) is True
    reg.write_do("DoorLock", False, do)
    assert get_bit(do, 66) and int(do[1]) == 1 << 2
    # role-less inverted pin through the pin API
    reg.write_do_pin(1023, True, do)
    assert not get_bit(do, 1023)
    reg.write_do_pin(1023, False, do)
    assert get_bit(do, 1023) and int(do[15]) == 1 << 63
    # other bits untouched
    assert get_bit(do, 66)
    assert np.array_equal(reg.do_inverted_mask != 0, np.array([0, 1] + [0] * 13 + [1], bool))


def test_analog_roles(reg: IoRegistry) -> None:
    *_, ai, ao = banks()
    ai[3] = 6.25
    assert reg.read_ai("Pressure", ai) == 6.25
    assert reg.write_ao("SpindleRef", 1500.0, ao) == 1500.0 and ao[7] == 1500.0
    assert reg.write_ao("SpindleRef", 9999.0, ao) == 6000.0 and ao[7] == 6000.0  # clamped
    assert reg.write_ao("SpindleRef", -5.0, ao) == 0.0


def test_role_lookup(reg: IoRegistry) -> None:
    assert reg.has("EStop") and not reg.has("Nope")
    p = reg.pin("DoorLock")
    assert (p.type, p.pin, p.inverted) == (IoType.DO, 66, True)
    assert reg.role_of(IoType.DI, 0) == "EStop"
    assert reg.role_of("do", 66) == "DoorLock"
    assert reg.role_of(IoType.DI, 700) is None
    assert reg.role_of(IoType.DO, 0) is None  # DI 0 has a role, DO 0 does not exist
    assert reg.is_role_pin(IoType.DO, 5) and reg.is_role_pin("ao", 7)
    assert not reg.is_role_pin(IoType.DO, 1023) and not reg.is_role_pin(IoType.AI, 4)
    assert not reg.is_role_pin(IoType.DI, 5)
    assert reg.roles_of(IoType.DO) == ("BrakeOut1", "DoorLock")
    assert get_bit(reg.do_role_mask, 66) and not get_bit(reg.do_role_mask, 1023)
    assert reg.ao_role_pins[7] and not reg.ai_role_pins[4]


def test_missing_and_mistyped_roles(reg: IoRegistry) -> None:
    di, do, ai, ao = banks()
    with pytest.raises(RoleMissing) as ei:
        reg.pin("Nope")
    assert isinstance(ei.value, KeyError) and "'Nope'" in str(ei.value)
    with pytest.raises(RoleMissing):
        reg.read_di("Nope", di)
    with pytest.raises(RoleTypeMismatch):
        reg.read_di("BrakeOut1", di)
    with pytest.raises(RoleTypeMismatch):
        reg.write_do("EStop", True, do)
    with pytest.raises(RoleTypeMismatch):
        reg.read_ai("SpindleRef", ai)
    with pytest.raises(RoleTypeMismatch):
        reg.write_ao("Pressure", 1.0, ao)


def test_required_roles_of_default_axes() -> None:
    cfg = load_config(PACKAGED_CONFIG_DIR)
    reqs = IoRegistry.required_roles(cfg.axes)
    got = {(r.role, r.type, r.file, r.section, r.field) for r in reqs}
    assert ("BrakeOut3", IoType.DO, "axis_03_z.toml", "brake", "do_brake") in got
    assert ("BrakeIn3", IoType.DI, "axis_03_z.toml", "brake", "di_released") in got
    assert {r.role for r in reqs} == {"BrakeOut3", "BrakeIn3", "GuardClosed"}
    assert cfg.io_registry.check(cfg.axes) == []


def test_role_conventions() -> None:
    assert R.convention_type("EStop") is IoType.DI
    assert R.convention_type(R.limit_min(3)) is IoType.DI
    assert R.convention_type(R.ref(12)) is IoType.DI
    assert R.convention_type(R.brake_out(1)) is IoType.DO
    assert R.convention_type(R.brake_in(1)) is IoType.DI
    assert R.convention_type(R.guard_closed()) is IoType.DI
    assert R.convention_type(R.guard_closed(3)) is IoType.DI
    assert R.convention_type("TailClosed3") is None  # typed by the axis field naming it
    assert R.convention_type("EStopX") is None


# --- AnalogCurve ------------------------------------------------------------------------------

@pytest.mark.parametrize("curve", ["linear", "quadratic", "cubic", (0.2, 0.0, 0.8),
                                   (1.0, -1.0, 1.0), (0.0, 0.0, -1.0)])
def test_curve_round_trip(curve) -> None:
    c = AnalogCurve.make(curve, -20.0, 120.0, 0.5)
    assert c.is_monotonic()
    n = np.linspace(0.0, 1.0, 101)
    eng = c.to_engineering(n)
    back = c.from_engineering(eng)
    assert np.allclose(back, n, atol=1e-9)
    for x in (0.0, 0.3, 0.77, 1.0):
        assert c.from_engineering(c.to_engineering(x)) == pytest.approx(x, abs=1e-9)
        assert isinstance(c.from_engineering(c.to_engineering(x)), float)


def test_curve_values() -> None:
    lin = AnalogCurve.make("linear", 0.0, 10.0)
    assert lin.to_engineering(0.5) == 5.0
    quad = AnalogCurve.make("quadratic", 0.0, 10.0)
    assert quad.to_engineering(0.5) == 2.5
    cub = AnalogCurve.make("cubic", 0.0, 8.0, offset=1.0)
    assert cub.to_engineering(0.5) == 2.0
    # upstream example: f(n) = 0.2 n^3 + 0.8 n + offset on a 0..1 range
    c = AnalogCurve.make((0.2, 0.0, 0.8), 0.0, 1.0, 0.05)
    assert c.to_engineering(0.5) == pytest.approx(0.2 * 0.125 + 0.4 + 0.05)
    # inverse clamps values beyond the range
    assert lin.from_engineering(50.0) == 1.0 and lin.from_engineering(-3.0) == 0.0


def test_non_monotonic_curves() -> None:
    assert not AnalogCurve.make((0.0, -2.0, 1.0)).is_monotonic()  # peak at n = 0.25
    assert not AnalogCurve.make((4.0, -6.0, 2.5)).is_monotonic()  # dips inside 0..1
    assert not AnalogCurve.make((0.0, 0.0, 0.0)).is_monotonic()  # constant
    assert AnalogCurve.make((1.0, 0.0, 0.0)).is_monotonic()  # n^3: slope 0 only at 0


def test_non_monotonic_curve_rejected_naming_the_point(tmp_path: Path) -> None:
    p = tmp_path / "io.toml"
    p.write_text(textwrap.dedent("""
        [Sensors]
        io = [
            { type="ai", pin=0, max=10.0 },
            { type="ai", pin=1, max=10.0, curve=[4.0, -6.0, 2.5], name="weird" },
        ]
    """))
    with pytest.raises(ValidationError) as ei:
        load_io(p)
    e = ei.value
    assert (e.file, e.section, e.field) == ("io.toml", "Sensors", "io[1].curve")
    assert "io[1].curve" in str(e) and "monotonic" in str(e)


def test_point_curve_uses_point_range() -> None:
    cfg = load_config(PACKAGED_CONFIG_DIR)
    air = cfg.io.point("ai", 0)
    assert air.curve.coefficients == (0.0, 0.2, 0.8) and air.unit == "bar"
    assert air.to_engineering(1.0) == pytest.approx(10.0)
    assert air.to_engineering(0.0) == 0.0
    assert air.from_engineering(6.0) == pytest.approx(
        AnalogCurve(0.0, 0.2, 0.8, 0.0, 10.0).from_engineering(6.0))
    assert air.to_engineering(air.from_engineering(6.0)) == pytest.approx(6.0)


def test_sim_values_di_numbers_are_physical_bools(tmp_path: Path) -> None:
    p = tmp_path / "io.toml"
    p.write_text('[G]\nio = [ { type="di", pin=0, logic="NC", sim=1.0 }, { type="di", pin=1, sim=0 },'
                 ' { type="ai", pin=0, max=5.0, sim=2 } ]\n')
    io = load_io(p)
    assert io.point("di", 0).sim is True and io.point("di", 1).sim is False
    assert io.point("ai", 0).sim == 2.0 and isinstance(io.point("ai", 0).sim, float)


def test_bit_layout_matches_shm_io_helpers(reg: IoRegistry) -> None:
    ioh = pytest.importorskip("common.shm.io_helpers")
    di, do, *_ = banks()
    ioh.set_bit(di, 130, True)
    assert reg.read_di("LimitMax2", di) is False  # NC, circuit closed
    reg.write_do("DoorLock", False, do)  # inverted -> physical 1
    reg.write_do("BrakeOut1", True, do)
    assert ioh.get_bit(do, 66) and ioh.get_bit(do, 5)
    assert ioh.unpack_bank(do).nonzero()[0].tolist() == [5, 66]
