"""In-process checks of the HAL's parts against their documented formulas, with exact clocks.

IoProcessor (all io.toml semantics), the sim plant, the state file, the driver registry, injection.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.config import AnalogCurve, load_config
from common.states import DriverState
from hal.drivers import registry
from hal.drivers.base import DriverError, DriverIO
from hal.drivers.sim import SimDriver
from hal.drivers.sim_inject import InjectionError, parse_injection
from hal.io import IoProcessor
from hal.state_file import StateWriter, load_state, write_atomic
from hal.synthetic_config import axis_toml, write_config

MS = 1_000_000

IO = """
[P]
io = [
    { type="di", role="EStop", pin=0, logic="NC", debounce=0, sim=true },
    { type="di", pin=1, debounce=10 },
    { type="di", pin=2, logic="NC", debounce=0 },
    { type="di", pin=3, debounce=0, enable_pin=4, enable_timeout=50 },
    { type="di", pin=4, debounce=0 },
    { type="di", pin=5, debounce=0, enable_pin=6, enable_state=false },
    { type="di", pin=6, debounce=0 },
    { type="di", role="LimitMax1", pin=10, logic="NC", debounce=0 },
    { type="di", role="Ref2", pin=11, debounce=0 },
    { type="ai", pin=0, max=10.0, average=4 },
    { type="ai", pin=1, min=-5.0, max=5.0, average=1, curve="quadratic", offset=0.25 },
    { type="ai", pin=2, max=100.0, average=1, curve=[0.2, 0.0, 0.8], offset=1.0 },
    { type="ai", pin=3, min=1.0, max=3.0, average=1, curve="cubic" },
    { type="do", pin=0, role="BrakeOut1", init=true },
    { type="do", pin=1, role="DoorLock", pulse=20 },
    { type="do", pin=2, init=true, inverted=true },
    { type="do", pin=3, pulse=30 },
    { type="do", pin=4, keep_estop=true },
    { type="do", pin=5 },
    { type="ao", pin=0, max=10.0, init=3.0, pulse=40 },
    { type="ao", pin=1, role="Speed", min=-1.0, max=1.0, curve=[0.2, 0.0, 0.8] },
    { type="ao", pin=2, min=2.0, max=4.0, init=3.0, curve="quadratic", offset=0.5 },
]
"""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    d = write_config(tmp_path_factory.mktemp("units") / "cfg", axes=2, io=IO,
                     axis_files={1: axis_toml(1, brake=False), 2: axis_toml(2, rotary=True)})
    return load_config(d)


def proc_for(cfg) -> IoProcessor:
    return IoProcessor(cfg.io, cfg.io_registry, ["BrakeOut1"])


class Clock:
    def __init__(self, proc: IoProcessor) -> None:
        self.proc = proc
        self.di = np.zeros(1024, bool)
        self.di[0] = True  # E-stop circuit closed
        self.ai = np.zeros(1024)
        self.t = 0

    def at(self, ms: float) -> IoProcessor:
        self.t = int(ms * MS)
        self.proc.inputs(self.di, self.ai, self.t)
        return self.proc


def logical(proc: IoProcessor, pin: int) -> bool:
    return proc.registry.read_di_pin(pin, proc.di_bank)


def test_nc_no_and_debounce_timing(cfg):
    p = proc_for(cfg)
    c = Clock(p)
    c.at(0)
    assert logical(p, 2) is True and logical(p, 0) is False  # NC open wire = active; E-stop closed
    c.di[1] = True
    c.at(1)
    assert not logical(p, 1)
    c.at(10.9)
    assert not logical(p, 1)
    c.at(11)
    assert logical(p, 1)  # stable for the debounce time (10 ms)
    c.di[1] = False
    c.at(12)
    c.di[1] = True
    c.at(15)  # a 3 ms drop: filtered
    c.at(40)
    assert logical(p, 1)


def test_enable_pin_window_and_state(cfg):
    p = proc_for(cfg)
    c = Clock(p)
    c.at(0)
    c.di[4] = True
    c.at(1)
    c.di[3] = True
    c.at(50)  # 49 ms later: inside the 50 ms window
    assert logical(p, 3)
    c.di[4] = False
    c.at(60)
    assert not logical(p, 3)  # one hand released
    c.di[4] = True
    c.at(200)  # pin 3 held since 50 ms: 150 ms apart
    assert not logical(p, 3)
    c.di[3] = c.di[4] = False
    c.at(210)
    c.di[3] = c.di[4] = True
    c.at(220)
    assert logical(p, 3)  # re-armed
    c.di[5] = True
    c.at(230)
    assert logical(p, 5)  # enable_state=false and pin 6 off
    c.di[6] = True
    c.at(231)
    assert not logical(p, 5)


def test_analog_curves_offset_and_average(cfg):
    p = proc_for(cfg)
    c = Clock(p)
    c.at(0)
    c.ai[0] = 1.0
    seen = [float(c.at(t).ai_values[0]) for t in (1, 2, 3, 4, 5)]
    assert seen == pytest.approx([2.5, 5.0, 7.5, 10.0, 10.0])  # 4-sample moving average
    c.ai[0] = math.nan
    assert c.at(6).ai_values[0] == pytest.approx(10.0)  # a bad sample repeats the last good one
    n = np.linspace(0.0, 1.0, 11)
    for pin in (1, 2, 3):
        point = cfg.io.point("ai", pin)
        for x in n:
            c.ai[pin] = x
            c.at(c.t / MS + 1)
            assert p.ai_values[pin] == pytest.approx(point.curve.to_engineering(x)), (pin, x)


def test_ao_curves_inverse_matches_to_engineering():
    from hal.io import _Curves

    class P:
        def __init__(self, pin, curve):
            self.pin, self.curve = pin, curve

    pts = [P(0, AnalogCurve.make("linear", -2, 8, 0.5)), P(1, AnalogCurve.make("quadratic", 0, 10, 0.0)),
           P(2, AnalogCurve.make("cubic", 1, 3, -0.25)), P(3, AnalogCurve.make((0.2, 0.0, 0.8), 0, 100, 1.0)),
           P(4, AnalogCurve.make((-0.5, 0.3, 1.2), -1, 1, 0.0))]
    curves = _Curves(pts, 8)
    rng = np.random.default_rng(1)
    for p in pts:
        lo, hi = sorted((p.curve.to_engineering(0.0), p.curve.to_engineering(1.0)))
        values = rng.uniform(lo, hi, 50)
        n = curves.normalise(np.full(50, p.pin), values)
        assert p.curve.to_engineering(n) == pytest.approx(values, abs=1e-9)
        assert n == pytest.approx(p.curve.from_engineering(values), abs=1e-9)


def on(bank_words: np.ndarray) -> list[int]:
    return list(np.flatnonzero(np.unpackbits(bank_words.view(np.uint8), bitorder="little")))


def bank(*pins: int) -> np.ndarray:
    b = np.zeros(16, np.uint64)
    for pin in pins:
        b[pin // 64] |= np.uint64(1 << (pin % 64))
    return b


def test_digital_outputs_merge_pulse_estop_and_safe_state(cfg):
    p = proc_for(cfg)
    ao = np.zeros(1024)
    p.outputs(None, None, 0, False)  # no CU: init values, brake forced engaged
    assert on(p.do_out) == [2]
    assert 2 not in on(p.do_bank)  # init true, inverted: physical off
    p.outputs(bank(0, 1, 5), ao, 1 * MS, True)  # CU: BrakeOut1 + DoorLock on; pin 5 is role-less
    assert on(p.do_out) == [0, 1, 2]
    p.set_do(5, True, 1 * MS)
    p.set_do(3, True, 1 * MS)
    p.set_do(4, True, 1 * MS)
    p.outputs(bank(0, 1, 5), ao, 2 * MS, True)
    assert on(p.do_out) == [0, 1, 2, 3, 4, 5]
    p.outputs(bank(0, 1, 5), ao, 30 * MS, False)  # DoorLock not refreshed for 29 ms > pulse 20
    assert on(p.do_out) == [0, 2, 3, 4, 5]
    p.outputs(bank(0, 1, 5), ao, 31 * MS, False)
    assert on(p.do_out) == [0, 2, 4, 5] and not p.do_value[3]  # role-less pulse=30 ran out
    p.outputs(bank(0, 1, 5), ao, 32 * MS, True)  # a fresh CU frame refreshes DoorLock
    assert on(p.do_out) == [0, 1, 2, 4, 5]
    # E-stop: everything off except keep_estop; stored role-less values are reset
    c = Clock(p)
    c.di[0] = False
    c.at(33)
    p.outputs(bank(0, 1, 5), ao, 33 * MS, True)
    assert on(p.do_out) == [4]
    c.di[0] = True
    c.at(34)
    p.outputs(bank(0, 1, 5), ao, 34 * MS, True)
    assert on(p.do_out) == [0, 1, 4]  # CU pins back, role-less stay off
    p.outputs(None, None, 35 * MS, False)  # CU gone: init, keep_estop keeps its value, brake off
    assert on(p.do_out) == [2, 4]
    assert on(p.do_bank) == [4]  # physical: pin 2 inverted -> 0


def test_analog_outputs_pulse_clamp_and_safe_state(cfg):
    p = proc_for(cfg)
    ao = np.zeros(1024)
    p.outputs(None, None, 0, False)
    assert list(p.ao_values[:3]) == [3.0, 0.0, 3.0]
    ao[1] = 5.0  # role pin: clamped to max 1.0
    ao[0] = 9.0  # role-less: the CU's value is ignored
    p.outputs(bank(), ao, 1 * MS, True)
    assert list(p.ao_values[:3]) == [3.0, 1.0, 3.0]
    ao[1] = math.nan
    p.outputs(bank(), ao, 2 * MS, True)
    assert p.ao_values[1] == 1.0  # a non-finite value keeps the last one
    p.set_ao(0, 7.0, 2 * MS)
    p.outputs(bank(), ao, 3 * MS, True)
    assert p.ao_values[0] == 7.0
    p.outputs(bank(), ao, 42 * MS, True)
    assert p.ao_values[0] == 0.0  # pulse=40 without refresh -> 0
    p.outputs(None, None, 43 * MS, False)
    assert list(p.ao_values[:3]) == [3.0, 0.0, 3.0]
    p.set_ao(0, 6.5, 44 * MS)
    p.outputs(None, None, 45 * MS, False)  # safe state: back to init
    p.outputs(bank(), ao, 46 * MS, True)
    p.set_ao(0, 6.5, 46 * MS)
    p.outputs(bank(), ao, 47 * MS, True)
    for pin in (0, 1, 2):
        point = cfg.io.point("ao", pin)
        assert point.curve.to_engineering(p.ao_norm[pin]) == pytest.approx(p.ao_values[pin])


# --- the simulated plant --------------------------------------------------------------------------

@pytest.fixture
def sim(cfg):
    d = SimDriver(cfg, {})
    io = DriverIO()
    d.open(io)
    return d, io


def run(d: SimDriver, io: DriverIO, t0: int, ms: int) -> int:
    for k in range(1, ms + 1):
        d.cycle(io, t0 + k * MS, 0.001)
    return t0 + ms * MS


def test_drive_ready_delay_and_fault_latch(sim):
    d, io = sim
    io.enable[0] = True  # seen by the cycle at 1 ms: ready 200 ms later
    t = run(d, io, 0, 200)
    assert not io.drive_ready[0] and io.axis_state[0] == DriverState.INIT
    t = run(d, io, t, 1)
    assert io.drive_ready[0] and io.axis_state[0] == DriverState.ENABLED
    d._injection.drive_fault[0] = True
    d._injection.summarise()
    t = run(d, io, t, 1)
    assert io.drive_fault[0] and not io.drive_ready[0] and io.axis_state[0] == DriverState.FAULT
    d._injection.drive_fault[0] = False
    d._injection.summarise()
    t = run(d, io, t, 5)
    assert io.drive_fault[0]  # latched while enabled
    io.enable[0] = False
    t = run(d, io, t, 1)
    assert not io.drive_fault[0] and io.axis_state[0] == DriverState.READY


def test_plant_friction_terminal_velocity_and_hard_stop(sim, cfg):
    d, io = sim
    io.enable[0] = True
    t = run(d, io, 0, 201)
    x0 = d.x[0]
    io.torque[0] = 1.9  # below the 2 % dry friction: stiction
    t = run(d, io, t, 100)
    assert d.x[0] == x0 and d.v[0] == 0.0 and io.torque_estimate[0] == 1.9
    io.torque[0] = 1000.0  # clamped to out_max (100 %)
    t = run(d, io, t, 1)
    assert io.torque_estimate[0] == 100.0
    d.v[0] = 0.0
    io.torque[0] = 10.0
    t = run(d, io, t, 2000)
    g, dd, c = d.g[0], d.d[0], d.c[0]
    v_inf = (g * 10.0 - c) / dd  # terminal velocity; semi-implicit Euler approaches it as below
    assert d.v[0] == pytest.approx(v_inf * (1.0 - (1.0 - dd * 0.001) ** 2000), rel=1e-9)
    t = run(d, io, t, 10000)
    assert d.x[0] == pytest.approx(d.stop_hi[0])  # ran into the mechanical end stop...
    t = run(d, io, t, 1)
    assert d.v[0] == 0.0 and io.torque_estimate[0] == 10.0  # ...held there, torque applied
    io.torque[0] = math.nan
    t = run(d, io, t, 1)
    assert io.torque_estimate[0] == 0.0


def test_brake_holds_and_slips(tmp_path):
    cfg = load_config(write_config(tmp_path, axes=1, points=8, brakes=(1,)))
    d = SimDriver(cfg, {})
    io = DriverIO()
    d.open(io)
    io.enable[0] = True
    io.torque[0] = 140.0  # engaged brake holds up to 150 %
    d.out_max[0] = 300.0
    d._neg_out_max[0] = -300.0
    t = run(d, io, 0, 400)
    assert d.v[0] == 0.0
    io.torque[0] = 200.0
    t = run(d, io, t, 10)
    assert d.v[0] > 0.0  # slips above the holding torque
    io.torque[0] = 0.0
    t = run(d, io, t, 2000)
    io.brake_release[0] = True  # seen at the next cycle; released 30 ms later
    t = run(d, io, t, 30)
    assert not d.brake_released[0]
    t = run(d, io, t, 1)
    assert d.brake_released[0]
    pin = cfg.io_registry.pin("BrakeIn1").pin
    assert io.di[pin]


def test_releasing_a_brake_under_constant_torque_starts_motion(tmp_path):
    cfg = load_config(write_config(tmp_path, axes=1, points=8, brakes=(1,)))
    d = SimDriver(cfg, {})
    io = DriverIO()
    d.open(io)
    io.enable[0] = True
    io.torque[0] = 50.0
    t = run(d, io, 0, 300)
    assert d.v[0] == 0.0  # held by the brake; the command does not change from here on
    io.brake_release[0] = True
    t = run(d, io, t, 40)
    assert d.v[0] > 0.0
    bo = cfg.io_registry.pin("BrakeOut1").pin  # the brake DO releases it as well
    io.brake_release[0] = False
    t = run(d, io, t, 40)
    assert not d.brake_released[0]
    io.do_bank[bo // 64] |= np.uint64(1 << (bo % 64))
    t = run(d, io, t, 31)
    assert d.brake_released[0]


def test_sensors_index_and_rotary_cam(sim, cfg):
    d, io = sim
    reg = cfg.io_registry
    ax = cfg.axis(1).kinematics
    d.x[0] = ax.max_pos + 0.03 * (ax.max_pos - ax.min_pos)
    d._sensors_dirty = True
    run(d, io, 0, 1)
    assert reg.read_di_pin(reg.pin("LimitMax1").pin, np.packbits(io.di, bitorder="little").view(np.uint64))
    # axis 2 is rotary: its home cam repeats every 360 deg (approach Negative: just below 0)
    ref2 = reg.pin("Ref2").pin
    for pos, want in ((-0.5, True), (359.5, True), (719.5, True), (10.0, False), (-10.0, False)):
        d.x[1] = pos
        d._sensors_dirty = True
        run(d, io, 0, 1)
        assert bool(io.di[ref2]) is want, pos


# --- state file, registry, injection --------------------------------------------------------------

def test_state_file_round_trip_and_corruption(tmp_path, caplog):
    path = tmp_path / "s" / "hal_state.json"
    w = StateWriter(path, (1, 3), "sim").start()
    pos = np.zeros(64)
    ref = np.zeros(64, bool)
    pos[0], pos[2], ref[2] = 1.5, -7.25, True
    w.close(pos, ref)
    assert load_state(path, (1, 3)) == ({1: 1.5, 3: -7.25}, {1: False, 3: True})
    assert load_state(path, (1,)) == ({1: 1.5}, {1: False})
    write_atomic(path, "{not json")
    assert load_state(path, (1, 3)) == ({}, {})
    assert "unreadable" in caplog.text
    assert [p.name for p in path.parent.iterdir()] == ["hal_state.json"]  # no temp files left


def test_write_atomic_takes_bytes_and_a_mode(tmp_path):
    """common.files.write_atomic: text or bytes, private by default, the mode asked for otherwise (make
    kernels writes the built extension module with it), and no temp file left."""
    text, blob = tmp_path / "t.json", tmp_path / "m.so"
    write_atomic(text, "é")
    write_atomic(blob, b"\x7fELF\x00", sync=False, mode=0o755)
    assert text.read_bytes() == "é".encode() and blob.read_bytes() == b"\x7fELF\x00"
    assert (text.stat().st_mode & 0o777, blob.stat().st_mode & 0o777) == (0o600, 0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.so", "t.json"]


def test_driver_registry(cfg, tmp_path):
    bad = load_config(write_config(tmp_path, axes=1, points=4, hal={"driver": "ethercatx"}))
    with pytest.raises(DriverError, match=r"unknown driver 'ethercatx'; known drivers: (\w+, )*ethercat, (\w+, )*sim"):
        registry.create_driver(bad)
    assert isinstance(registry.create_driver(cfg), SimDriver)
    registry.register("ethercatx", lambda config, args: SimDriver(config, args))
    try:
        assert isinstance(registry.create_driver(bad), SimDriver)
    finally:
        registry._FACTORIES.pop("ethercatx")


@pytest.mark.parametrize(
    "data, text",
    [
        ({"bogus": {}}, "unknown key 'bogus'"),
        ({"di": {"x": True}}, "not an integer"),
        ({"di": {"2000": True}}, "out of range"),
        ({"di": {"1": 2}}, "expected true/false"),
        ({"axes": {"1": {"fault": True}}}, "unknown key(s) ['fault']"),
        ({"ai": {"500": 1.0}}, "not in io.toml"),
        ({"ai_raw": {"0": "high"}}, "finite number"),
    ],
)
def test_injection_errors_name_the_entry(cfg, data, text):
    with pytest.raises(InjectionError) as e:
        parse_injection(json.loads(json.dumps(data)), cfg.io)
    assert text in str(e.value)
