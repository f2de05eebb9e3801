"""Issue 15, HAL compiled kernels: the numba engine against the numpy reference, cycle by cycle, and its costs.

Recorded scenarios drive both engines of IoProcessor + SimDriver in lock step; zero allocation; warm cache.
"""
from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from numba.core.runtime import _nrt_python as nrt
from numba.core.runtime import rtsys

from common.config import load_config
from common.consts import BANK_WORDS, MAX_AI, MAX_AO, MAX_AXES
from common.jit import ENV_BACKEND
from common.shm.segments import HAL_IO
from hal import kernels
from hal.drivers.base import DriverIO
from hal.drivers.sim import SimDriver
from hal.drivers.sim_inject import write_injection
from hal.engine import resolve_engine
from hal.io import IoProcessor
from hal.synthetic_config import axis_toml, write_config
from tests.helpers import remove_shm, shm_entries, unique_prefix

MS = 1_000_000
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12

IO = """
[Inputs]
io = [
    { type="di", role="EStop", pin=0, logic="NC", debounce=2, sim=true },
    { type="di", role="LimitMin1", pin=1, logic="NC", debounce=0, sim=true },
    { type="di", role="LimitMax1", pin=2, logic="NC", debounce=0, sim=true },
    { type="di", role="Ref1", pin=3, debounce=1 },
    { type="di", role="LimitMin2", pin=4, logic="NC", debounce=0, sim=true },
    { type="di", role="Ref2", pin=5, debounce=0 },
    { type="di", role="Ref3", pin=6, debounce=0 },
    { type="di", role="LimitMax3", pin=7, logic="NC", debounce=0, sim=true },
    { type="di", role="Index1", pin=8, debounce=0 },
    { type="di", role="Index2", pin=9, debounce=0 },
    { type="di", role="BrakeIn1", pin=10, debounce=5 },
    { type="di", role="Clamped3", pin=11, debounce=3 },
    { type="di", pin=20, debounce=10 },
    { type="di", pin=21, logic="NC", debounce=4, sim=true },
    { type="di", pin=22, debounce=0, enable_pin=23, enable_timeout=30 },
    { type="di", pin=23, debounce=2 },
    { type="di", pin=24, debounce=0, enable_pin=25, enable_state=false },
    { type="di", pin=25, debounce=0 },
    { type="di", pin=70, debounce=7 },
    { type="di", pin=1000, logic="NC", debounce=1 },
]
[Outputs]
io = [
    { type="do", pin=0, role="BrakeOut1" },
    { type="do", pin=1, role="DoorLock", pulse=20 },
    { type="do", pin=2, role="Clamp3", inverted=true },
    { type="do", pin=3, init=true, inverted=true },
    { type="do", pin=4, pulse=30 },
    { type="do", pin=5, keep_estop=true },
    { type="do", pin=6, init=true, keep_estop=true },
    { type="do", pin=7 },
    { type="do", pin=100, inverted=true, pulse=15 },
    { type="do", pin=1023, init=true },
]
[Analog_in]
io = [
    { type="ai", pin=0, max=10.0, average=4, sim=2.0 },
    { type="ai", pin=1, min=-5.0, max=5.0, average=1, curve="quadratic", offset=0.25 },
    { type="ai", pin=2, max=100.0, average=3, curve=[0.2, 0.0, 0.8], offset=1.0, sim=40.0 },
    { type="ai", pin=3, min=1.0, max=3.0, average=1, curve="cubic" },
    { type="ai", pin=900, min=-1.0, max=1.0, average=7, curve=[-0.5, 0.3, 1.2] },
]
[Analog_out]
io = [
    { type="ao", pin=0, max=10.0, init=3.0, pulse=40 },
    { type="ao", pin=1, role="Speed", min=-1.0, max=1.0, curve=[0.2, 0.0, 0.8] },
    { type="ao", pin=2, min=2.0, max=4.0, init=3.0, curve="quadratic", offset=0.5 },
    { type="ao", pin=3, role="Feed", max=5.0, pulse=25, curve="cubic" },
    { type="ao", pin=4, min=-3.0, max=3.0, curve=[-0.5, 0.3, 1.2] },
    { type="ao", pin=5, role="Pressure", min=0.0, max=8.0 },
]
"""
TAILSTOCK = '\n[tailstock]\ncoupled_axis = 1\nclamp_role = "Clamp3"\nclamped_role = "Clamped3"\n'


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 axes: braked linear, rotary, linear with a tailstock, absolute; every io.toml feature."""
    d = tmp_path_factory.mktemp("kernels")
    files = {1: axis_toml(1, brake=True), 2: axis_toml(2, rotary=True, approach="Positive"),
             3: axis_toml(3, min_pos=-50.0, max_pos=50.0) + TAILSTOCK, 4: axis_toml(4, homing="Absolute")}
    cfg = write_config(d / "cfg", axes=4, io=IO, axis_files=files,
                       driver_args={"inject_file": str(d / "inject.json"), "inject_poll_ms": 3.0})
    return load_config(cfg), d / "inject.json"


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The benchmark's machine: 64 axes, 1024 points of each type."""
    d = tmp_path_factory.mktemp("kernels64")
    cfg = write_config(d / "cfg", axes=64, points=1024, brakes=tuple(range(3, 65, 8)),
                       driver_args={"inject_file": str(d / "inject.json"), "inject_poll_ms": 5.0})
    return load_config(cfg), d / "inject.json"


