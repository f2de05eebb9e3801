"""Following error against late feedback: a HAL frame that arrives k cycles late is judged against
the set-point of its own cycle, so a scheduling hiccup is not a lag error, while an axis that really
stops following still is. ControlCore in-process on the default machine, simulated time."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import load_config
from common.shm.commands import CuCommand as C
from common.shm.rings import Command
from common.shm.segments import HAL_AXIS_FEEDBACK
from common.states import AxisError, CommandSource, MachineError, PowerState, SafetyState
from control_unit import commands
from control_unit.core import ControlCore
from tests.helpers import REPO

Z = 3  # axis id: lag_policy Critical, lag_error_limit 1.0 mm, 250 mm/s


class Rig:
    """The core fed by a plant that follows perfectly, one cycle behind (a HAL frame per cycle)."""

    def __init__(self) -> None:
        cfg = load_config(REPO / "config")
        self.core = core = ControlCore(cfg)
        self.n = core.n
        self.t = 0.0
        self.fb = np.zeros(64, dtype=HAL_AXIS_FEEDBACK)
        self.fb["active"][: self.n] = 1
        self.bits = np.zeros(16, dtype=np.uint64)
        guard = cfg.io_registry.pin("GuardClosed").pin
        self.bits[guard // 64] = np.uint64(1 << (guard % 64))
        self.limit = float(core.p.lag_limit[Z - 1])
        self.brake_pin = cfg.io_registry.pin(f"BrakeIn{Z}").pin  # Z's brake confirms its release

    def _set_bit(self, pin: int, on: bool) -> None:
        w, b = divmod(pin, 64)
        v = int(self.bits[w])
        self.bits[w] = np.uint64(v | (1 << b) if on else v & ~(1 << b))

    def cycle(self, fresh: bool = True, age: int = 0, stuck: dict[int, float] | None = None) -> None:
        core = self.core
        self.t += core.dt
        if fresh:
            self.fb["position"][: self.n] = core.traj.pos
            self.fb["velocity"][: self.n] = core.traj.vel
        for axis, x in (stuck or {}).items():
            self.fb["position"][axis - 1] = x
            self.fb["velocity"][axis - 1] = 0.0
        self.fb["drive_ready"][: self.n] = core.ax.enable
        self._set_bit(self.brake_pin, bool(core.ax.brake_release[Z - 1]))
        core.set_inputs(self.fb, self.bits, True, fb_age=age)
        core.step(self.t)

    def cmd(self, code: C, axis: int = 0, *args: float) -> None:
        a = tuple(args) + (0.0,) * (8 - len(args))
        r = commands.execute(self.core, Command(1, 1, 0, int(code), axis, 0, 0, a, ""), CommandSource.RPC, self.t)
        assert r[0] == 0, r

    def cruising_z(self) -> None:
        for _ in range(200):
            self.cycle()
        self.cmd(C.ENABLE_AXIS, Z)
        for _ in range(3000):  # brake released, drive ready
            self.cycle()
            if self.core.ax.power[Z - 1] == PowerState.STANDBY:
                break
        assert self.core.ax.power[Z - 1] == PowerState.STANDBY, PowerState(int(self.core.ax.power[Z - 1])).name
        self.core.ax.referenced[:] = True
        self.cmd(C.MOVE_ABSOLUTE, Z, -180.0 if self.core.pos[Z - 1] > -90 else 0.0)
        for _ in range(300):  # past the acceleration: constant velocity
            self.cycle()
        assert abs(self.core.traj.vel[Z - 1]) > 100.0


def _healthy(core: ControlCore) -> bool:
    return not int(core.ax.errors[Z - 1]) & AxisError.LAG_ERROR and core.m.safety != SafetyState.SAFETY_STOP \
        and not int(core.m.errors) & MachineError.LAG_CRITICAL


@pytest.mark.parametrize("stall", [5, 20, 60])
def test_late_hal_frames_are_judged_against_their_own_set_point(stall):
    rig = Rig()
    rig.cruising_z()
    core = rig.core
    worst = 0.0
    for k in range(1, stall + 1):  # the HAL publishes nothing for `stall` cycles
        rig.cycle(fresh=False, age=k)
        worst = max(worst, abs(float(core.ax.lag[Z - 1])))
    naive = abs(float(core.traj.pos[Z - 1] - core.pos[Z - 1]))  # set-point now vs the stale frame
    rig.cycle()  # the HAL is back
    assert worst < 0.5 * rig.limit and _healthy(core), (worst, core.m.message)
    if stall >= 20:
        # what judging against the current set-point would have said: a critical lag error
        assert naive > rig.limit


def test_an_axis_that_stops_following_is_still_a_lag_error():
    rig = Rig()
    rig.cruising_z()
    core = rig.core
    stuck = float(core.traj.pos[Z - 1])
    for _ in range(40):  # fresh frames every cycle, but the axis does not move
        rig.cycle(stuck={Z: stuck})
        if not _healthy(core):
            break
    assert int(core.m.errors) & MachineError.LAG_CRITICAL and core.m.safety == SafetyState.SAFETY_STOP


def test_a_config_reload_keeps_judging_late_feedback_against_its_own_set_point():
    """A reload at standstill hands the set-point history to the new core: a HAL frame that is a few
    cycles old right after it is not read as a lag of the whole position (seen as a flaky LAG_ERROR
    right after RELOAD_CONFIG on a loaded machine)."""
    rig = Rig()
    for _ in range(200):
        rig.cycle()
    rig.cmd(C.ENABLE_AXIS, Z)
    for _ in range(3000):
        rig.cycle()
        if rig.core.ax.power[Z - 1] == PowerState.STANDBY:
            break
    rig.core.ax.referenced[:] = True
    rig.cmd(C.MOVE_ABSOLUTE, Z, -50.0)
    for _ in range(5000):
        rig.cycle()
        if rig.core.traj.done[Z - 1] and rig.core.ax.power[Z - 1] == PowerState.STANDBY:
            break
    assert abs(float(rig.core.pos[Z - 1])) > rig.limit  # far from 0: a zeroed history would trip
    new = ControlCore(rig.core.cfg)
    new.adopt(rig.core)
    rig.core = new
    for k in range(1, 6):  # the first frames after the reload are late
        rig.cycle(fresh=False, age=k)
    rig.cycle()
    assert _healthy(new), new.m.message
    assert abs(float(new.ax.lag[Z - 1])) < 0.5 * rig.limit


def test_frozen_feedback_does_not_drive_the_loop():
    """Issue 16: while the HAL's feedback is frozen (heartbeat stuck), the control law holds — no
    torque build-up on a stale position — until the stale threshold stops the machine. Without the
    hold the same freeze winds the torque up (the defect found: 11 % -> 100 %)."""
    def frozen_run(hold_cycles: int) -> tuple[float, float, float]:
        rig = Rig()
        rig.core.hold_cycles = hold_cycles
        rig.cruising_z()
        core = rig.core
        rig.cmd(C.MOVE_ABSOLUTE, Z, -120.0, 20.0)  # slow down to 20 mm/s: room below saturation
        for _ in range(1500):
            rig.cycle()
        assert abs(abs(float(core.traj.vel[Z - 1])) - 20.0) < 1.0
        start_torque = float(core.torque[Z - 1])
        held = (float("nan"), float(core.law.integral[Z - 1]))
        for k in range(1, 61):  # 60 cycles of frozen feedback (below the 100-cycle stale threshold)
            rig.cycle(fresh=False, age=k)
            if k == hold_cycles + 1:
                held = float(core.torque[Z - 1]), float(core.law.integral[Z - 1])
        end = float(core.torque[Z - 1])
        if hold_cycles < 60:
            assert held[1] == float(core.law.integral[Z - 1])  # the integrator held too
        return start_torque, held[0], end

    start, held, end = frozen_run(1)  # the default: feedback more than one cycle old holds
    assert end == held  # no build-up after the hold began
    start_n, _, end_n = frozen_run(10_000)  # the hold disabled: what the defect looked like
    assert abs(end_n) == 100.0  # wound up into saturation
    assert abs(end) < 100.0 and abs(end - start) < 10.0  # a couple of cycles' worth, then held
    assert abs(end_n - start_n) > 5 * abs(end - start)
