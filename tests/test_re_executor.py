"""Recipe executor state machine against a fake CU/HAL port (unit, fast): commands, steps,
pause/resume, abort, errors and on_error policies. The real processes are in test_re_integration.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.recipes import MachineLimits
from common.shm.commands import CuCommand, HalCommand, ReCommand, ResultCode
from common.shm.rings import Ack
from common.shm.segments import CU_STATUS, HAL_IO
from common.states import (
    AxisError,
    CouplingState,
    GearboxState,
    MotionState,
    OperationalMode,
    PowerState,
    ReState,
    SafetyState,
    StepResult,
)
from recipe_executor import actions
from recipe_executor.executor import Executor, RecoveredRun
from recipe_executor.port import Ticket
from tests.helpers import REPO


class FakePort:
    """A CU + HAL that take every command at the next `cycle()`, ack it and move axes `speed`
    units per cycle. `refuse[(target, code)] = (ResultCode, message)` refuses a command code
    (`(target, code, axis)`: only for that axis)."""

    def __init__(self, machine: MachineLimits) -> None:
        self.st = np.zeros((), CU_STATUS)
        self.io = np.zeros((), HAL_IO)
        for a in machine.axes:
            ax = self.st["axes"][a.id - 1]
            ax["id"] = a.id
            ax["in_position"] = 1
        self.cu_hb = self.hal_hb = 0
        self.cu_on = self.hal_on = True
        self.sent: list[Ticket] = []
        self.queue: list[Ticket] = []
        self.refuse: dict[tuple[str, int], tuple[ResultCode, str]] = {}
        self.speed = 5.0
        self.rid = 0
        self.homing: dict[int, int] = {}

    # --- Port ---
    def cu_ready(self) -> bool:
        return self.cu_on

    def hal_ready(self) -> bool:
        return self.hal_on

    def _send(self, target: str, code: int, axis: int, pin: int, args) -> Ticket:
        self.rid += 1
        t = Ticket(target, int(code), self.rid, axis=axis, pin=pin, args=tuple(args), sent_at=time.monotonic())
        self.sent.append(t)
        self.queue.append(t)
        return t

    def send_cu(self, code, axis=0, pin=0, args=()):
        return self._send("cu", code, axis, pin, args)

    def send_hal(self, code, pin=0, args=()):
        return self._send("hal", code, 0, pin, args)

    def cu_status(self):
        return self.st

    def cu_axis(self, axis_id):
        return self.st["axes"][axis_id - 1]

    def cu_commits(self):
        return self.cu_hb

    def hal_io(self):
        return self.io

    def hal_commits(self):
        return self.hal_hb

    # --- the simulated consumers ---
    def ax(self, axis_id: int):
        return self.st["axes"][axis_id - 1]

    def cycle(self) -> None:
        self.cu_hb += 1
        self.hal_hb += 1
        keep = []
        for t in self.queue:
            if (t.target == "cu" and not self.cu_on) or (t.target == "hal" and not self.hal_on):
                keep.append(t)
                continue
            r = self.refuse.get((t.target, t.code, t.axis)) or self.refuse.get((t.target, t.code))
            if r is None:
                self._apply(t)
                r = (ResultCode.OK, "ok")
            t.ack = Ack(t.request_id, t.request_id, r[0], 0, r[1])
            t.ack_commit = self.cu_hb if t.target == "cu" else self.hal_hb
        self.queue = keep
        for axes in self.st["axes"][:8]:
            m = int(axes["motion"])
            if m in (MotionState.CONSTANT_VELOCITY, MotionState.STOPPING) and not axes["setpoint_velocity"]:
                d = float(axes["target_position"]) - float(axes["position"])
                step = max(-self.speed, min(self.speed, d))
                axes["position"] = float(axes["position"]) + step
                if abs(d) <= self.speed:
                    axes["motion"] = MotionState.STANDSTILL
                    axes["in_position"] = 1
        for a, n in list(self.homing.items()):
            if n <= 1:
                ax = self.ax(a)
                ax["referenced"] = 1
                ax["motion"] = MotionState.STANDSTILL
                ax["position"] = ax["target_position"] = 0.0
                ax["in_position"] = 1
                del self.homing[a]
            else:
                self.homing[a] = n - 1

    def _apply(self, t: Ticket) -> None:
        if t.target == "hal":
            if t.code == HalCommand.SET_DO:
                w, b = divmod(t.pin, 64)
                v = int(self.io["do_bank"][w])
                self.io["do_bank"][w] = (v | (1 << b)) if t.args[0] else (v & ~(1 << b))
            elif t.code == HalCommand.SET_AO:
                self.io["ao_values"][t.pin] = t.args[0]
            return
        axes = [t.axis] if t.axis else [i + 1 for i in range(4)]
        for a in axes:
            ax = self.ax(a)
            c = CuCommand(t.code)
            if c is CuCommand.MOVE_ABSOLUTE:
                ax["target_position"] = t.args[0]
                ax["motion"] = MotionState.CONSTANT_VELOCITY
                ax["setpoint_velocity"] = 0.0
                ax["in_position"] = 0
            elif c in (CuCommand.STOP, CuCommand.EMERGENCY_STOP):
                ax["motion"] = MotionState.STANDSTILL
                ax["setpoint_velocity"] = 0.0
                ax["in_position"] = int(float(ax["position"]) == float(ax["target_position"]))
                self.homing.pop(a, None)
            elif c is CuCommand.ENABLE_AXIS:
                ax["power"] = PowerState.STANDBY
                ax["enabled"] = 1
            elif c is CuCommand.DISABLE_AXIS:
                ax["power"] = PowerState.POWER_OFF
                ax["enabled"] = 0
            elif c is CuCommand.HOME:
                ax["motion"] = MotionState.HOMING
                ax["referenced"] = 0
                ax["in_position"] = 0
                self.homing[a] = 5
            elif c is CuCommand.SET_MODE:
                ax["mode"] = t.pin
            elif c is CuCommand.COUPLE:
                ax["coupling"] = CouplingState.SLAVE_COUPLED
                ax["master_axis"] = t.pin
            elif c is CuCommand.DECOUPLE:
                ax["coupling"] = CouplingState.UNCOUPLED
            elif c is CuCommand.GEAR_CHANGE:
                ax["gearbox"] = GearboxState.NEUTRAL if t.pin == 0 else t.pin
            elif c is CuCommand.MOVE_VELOCITY:
                ax["setpoint_velocity"] = t.args[0]
                ax["motion"] = MotionState.CONSTANT_VELOCITY if t.args[0] else MotionState.STANDSTILL

    def codes(self, code: CuCommand | HalCommand) -> list[Ticket]:
        return [t for t in self.sent if t.code == code and (t.target == "cu") == isinstance(code, CuCommand)]


@pytest.fixture(scope="module")
def machine() -> MachineLimits:
    return MachineLimits.from_config(load_config(REPO / "config"))


@pytest.fixture
def rig(tmp_path, machine):
    port = FakePort(machine)
    ex = Executor(port, machine, tmp_path, stop_timeout_s=2.0)
    return port, ex, tmp_path


def recipe(d: Path, name: str, body: str) -> None:
    (d / f"{name}.toml").write_text(body)


def cmd(ex: Executor, code: ReCommand, text: str = "") -> tuple[ResultCode, str]:
    return ex.command(int(code), text, time.monotonic())


def run_until(port: FakePort, ex: Executor, pred, timeout: float = 5.0, now=None):
    """Cycle the fake consumers and tick the executor until `pred()` (real time passes too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port.cycle()
        ex.tick(time.monotonic() if now is None else now())
        if pred():
            return
        time.sleep(0.0002)
    raise AssertionError(f"not reached: state {ex.state.name}, message {ex.message!r}")


def load_start(ex: Executor, name: str) -> None:
    assert cmd(ex, ReCommand.LOAD, name)[0] == ResultCode.OK, ex.message
    assert cmd(ex, ReCommand.START)[0] == ResultCode.OK


# --- commands and refusals -------------------------------------------------------------------
def test_load_refusals_run_nothing(rig):
    port, ex, d = rig
    r, msg = cmd(ex, ReCommand.LOAD, "ghost")
    assert r == ResultCode.NOT_FOUND and "ghost" in msg
    recipe(d, "bad", '[[step]]\ntype = "enable"\naxes = ["X"]\n[[step]]\ntype = "move"\ntargets = { X = 601 }\n')
    r, msg = cmd(ex, ReCommand.LOAD, "bad")
    assert r == ResultCode.INVALID_ARGUMENT
    assert msg == "bad: step 2, targets.X: 601 outside soft limits [0, 600]"
    assert ex.state == ReState.IDLE
    r, msg = cmd(ex, ReCommand.START)
    assert r == ResultCode.STATE_FORBIDS and "Idle" in msg
    run_until(port, ex, lambda: True)
    assert port.sent == []


@pytest.mark.parametrize(
    "code, state",
    [(ReCommand.PAUSE, ReState.LOADED), (ReCommand.RESUME, ReState.LOADED), (ReCommand.ABORT, ReState.LOADED),
     (ReCommand.ABORT, ReState.IDLE), (ReCommand.STEP, ReState.IDLE), (ReCommand.RESUME, ReState.IDLE)],
)
def test_commands_forbidden_by_state(rig, code, state):
    _, ex, d = rig
    if state == ReState.LOADED:
        recipe(d, "r", '[[step]]\ntype = "dwell"\nseconds = 0\n')
        cmd(ex, ReCommand.LOAD, "r")
    assert ex.state == state
    r, msg = cmd(ex, code)
    assert r == ResultCode.STATE_FORBIDS and state.name.title() in msg
    assert ex.state == state


def test_unknown_command_code(rig):
    _, ex, _ = rig
    assert ex.command(99, "", time.monotonic())[0] == ResultCode.UNKNOWN_COMMAND


def test_load_forbidden_while_running_and_reset(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "dwell"\nseconds = 60\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.action is not None)
    assert cmd(ex, ReCommand.LOAD, "r")[0] == ResultCode.STATE_FORBIDS
    assert cmd(ex, ReCommand.RESET)[0] == ResultCode.STATE_FORBIDS
    assert cmd(ex, ReCommand.ABORT)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.ABORTED)
    assert cmd(ex, ReCommand.RESET)[0] == ResultCode.OK
    assert ex.state == ReState.IDLE and ex.snapshot().program == ""


