"""The CU's compiled cycle (control_unit/kernels) against its numpy reference: both engines run the
same recorded scenarios side by side — same inputs, same commands through control_unit.commands —
and every state array of the core and every output must agree within 1e-12 after every cycle.
Also: zero allocation per compiled cycle, and a warm numba cache that a second process only loads.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.jit_table import array_table
from common.shm.commands import CuCommand as C
from common.shm.commands import ResultCode
from common.shm.rings import Command
from common.shm.segments import CU_TO_HAL, CU_TO_RPC, HAL_AXIS_FEEDBACK
from common.states import (
    AxisError,
    CommandSource,
    MachineState,
    OperationalMode,
    PowerState,
    SafetyState,
)
from control_unit import commands, homing, machines, params
from control_unit.core import ControlCore
from control_unit.diagnostics import StatusWriter
from control_unit.outputs import HalOutputs
from control_unit.kernels import step as K
from tests.cu_support import machine_test_config
from tests.helpers import REPO

TOL = 1e-12
CONTROL = """kp = 90.0
ki = 400.0
kd = 2.4
tf = 0.001
tt = 0.05
kvff = 0.02
kaff = 0.025
friction = 2.0
jn = 0.025
bn = 0.02
gdob = 100.0
f_notch = 120.0
bw_notch = 30.0
flp = 300.0
out_max = 100.0"""
HOMING = {5: ("HomeSensor", "Negative"), 6: ("LimitSwitch", "Negative"), 7: ("TorqueLimit", "Negative"),
          8: ("IndexPulse", "Positive"), 9: ("Absolute", "Positive"), 10: ("NoHoming", "Positive")}
LAG = {11: "Unwanted", 12: "Neutral", 13: "Desired", 14: "Critical"}
MASTER, SLAVE, SS2_AXIS, STO_AXIS, BRAKED = 15, 16, 17, 18, 19
WALL = -5.0  # the hard stop of the TorqueLimit axis
EXTRA_IO = """[TwinAxes]
name = "Sensors of the twin-test axes"
io = [
    { type="di", role="Ref5", pin=105, debounce=0, name="A5 home cam" },
    { type="di", role="LimitMin6", pin=106, debounce=0, name="A6 limit -" },
    { type="di", role="LimitMax6", pin=107, debounce=0, name="A6 limit +" },
    { type="di", role="Index8", pin=108, debounce=0, name="A8 encoder index" },
    { type="di", role="Guard17", pin=109, debounce=0, name="A17 guard" },
    { type="do", role="BrakeOut19", pin=9, name="A19 brake" },
    { type="di", role="BrakeIn19", pin=110, debounce=0, name="A19 brake released" },
]"""


def _axis_file(i: int, method: str = "NoHoming", direction: str = "Positive", lag_policy: str = "Unwanted",
               lag_limit: float = 25.0, category: str = "SS1", extra: str = "") -> str:
    return f"""[axis]
id = {i}
name = "A{i}"
type = "linear"

[kinematics]
max_velocity = 500.0
max_acceleration = 2000.0
safe_reduced_speed_limit = 50.0
min_pos = -50.0
max_pos = 100.0
in_position_window = 0.05

[control]
{CONTROL}
lag_error_limit = {lag_limit}
lag_policy = "{lag_policy}"

[safe_stop]
category = "{category}"
max_decel_safe = 3000.0
sto_brake_delay = 0.1
ss2_holding_torque = 30.0