# --- one HAL pipeline per engine, stepped like HalCycle.step ---------------------------------------

class Pipeline:
    """IoProcessor + SimDriver of one engine, wired like HalCycle (feedback in a HAL_IO payload)."""

    def __init__(self, cfg, engine: str) -> None:
        self.payload = np.zeros((), HAL_IO)  # strided feedback views, as in the segment
        io = self.payload
        brakes = [ax.brake.do_brake for ax in cfg.axes if ax.brake is not None]
        self.proc = IoProcessor(cfg.io, cfg.io_registry, brakes, di_bank=io["di_bank"], do_bank=io["do_bank"],
                                ai_values=io["ai_values"], ao_values=io["ao_values"], engine=engine)
        self.driver = SimDriver(cfg, cfg.system.hal.driver_args, engine=engine)
        fb = io["axes"]
        self.dio = DriverIO(
            do_bank=self.proc.do_bank, ao=self.proc.ao_norm,
            position=fb["position"], velocity=fb["velocity"], torque_estimate=fb["torque_estimate"],
            drive_ready=fb["drive_ready"].view(np.bool_), drive_fault=fb["drive_fault"].view(np.bool_),
            referenced=fb["referenced"].view(np.bool_), axis_state=io["driver_state"],
            drive_error_code=io["drive_error_code"],
        )
        self.driver.open(self.dio)
        self.proc.inputs(self.dio.di, self.dio.ai, 0)
        self.wire_di = np.zeros_like(self.dio.di)
        self.wire_ai = np.zeros_like(self.dio.ai)

    def step(self, f: Frame, now: int) -> None:
        dio, proc = self.dio, self.proc
        for cmd, pin, value in f.commands:
            getattr(proc, cmd)(pin, value, now)
        if f.cu:
            dio.enable[:] = f.enable
            dio.brake_release[:] = f.brake_release
            dio.torque[:] = f.torque
            proc.outputs(f.cu_bank, f.cu_ao, now, f.fresh)
        else:
            dio.enable[:] = False
            dio.brake_release[:] = False
            dio.torque[:] = 0.0
            proc.outputs(None, None, now, False)
        self.driver.cycle(dio, now, f.dt)
        di, ai = dio.di, dio.ai  # what reaches the I/O processor: the plant's levels, plus noise
        if f.di_flip is not None:  # chatter on the wire
            di = np.bitwise_xor(di, f.di_flip, out=self.wire_di)
        if f.ai_raw is not None:  # raw analog samples on some pins (all when ai_pins is None)
            ai = self.wire_ai
            np.copyto(ai, dio.ai)
            if f.ai_pins is None:
                np.copyto(ai, f.ai_raw)
            else:
                ai[f.ai_pins] = f.ai_raw[f.ai_pins]
        proc.inputs(di, ai, now)

    def state(self) -> dict[str, np.ndarray]:
        p, d, io = self.proc, self.driver, self.dio
        return {
            "di_bank": p.di_bank, "di_logical": p.di_logical, "di_state": p.di_state, "ai_values": p.ai_values,
            "do_bank": p.do_bank, "do_out": p.do_out, "do_value": p.do_value, "do_expiry": p.do_expiry,
            "ao_values": p.ao_values, "ao_norm": p.ao_norm, "ao_value": p.ao_value, "ao_expiry": p.ao_expiry,
            "x": d.x, "v": d.v, "fault": d.fault, "fault_code": d.fault_code, "brake_released": d.brake_released,
            "brake_cmd": d.brake_cmd, "follow_state": d.follow_state, "index_until": d.index_until,
            "position": io.position, "velocity": io.velocity, "torque_estimate": io.torque_estimate,
            "drive_ready": io.drive_ready, "drive_fault": io.drive_fault, "axis_state": io.axis_state,
            "drive_error_code": io.drive_error_code, "di": io.di, "ai": io.ai,
        }