# --- a whole run -------------------------------------------------------------------------------
FULL = """
[recipe]
description = "every kind of step"
[[step]]
type = "enable"
axes = ["X", "Y", "Spindle"]
[[step]]
type = "move"
targets = { X = 20, Y = 10 }
velocity = 100
acceleration = 500
[[step]]
type = "repeat"
count = 3
  [[step.steps]]
  type = "move"
  relative = true
  targets = { X = 5 }
  [[step.steps]]
  type = "dwell"
  seconds = 0
[[step]]
type = "move"
targets = { Y = 30 }
wait = false
[[step]]
type = "wait_in_position"
axes = ["Y"]
[[step]]
type = "set_mode"
axis = "Y"
mode = "Velocity"
[[step]]
type = "couple"
axis = "Y"
master = "X"
ratio = 2
[[step]]
type = "decouple"
axis = "Y"
[[step]]
type = "gear_change"
axis = "Spindle"
gear = 2
[[step]]
type = "move_velocity"
axis = "Spindle"
velocity = 100
[[step]]
type = "stop"
axes = ["Spindle"]
[[step]]
type = "home"
axes = ["Z"]
[[step]]
type = "set_do"
pin = 20
value = true
[[step]]
type = "set_ao"
pin = 0
value = 123.5
[[step]]
type = "wait_di"
pin = 41
[[step]]
type = "wait_ai"
pin = 0
above = 5
[[step]]
type = "call"
recipe = "sub"
[[step]]
type = "disable"
axes = ["Spindle"]
[[step]]
type = "message"
text = "all done"
"""


