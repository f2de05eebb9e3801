"""Watchdog SIGKILL (issue 16, "The fault-injection suite": watchdog SIGKILL): `evo up` itself killed with
SIGKILL takes every child with it (PR_SET_PDEATHSIG), and the next `evo up` on the same run directory and
prefix clears what the killed one left and comes up clean — the CU honouring its latch (an unclean exit
requires an operator reset) — and its `evo down` leaves nothing.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from grpc_bridge.protos.evo.v1 import types_pb2
from tests.fault_support import SOAK, SOAK_REASON, FaultMachine, alive, describe, fault_config, write_soak_results
from tests.fixtures.progs.evo_harness import instance_processes
from tests.helpers import shm_entries, unique_prefix, wait_for


def kill_the_watchdog(first: FaultMachine) -> float:
    """SIGKILL `evo up` of a running machine; every child gone (asserted). Returns seconds until the last went."""
    children = first.remember_pids()
    assert set(children) >= {"hal", "cu", "re", "grpc", "mosquitto", "mqtt"}, children
    assert first.status().cu_ok
    t0 = time.monotonic()
    os.kill(first.up.proc.pid, signal.SIGKILL)
    first.up.proc.wait(10)
    wait_for(lambda: not [p for p in children.values() if alive(p)], 15, 0.02,
             f"every child of the killed watchdog gone ({[n for n, p in children.items() if alive(p)]})")
    gone = time.monotonic() - t0
    try:  # preloaded spares too (they are not in the module table)
        wait_for(lambda: not instance_processes(first.prefix), 15, 0.05, "no process of the killed instance")
    except AssertionError:
        raise AssertionError(f"still running after the watchdog was killed: {describe(instance_processes(first.prefix))}")
    return gone


def next_up_is_clean(second: FaultMachine, old: set[int]) -> None:
    """The next `evo up` on the same run dir and prefix: every module new and running, no error about what
    the killed run left, the CU requiring the reset an unclean exit asks for, then SAFE and cycling."""
    second.start()
    again = second.remember_pids()
    assert not set(again.values()) & old
    out = second.up.output()
    assert "Traceback" not in out and "WriterAlreadyExists" not in out, out[-3000:]
    st = second.wait_status(lambda s: s.cu_ok and s.hal_ok, 30, "CU and HAL live in the new run")
    assert st.safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP and "unclean exit" in st.message, st.message
    second.reset()
    st = second.wait_status(lambda s: s.safety_state == types_pb2.SAFETY_STATE_SAFE, 10, "SAFE after the reset")
    assert st.cu_cycle.cycle_count > 0 and st.hal_ok
    assert shm_entries(second.prefix)


def test_watchdog_sigkill_takes_the_children_and_the_next_up_is_clean(tmp_path):
    """Must exist (issue 16): watchdog SIGKILL — children gone, next `evo up` clean."""
    prefix = unique_prefix("fw")
    config, ports = fault_config(tmp_path / "config")
    first = FaultMachine(tmp_path / "first", prefix, config=config, ports=ports)
    second: FaultMachine | None = None
    try:
        first.start()
        old = set(first.remember_pids().values())
        kill_the_watchdog(first)
        second = FaultMachine(tmp_path / "second", prefix, config=config, ports=ports, run_dir=first.run_dir)
        next_up_is_clean(second, old)
        second.down_and_check_nothing_left()
    finally:
        if second is not None:
            second.teardown()
        first.teardown()


@pytest.mark.skipif(not SOAK, reason=SOAK_REASON)
@pytest.mark.timeout(3600)
def test_soak_watchdog_sigkilled_ten_times_in_a_row(tmp_path):
    """Long version: ten runs on one run dir, each ended by SIGKILL to the watchdog, the eleventh by `evo down`."""
    prefix = unique_prefix("fw")
    config, ports = fault_config(tmp_path / "config")
    runs: list[FaultMachine] = []
    gone_s: list[float] = []
    try:
        runs.append(FaultMachine(tmp_path / "r0", prefix, config=config, ports=ports).start())
        for i in range(1, 11):
            old = set(runs[-1].remember_pids().values())
            gone_s.append(kill_the_watchdog(runs[-1]))
            runs.append(FaultMachine(tmp_path / f"r{i}", prefix, config=config, ports=ports, run_dir=runs[0].run_dir))
            next_up_is_clean(runs[-1], old)
        runs[-1].down_and_check_nothing_left()
        write_soak_results("watchdog_sigkill", {"watchdog_sigkills": len(gone_s), "clean_next_ups": len(gone_s),
                                                "children_gone_max_s": round(max(gone_s), 3),
                                                "children_gone_p50_s": round(sorted(gone_s)[len(gone_s) // 2], 3)})
    finally:
        for m in reversed(runs):
            m.teardown()