@dataclass
class Frame:
    """What reaches the HAL in one cycle: the CU's frame, commands, the wire's noise."""

    cu: bool = True
    fresh: bool = True
    dt: float = 0.001
    enable: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    brake_release: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    torque: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    cu_bank: np.ndarray = field(default_factory=lambda: np.zeros(BANK_WORDS, np.uint64))
    cu_ao: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AO))
    commands: list = field(default_factory=list)
    di_flip: np.ndarray | None = None
    ai_raw: np.ndarray | None = None
    ai_pins: np.ndarray | None = None


def _bits(*pins: int) -> np.ndarray:
    b = np.zeros(BANK_WORDS, np.uint64)
    for p in pins:
        b[p // 64] |= np.uint64(1 << (p % 64))
    return b


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], cycle: int, scenario: str) -> None:
    for name, x in a.items():
        y = b[name]
        if x.dtype.kind == "f":
            bad = ~((np.abs(x - y) <= TOL) | (np.isnan(x) & np.isnan(y)) | (x == y))
        else:
            bad = x != y
        if np.count_nonzero(bad):
            i = int(np.flatnonzero(bad)[0])
            raise AssertionError(f"{scenario}: cycle {cycle}: {name}[{i}] numpy {x[i]!r} != compiled {y[i]!r} "
                                 f"({np.count_nonzero(bad)} elements differ)")


def run_lockstep(cfg, frames, inject: Path | None = None, injections: dict[int, dict | None] | None = None,
                 scenario: str = "") -> tuple[Pipeline, Pipeline]:
    """Both engines through the same frames; every state array compared after every cycle."""
    ref, cmp = Pipeline(cfg, "numpy"), Pipeline(cfg, "compiled")
    assert_same(ref.state(), cmp.state(), 0, scenario)
    now = 0
    for k, f in enumerate(frames, 1):
        if injections and k in injections:
            if injections[k] is None:
                inject.unlink(missing_ok=True)
            else:
                write_injection(inject, injections[k])
        now += int(round(f.dt * 1e9))
        ref.step(f, now)
        cmp.step(f, now)
        assert_same(ref.state(), cmp.state(), k, scenario)
    return ref, cmp


# --- recorded scenarios ----------------------------------------------------------------------------