def test_full_recipe_runs_to_completed(rig):
    port, ex, d = rig
    recipe(d, "full", FULL)
    recipe(d, "sub", '[[step]]\ntype = "move"\ntargets = { X = 1 }\n')
    port.io["di_bank"][0] = 1 << 41
    port.io["ai_values"][0] = 6.0
    load_start(ex, "full")
    snap = ex.snapshot()
    assert (snap.state, snap.program, snap.step_count) == (ReState.RUNNING, "full", 19)
    seen_steps = set()

    def done() -> bool:
        seen_steps.add(ex.snapshot().current_step)
        return ex.state != ReState.RUNNING

    run_until(port, ex, done)
    snap = ex.snapshot()
    assert snap.state == ReState.COMPLETED, snap.message
    assert (snap.progress, snap.cycle_count, snap.step_result) == (100.0, 1, StepResult.OK)
    assert snap.message.startswith("completed full")
    assert seen_steps >= {1, 2, 3, 4, 12}  # instant steps may chain within one tick
    moves = [(t.axis, t.args[0]) for t in port.codes(CuCommand.MOVE_ABSOLUTE)]
    assert moves == [(1, 20.0), (2, 10.0), (1, 25.0), (1, 30.0), (1, 35.0), (2, 30.0), (1, 1.0)]
    assert port.codes(CuCommand.MOVE_ABSOLUTE)[0].args[1:3] == (100.0, 500.0)
    assert float(port.ax(1)["position"]) == 1.0 and float(port.ax(2)["position"]) == 30.0
    assert int(port.ax(2)["mode"]) == OperationalMode.VELOCITY
    assert [(t.axis, t.pin, t.args[0]) for t in port.codes(CuCommand.COUPLE)] == [(2, 1, 2.0)]
    assert int(port.ax(4)["gearbox"]) == 2 and int(port.ax(4)["power"]) == PowerState.POWER_OFF
    assert int(port.ax(3)["referenced"]) == 1
    assert int(port.io["do_bank"][0]) & (1 << 20) and float(port.io["ao_values"][0]) == 123.5
    # START again from Completed runs it once more
    assert cmd(ex, ReCommand.START)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state != ReState.RUNNING)
    assert ex.snapshot().cycle_count == 2


