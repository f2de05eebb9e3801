"""The SafetyStop latch outlives the CU (issue 16, DESIGN.md "Safety latches across restarts"; seed 003:
a SafetyStop is left only by an operator reset). A real HAL + CU as subprocesses: the CU is killed
at the worst moment (E-stop released but not reset, or mid-operation) and restarted; the new CU must
come up in SafetyStop and refuse motion until an operator reset. A clean stop needs no reset."""
from __future__ import annotations

import json
import os
import signal
import stat

import pytest

from common.shm.commands import CuCommand as C
from common.shm.commands import ResultCode as R
from common.shm.conversions import decode_str
from common.states import MachineError, MachineState, PowerState, SafetyState
from control_unit.latch import FILE_NAME, LatchRecord, judge, load
from tests.cu_support import CuClient, Machine, machine_test_config
from tests.helpers import ModuleProcess, wait_for

X = 1


@pytest.fixture(scope="module")
def machine(shm_prefix, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cu_latch")
    # staleness by read count can never fire here: a restart must be seen by the writer probe
    slow_stale = {"config.toml": {"cu": {"hal_stale_cycles": 5000}, "hal": {"stale_reads": 5000}}}
    m = Machine(shm_prefix, machine_test_config(tmp, slow_stale), tmp / "run")
    try:
        m.start()
        yield m
    finally:
        m.stop()


def _restart_cu(machine: Machine, sig: int) -> CuClient:
    """Stop the CU with `sig` (SIGKILL = crash, SIGTERM = clean), start a new one, new client."""
    machine.rpc.close()
    if sig == signal.SIGTERM:
        assert machine.cu.stop() == 0
    else:
        machine.cu.kill(sig)
    machine.cu = ModuleProcess("control_unit", machine.prefix, ["--config", str(machine.config_dir)],
                               log_dir=machine.run_dir, env={"EVO_RUN_DIR": str(machine.run_dir)}).start()
    machine.rpc = CuClient("rpc")
    wait_for(lambda: int(machine.rpc.status()["machine_state"]) in (MachineState.IDLE, MachineState.SYSTEM_ERROR),
             20, what="new CU past Starting")
    return machine.rpc


def _latch(machine: Machine) -> dict:
    return json.loads((machine.run_dir / FILE_NAME).read_text())


def _enable(rpc: CuClient) -> None:
    rpc.cmd(C.ENABLE_AXIS, X)
    wait_for(lambda: int(rpc.axis(X)["power"]) == PowerState.STANDBY, 10, what="X in Standby")


def test_a_released_but_unreset_estop_survives_a_cu_crash(machine):
    """Must exist: a CU killed after an E-stop released but not reset comes up requiring a reset."""
    rpc = machine.rpc
    machine.inject({"di": {"0": False}})  # EStop is NC: physical 0 = pressed
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFETY_STOP, 5, what="safety stop")
    # write-ahead: by the time anyone sees the SafetyStop, it is on disk
    rec = _latch(machine)
    assert rec["safety_stop"] is True and "E-stop" in rec["reason"] and rec["running"] is True
    machine.inject({})
    wait_for(lambda: not rpc.status()["estop"], 5, what="E-stop released")
    assert rpc.status()["safety_state"] == SafetyState.SAFETY_STOP  # released, not reset

    rpc = _restart_cu(machine, signal.SIGKILL)
    s = rpc.status()
    assert s["safety_state"] == SafetyState.SAFETY_STOP
    assert int(s["machine_errors"]) & MachineError.RECOVERY_REQUIRED
    assert "latched before the control unit restarted" in decode_str(s["message"])
    assert "latched before the control unit restarted" in machine.cu.output()  # and in the log
    ack = rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY)
    assert int(rpc.axis(X)["enabled"]) == 0, ack.message
    rpc.cmd(C.RESET_ERROR, 0)
    assert rpc.status()["safety_state"] == SafetyState.SAFE
    assert _latch(machine)["safety_stop"] is False
    _enable(rpc)