class Follower:
    """A PD position loop in the test (the CU's stand-in): torque from the reference engine's
    feedback, the same torque to both engines; targets sweep through limits, cams and index marks."""

    def __init__(self, axes: int, span: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.axes = axes
        self.amp = rng.uniform(0.3, 0.8, axes) * span
        self.freq = rng.uniform(0.2, 1.5, axes)
        self.phase = rng.uniform(0, 2 * math.pi, axes)

    def torque(self, t: float, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        target = self.amp * np.sin(2 * math.pi * self.freq * t + self.phase)
        out = np.zeros(MAX_AXES)
        out[: self.axes] = 8.0 * (target - x[: self.axes]) - 0.4 * v[: self.axes]
        return out


def lockstep_follow(cfg, inject, n: int, seed: int, schedule, scenario: str, injections=None) -> tuple[Pipeline, Pipeline]:
    """Frames built cycle by cycle: `schedule(k, frame, rng)` edits the default frame of cycle k."""
    axes = len(cfg.axes)
    rng = np.random.default_rng(seed)
    follower = Follower(axes, 60.0, seed)
    ref, cmp = Pipeline(cfg, "numpy"), Pipeline(cfg, "compiled")
    now = 0
    for k in range(1, n + 1):
        f = Frame()
        f.enable[:axes] = True
        f.brake_release[:axes] = True
        f.torque[:] = follower.torque(now / 1e9, ref.driver.x, ref.driver.v)
        schedule(k, f, rng)
        if injections and k in injections:
            if injections[k] is None:
                inject.unlink(missing_ok=True)
            else:
                write_injection(inject, injections[k])
        now += int(round(f.dt * 1e9))
        ref.step(f, now)
        cmp.step(f, now)
        assert_same(ref.state(), cmp.state(), k, scenario)
    return ref, cmp


def test_moves_follow_targets_through_sensors_and_end_stops(small):
    """Issue 15 must-exist: both engines identical every cycle (1e-12) — moves with the plant following
    position targets through limit switches, home cams, index marks and the mechanical end stops,
    enable/disable, a non-finite and an oversized torque command, constant torque at rest, varying dt."""
    cfg, inject = small

    def schedule(k, f, rng):
        if k < 250:
            f.brake_release[:] = False  # brake engaged while the drive comes up
        if 900 <= k < 1100:
            f.enable[1] = False  # disable mid-move
        if 1200 <= k < 1700:
            f.torque[2] = 100.0 if k < 1500 else 1.5  # into the end stop, then below dry friction
        if 1300 <= k < 1310:
            f.torque[0] = math.nan
        if 1400 <= k < 1405:
            f.torque[3] = 1e6
        if k % 97 == 0:
            f.dt = 0.002 + 0.001 * (k % 3)  # late cycles: the HAL passes the elapsed time
        f.cu_bank = _bits(0) if k > 200 else _bits()

    ref, _cmp = lockstep_follow(cfg, inject, 2200, 1, schedule, "moves")
    assert np.ptp(ref.dio.position[:4]) > 1.0 and np.count_nonzero(ref.proc.di_bank) > 0


def test_drive_faults_injection_and_brakes(small):
    """Issue 15 must-exist: identical every cycle — drive faults injected (latched until enable drops,
    with their error codes), load torque, set_position, DI/AI overrides through the injection file,
    brakes released by brake_release and by the brake DO, the tailstock clamp follower."""
    cfg, inject = small
    inject.unlink(missing_ok=True)
    injections = {
        300: {"axes": {"2": {"drive_fault": True, "drive_error_code": 0x2310}, "1": {"load_torque": 25.0}}},
        420: {"axes": {"1": {"load_torque": -40.0}, "3": {"set_position": 12.5}}, "di": {"20": True},
              "ai": {"0": 7.5}, "ai_raw": {"1": 0.25}},
        600: {"axes": {"3": {"set_position": -20.0, "drive_fault": True}}, "di_logical": {"0": True}},
        800: None,
    }

    def schedule(k, f, rng):
        if 500 <= k < 560:
            f.enable[1] = False  # fault reset of axis 2
        if 650 <= k < 900:
            f.brake_release[0] = False
            f.cu_bank = _bits(0) if 700 <= k < 800 else _bits()  # the brake DO releases it as well
        if k >= 200:
            f.cu_bank = f.cu_bank | _bits(2) if (k // 150) % 2 else f.cu_bank  # tailstock clamp toggles

    try:
        ref, _cmp = lockstep_follow(cfg, inject, 1000, 2, schedule, "faults", injections)
    finally:
        inject.unlink(missing_ok=True)
    assert ref.driver.fault_code[1] == 0x2310 or not ref.driver.fault[1]


def test_io_chatter_scaling_outputs_and_cu_absence(small):
    """Issue 15 must-exist: identical every cycle — debounced DI chatter, enable pins, E-stop pressed and
    released, analog scaling and averaging with non-finite samples, DO/AO writes by the CU (fresh and
    repeated frames, role pulses) and by commands (set_do, pulse_do, set_ao), the CU going absent
    (safe outputs) and coming back."""
    cfg, inject = small
    rng = np.random.default_rng(3)
    frames = []
    chatter = np.array([0, 20, 21, 22, 23, 24, 25, 70, 1000])
    ai_pins = np.array([0, 1, 2, 3, 900])
    ao = np.zeros(MAX_AO)
    for k in range(1, 2001):
        f = Frame()
        f.enable[:4] = True
        f.cu = not (900 <= k < 1000 or 1500 <= k < 1503)
        f.fresh = k % 7 != 0
        flip = np.zeros(1024, np.bool_)
        if k % 3 == 0 or 300 <= k < 320:
            flip[chatter] = rng.random(len(chatter)) < 0.3
        if 1100 <= k < 1160:
            flip[0] = True  # E-stop pressed (NC wire opens) for 60 ms
        f.di_flip = flip
        if k % 5 == 0 or k < 50:
            raw = rng.random(MAX_AI)
            raw[rng.random(MAX_AI) < 0.02] = np.nan
            raw[2] = np.inf if k % 50 == 0 else raw[2]
            f.ai_raw, f.ai_pins = raw, ai_pins
        if k % 11 == 0:
            ao = ao.copy()
            ao[[1, 3, 5]] = rng.uniform(-2.0, 9.0, 3)
            if k % 44 == 0:
                ao[1] = np.nan
        f.cu_ao = ao
        f.cu_bank = _bits(*[p for p in (0, 1, 2, 7, 300) if rng.random() < 0.6]) if k % 13 else _bits(1)
        if k in (100, 1050, 1200):
            f.commands = [("set_do", 4, True), ("set_do", 5, True), ("set_do", 7, True), ("set_ao", 0, 6.5),
                          ("set_ao", 2, 3.7), ("set_ao", 4, -1.25)]
        if k in (150, 1300):
            f.commands = [("pulse_do", 100, 12 * MS), ("set_do", 3, False), ("set_ao", 4, 2.9)]
        if k == 400:
            f.commands = [("set_do", 7, False), ("set_do", 1023, False)]
        frames.append(f)
    ref, _cmp = run_lockstep(cfg, frames, scenario="io")
    assert np.count_nonzero(ref.proc.do_bank) and np.count_nonzero(ref.proc.ao_norm)


@pytest.mark.parametrize("backend", ["aot", "jit"])
def test_big_machine_moving_with_noisy_io(big, backend, monkeypatch):
    """Issue 15 must-exist: identical every cycle on the benchmark's machine (64 axes, 1024 points of
    each type, every DI and AI changing at random, CU toggling DO bits, brakes released 10 ms apart,
    a CU loss) — with the module built ahead of time (what the HAL runs) and with numba's JIT (its fallback)."""
    monkeypatch.setenv(ENV_BACKEND, backend)
    cfg, inject = big
    rng = np.random.default_rng(5)
    ao = rng.uniform(0, 10, MAX_AO)

    def schedule(k, f, rng_):
        if k % 2:
            f.di_flip = rng.random(1024) < 0.05
        f.ai_raw = rng.random(MAX_AI)
        f.cu_bank = rng.integers(0, 2**63, BANK_WORDS, dtype=np.int64).astype(np.uint64) if k % 4 == 0 else _bits(0, 1)
        f.cu_ao = ao if k % 50 else rng.uniform(-1, 11, MAX_AO)
        f.cu = not (600 <= k < 650)
        f.brake_release[2] = k >= 100  # two brakes (axes 3 and 11) commanded 10 ms apart
        f.brake_release[10] = k >= 110

    ref, _cmp = lockstep_follow(cfg, inject, 800, 4, schedule, "big")
    assert np.count_nonzero(ref.dio.velocity[:64]) > 32


def test_steady_commands_staggered_brakes_and_rest(small):
    """Identical every cycle with commands that stay constant for long stretches (the reference's
    change-driven shortcuts): brakes commanded at staggered times, a constant torque that stops an
    axis against friction and then exceeds it, a standstill under a command below friction."""
    cfg, inject = small

    def schedule(k, f, rng):
        f.torque[:] = 0.0
        f.brake_release[:] = False
        f.brake_release[0] = k >= 300  # axis 1's brake: released at 300 ms ...
        f.cu_bank = _bits(0) if k >= 310 else _bits()  # ... and its DO 10 ms later (one brake)
        f.torque[0] = 20.0 if k < 600 else -2.5 if k < 1200 else 1.9  # decelerates, reverses, sticks
        f.torque[1] = 30.0 if 250 <= k < 260 else 0.0  # a push, then coasting to rest
        f.torque[2] = -1.0  # below friction: stays put

    ref, _cmp = lockstep_follow(cfg, inject, 1600, 6, schedule, "steady")
    assert ref.driver.brake_released[0] and ref.driver.v[1] == 0.0


# --- engine selection, allocation, the cache --------------------------------------------------------

def test_engine_is_chosen_by_argument_or_environment(small, monkeypatch):
    """Issue 15 must-exist: the numpy path stays selectable by constructor argument; the running HAL
    (no argument) uses the compiled kernels; a bad name is a clear error."""
    cfg, _ = small
    monkeypatch.delenv("EVO_HAL_ENGINE", raising=False)
    assert IoProcessor(cfg.io, cfg.io_registry).engine == "compiled"
    assert SimDriver(cfg, {}).engine == "compiled"
    assert IoProcessor(cfg.io, cfg.io_registry, engine="numpy").engine == "numpy"
    monkeypatch.setenv("EVO_HAL_ENGINE", "numpy")
    assert SimDriver(cfg, {}).engine == "numpy"
    monkeypatch.setenv("EVO_HAL_ENGINE", "jit")
    with pytest.raises(ValueError, match=r"\$EVO_HAL_ENGINE: unknown HAL engine 'jit'; known: compiled, numpy"):
        resolve_engine()
    with pytest.raises(ValueError, match="engine argument: unknown HAL engine 'fast'"):
        SimDriver(cfg, {}, engine="fast")


def test_hal_with_an_unknown_engine_exits_2_and_starts_nothing(tmp_path):
    """Bad input starts nothing: `EVO_HAL_ENGINE=jit python -m hal` exits 2 naming the variable and
    the known engines, and leaves no segment behind."""
    prefix = unique_prefix("hk")
    env = dict(os.environ, PYTHONPATH=str(ROOT), EVO_SHM_PREFIX=prefix, EVO_RUN_DIR=str(tmp_path / "run"),
               EVO_HAL_ENGINE="jit")
    try:
        r = subprocess.run([sys.executable, "-m", "hal", "--config", str(ROOT / "config")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "$EVO_HAL_ENGINE: unknown HAL engine 'jit'; known: compiled, numpy" in r.stderr
        assert "Traceback" not in r.stderr
        assert shm_entries(prefix) == []
    finally:
        remove_shm(prefix)


@pytest.mark.parametrize("backend", ["aot", "jit"])
def test_a_wrong_argument_type_is_refused_not_compiled(small, backend, monkeypatch):
    """The kernels are compiled for one signature before READY and never again: another dtype is a
    TypeError (the AOT module's functions are called only through a check, never with a mistyped array)."""
    monkeypatch.setenv(ENV_BACKEND, backend)
    cfg, _ = small
    p = Pipeline(cfg, "compiled")
    with pytest.raises(TypeError, match="No matching definition" if backend == "jit" else
                       r"io_inputs: argument 0 does not match the compiled signature: array\(int32, 1d\) where "
                       r"array\(bool, 1d\) is compiled"):
        p.proc.inputs(np.zeros(1024, np.int32), p.dio.ai, 1)
    if backend == "jit":
        assert all(len(d.overloads) == 1 for d in kernels.load("jit").dispatchers.values())


@pytest.mark.parametrize("backend", ["aot", "jit"])
def test_zero_allocation_per_cycle(big, backend, monkeypatch):
    """Issue 15 must-exist: after warm-up, 10 000 cycles of the I/O processor + sim driver (compiled,
    64 axes moving, DO bits and DI levels changing) leave sys.getallocatedblocks() unchanged, and
    (JIT) the kernels allocate no array (numba's allocator sees only one wrapper per array argument)."""
    monkeypatch.setenv(ENV_BACKEND, backend)
    cfg, _ = big
    p = Pipeline(cfg, "compiled")
    frames = 64
    rng = np.random.default_rng(9)
    torques = np.zeros((frames, MAX_AXES))
    torques[:, :64] = rng.uniform(-30, 30, (frames, 64))
    banks = rng.integers(0, 2**63, (frames, BANK_WORDS), dtype=np.int64).astype(np.uint64)
    flips = rng.random((frames, 1024)) < 0.05
    aos = rng.uniform(0, 10, (frames, MAX_AO))
    dio, proc, drv = p.dio, p.proc, p.driver
    dio.enable[:64] = True
    dio.brake_release[:64] = True

    marks = np.zeros(2, np.int64)
    warm, cycles = 2000, 10_000

    def run() -> None:
        """warm + cycles cycles; the allocated block count is read at the top of iteration `warm`
        and of iteration warm + cycles, with the same objects alive both times (the loop counter
        already past the small-int cache, the reading stored in a numpy array)."""
        now = 0
        for i in range(warm + cycles + 1):
            if i == warm or i == warm + cycles:
                marks[i // (warm + cycles)] = sys.getallocatedblocks()
                if i == warm + cycles:
                    break
            j = i & 63
            now += MS
            np.copyto(dio.torque, torques[j])
            proc.outputs(banks[j], aos[j], now, True)
            drv.cycle(dio, now, 0.001)
            np.bitwise_xor(dio.di, flips[j], out=dio.di)
            proc.inputs(dio.di, dio.ai, now)

    nrt.memsys_enable_stats()  # numba's allocator: also counts the wrapper of each array argument
    nrt_before = rtsys.get_allocation_stats().alloc
    gc.collect()
    gc.disable()
    try:
        run()
    finally:
        gc.enable()
    made = rtsys.get_allocation_stats().alloc - nrt_before
    nrt.memsys_disable_stats()
    if backend == "jit":  # (the AOT module has an allocator of its own, out of numba's sight)
        sigs = kernels.load("jit").sigs
        wrappers = sum(a.ndim > 0 for name in ("io_inputs", "io_outputs", "sim_cycle")
                       for a in sigs[name].args)  # the three this pipeline calls
        assert made == (warm + cycles) * wrappers, (
            f"{made} numba allocations over {warm + cycles} cycles: more than the {wrappers} argument wrappers a "
            f"cycle needs (a kernel allocates arrays)")
    before, after = int(marks[0]), int(marks[1])
    assert np.count_nonzero(dio.velocity[:64]) > 32, "the axes should be moving"
    assert after == before, f"{after - before} blocks allocated over 10 000 cycles"


def test_the_built_module_runs_without_numba(tmp_path):
    """Issue 15 cold start: `make kernels` built hal._kernels_aot for the current sources; a fresh process
    loads it in milliseconds and runs I/O, plant and fused cycle on it without importing numba."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), EVO_RUN_DIR=str(tmp_path / "run"))
    env.pop(ENV_BACKEND, None)
    probe = ("import sys\n"
             "from hal import kernels\n"
             "k = kernels.load()\n"
             "kernels._smoke('auto')\n"
             "print(k.backend, k.load_s, 'numba' in sys.modules, 'llvmlite' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    backend, load_s, numba_in, llvm_in = r.stdout.split()[-4:]
    assert (backend, numba_in, llvm_in) == ("aot", "False", "False"), (r.stdout, r.stderr)
    assert float(load_s) < 0.5
    assert "WARNING" not in r.stderr


def test_the_jit_fallback_loads_numbas_cache_and_compiles_nothing(tmp_path):
    """Issue 15 fixed interface 1, for the fallback: after `make kernels`, a process told to use numba's
    JIT loads every kernel from numba's cache (no compilation, no new cache files)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), EVO_RUN_DIR=str(tmp_path / "run"), EVO_KERNELS="jit")
    cache = ROOT / "hal" / "__pycache__"
    files = sorted(p.name for p in cache.glob("kernels.*.nb*"))
    assert files, "make kernels fills numba's cache"
    probe = ("from hal import kernels\n"
             "k = kernels.load()\n"
             "hits = sum(sum(d.stats.cache_hits.values()) for d in k.dispatchers.values())\n"
             "kernels._smoke('jit')\n"
             "print(k.backend, hits, len(k.compiled), sum(len(d.overloads) for d in k.dispatchers.values()))\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    backend, hits, compiled, overloads = r.stdout.split()[-4:]
    n = len(kernels.KERNELS.exports)
    assert (backend, int(hits), int(compiled), int(overloads)) == ("jit", n, 0, n)
    assert sorted(p.name for p in cache.glob("kernels.*.nb*")) == files