[homing]
method = "{method}"
speed = 20.0
torque_limit = 30.0
timeout = 10.0
approach_direction = "{direction}"
{extra}"""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """The default machine plus one axis per variation: every homing method, every lag policy, a
    coupled pair, SS2 / STO stop categories, a guarded axis and a brake without confirmation."""
    tmp = tmp_path_factory.mktemp("cu_kernels")
    d = machine_test_config(tmp, extra_io=EXTRA_IO)
    for i, (method, direction) in HOMING.items():
        (d / f"axis_{i:02d}_a{i}.toml").write_text(_axis_file(i, method, direction))
    for i, policy in LAG.items():
        (d / f"axis_{i:02d}_a{i}.toml").write_text(_axis_file(i, lag_policy=policy, lag_limit=0.5))
    (d / f"axis_{MASTER:02d}_master.toml").write_text(_axis_file(MASTER))
    (d / f"axis_{SLAVE:02d}_slave.toml").write_text(_axis_file(
        SLAVE, extra=f"\n[coupling]\nmaster_axis = {MASTER}\nratio = 0.5\nmax_sync_error = 1.0\n"))
    (d / f"axis_{SS2_AXIS:02d}_ss2.toml").write_text(_axis_file(
        SS2_AXIS, category="SS2", extra='\n[guard]\ndi_guard = "Guard17"\nstop_on_open = "SS2"\n'))
    (d / f"axis_{STO_AXIS:02d}_sto.toml").write_text(_axis_file(STO_AXIS, category="STO"))
    (d / f"axis_{BRAKED:02d}_braked.toml").write_text(_axis_file(
        BRAKED, extra='\n[brake]\ndo_brake = "BrakeOut19"\ndi_released = "BrakeIn19"\nrelease_timeout = 1.0\nengage_timeout = 1.0\n'))
    return load_config(d)


class _ListHandler(logging.Handler):
    def __init__(self, records: list) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Twin:
    """A numpy core and a compiled core fed the same inputs from one plant (driven by the numpy
    core's outputs); `cycle()` steps both and compares every state array and the message."""

    def __init__(self, cfg) -> None:
        self.ref = ControlCore(cfg, engine="numpy")
        self.cmp = ControlCore(cfg, engine="compiled")
        self.n = n = self.ref.n
        self.dt = self.ref.dt
        self.t = 0.0
        reg = cfg.io_registry
        self.pin = {r: reg.pin(r).pin for r in ("EStop", "GuardClosed", "ReducedSpeed", "Reset", "Guard17",
                                                "BrakeIn3", "BrakeIn19", "Ref1", "Ref2", "Ref3", "Ref5", "LimitMin6",
                                                "LimitMax6", "Index8")}
        self.fb = np.zeros(64, dtype=HAL_AXIS_FEEDBACK)
        self.fb["active"][:n] = 1
        self.fb["referenced"][HOMING_ABS - 1] = 1
        self.bank = np.zeros(16, dtype=np.uint64)
        # NC contacts: the compiled core gets physical levels and this mask (the runner's gather_feedback)
        self.nc = np.array([0x5A5A_5A5A_5A5A_5A5A ^ w for w in range(16)], dtype=np.uint64)
        self.phys, self.logical = np.zeros(16, dtype=np.uint64), np.zeros(16, dtype=np.uint64)
        self.inputs = {"GuardClosed": True, "Guard17": True}
        # plant: the HAL sim's torque model
        self.x, self.v = np.zeros(n), np.zeros(n)
        self.g = np.zeros(n)
        for a in cfg.axes:
            k = a.kinematics
            self.g[a.id - 1] = 2 * (k.max_acceleration or 10 * k.max_velocity) / 100
        self.damp = 10 * self.g / np.array([a.kinematics.max_velocity for a in sorted(cfg.axes, key=lambda a: a.id)])
        self.stuck: dict[int, float] = {}
        # the published status of each core (CU_STATUS, as cu_rpc carries it): compiled fill vs numpy fill
        self.status = [np.zeros((), dtype=CU_TO_RPC) for _ in range(2)]
        self.writers = [StatusWriter(rec["status"]) for rec in self.status]
        for w, core in zip(self.writers, (self.ref, self.cmp)):
            w.bind(core)
        # the HAL command frame (CU_TO_HAL, as cu_hal carries it) and the status change test of each core
        self.frames = [np.zeros((), dtype=CU_TO_HAL) for _ in range(2)]
        self.outputs = [HalOutputs(rec) for rec in self.frames]
        for o, core in zip(self.outputs, (self.ref, self.cmp)):
            o.bind(core, reg)
        assert self.outputs[0]._kernel is None and self.outputs[1]._kernel is not None
        self.status_changes = 0
        # the log lines of each core's step (the compiled core makes them from its event codes)
        self.records: list[logging.LogRecord] = []
        self._handler = _ListHandler(self.records)
        self._logger = logging.getLogger("control_unit")
        self._logger.addHandler(self._handler)
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self.hal_ok = True
        self.fb_age = 0
        self.cycles = 0
        self.logged = 0

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)

    # --- inputs -------------------------------------------------------------------------------
    def _plant(self) -> None:
        core, dt = self.ref, self.dt
        tq = np.where(core.ax.enable & ~core.fault, np.clip(core.torque, -100, 100), 0.0)
        a = self.g * tq - self.damp * self.v - 2 * self.g * np.sign(self.v)
        self.v += a * dt
        self.x += self.v * dt
        w = TORQUE_AXIS - 1
        if self.x[w] < WALL:  # the hard stop
            self.x[w], self.v[w] = WALL, 0.0
        for axis, x in self.stuck.items():
            self.x[axis - 1], self.v[axis - 1] = x, 0.0

    def _bits(self) -> None:
        x, core = self.x, self.ref
        on = dict(self.inputs)
        on["BrakeIn3"] = bool(core.ax.brake_release[2])
        on["BrakeIn19"] = bool(core.ax.brake_release[BRAKED - 1]) and self.cycles % 7 != 0  # a slow contact
        for a in (1, 2, 3):
            on[f"Ref{a}"] = x[a - 1] * core.p.homing_dir[a - 1] > 2.0
        on["Ref5"] = x[4] < -2.0
        on["LimitMin6"] = x[5] < -3.0
        on["LimitMax6"] = x[5] > 90.0
        on["Index8"] = x[7] > 0.5 and (x[7] % 2.0) < 0.05
        self.bank[:] = 0
        for role, active in on.items():
            if active:
                p = self.pin[role]
                self.bank[p // 64] |= np.uint64(1 << (p % 64))

    def set(self, role: str, on: bool) -> None:
        self.inputs[role] = on

    # --- one cycle ---------------------------------------------------------------------------------
    def cmd(self, code: C, axis: int = 0, *args: float, pin: int = 0, expect: int | None = 0, re: bool = False):
        """Execute on both cores (from the operator's path when it admits the command and `re` is not
        set, else from the recipe executor's); the acks must be equal, and `expect`ed when given."""
        rpc = code in commands.ALLOWED[CommandSource.RPC] and not re
        source = CommandSource.RPC if rpc else CommandSource.RE
        a = tuple(float(v) for v in args) + (0.0,) * (8 - len(args))
        c = Command(1, 1, 0, int(code), axis, pin, 0, a, "")
        r1 = commands.execute(self.ref, c, source, self.t)
        r2 = commands.execute(self.cmp, c, source, self.t)
        assert r1 == r2, (code.name, r1, r2)
        assert expect is None or int(r1[0]) == expect, (code.name, axis, r1)
        self.compare(f"after {code.name}")
        return r1

    def cycle(self, k: int = 1, skip: int = 0) -> None:
        """`k` cycles; `skip` missed periods before the first (the time jumps, ticks > 1)."""
        for i in range(k):
            self.t += self.dt * (1 + (skip if i == 0 else 0))
            self._plant()
            self._bits()
            self.fb["position"][: self.n] = self.x
            self.fb["velocity"][: self.n] = self.v
            self.fb["torque_estimate"][: self.n] = self.ref.torque
            self.fb["drive_ready"][: self.n] = self.ref.ax.enable & ~self.faults()
            self.fb["drive_fault"][: self.n] = self.faults()
            lines = []
            for core in (self.ref, self.cmp):
                if self.hal_ok and core is self.cmp:
                    # the cycle runner's compiled path: physical bank + NC mask in, one call
                    np.bitwise_xor(self.bank, self.nc, out=self.phys)
                    core._kernels.gather_feedback(array_table([self.fb.view(np.uint8), self.phys, self.nc,
                                                               self.logical, core._arena, core._layout]), self.fb_age)
                    assert np.array_equal(self.logical, self.bank)
                elif self.hal_ok:
                    core.set_inputs(self.fb, self.bank, True, fb_age=self.fb_age)
                else:
                    core.set_inputs(None, None, False, hal_missing=False)
                self.records.clear()
                core.step(self.t)
                lines.append([(r.name, r.levelno, r.getMessage()) for r in self.records])
            assert lines[0] == lines[1], f"cycle {self.cycles + 1}: log lines differ: {lines}"
            self.logged += len(lines[0])
            changed = [w.fill(core, self.cycles, self.fb_age) for w, core in zip(self.writers, (self.ref, self.cmp))]
            for o in self.outputs:
                o.write()
            assert changed[0] == changed[1], f"cycle {self.cycles + 1}: status change seen {changed}"
            self.status_changes += changed[0]
            self.cycles += 1
            self.compare(f"cycle {self.cycles} (t={self.t:.3f})")

    _fault = np.zeros(0, dtype=bool)

    def faults(self) -> np.ndarray:
        if len(self._fault) != self.n:
            self._fault = np.zeros(self.n, dtype=bool)
        return self._fault

    def until(self, cond: Callable[[ControlCore], bool], limit: int, what: str) -> int:
        for i in range(limit):
            if cond(self.ref):
                return i
            self.cycle()
        raise AssertionError(f"{what}: not within {limit} cycles")

    # --- comparison ---------------------------------------------------------------------------------
    def compare(self, where: str) -> None:
        a, b = self.ref.store, self.cmp.store
        for name, x, y, skip in (
            ("f", a.f, b.f, SCRATCH_F), ("b", a.b, b.b, SCRATCH_B), ("u8", a.u8, b.u8, ()), ("lc", a.lc, b.lc, ()),
            ("errors", a.errors, b.errors, ()), ("tmode", a.tmode, b.tmode, ()), ("master", a.master, b.master, ()),
            ("sp_hist", a.sp_hist, b.sp_hist, ()), ("bits", a.bits, b.bits, ()), ("bank", a.bank, b.bank, ()),
            ("s", a.s, b.s, ()), ("si", a.si, b.si, SCRATCH_SI),
        ):
            keep = [r for r in range(len(x)) if r not in skip]
            xs, ys = x[keep], y[keep]
            if xs.dtype.kind == "f":
                bad = ~np.isclose(xs, ys, rtol=0.0, atol=TOL, equal_nan=True)
            else:
                bad = xs != ys
            if np.any(bad):
                idx = np.argwhere(bad)[0]
                row = keep[idx[0]]
                label = ROW_NAMES.get(name, {}).get(row, row)
                raise AssertionError(f"{where}: {name}[{label}]{tuple(idx[1:])} numpy={xs[tuple(idx)]!r} "
                                     f"compiled={ys[tuple(idx)]!r}")
        assert self.ref.m.message == self.cmp.m.message, (where, self.ref.m.message, self.cmp.m.message)
        a, b = (rec.reshape(1).view(np.uint8) for rec in self.status)
        assert np.array_equal(a, b), f"{where}: published status differs at byte {np.flatnonzero(a != b)[:4]}"
        a, b = (rec.reshape(1).view(np.uint8) for rec in self.frames)
        assert np.array_equal(a, b), f"{where}: HAL command frame differs at byte {np.flatnonzero(a != b)[:4]}"
        assert self.ref.m.state is self.cmp.m.state and self.ref.m.errors == self.cmp.m.errors, where


HOMING_ABS, TORQUE_AXIS = 9, 7
SCRATCH_F = {K.F_W_VDES, K.F_W_D, K.F_W_T1, K.F_W_DV, K.F_W_VN, K.F_W_U, K.F_W_T}
SCRATCH_B = {K.B_IS_POS, K.B_IS_VEL, K.B_CHANGED, K.B_K_MASK, K.B_K_REST}
SCRATCH_SI = {K.SI_EV_N, K.SI_EV_LOST}
ROW_NAMES = {"f": dict(enumerate(K._F_ROWS)), "b": dict(enumerate(K._B_ROWS)), "u8": dict(enumerate(K._U_ROWS)),
             "lc": dict(enumerate(K._LC_ROWS)), "s": dict(enumerate(K._S_ROWS)), "si": dict(enumerate(K._SI_ROWS))}


def _ready(tw: Twin) -> None:
    tw.until(lambda c: c.m.state == MachineState.IDLE, 400, "machine Idle")
    tw.cycle(20)


def _enable_all(tw: Twin) -> None:
    tw.cmd(C.ENABLE_AXIS, 0)
    tw.until(lambda c: all(int(c.ax.power[s]) == PowerState.STANDBY for s in range(c.n)), 3000, "all Standby")
    tw.cycle(50)


def _home_all(tw: Twin) -> None:
    for a in (1, 2, 3, 5, 6, 7, 8):
        tw.cmd(C.HOME, a)
    tw.until(lambda c: all(c.ax.referenced[a - 1] for a in (1, 2, 3, 5, 6, 7, 8)), 12000, "all homed")
    tw.cycle(100)


# --- the scenarios -------------------------------------------------------------------------------------
def scenario_moves_and_jog(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    tw.cmd(C.MOVE_ABSOLUTE, 10, 40.0, 300.0, 1500.0)
    tw.cmd(C.MOVE_RELATIVE, 4, 300.0)
    tw.cmd(C.MOVE_VELOCITY, MASTER, 15.0, 800.0)
    tw.cycle(300, skip=0)
    tw.cycle(30, skip=4)  # missed cycles: ticks > 1, the integral covers the elapsed time
    tw.cmd(C.MOVE_RELATIVE, 10, -25.0)
    tw.cmd(C.JOG_POSITIVE, 18, 10.0)
    tw.cmd(C.STOP, MASTER)
    tw.cycle(200)
    tw.cmd(C.JOG_STOP, 18)
    tw.cmd(C.JOG_NEGATIVE, 4)
    tw.cycle(150)
    tw.cmd(C.JOG_STOP, 0)
    tw.cmd(C.MOVE_ABSOLUTE, 10, 200.0, expect=int(ResultCode.INVALID_ARGUMENT))  # beyond max_pos
    tw.cycle(400)
    assert tw.ref.ax.in_position[9], "axis 10 did not reach its target"


def scenario_homing_all_methods(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    _home_all(tw)
    assert tw.ref.home.edge[TORQUE_AXIS - 1] == pytest.approx(WALL, abs=0.1)
    tw.cmd(C.HOME, 9)  # absolute: referenced from the drive
    tw.cmd(C.HOME, 10)  # NoHoming: nothing to do
    tw.cmd(C.MOVE_VELOCITY, 5, 200.0)  # referenced: full speed, soft limit max_pos (100) stops it
    tw.until(lambda c: c.traj.vel[4] == 0.0 and c.traj.pos[4] > 90.0, 3000, "A5 at its soft limit")
    tw.cycle(50)


def scenario_estop_and_reset(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    for a in (1, 2, 4, SS2_AXIS, STO_AXIS, BRAKED):
        tw.cmd(C.JOG_POSITIVE, a, 100.0)
    tw.cycle(200)
    tw.set("EStop", True)
    tw.cycle(400)
    assert tw.ref.m.safety == SafetyState.SAFETY_STOP
    tw.cmd(C.RESET_ERROR, 0, expect=int(ResultCode.SAFETY))  # refused: E-stop still pressed
    tw.set("Reset", True)  # the Reset button, refused the same way
    tw.cycle(5)
    tw.set("Reset", False)
    tw.cycle(5)
    assert tw.ref.m.safety == SafetyState.SAFETY_STOP
    tw.set("EStop", False)
    tw.cycle(20)
    tw.set("Reset", True)  # the Reset button (compiled: inside the kernel)
    tw.cycle(5)
    tw.set("Reset", False)
    tw.cycle(50)
    assert tw.ref.m.safety != SafetyState.SAFETY_STOP
    _enable_all(tw)
    tw.cmd(C.EMERGENCY_STOP, 0)
    tw.cycle(300)
    tw.cmd(C.RESET_ERROR, 0)
    tw.cycle(20)
    tw.set("ReducedSpeed", True)
    _enable_all(tw)
    tw.cmd(C.JOG_NEGATIVE, 2, 100.0)
    tw.cycle(200)
    tw.set("ReducedSpeed", False)
    tw.cycle(100)


def scenario_guard_open(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    tw.cmd(C.JOG_POSITIVE, SS2_AXIS, 100.0)
    tw.cmd(C.JOG_POSITIVE, 1, 50.0)
    tw.cycle(150)
    tw.set("Guard17", False)  # SS2: ramp, then hold with ss2_holding_torque
    tw.cycle(300)
    assert int(tw.ref.ax.errors[SS2_AXIS - 1]) & AxisError.GUARD_OPEN
    tw.set("GuardClosed", False)  # the machine guard
    tw.cycle(300)
    tw.set("Guard17", True)
    tw.set("GuardClosed", True)
    tw.cycle(10)
    tw.cmd(C.RESET_ERROR, SS2_AXIS)
    tw.cmd(C.RESET_ERROR, 0)
    tw.cycle(100)


def scenario_lag_errors(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    for a in LAG:
        tw.stuck[a] = 0.0  # the axis stops following
        tw.cmd(C.MOVE_ABSOLUTE, a, 30.0)
    tw.cycle(600)
    assert tw.ref.m.safety == SafetyState.SAFETY_STOP  # the Critical axis
    tw.stuck.clear()
    tw.fb_age = 3  # late HAL frames: judged against their own cycle's set-point
    tw.cycle(50)
    tw.fb_age = 0
    tw.cmd(C.RESET_ERROR, 0)
    tw.cycle(50)
    # feedback frozen past feedback_hold_cycles: the law holds
    tw.fb_age = tw.ref.hold_cycles + 2
    tw.cycle(30)
    tw.fb_age = 0
    tw.cycle(30)


def scenario_coupling_and_gear(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    tw.until(lambda c: c.cpl.master[SLAVE - 1] == MASTER - 1, 200, "auto-coupled")
    tw.cmd(C.MOVE_ABSOLUTE, MASTER, 60.0)
    tw.cycle(500)
    tw.stuck[SLAVE] = 0.0  # the slave loses sync
    tw.cmd(C.MOVE_ABSOLUTE, MASTER, 10.0)
    tw.cycle(300)
    tw.stuck.clear()
    tw.cycle(300)  # the slave catches up
    tw.cmd(C.RESET_ERROR, SLAVE)
    tw.cycle(10)
    tw.cmd(C.DECOUPLE, SLAVE)
    tw.cycle(100)
    tw.cmd(C.COUPLE, 10, 2.0, pin=18)  # a pair coupled by command
    tw.cmd(C.MOVE_RELATIVE, 18, 5.0)
    tw.cycle(300)
    assert tw.ref.traj.pos[9] - tw.ref.traj.pos[17] * 2.0 == pytest.approx(tw.ref.cpl.offset[9])
    tw._fault = np.zeros(tw.n, dtype=bool)
    tw._fault[17] = True  # the master's drive faults: the slave is decoupled with a flag
    tw.cycle(50)
    assert int(tw.ref.ax.errors[9]) & AxisError.MASTER_FAULT and tw.ref.cpl.master[9] == -1
    tw._fault[17] = False
    tw.cycle(10)
    tw.cmd(C.RESET_ERROR, 18)
    tw.cmd(C.RESET_ERROR, 10)
    tw.cmd(C.ENABLE_AXIS, 18)
    tw.cycle(400)
    tw.cmd(C.COUPLE, 10, 2.0, pin=18)
    tw.cycle(10)
    tw.cmd(C.DISABLE_AXIS, 18, re=True)  # disabling a master decouples its slaves first
    tw.cycle(400)
    assert tw.ref.cpl.master[9] == -1
    tw.cmd(C.GEAR_CHANGE, 12, pin=2)
    tw.cycle(400)
    tw.cmd(C.GEAR_CHANGE, 13, pin=3)
    tw.cycle(20)
    tw.cmd(C.EMERGENCY_STOP, 0)  # a gear change cut short
    tw.cycle(200)


def scenario_enable_disable_modes(tw: Twin) -> None:
    _ready(tw)
    _enable_all(tw)
    tw.cmd(C.SET_MODE, 10, pin=int(OperationalMode.VELOCITY))
    tw.cmd(C.MOVE_ABSOLUTE, 10, 10.0, expect=int(ResultCode.STATE_FORBIDS))  # refused in Velocity mode
    tw.cmd(C.MOVE_VELOCITY, 10, 20.0)
    tw.cycle(100)
    tw.cmd(C.SET_MODE, 10, pin=int(OperationalMode.POSITION), expect=int(ResultCode.STATE_FORBIDS))  # moving
    tw.cmd(C.STOP, 10)
    tw.cycle(200)
    tw.cmd(C.SET_MODE, 10, pin=int(OperationalMode.POSITION))
    tw.cmd(C.SET_MACHINE_STATE, 0, pin=int(MachineState.IDLE))  # the recipe path's motion made it Active
    tw.cmd(C.ALLOW_MANUAL_MODE, 0, 1.0)
    tw.cmd(C.SET_MACHINE_STATE, 0, pin=int(MachineState.MANUAL))
    tw.cmd(C.JOG_POSITIVE, 3, 5.0)
    tw.cycle(100)
    tw.cmd(C.JOG_STOP, 3)
    tw.cycle(1700)  # manual timeout (1.5 s) back to Idle
    assert tw.ref.m.state == MachineState.IDLE
    tw.cmd(C.DISABLE_AXIS, 0)
    tw.cycle(600)
    tw.cmd(C.SET_MACHINE_STATE, 0, pin=int(MachineState.STOPPED))
    tw.cycle(50)
    tw.cmd(C.SET_MACHINE_STATE, 0, pin=int(MachineState.IDLE))
    tw.cycle(50)
    _enable_all(tw)
    tw._fault = np.zeros(tw.n, dtype=bool)
    tw._fault[9] = True  # a drive fault: STO of that axis
    tw.cycle(30)
    tw._fault[9] = False
    tw.cycle(10)
    tw.cmd(C.RESET_ERROR, 10)
    tw.hal_ok = False  # the HAL is lost: every axis STO, SystemError
    tw.cycle(20)
    tw.hal_ok = True
    tw.cycle(20)
    tw.cmd(C.RESET_ERROR, 0)
    tw.cycle(50)
    assert tw.ref.m.state == MachineState.IDLE


SCENARIOS = {f.__name__.removeprefix("scenario_"): f for f in (
    scenario_moves_and_jog, scenario_homing_all_methods, scenario_estop_and_reset, scenario_guard_open,
    scenario_lag_errors, scenario_coupling_and_gear, scenario_enable_disable_modes)}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_compiled_cycle_equals_numpy_reference(cfg, name):
    """Issue 15 'the numpy implementation stays as the reference': both engines over recorded
    scenarios (moves abs/rel/velocity, jog, homing of every method, E-stop / safety stop and reset,
    guard open, lag errors of every policy, coupling and gearing, enable/disable, mode and machine
    state changes, drive fault, HAL loss) agree on every state array and output within 1e-12 after
    every cycle and every command (the compiled core fed as the cycle runner feeds it: physical DI
    levels and the NC mask), publish byte-identical CU_STATUS records and HAL command frames
    (cu_hal, brake DO bits included), see the same status changes and log the same lines."""
    tw = Twin(cfg)
    try:
        SCENARIOS[name](tw)
    finally:
        tw.close()
    assert tw.cycles > 500 and tw.logged > 0
    assert 0 < tw.status_changes < tw.cycles  # the status change test said both yes and no


def test_the_twin_comparison_catches_a_difference(cfg):
    """The comparison the scenarios rely on fails on a 1e-9 difference in one state value and on a
    different published byte (it is not a check that cannot fail)."""
    tw = Twin(cfg)
    tw.close()
    tw.cycle(5)
    tw.cmp.law.integral[0] += 1e-9
    with pytest.raises(AssertionError, match="integral"):
        tw.compare("perturbed")
    tw.cmp.law.integral[0] = tw.ref.law.integral[0]
    tw.status[1]["status"]["axes"]["lag_error"][0] += 1.0
    with pytest.raises(AssertionError, match="published status"):
        tw.compare("perturbed status")
    tw.status[1]["status"]["axes"]["lag_error"][0] = tw.status[0]["status"]["axes"]["lag_error"][0]
    tw.frames[1]["do_bank"][0] ^= np.uint64(1)
    with pytest.raises(AssertionError, match="HAL command frame"):
        tw.compare("perturbed frame")


def test_kernel_constants_match_the_enums():
    """The values frozen into the kernels are the ones the numpy modules use."""
    assert [int(k) for k in params.Lag] == [K.LAG_CRITICAL, K.LAG_UNWANTED, K.LAG_NEUTRAL, K.LAG_DESIRED]
    assert [int(k) for k in params.HomingKind] == [K.HK_HOME_SENSOR, K.HK_LIMIT_SWITCH, K.HK_TORQUE_LIMIT,
                                                    K.HK_INDEX_PULSE, K.HK_ABSOLUTE, K.HK_NO_HOMING]
    assert [int(k) for k in homing.Phase] == [K.HP_IDLE, K.HP_CLEAR, K.HP_SEARCH, K.HP_SETTLE, K.HP_BACKOFF]
    assert [int(k) for k in machines.OnPhase] == [K.ON_WAIT_READY, K.ON_BRAKE_RELEASE, K.ON_HOLD_CHECK]
    assert [int(k) for k in machines.OffPhase] == [K.OFF_RAMP, K.OFF_BRAKE_ENGAGE]


def test_unknown_engine_is_refused(cfg):
    with pytest.raises(ValueError, match="engine 'fortran'"):
        ControlCore(cfg, engine="fortran")


def test_compiled_cycle_allocates_nothing():
    """Issue 15 'zero allocation per cycle': after warm-up, 10 000 compiled ControlCore cycles
    (set_inputs + step; 5 000 with every axis moving, 5 000 at rest) leave
    sys.getallocatedblocks() unchanged."""
    import gc

    core = ControlCore(load_config(REPO / "config"))
    n = core.n
    fb = np.zeros(64, dtype=HAL_AXIS_FEEDBACK)
    fb["active"][:n] = 1
    bank = np.zeros(16, dtype=np.uint64)
    guard = core.cfg.io_registry.pin("GuardClosed").pin
    bank[guard // 64] = np.uint64(1 << (guard % 64))
    brake = core.cfg.io_registry.pin("BrakeIn3").pin
    pos, vel, ready = fb["position"][:n], fb["velocity"][:n], fb["drive_ready"][:n]
    t = [0.0]

    def run(k: int) -> None:
        for _ in range(k):
            t[0] += core.dt
            np.copyto(pos, core.traj.pos)  # a plant that follows perfectly
            np.copyto(vel, core.traj.vel)
            np.copyto(ready, core.ax.enable)
            core.set_inputs(fb, bank, True)
            core.step(t[0])

    def cmd(code: C, axis: int, *args: float) -> None:
        a = tuple(args) + (0.0,) * (8 - len(args))
        r = commands.execute(core, Command(1, 1, 0, int(code), axis, 0, 0, a, ""), CommandSource.RPC, t[0])
        assert r[0] == 0, r

    run(300)
    cmd(C.ENABLE_AXIS, 0)
    for _ in range(200):
        bank[brake // 64] = np.uint64(int(bank[brake // 64]) | (1 << (brake % 64))) if core.ax.brake_release[2] \
            else bank[brake // 64]
        run(1)
    run(500)
    assert all(int(p) == PowerState.STANDBY for p in core.ax.power), core.ax.power
    for a in (1, 2, 3):
        cmd(C.JOG_POSITIVE, a, 0.5)  # slow: still moving after 5 000 cycles, far from the limits
    cmd(C.JOG_POSITIVE, 4, 100.0)
    run(5000)  # warm-up with motion (numba's dispatcher and the float free list settle)
    gc.collect()
    gc.disable()  # (a collection frees a few cached objects that the next cycles make again once)
    try:
        run(1000)
        before = sys.getallocatedblocks()
        before = sys.getallocatedblocks()  # now counting the int object that holds the count
        run(5000)
        moving = sys.getallocatedblocks()
        assert not np.all(core.at_rest()), "the axes were not moving"
        gc.enable()
        cmd(C.JOG_STOP, 0)
        run(3000)
        assert np.all(core.at_rest())
        gc.collect()
        gc.disable()
        run(1000)
        rest0 = sys.getallocatedblocks()
        rest0 = sys.getallocatedblocks()
        run(5000)
        rest1 = sys.getallocatedblocks()
    finally:
        gc.enable()
    assert moving - before == 0, f"{moving - before} blocks allocated in 5 000 moving cycles"
    assert rest1 - rest0 == 0, f"{rest1 - rest0} blocks allocated in 5 000 cycles at rest"


def test_the_jit_fallback_only_loads_numbas_cache():
    """Fixed interface 1, for the fallback: after `make kernels` a process told to use numba's JIT compiles
    nothing (every entry point a cache hit, no new cache files)."""
    env = dict(os.environ, EVO_KERNELS="jit")
    cache = Path(REPO / "control_unit" / "kernels" / "__pycache__")
    files = {p.name for p in cache.glob("*.nb[ic]")}
    assert files, "make kernels fills numba's cache"
    probe = ("from control_unit import kernels; k = kernels.load(); "
             "print(k.loaded.backend, len(k.compiled), sum(sum(d.stats.cache_hits.values()) for d in "
             "k.loaded.dispatchers.values()))")
    second = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    backend, compiled, hits = second.stdout.split()
    from control_unit.kernels import KERNELS

    assert (backend, int(compiled), int(hits)) == ("jit", 0, len(KERNELS.exports)), second.stdout
    assert {p.name for p in cache.glob("*.nb[ic]")} == files, "the second process wrote new cache files"


def test_the_built_module_loads_without_numba():
    """Cold start: a fresh process loads the CU's AOT module (built by make kernels for these sources) in
    milliseconds and builds and steps a default core on it without importing numba."""
    env = dict(os.environ)
    env.pop("EVO_KERNELS", None)
    probe = ("import sys; from common.config import load_config; from control_unit.core import ControlCore; "
             "from control_unit import kernels; k = kernels.load(); c = ControlCore(load_config('config')); "
             "c.step(0.001); c.step(0.002); print(k.loaded.backend, k.load_s, 'numba' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    backend, load_s, numba_in = r.stdout.split()[-3:]
    assert (backend, numba_in) == ("aot", "False"), (r.stdout, r.stderr)
    assert float(load_s) < 0.5


@pytest.mark.parametrize("name", ["moves_and_jog", "estop_and_reset"])
def test_the_jit_fallback_equals_numpy_reference(cfg, name, monkeypatch):
    """The JIT (used while the AOT module is stale) holds to the reference like the AOT module does."""
    monkeypatch.setenv("EVO_KERNELS", "jit")
    tw = Twin(cfg)
    try:
        assert tw.cmp._kernels.loaded.backend == "jit"
        SCENARIOS[name](tw)
    finally:
        tw.close()
    assert tw.cycles > 500


def test_a_wrong_signature_is_refused_not_compiled(cfg):
    """No compile inside the cycle: a call with types the kernels were not built for is refused."""
    core = ControlCore(cfg)
    args = list(core._kargs)
    args[0] = args[0].astype(np.float32)
    with pytest.raises(TypeError):
        core._kernels.cycle_step(*args, 0.001)
    assert math.isfinite(core.dt)


def test_direct_entry_points_are_checked_once_against_the_signature():
    """The cycle calls the kernels' compiled entry points (no per-call type resolution);
    Kernels.entry hands one out only for arguments of the compiled types — a float where an int64 is
    compiled, or a non-contiguous array, is refused at bind time, not misread."""
    from control_unit import kernels

    k = kernels.load()
    entry_point = k.entry
    st = K.Store(2)
    st.s[K.S_DT] = 0.001
    st.pi[K.PI_PIN_LIMIT_MIN:] = K.PIN_FALSE
    step = entry_point("cycle_step", st.arena, st.layout, 0.0)
    before = int(st.si[K.SI_CYCLE])
    assert isinstance(step(st.arena, st.layout, 0.001), int)  # the events count, as from the dispatcher
    assert int(st.si[K.SI_CYCLE]) == before + 1  # it stepped the very arena passed
    status = np.zeros(CU_TO_RPC.fields["status"][0].itemsize, dtype=np.uint8)
    with pytest.raises(TypeError, match="argument 3 does not match the compiled signature: float 0.5 where int64"):
        entry_point("fill_status", status, st.arena, st.layout, 0.5, 0)
    with pytest.raises(TypeError, match="argument 0 does not match the compiled signature: a non-contiguous"):
        entry_point("fill_status", status[::2], st.arena, st.layout, 0, 0)
    fill = entry_point("fill_status", status, st.arena, st.layout, 0, 0)
    assert fill(status, st.arena, st.layout, 7, 0) is True  # the first fill writes the machine state
    assert fill(status, st.arena, st.layout, 8, 1) is False  # heartbeat and age alone are no change


def test_cu_publish_commits_what_typedp2pwriter_commit_would(fresh_prefix):
    """The CU's commits in one compiled call (kernels/outputs.cu_publish, on the AOT module) against real
    segments and readers: cu_hal every call, cu_rpc / cu_re / cu_mqt only when `which` names them, each a
    whole commit whose heartbeat continues the Python writer's, cu_re's and cu_mqt's status copied from
    cu_rpc's — what CycleRunner's Python path (TypedP2pWriter.commit + np.copyto) publishes."""
    from common.shm.p2p import TypedP2pReader, TypedP2pWriter, segment_name
    from common.shm.segments import CU_TO_MQT, CU_TO_RE
    from common.shm.views import field_bytes, flat_bytes
    from control_unit import kernels
    from control_unit.kernels.outputs import PUB_MQT, PUB_RE, PUB_RPC, publish_args

    k = kernels.load()
    segs = {"hal": CU_TO_HAL, "rpc": CU_TO_RPC, "re": CU_TO_RE, "mqt": CU_TO_MQT}
    w = {d: TypedP2pWriter.create(segment_name("cu", d), "cu", d, dt) for d, dt in segs.items()}
    r = {d: TypedP2pReader.attach(segment_name("cu", d), d, dt, exclusive=False) for d, dt in segs.items()}
    try:
        for x in w.values():
            x.commit()  # (CycleRunner's writers start with Python commits too)
        args = publish_args(w["hal"], w["rpc"], w["re"], w["mqt"])
        publish = k.loaded.entry("cu_publish", 0, *args)
        rng = np.random.default_rng(3)
        for which in (PUB_RPC | PUB_RE | PUB_MQT, 0, PUB_RE, PUB_MQT | PUB_RPC):
            before = {d: w[d].heartbeat for d in w}
            for x in w.values():
                flat_bytes(x.local)[:] = rng.integers(0, 256, x.dtype.itemsize, dtype=np.uint8)
            publish(which, *args)
            due = {"hal": True, "rpc": bool(which & PUB_RPC), "re": bool(which & PUB_RE), "mqt": bool(which & PUB_MQT)}
            for d in w:
                assert w[d].heartbeat == before[d] + due[d], (which, d)
                assert r[d].copy_in() == w[d].heartbeat & 0x7FFFFFFF, (which, d)
                if due[d]:
                    assert r[d].local.tobytes() == w[d].local.tobytes(), (which, d)
            if due["re"] or due["mqt"]:
                src = field_bytes(w["rpc"].local, "status")
                for d in ("re", "mqt"):
                    if due[d]:
                        assert (field_bytes(r[d].local, "status") == src).all(), (which, d)
    finally:
        for x in r.values():
            x.close()
        for x in w.values():
            x.close()
