"""Broker frozen and broker killed (issue 16, "The fault-injection suite"): the watchdog's own mosquitto of
the default machine SIGSTOPped, then SIGKILLed. The bridge's health goes Degraded/Down and back to Up by
itself, the retained state is republished into the restarted (empty) broker, and the CU is untouched: its
pid stays and its cycle count keeps going; no module but the killed broker restarts.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable

import pytest

from tests.connector.observer import Observer
from tests.fault_support import SOAK, SOAK_REASON, FaultMachine, write_soak_results
from tests.helpers import unique_prefix, wait_for

ROOT = "evo/evo-demo-gantry"


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    m = FaultMachine(tmp_path_factory.mktemp("fault-broker"), unique_prefix("fb"))
    try:
        m.start()
        yield m
        m.down_and_check_nothing_left()
    finally:
        m.teardown()


def last(o: Observer, topic: str) -> Any:
    seen = o.on(topic)
    return json.loads(seen[-1].payload) if seen else None


def wait_last(o: Observer, topic: str, pred: Callable[[Any], bool], timeout: float, what: str) -> Any:
    return wait_for(lambda: (v := last(o, topic)) is not None and pred(v) and v, timeout, 0.02, what)


def observe(m: FaultMachine) -> Observer:
    o = Observer("127.0.0.1", m.ports.mqtt)
    o.subscribe(f"{ROOT}/#")
    return o


def cu_cycles(m: FaultMachine) -> int:
    return m.status().cu_cycle.cycle_count


def untouched(m: FaultMachine, before: dict[str, dict[str, Any]], cycles: int, *, except_: str = "") -> None:
    """The CU (and every other module but `except_`) kept its pid and restart count; the CU kept cycling."""
    after = m.up.status()
    for name, mod in before.items():
        if name != except_:
            assert (after[name]["pid"], after[name]["restarts"]) == (mod["pid"], mod["restarts"]), (name, after[name])
    wait_for(lambda: cu_cycles(m) > cycles + 100, 10, 0.05, "the CU cycle count going on")


def test_a_frozen_broker_is_seen_and_recovered_with_the_cu_untouched(machine):
    """Must exist (issue 16): broker frozen — health Degraded then Down, Up again after SIGCONT; CU untouched."""
    o = observe(machine)
    try:
        wait_last(o, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up", 30, "health Up")
        before = machine.up.status()
        broker = before["mosquitto"]["pid"]
        cycles = cu_cycles(machine)
        out_at = len(machine.up.output())
        os.kill(broker, signal.SIGSTOP)
        try:
            wait_for(lambda: "broker not answering" in machine.up.output()[out_at:], 20, 0.05,
                     "mqtt Degraded: broker not answering")
            wait_for(lambda: "broker unresponsive" in machine.up.output()[out_at:], 30, 0.05,
                     "mqtt Down: broker unresponsive")
            untouched(machine, before, cycles)  # while the broker is frozen
            cycles = cu_cycles(machine)
        finally:
            os.kill(broker, signal.SIGCONT)
        health = wait_last(o, f"{ROOT}/health/mqtt",
                           lambda v: v["state"] == "Up" and any(e["to"] == "Down" for e in v["events"]), 60,
                           "health Up again, the outage in its history")
        steps = [(e["from"], e["to"]) for e in health["events"]]
        assert ("Up", "Degraded") in steps, steps
        wait_last(o, f"{ROOT}/state", lambda v: v["live"], 30, "state published again")
        untouched(machine, before, cycles)
    finally:
        o.close()


def test_a_killed_broker_is_restarted_and_the_retained_state_republished(machine):
    """Must exist (issue 16): broker killed — health Down then Up, retained state republished, CU untouched."""
    before = machine.up.status()
    old = before["mosquitto"]["pid"]
    cycles = cu_cycles(machine)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (m := machine.up.status()["mosquitto"])["state"] == "running" and m["pid"] != old, 60, 0.02,
             "mosquitto restarted by the watchdog")
    machine.remember_pids()
    # the restarted broker has no persistence: whatever a new subscriber gets was published again
    o = observe(machine)
    try:
        health = wait_last(o, f"{ROOT}/health/mqtt",
                           lambda v: v["state"] == "Up" and any(e["to"] == "Down" for e in v["events"]), 60,
                           "health Up, the outage in its history")
        assert health["link"]["connects"] >= 2 and health["link"]["failures"] >= 1, health["link"]
        assert wait_last(o, f"{ROOT}/online", lambda v: v is True, 30, "online republished")
        wait_last(o, f"{ROOT}/state", lambda v: v["live"], 30, "state republished")
        wait_last(o, f"{ROOT}/modules/cu", lambda v: v.get("pid") == before["cu"]["pid"], 30, "modules/cu republished")
    finally:
        o.close()
    late = observe(machine)  # a subscriber arriving now gets the republished state from the broker's store
    try:
        for topic in ("online", "state", "modules/cu", "health/mqtt"):
            wait_for(lambda t=topic: any(m.retain for m in late.on(f"{ROOT}/{t}")), 30, 0.02, f"{topic} retained")
    finally:
        late.close()
    untouched(machine, before, cycles, except_="mosquitto")


@pytest.mark.skipif(not SOAK, reason=SOAK_REASON)
@pytest.mark.timeout(3600)
def test_soak_broker_frozen_30_s_then_killed_five_times(machine):
    """Long version: the issue's 30 s SIGSTOP, then five SIGKILLs of the broker; each seen and recovered."""
    o = observe(machine)
    figures: dict[str, Any] = {}
    try:
        wait_last(o, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up", 30, "health Up")
        before = machine.up.status()
        cycles = cu_cycles(machine)
        out_at = len(machine.up.output())
        t0 = time.monotonic()
        os.kill(before["mosquitto"]["pid"], signal.SIGSTOP)
        try:
            wait_for(lambda: "broker not answering" in machine.up.output()[out_at:], 20, 0.05, "Degraded")
            figures["frozen_to_degraded_s"] = round(time.monotonic() - t0, 2)
            wait_for(lambda: "broker unresponsive" in machine.up.output()[out_at:], 30, 0.05, "Down")
            figures["frozen_to_down_s"] = round(time.monotonic() - t0, 2)
            time.sleep(max(0.0, 30 - (time.monotonic() - t0)))  # the probe: frozen for 30 s
            untouched(machine, before, cycles)
        finally:
            os.kill(before["mosquitto"]["pid"], signal.SIGCONT)
        t1 = time.monotonic()
        wait_last(o, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up" and v["link"]["connects"] >= 2, 60, "Up again")
        figures["sigcont_to_up_s"] = round(time.monotonic() - t1, 2)
    finally:
        o.close()
    back: list[float] = []
    for _ in range(5):
        before = machine.up.status()
        cycles = cu_cycles(machine)
        old = before["mosquitto"]["pid"]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda old=old: (m := machine.up.status()["mosquitto"])["state"] == "running" and m["pid"] != old,
                 60, 0.02, "mosquitto restarted")
        machine.remember_pids()
        o = observe(machine)
        try:
            wait_last(o, f"{ROOT}/state", lambda v: v["live"], 60, "state republished")
            back.append(time.monotonic() - t0)
            wait_last(o, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up", 60, "health Up")
        finally:
            o.close()
        untouched(machine, before, cycles, except_="mosquitto")
    figures.update(broker_sigkills=len(back), kill_to_state_republished_max_s=round(max(back), 2),
                   kill_to_state_republished_p50_s=round(sorted(back)[len(back) // 2], 2),
                   other_module_restarts=0)
    write_soak_results("broker", figures)
