"""The CU with the real simulated HAL on the default machine (X/Y/Z + spindle), as subprocesses:
enable/home/move to position, jog, limit switch, RE commands and locks, E-stop (SS1) and
recovery by reset, HAL killed and restarted, config reload, machine states, diagnostics.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from common.shm.commands import CuCommand as C
from common.shm.commands import ResultCode as R
from common.shm.conversions import decode_str
from common.shm.p2p import TypedP2pReader, segment_name
from common.shm.segments import CU_TO_MQT
from common.states import (
    AxisError,
    CommandSource,
    MachineError,
    MachineState,
    MotionState,
    PowerState,
    SafeStopCategory,
    SafetyState,
)
from tests.helpers import ModuleProcess, shm_entries, wait_for
from tests.cu_support import CuClient, Machine, axis_errors, machine_test_config

X, Y, Z, SP = 1, 2, 3, 4


@pytest.fixture(scope="module")
def machine(shm_prefix, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cu_machine")
    m = Machine(shm_prefix, machine_test_config(tmp), tmp / "run")
    try:
        m.start()
        yield m
    finally:
        rc_cu, _ = m.stop()
    assert rc_cu == 0, m.logs()  # SIGTERM: clean exit
    assert not [n for n in shm_entries(shm_prefix) if n.split("_")[1] == "cu"], shm_entries(shm_prefix)


@pytest.fixture
def rpc(machine) -> CuClient:
    yield machine.rpc
    print(machine.logs())  # shown by pytest only when the test failed


def st(c: CuClient):
    return c.status()


def power(c: CuClient, a: int) -> int:
    return int(c.axis(a)["power"])


def enable(c: CuClient, *axes: int) -> None:
    for a in axes:
        c.cmd(C.ENABLE_AXIS, a)
    wait_for(lambda: all(power(c, a) == PowerState.STANDBY for a in axes), 10, what=f"axes {axes} in Standby")


def ready(c: CuClient, *axes: int, homed: bool = False) -> None:
    """Bring axes to Standby (and referenced) whatever earlier tests left, so each test also runs alone."""
    off = [a for a in axes if power(c, a) == PowerState.POWER_OFF]
    if off:
        enable(c, *off)
    for a in axes if homed else ():
        if not c.axis(a)["referenced"]:
            c.cmd(C.HOME, a)
            wait_for(lambda: c.axis(a)["referenced"] == 1 and c.axis(a)["motion"] == MotionState.STANDSTILL, 30,
                     what=f"axis {a} homed")


def test_cu_without_hal_exits_after_attach_timeout(fresh_prefix, tmp_path):
    cfg = machine_test_config(tmp_path, {"config.toml": {"cu": {"hal_attach_timeout_s": 0.3}}})
    cu = ModuleProcess("control_unit", fresh_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
    try:
        cu.proc.wait(30)
    finally:
        rc = cu.stop()
    assert rc == 1
    assert "hal_attach_timeout_s" in cu.output()
    assert shm_entries(fresh_prefix) == []


def test_enable_home_move_in_position(rpc):
    enable(rpc, X, Z)  # Z has a brake with BrakeIn confirmation
    assert rpc.axis(Z)["brake_released"] == 1
    assert axis_errors(rpc, X) & AxisError.NOT_REFERENCED
    rpc.cmd(C.HOME, X)
    wait_for(lambda: rpc.axis(X)["referenced"] == 1, 20, what="X homed")
    assert not axis_errors(rpc, X) & AxisError.NOT_REFERENCED
    window = 0.05  # config/axis_01_x.toml in_position_window
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(120.0,))
    wait_for(lambda: rpc.axis(X)["motion"] != MotionState.STANDSTILL or rpc.axis(X)["in_position"], 5,
             what="X moving")
    wait_for(lambda: rpc.axis(X)["in_position"] == 1 and power(rpc, X) == PowerState.STANDBY, 10,
             what="X in position")
    ax = rpc.axis(X)
    assert abs(ax["position"] - 120.0) <= window
    assert ax["target_position"] == 120.0
    assert axis_errors(rpc, X) == 0
    # relative move and a refused target outside the soft limits (max_pos 600)
    rpc.cmd(C.MOVE_RELATIVE, X, args=(-20.0,), expect=R.UNKNOWN_COMMAND)  # RE's vocabulary only
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(100.0,))
    wait_for(lambda: rpc.axis(X)["in_position"] == 1 and abs(rpc.axis(X)["position"] - 100.0) <= window, 10,
             what="X at 100")
    ack = rpc.cmd(C.MOVE_ABSOLUTE, X, args=(700.0,), expect=R.INVALID_ARGUMENT)
    assert "soft limit" in ack.message


def test_jog_unreferenced_axis_limited_to_5_percent(rpc):
    enable(rpc, Y)
    rpc.cmd(C.JOG_NEGATIVE, Y)  # default jog speed 50 (10 %), unreferenced: 5 % of 500 = 25
    wait_for(lambda: rpc.axis(Y)["motion"] == MotionState.CONSTANT_VELOCITY, 5, what="Y jogging")
    assert rpc.axis(Y)["setpoint_velocity"] == pytest.approx(-25.0)
    assert rpc.axis(Y)["lock_source"] == CommandSource.RPC
    rpc.cmd(C.JOG_STOP, Y)
    wait_for(lambda: rpc.axis(Y)["motion"] == MotionState.STANDSTILL and power(rpc, Y) == PowerState.STANDBY, 5,
             what="Y stopped")


def test_limit_switch_stops_axis_and_blocks_that_direction(machine, rpc):
    ready(rpc, X)
    rpc.cmd(C.JOG_POSITIVE, X, args=(30.0,))
    wait_for(lambda: rpc.axis(X)["setpoint_velocity"] > 0, 5, what="X jogging")
    machine.inject({"di_logical": {"11": True}})  # LimitMax1
    wait_for(lambda: axis_errors(rpc, X) & AxisError.LIMIT_MAX, 5, what="LIMIT_MAX flag")
    wait_for(lambda: rpc.axis(X)["setpoint_velocity"] == 0 and rpc.axis(X)["motion"] == MotionState.MOTION_ERROR,
             5, what="X stopped in error")
    assert "maximum limit switch" in decode_str(st(rpc)["message"])
    rpc.cmd(C.JOG_POSITIVE, X, expect=R.STATE_FORBIDS)  # in error
    rpc.cmd(C.RESET_ERROR, X)
    ack = rpc.cmd(C.JOG_POSITIVE, X, expect=R.SAFETY)  # toward the active switch
    assert "limit switch" in ack.message
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(float(rpc.axis(X)["position"]) - 5.0,))  # away from it: fine
    wait_for(lambda: rpc.axis(X)["in_position"] == 1, 10, what="X moved away")
    machine.inject({})
    assert axis_errors(rpc, X) & ~AxisError.NOT_REFERENCED == 0


def test_re_commands_locks_and_re_lost(machine, rpc):
    ready(rpc, Y)
    assert rpc.axis(Y)["lock_source"] == CommandSource.NONE  # the jog's implicit lock ended with it
    re = CuClient("re")
    try:
        rpc.cmd(C.ACQUIRE_LOCK, Y)  # explicit: held until released
        assert "locked by RPC" in re.cmd(C.ACQUIRE_LOCK, Y, expect=R.LOCKED).message
        rpc.cmd(C.RELEASE_LOCK, Y)
        re.cmd(C.ACQUIRE_LOCK, Y)
        ack = rpc.cmd(C.JOG_POSITIVE, Y, expect=R.LOCKED)
        assert "locked by RE" in ack.message
        re.cmd(C.RESET_ERROR, 0, expect=R.UNKNOWN_COMMAND)  # not in the RE -> CU vocabulary
        re.cmd(C.MOVE_RELATIVE, Y, args=(-2.0,))
        wait_for(lambda: rpc.axis(Y)["in_position"] == 1, 5, what="Y relative move")
        re.cmd(C.MOVE_VELOCITY, Y, args=(15.0,))
        wait_for(lambda: rpc.axis(Y)["setpoint_velocity"] == pytest.approx(15.0), 5, what="Y at 15")
        assert st(rpc)["machine_state"] == MachineState.ACTIVE  # recipe motion from Idle
        re.pause_heartbeat()  # the RE hangs: after 0.5 s its axes stop and are unlocked
        wait_for(lambda: int(st(rpc)["machine_errors"]) & MachineError.RE_LOST, 5, what="RE_LOST")
        wait_for(lambda: rpc.axis(Y)["motion"] == MotionState.STANDSTILL, 5, what="Y stopped")
        assert rpc.axis(Y)["lock_source"] == CommandSource.NONE
        assert st(rpc)["machine_state"] == MachineState.IDLE
    finally:
        re.close()
    rpc.cmd(C.RESET_ERROR, 0)
    assert not int(st(rpc)["machine_errors"]) & MachineError.RE_LOST


def test_machine_states_and_manual_timeout(rpc):
    ack = rpc.cmd(C.SET_MACHINE_STATE, pin=MachineState.MANUAL, expect=R.STATE_FORBIDS)
    assert "AllowManualMode" in ack.message
    rpc.cmd(C.ALLOW_MANUAL_MODE, args=(1.0,))
    rpc.cmd(C.SET_MACHINE_STATE, pin=MachineState.MANUAL)
    assert st(rpc)["machine_state"] == MachineState.MANUAL
    # no operator activity for manual_timeout_s (1.5 s in the test config) -> back to Idle, flagged
    wait_for(lambda: st(rpc)["machine_state"] == MachineState.IDLE, 6, what="manual timeout")
    assert int(st(rpc)["machine_errors"]) & MachineError.MANUAL_TIMEOUT
    rpc.cmd(C.SET_MACHINE_STATE, pin=MachineState.SYSTEM_ERROR, expect=R.INVALID_ARGUMENT)
    rpc.cmd(C.RESET_ERROR, 0)


def test_estop_during_motion_ss1_then_recovery_needs_reset(machine, rpc):
    ready(rpc, X, homed=True)
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(500.0,))
    wait_for(lambda: rpc.axis(X)["setpoint_velocity"] > 200, 5, what="X fast")
    machine.inject({"di": {"0": False}})  # EStop is NC: physical 0 = pressed
    wait_for(lambda: st(rpc)["safety_state"] == SafetyState.SAFETY_STOP, 5, what="safety stop")
    assert rpc.axis(X)["safe_stop"] == SafeStopCategory.SS1
    assert int(st(rpc)["machine_errors"]) & MachineError.ESTOP
    # SS1: ramp at max_decel_safe to rest, brake, torque off after sto_brake_delay
    wait_for(lambda: power(rpc, X) == PowerState.POWER_OFF, 5, what="X torque off")
    ax = rpc.axis(X)
    assert ax["enabled"] == 0 and ax["position"] < 499.0
    assert all(power(rpc, a) == PowerState.POWER_OFF for a in (Y, Z))
    rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY)
    ack = rpc.cmd(C.RESET_ERROR, 0, expect=R.SAFETY)  # E-stop still pressed
    assert "E-stop" in ack.message
    machine.inject({})
    wait_for(lambda: not st(rpc)["estop"], 5, what="E-stop released")
    # released, yet still stopped: recovery needs an operator reset
    assert st(rpc)["safety_state"] == SafetyState.SAFETY_STOP
    assert int(st(rpc)["machine_errors"]) & MachineError.RECOVERY_REQUIRED
    rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY)
    rpc.cmd(C.RESET_ERROR, 0)
    assert st(rpc)["safety_state"] == SafetyState.SAFE
    enable(rpc, X)


def test_guard_opened_during_motion_stops_axis(machine, rpc):
    ready(rpc, X, homed=True)
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(300.0,))
    wait_for(lambda: rpc.axis(X)["setpoint_velocity"] > 100, 5, what="X moving")
    machine.inject({"di": {"1": False}})  # GuardClosed (NO): door opened
    wait_for(lambda: axis_errors(rpc, X) & AxisError.GUARD_OPEN, 5, what="GUARD_OPEN")
    assert rpc.axis(X)["safe_stop"] == SafeStopCategory.SS1  # [guard] stop_on_open
    wait_for(lambda: power(rpc, X) == PowerState.POWER_OFF, 5, what="X off")
    assert int(st(rpc)["machine_errors"]) & MachineError.GUARD_OPEN
    assert st(rpc)["safety_state"] == SafetyState.SAFE  # an axis stop, not a machine safety stop
    assert rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY).message.endswith("guard open")
    machine.inject({})
    wait_for(lambda: not int(st(rpc)["machine_errors"]) & MachineError.GUARD_OPEN, 5, what="guard closed")
    rpc.cmd(C.RESET_ERROR, X)
    enable(rpc, X)


def test_hal_killed_safety_stop_and_no_motion_until_reset(machine, rpc):
    enable(rpc, X, Y)
    machine.hal.kill(signal.SIGKILL)
    wait_for(lambda: st(rpc)["safety_state"] == SafetyState.SAFETY_STOP, 5, what="safety stop on HAL loss")
    s = st(rpc)
    assert int(s["machine_errors"]) & MachineError.HAL_STALE
    assert s["machine_state"] == MachineState.SYSTEM_ERROR
    assert all(rpc.axis(a)["enabled"] == 0 for a in (X, Y))
    machine.hal = ModuleProcess("hal", machine.prefix, ["--config", str(machine.config_dir)],
                                log_dir=machine.run_dir, env={"EVO_RUN_DIR": str(machine.run_dir)}).start()
    hb = int(st(rpc)["hal_heartbeat"])
    wait_for(lambda: int(st(rpc)["hal_heartbeat"]) > hb + 200, 15, what="HAL back")
    # the HAL is back: still no motion, nothing enabled, until the operator resets
    assert st(rpc)["safety_state"] == SafetyState.SAFETY_STOP
    assert all(rpc.axis(a)["enabled"] == 0 for a in (X, Y))
    rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY)
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(50.0,), expect=R.SAFETY)
    rpc.cmd(C.RESET_ERROR, 0)
    assert st(rpc)["machine_state"] == MachineState.IDLE
    enable(rpc, X)
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(float(rpc.axis(X)["position"]) + 10.0,))
    wait_for(lambda: rpc.axis(X)["in_position"] == 1 and power(rpc, X) == PowerState.STANDBY, 10,
             what="X moves again")


def test_reload_config_at_standstill_only(machine, rpc, tmp_path):
    ready(rpc, X)
    ack = rpc.cmd(C.RELOAD_CONFIG)  # "" = the running directory
    assert "reloaded" in ack.message
    assert power(rpc, X) == PowerState.STANDBY  # state carried over
    bad = tmp_path / "bad"
    bad.mkdir()
    link = f"/tmp/cubad{os.getpid()}"
    os.symlink(bad, link)
    try:
        ack = rpc.cmd(C.RELOAD_CONFIG, text=link, expect=R.INVALID_ARGUMENT)
        assert int(st(rpc)["machine_errors"]) & MachineError.CONFIG_RELOAD_FAILED
    finally:
        os.unlink(link)
    rpc.cmd(C.JOG_POSITIVE, X, args=(20.0,))
    rpc.cmd(C.RELOAD_CONFIG, expect=R.STATE_FORBIDS)
    rpc.cmd(C.JOG_STOP, X)
    wait_for(lambda: rpc.axis(X)["motion"] == MotionState.STANDSTILL, 5, what="X stopped")
    rpc.cmd(C.RESET_ERROR, 0)


def test_diagnostics_segments(machine, rpc):
    ready(rpc, X)
    def read():  # noqa: ANN202
        with rpc._lock:
            return rpc._read().copy()

    rpc.cmd(C.JOG_POSITIVE, X, args=(10.0,))  # the PID state shows while the axis works
    d = wait_for(lambda: (x := read())["stats"]["cycle_count"] > 1000 and x["pid"][X - 1]["output"] != 0.0 and x,
                 10, what="1000 CU cycles and PID output while jogging")
    rpc.cmd(C.JOG_STOP, X)
    wait_for(lambda: power(rpc, X) == PowerState.STANDBY, 5, what="X at rest")
    assert d["stats"]["cycle_time_ns"] == 1_000_000
    assert int(d["stats"]["jitter_hist"].sum()) > 0
    assert d["pid"][X - 1]["output"] != 0.0 or d["pid"][X - 1]["integral"] != 0.0
    assert d["status"]["axis_count"] == 4
    assert d["status"]["axes"][X - 1]["name"] == b"X"
    r = TypedP2pReader.attach(segment_name("cu", "mqt"), "mqt", CU_TO_MQT, exclusive=False, stale_reads=10**6)
    try:
        q = r.try_read() if False else wait_for(r.try_read, 5, what="cu_mqt read")
        assert q["status"]["axes"][X - 1]["power"] == PowerState.STANDBY
        assert q["stats"]["cycle_count"] > 0
    finally:
        r.close()


def test_sustained_overruns_are_flagged_then_cleared(machine, rpc):
    """A stalled CU (SIGSTOP ~80 ms = ~80 skipped ticks) raises CYCLE_OVERRUN for operators; a second
    without sustained overruns clears it. Every skipped tick stays counted in the stats."""
    with rpc._lock:
        before = int(rpc._read()["stats"]["overruns"])
    os.kill(machine.cu.pid, signal.SIGSTOP)
    try:
        time.sleep(0.08)  # the stall itself is the stimulus, not a wait for a condition
    finally:
        os.kill(machine.cu.pid, signal.SIGCONT)
    def overruns() -> int:
        with rpc._lock:
            return int(rpc._read()["stats"]["overruns"])

    # the skipped ticks are counted (the stats publish after the next cycle: wait for them, since on
    # a loaded machine CYCLE_OVERRUN may already be up from an earlier stall)
    wait_for(lambda: overruns() >= before + 50, 5, what="the stall's skipped ticks counted")
    wait_for(lambda: int(st(rpc)["machine_errors"]) & MachineError.CYCLE_OVERRUN, 5, what="CYCLE_OVERRUN raised")
    wait_for(lambda: not int(st(rpc)["machine_errors"]) & MachineError.CYCLE_OVERRUN, 30,
             what="CYCLE_OVERRUN cleared after a calm second")