def test_a_cu_crash_in_normal_operation_requires_a_reset_before_motion(machine):
    """An unclean exit with no SafetyStop latched: the new CU still demands an operator reset."""
    rpc = machine.rpc
    _enable(rpc) if int(rpc.axis(X)["power"]) == PowerState.POWER_OFF else None
    assert rpc.status()["safety_state"] == SafetyState.SAFE
    rpc = _restart_cu(machine, signal.SIGKILL)
    s = rpc.status()
    assert s["safety_state"] == SafetyState.SAFETY_STOP
    assert "unclean exit" in decode_str(s["message"])
    assert int(s["machine_errors"]) & MachineError.RECOVERY_REQUIRED
    rpc.cmd(C.ENABLE_AXIS, X, expect=R.SAFETY)
    rpc.cmd(C.MOVE_ABSOLUTE, X, args=(10.0,), expect=R.SAFETY)
    rpc.cmd(C.RESET_ERROR, 0)
    _enable(rpc)


def test_a_clean_cu_stop_restarts_without_a_reset_and_the_file_is_private(machine):
    rpc = machine.rpc
    if rpc.status()["safety_state"] == SafetyState.SAFETY_STOP:
        rpc.cmd(C.RESET_ERROR, 0)
    rpc = _restart_cu(machine, signal.SIGTERM)
    assert _latch(machine)["running"] is True  # the new CU recorded itself as running
    s = rpc.status()
    assert s["safety_state"] == SafetyState.SAFE and s["machine_state"] == MachineState.IDLE
    _enable(rpc)
    mode = stat.S_IMODE(os.stat(machine.run_dir / FILE_NAME).st_mode)
    assert mode & 0o077 == 0, oct(mode)


def test_an_unreadable_latch_file_fails_safe(tmp_path):
    bad = tmp_path / FILE_NAME
    bad.write_text("{not json")
    rec, problem = load(bad)
    assert rec is None and "unreadable" in problem
    assert judge(rec, problem).required
    assert not judge(None, "").required  # first start ever: nothing to honour
    assert not judge(LatchRecord(running=False), "").required
    assert judge(LatchRecord(running=True, pid=42), "").required


def test_a_hal_restarted_faster_than_the_stale_threshold_is_still_a_hal_loss(machine):
    """Fault-suite finding (issue 16): a HAL killed and back (a preloaded standby) before the CU's stale
    count ran out left the machine out of SafetyStop. The CU probes the HAL's writer lock: a restart is a
    loss, and SafetyStop latches."""
    rpc = machine.rpc
    if rpc.status()["safety_state"] == SafetyState.SAFETY_STOP:
        rpc.cmd(C.RESET_ERROR, 0)
    _enable(rpc) if int(rpc.axis(X)["power"]) == PowerState.POWER_OFF else None
    machine.hal.kill(signal.SIGKILL)
    machine.hal = ModuleProcess("hal", machine.prefix, ["--config", str(machine.config_dir)],
                                log_dir=machine.run_dir, env={"EVO_RUN_DIR": str(machine.run_dir)}).start()
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFETY_STOP, 20, what="safety stop on the HAL restart")
    assert int(rpc.status()["machine_errors"]) & (MachineError.HAL_STALE | MachineError.HAL_MISSING)
    assert int(rpc.axis(X)["enabled"]) == 0
    hb = int(rpc.status()["hal_heartbeat"])
    wait_for(lambda: int(rpc.status()["hal_heartbeat"]) > hb + 100, 20, what="the new HAL cycling")
    assert rpc.status()["safety_state"] == SafetyState.SAFETY_STOP  # latched until an operator reset
    rpc.cmd(C.RESET_ERROR, 0)
    _enable(rpc)


def test_a_cu_restarted_faster_than_the_stale_threshold_makes_the_hal_drop_the_outputs(machine):
    """The HAL probes the CU's writer lock too: the dead CU's last command does not stay applied."""
    rpc = _restart_cu(machine, signal.SIGKILL)
    wait_for(lambda: "cu_hal writer process gone" in machine.hal.output(), 10, what="the HAL saw the CU gone")
    assert rpc.status()["safety_state"] == SafetyState.SAFETY_STOP  # and the new CU requires a reset
    rpc.cmd(C.RESET_ERROR, 0)