# --- axis ownership ---------------------------------------------------------------------------
def _codes_in_order(port: FakePort) -> list[tuple[str, int]]:
    return [(CuCommand(t.code).name, t.axis) for t in port.sent if t.target == "cu"]


def test_a_run_holds_its_axes_from_start_to_end(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X", "Y"]\n[[step]]\ntype = "move"\ntargets = { Y = 20 }\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)
    assert _codes_in_order(port) == [
        ("ACQUIRE_LOCK", 1), ("ACQUIRE_LOCK", 2),  # before anything moves
        ("ENABLE_AXIS", 1), ("ENABLE_AXIS", 2), ("MOVE_ABSOLUTE", 2),
        ("RELEASE_LOCK", 1), ("RELEASE_LOCK", 2),  # given back when the run ends
    ]


def test_an_axis_held_by_another_source_refuses_the_start_and_nothing_moves(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X", "Y"]\n')
    port.refuse[("cu", CuCommand.ACQUIRE_LOCK, 2)] = (ResultCode.LOCKED, "axis 2 is locked by RPC")
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    snap = ex.snapshot()
    assert snap.error_code == ResultCode.LOCKED and snap.step_result == StepResult.FAILED
    assert snap.message == "start: cannot take Y: axis 2 is locked by RPC"
    run_until(port, ex, lambda: len(port.sent) >= 3)
    # X was taken and is given back; nothing else was commanded
    assert _codes_in_order(port) == [("ACQUIRE_LOCK", 1), ("ACQUIRE_LOCK", 2), ("RELEASE_LOCK", 1)]


def test_abort_while_taking_the_axes_gives_every_one_back(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X", "Z"]\n')
    load_start(ex, "r")
    ex.tick(time.monotonic())  # ACQUIRE_LOCK sent, not yet acked
    assert [t.code for t in port.sent] == [CuCommand.ACQUIRE_LOCK] * 2
    assert cmd(ex, ReCommand.ABORT)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.ABORTED)
    assert _codes_in_order(port) == [("ACQUIRE_LOCK", 1), ("ACQUIRE_LOCK", 3), ("RELEASE_LOCK", 1),
                                     ("RELEASE_LOCK", 3)]


def test_locks_are_given_back_after_an_abort_and_after_a_failed_step(rig):
    port, ex, d = rig
    port.speed = 0.5
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X"]\n[[step]]\ntype = "move"\ntargets = { X = 100 }\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: float(port.ax(1)["position"]) > 2)
    cmd(ex, ReCommand.ABORT)
    run_until(port, ex, lambda: ex.state == ReState.ABORTED)
    assert _codes_in_order(port)[-1] == ("RELEASE_LOCK", 1)
    port.refuse[("cu", CuCommand.MOVE_ABSOLUTE)] = (ResultCode.SAFETY, "safety stop active")
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert _codes_in_order(port)[-2:] == [("STOP", 1), ("RELEASE_LOCK", 1)]


def test_a_recipe_without_axes_takes_no_locks(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "set_do"\npin = 21\nvalue = true\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)
    assert _codes_in_order(port) == []


# --- failures ---------------------------------------------------------------------------------
def test_cu_refusal_fails_the_step_with_its_reason(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X", "Y"]\n[[step]]\ntype = "move"\ntargets = { X = 50 }\n')
    port.refuse[("cu", CuCommand.MOVE_ABSOLUTE)] = (ResultCode.LOCKED, "axis 1 locked by RPC")
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state in (ReState.ERROR, ReState.COMPLETED))
    snap = ex.snapshot()
    assert snap.state == ReState.ERROR and snap.error_code == ResultCode.LOCKED
    assert "step 2 move" in snap.message and "CU refused MOVE_ABSOLUTE X: axis 1 locked by RPC" in snap.message
    assert snap.step_result == StepResult.FAILED and snap.current_step == 2
    assert sorted(t.axis for t in port.codes(CuCommand.STOP)) == [1, 2]  # on_error abort: the run's axes


def test_hal_refusal_fails_the_step(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "set_do"\npin = 21\nvalue = true\n')
    port.refuse[("hal", HalCommand.SET_DO)] = (ResultCode.IO_ROLE_OWNED, "pin 21 owned by the CU")
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.IO_ROLE_OWNED and "pin 21 owned by the CU" in ex.message


def test_axis_error_flag_during_move_fails_and_stops(rig):
    port, ex, d = rig
    port.speed = 0.5
    recipe(d, "r", '[[step]]\ntype = "move"\ntargets = { X = 100 }\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: float(port.ax(1)["position"]) > 2)
    port.ax(1)["error_flags"] = int(AxisError.LAG_ERROR | AxisError.NOT_REFERENCED)
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.STATE_FORBIDS
    assert "axis X: following (lag) error beyond lag_error_limit" in ex.message
    assert [t.axis for t in port.codes(CuCommand.STOP)] == [1]


def test_safety_stop_fails_the_running_step(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X"]\n[[step]]\ntype = "dwell"\nseconds = 30\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.leaf is not None and ex.leaf.top == 2)
    port.st["safety_state"] = SafetyState.SAFETY_STOP
    port.st["machine_errors"] = 1  # ESTOP
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.SAFETY and "emergency stop pressed" in ex.message


def test_wait_di_timeout_is_an_error_with_message(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "wait_di"\npin = 50\ntimeout = 0.05\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.TIMEOUT
    assert ex.message == "r step 1 wait_di: DI 50 (Cycle start button) not on within 0.05 s"


def test_wait_di_uses_the_logical_value_of_an_nc_contact(rig):
    """The E-stop is NC: a closed circuit (bank bit 1) means 'not pressed', i.e. logical False."""
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "wait_di"\nrole = "EStop"\nvalue = false\ntimeout = 2\n')
    port.io["di_bank"][0] = 1  # pin 0: EStop circuit closed
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)


def test_relative_move_checked_again_at_run_time(rig):
    port, ex, d = rig
    port.ax(1)["position"] = port.ax(1)["target_position"] = 590.0
    recipe(d, "r", '[[step]]\ntype = "move"\nrelative = true\ntargets = { X = 20 }\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.INVALID_ARGUMENT and "X target 610 outside soft limits" in ex.message
    assert port.codes(CuCommand.MOVE_ABSOLUTE) == []


def test_cu_absent_fails_after_the_connect_wait(rig, monkeypatch):
    port, ex, d = rig
    monkeypatch.setattr(actions, "CONNECT_WAIT_S", 0.05)
    port.cu_on = False
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X"]\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.NOT_EXECUTED and "CU not connected" in ex.message
    assert port.sent == []


@pytest.mark.parametrize("policy, code, axis", [("stop", CuCommand.STOP, 0), ("estop", CuCommand.EMERGENCY_STOP, 0)])
def test_on_error_policies(rig, policy, code, axis):
    port, ex, d = rig
    recipe(d, "r", f'[recipe]\non_error = "abort"\n[[step]]\ntype = "enable"\naxes = ["X"]\n'
                   f'[[step]]\ntype = "wait_di"\npin = 50\ntimeout = 0.01\non_error = "{policy}"\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert [t.axis for t in port.codes(code)] == [axis]


# --- pause / resume / abort / step ----------------------------------------------------------
def test_pause_stops_and_resume_reissues_the_absolute_target(rig):
    port, ex, d = rig
    port.speed = 1.0
    port.ax(1)["position"] = port.ax(1)["target_position"] = 10.0
    recipe(d, "r", '[[step]]\ntype = "move"\nrelative = true\ntargets = { X = 100 }\n[[step]]\ntype = "dwell"\nseconds = 0\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: float(port.ax(1)["position"]) >= 30)
    r, msg = cmd(ex, ReCommand.PAUSE)
    assert r == ResultCode.OK and "stopping X" in msg and ex.state == ReState.PAUSED
    run_until(port, ex, lambda: int(port.ax(1)["motion"]) == MotionState.STANDSTILL)
    stopped_at = float(port.ax(1)["position"])
    for _ in range(20):
        port.cycle()
        ex.tick(time.monotonic())
    assert ex.state == ReState.PAUSED and float(port.ax(1)["position"]) == stopped_at < 110
    assert [t.axis for t in port.codes(CuCommand.STOP)] == [1]
    assert cmd(ex, ReCommand.RESUME)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)
    assert [t.args[0] for t in port.codes(CuCommand.MOVE_ABSOLUTE)] == [110.0, 110.0]
    assert float(port.ax(1)["position"]) == 110.0


def test_pause_freezes_dwell_and_wait_timeouts(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "dwell"\nseconds = 10\n[[step]]\ntype = "wait_di"\npin = 50\ntimeout = 5\n')
    clock = [1000.0]
    ex.command(int(ReCommand.LOAD), "r", clock[0])
    ex.command(int(ReCommand.START), "", clock[0])
    run_until(port, ex, lambda: ex.action is not None, now=lambda: clock[0])
    clock[0] += 4
    ex.tick(clock[0])
    ex.command(int(ReCommand.PAUSE), "", clock[0])
    clock[0] += 100  # paused time does not count
    ex.tick(clock[0])
    ex.command(int(ReCommand.RESUME), "", clock[0])
    clock[0] += 5.9
    ex.tick(clock[0])
    assert ex.leaf.top == 1 and ex.state == ReState.RUNNING
    clock[0] += 0.2
    ex.tick(clock[0])
    assert ex.leaf.top == 2
    clock[0] += 4.9
    ex.tick(clock[0])
    assert ex.state == ReState.RUNNING
    clock[0] += 0.2
    ex.tick(clock[0])
    assert ex.state == ReState.ERROR and "not on within 5 s" in ex.message


def test_abort_stops_motion_then_aborted(rig):
    port, ex, d = rig
    port.speed = 0.5
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X", "Y"]\n[[step]]\ntype = "move"\ntargets = { X = 100, Y = 100 }\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: float(port.ax(2)["position"]) > 3)
    r, msg = cmd(ex, ReCommand.ABORT)
    assert r == ResultCode.OK and msg == "aborting: stopping X, Y"
    assert ex.state == ReState.STOPPING
    run_until(port, ex, lambda: ex.state != ReState.STOPPING)
    snap = ex.snapshot()
    assert snap.state == ReState.ABORTED and snap.message == "aborted by operator at step 2"
    assert sorted(t.axis for t in port.codes(CuCommand.STOP)) == [1, 2]
    assert float(port.ax(1)["position"]) < 100
    assert cmd(ex, ReCommand.START)[0] == ResultCode.STATE_FORBIDS  # Aborted: LOAD or RESET first


def test_single_step_mode(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "dwell"\nseconds = 0\n[[step]]\ntype = "set_do"\npin = 20\nvalue = true\n'
                   '[[step]]\ntype = "dwell"\nseconds = 0\n')
    cmd(ex, ReCommand.LOAD, "r")
    assert cmd(ex, ReCommand.STEP)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.PAUSED)
    assert ex.leaves_done == 1 and ex.snapshot().current_step == 1
    assert cmd(ex, ReCommand.STEP)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.PAUSED)
    assert ex.leaves_done == 2 and int(port.io["do_bank"][0]) & (1 << 20)
    assert cmd(ex, ReCommand.RESUME)[0] == ResultCode.OK
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)


def test_message_with_pause_waits_for_resume(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "message"\ntext = "load the part"\npause = true\n[[step]]\ntype = "dwell"\nseconds = 0\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.state == ReState.PAUSED)
    assert ex.snapshot().message.startswith("load the part")
    cmd(ex, ReCommand.RESUME)
    run_until(port, ex, lambda: ex.state == ReState.COMPLETED)


def test_restart_after_a_crash_comes_back_in_error_and_stops_the_axes(tmp_path, machine):
    port = FakePort(machine)
    rec = RecoveredRun(program="demo", step=4, kind="move", state="RUNNING", axes=(1, 2))
    ex = Executor(port, machine, tmp_path, recovered=rec)
    snap = ex.snapshot()
    assert snap.state == ReState.ERROR and snap.error_code == ResultCode.NOT_EXECUTED
    assert snap.message == "restarted while running 'demo' at step 4 (move); not resumed"
    ex.tick(time.monotonic())
    assert [t.axis for t in port.codes(CuCommand.STOP)] == [1, 2]
    assert port.codes(CuCommand.MOVE_ABSOLUTE) == []
    assert cmd(ex, ReCommand.START)[0] == ResultCode.STATE_FORBIDS
    assert cmd(ex, ReCommand.RESET)[0] == ResultCode.OK and ex.state == ReState.IDLE


def test_state_file_round_trip(tmp_path):
    from recipe_executor import state_file

    path = tmp_path / "run" / state_file.FILE_NAME
    assert state_file.recover(path) is None
    state_file.write(path, {"state": "RUNNING", "program": "demo", "step": 3, "kind": "dwell", "axes": [2, 1]})
    assert state_file.recover(path) == RecoveredRun("demo", 3, "dwell", "RUNNING", (2, 1))
    state_file.write(path, {"state": "COMPLETED", "program": "demo", "step": 0, "kind": "", "axes": []})
    assert state_file.recover(path) is None  # ended cleanly: nothing to report
    path.write_text("{not json")
    assert state_file.recover(path) is None
    assert [p.name for p in path.parent.iterdir()] == [state_file.FILE_NAME]  # no temp files left


def test_state_writer_writes_each_new_record_at_once(tmp_path):
    from recipe_executor import state_file

    path = tmp_path / state_file.FILE_NAME
    w = state_file.StateWriter(path)
    for step in range(1, 50):
        w.submit({"state": "RUNNING", "program": "p", "step": step, "kind": "dwell", "axes": []})
        assert state_file.recover(path) == RecoveredRun("p", step, "dwell", "RUNNING", ())  # no lag
    before = path.stat().st_mtime_ns, path.stat().st_ino
    w.submit({"state": "RUNNING", "program": "p", "step": 49, "kind": "dwell", "axes": []})
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before  # unchanged record: not rewritten
    w.flush({"state": "RUNNING", "program": "p", "step": 50, "kind": "move", "axes": [3]})
    assert state_file.recover(path) == RecoveredRun("p", 50, "move", "RUNNING", (3,))


def test_safety_stop_while_paused_ends_the_run(rig):
    port, ex, d = rig
    recipe(d, "r", '[[step]]\ntype = "enable"\naxes = ["X"]\n[[step]]\ntype = "dwell"\nseconds = 30\n')
    load_start(ex, "r")
    run_until(port, ex, lambda: ex.leaf is not None and ex.leaf.top == 2)
    cmd(ex, ReCommand.PAUSE)
    port.st["estop"] = 1
    run_until(port, ex, lambda: ex.state == ReState.ERROR)
    assert ex.error_code == ResultCode.SAFETY and "step 2 dwell: machine:" in ex.message
