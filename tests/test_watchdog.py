"""The watchdog supervising small test programs (real `evo up`, real subprocesses, real /dev/shm):
start order, crash restarts with backoff, hang detection, SIGKILL escalation, degraded mode, clean down.
"""
from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from tests.fixtures.progs.evo_harness import EvoUp, instance_processes, prog_module
from tests.helpers import remove_shm, shm_entries, unique_prefix, wait_for

ORDER = ["alpha", "beta", "gamma", "delta", "eps"]


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wd")
    prefix = unique_prefix("wd")
    ev = tmp / "events"
    crash_flag = tmp / "eps.crash"
    mods = [
        # alpha looks like the HAL: ready = READY=1 + its hal_cu heartbeat advancing; liveness = both
        prog_module("alpha", "--segment", "hal_cu", "--setup", events=ev, ready_segments=["hal_cu"],
                liveness_segments=["hal_cu"], wrap=False),
        # beta: no process_setup of its own -> run through evo.launch (pdeathsig); liveness cu_hal
        prog_module("beta", "--segment", "cu_hal", events=ev, liveness_segments=["cu_hal"]),
        prog_module("gamma", "--setup", events=ev, wrap=False),
        prog_module("delta", "--setup", "--ignore-term", events=ev, wrap=False),
        prog_module("eps", "--setup", "--crash-if-exists", str(crash_flag), events=ev, wrap=False),
        prog_module("zeta", "--setup", enabled=False, wrap=False),
    ]
    up = EvoUp(tmp, prefix, mods).start()
    up.events_path = ev
    up.crash_flag = crash_flag
    try:
        up.wait_api()
        up.wait_all_running()
        yield up
    finally:
        up.stop()
        leftovers = instance_processes(prefix)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        remove_shm(prefix)
        assert not leftovers, f"processes left behind: {leftovers}"


def _pids(up: EvoUp) -> dict[str, int]:
    return {n: m["pid"] for n, m in up.status().items()}


def test_start_order_waits_for_readiness(wd):
    ev = wd.events(wd.events_path)
    first = {}
    for what, name, t, _ in ev:
        first.setdefault((what, name), t)
    for prev, nxt in zip(ORDER, ORDER[1:]):
        # the next module is spawned only once the previous one is ready
        assert first[("ready", prev)] < first[("start", nxt)], (prev, nxt, ev)
    st = wd.status()
    assert st["zeta"]["state"] == "disabled" and st["zeta"]["pid"] == 0
    assert "zeta" not in {name for _, name, _, _ in ev}


def test_status_json_and_table(wd):
    r = wd.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    mods = {m["name"]: m for m in doc["modules"]}
    assert [m["name"] for m in doc["modules"]] == ORDER + ["zeta"]
    for name in ORDER:
        m = mods[name]
        assert m["state"] == "running" and m["pid"] > 0 and m["rss_bytes"] > 0 and m["uptime_s"] > 0
        assert m["watchdog_age_s"] >= 0
    assert mods["alpha"]["heartbeat_age_s"] >= 0 and mods["gamma"]["heartbeat_age_s"] == -1
    assert mods["gamma"]["status"] == "gamma working"
    assert doc["instance"] == wd.prefix and doc["degraded"] is False
    r = wd.cli("status")
    assert r.returncode == 0
    assert "MODULE" in r.stdout and all(n in r.stdout for n in ORDER)


def test_process_titles_and_modules_json(wd):
    assert psutil.Process(wd.proc.pid).cmdline()[0] == "evo-watchdog"
    st = wd.status()
    assert psutil.Process(st["alpha"]["pid"]).cmdline()[0] == "evo-alpha"
    data = json.loads((wd.run_dir / "modules.json").read_text())
    assert [m["name"] for m in data["modules"]] == ORDER + ["zeta"]
    assert {m["name"]: m["pid"] for m in data["modules"]} == {n: m["pid"] for n, m in st.items()}
    assert set(data["modules"][0]) >= {"name", "state", "pid", "restarts", "since", "last_exit"}


@pytest.mark.parametrize("victim", ["alpha", "beta", "gamma", "delta"])
def test_kill9_restarts_only_that_module(wd, victim):
    before = wd.status()
    old = before[victim]
    t_kill = time.monotonic_ns()
    os.kill(old["pid"], signal.SIGKILL)
    m = wd.wait_state(victim, "running", restarts=old["restarts"] + 1)
    assert m["pid"] != old["pid"] and m["last_exit"] == "SIGKILL" and m["last_exit_signal"] == signal.SIGKILL
    after = wd.status()
    for name in ORDER:
        if name != victim:
            assert after[name]["pid"] == before[name]["pid"], name
            assert after[name]["restarts"] == before[name]["restarts"], name
    # restarted no sooner than the configured backoff (initial_backoff_ms = 50 or its doubling)
    restart_start = min(t for what, name, t, pid in wd.events(wd.events_path)
                        if what == "start" and name == victim and pid == m["pid"])
    assert restart_start - t_kill >= 50_000_000
    assert "restart #" in wd.output() and f"{victim}: exited unexpectedly (SIGKILL)" in wd.output()


def test_hung_without_watchdog_ping_is_killed_and_restarted(wd):
    old = wd.status()["gamma"]
    os.kill(old["pid"], signal.SIGUSR1)  # stops everything, stays alive
    m = wd.wait_state("gamma", "running", restarts=old["restarts"] + 1)
    assert m["pid"] != old["pid"] and m["last_exit"] == "SIGKILL"
    assert "gamma: hung: no WATCHDOG=1 for" in wd.output()


def test_hung_frozen_heartbeat_is_killed_and_restarted(wd):
    old = wd.status()["alpha"]
    os.kill(old["pid"], signal.SIGUSR2)  # freezes hal_cu, keeps WATCHDOG=1 coming
    m = wd.wait_state("alpha", "running", restarts=old["restarts"] + 1)
    assert m["pid"] != old["pid"] and m["last_exit"] == "SIGKILL"
    assert "alpha: hung: hal_cu heartbeat frozen for" in wd.output()


def test_module_ignoring_sigterm_is_sigkilled_after_timeout(wd):
    old = wd.status()["delta"]
    r = wd.cli("stop", "delta")
    assert r.returncode == 0, r.stderr
    assert "stopped" in r.stdout
    m = wd.status()["delta"]
    assert m["state"] == "stopped" and m["last_exit"] == "SIGKILL" and m["pid"] == 0
    assert "delta: still running 1.0 s after SIGTERM; SIGKILL" in wd.output()
    assert not [e for e in wd.events(wd.events_path) if e[0] == "stop" and e[3] == old["pid"]]
    # stays down (no automatic restart) until started
    assert wd.status()["delta"]["state"] == "stopped"
    r = wd.cli("start", "delta")
    assert r.returncode == 0, r.stderr
    assert wd.status()["delta"]["state"] == "running"


def test_crash_loop_ends_degraded_and_evo_start_revives(wd):
    before = wd.status()
    wd.crash_flag.write_text("crash")
    os.kill(before["eps"]["pid"], signal.SIGKILL)
    m = wd.wait_state("eps", "failed", timeout=20)
    assert m["pid"] == 0 and m["last_exit"] == "exit 3" and "gave up after 3 restarts" in m["reason"]
    after = wd.status()
    for name in ORDER[:-1]:
        assert after[name]["state"] == "running" and after[name]["pid"] == before[name]["pid"], name
    wd_log = (wd.run_dir / "log" / "watchdog.log").read_text()
    assert len([ln for ln in wd_log.splitlines() if " CRITICAL " in ln and "eps:" in ln]) == 1
    r = wd.cli("status")
    assert "DEGRADED: eps failed" in r.stdout
    wd.crash_flag.unlink()
    r = wd.cli("start", "eps")
    assert r.returncode == 0, r.stdout + r.stderr
    m = wd.status()["eps"]
    assert m["state"] == "running" and m["restarts"] == 0


def test_restart_command_and_event_stream(wd):
    from common.protos.evo.v1 import supervisor_pb2 as pb

    stream = wd.client.stub.WatchEvents(pb.WatchEventsRequest(names=["gamma"]), timeout=30)
    first = next(stream)
    assert first.kind == pb.EVENT_KIND_SNAPSHOT and first.name == "gamma"
    old_pid = first.pid
    r = wd.cli("restart", "gamma")
    assert r.returncode == 0, r.stderr
    seen = []
    for ev in stream:
        if ev.kind == pb.EVENT_KIND_STATE:
            seen.append(pb.ModuleState.Name(ev.state))
            if ev.state == pb.MODULE_STATE_RUNNING:
                break
    stream.cancel()
    assert seen == ["MODULE_STATE_STOPPING", "MODULE_STATE_STOPPED", "MODULE_STATE_STARTING", "MODULE_STATE_RUNNING"]
    m = wd.status()["gamma"]
    assert m["pid"] != old_pid and m["last_exit"] == "exit 0"


def test_cli_errors_are_one_line(wd):
    for args in (["restart", "nosuch"], ["stop", "nosuch"], ["start", "nosuch"], ["logs", "nosuch"]):
        r = wd.cli(*args)
        assert r.returncode == 1, args
        assert len(r.stderr.strip().splitlines()) == 1 and "nosuch" in r.stderr, (args, r.stderr)
    r = wd.cli("start", "zeta")
    assert r.returncode == 1 and "disabled" in r.stderr


def test_logs(wd):
    r = wd.cli("logs", "alpha", "-n", "3")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    r = wd.cli("logs", "-n", "200")
    assert r.returncode == 0
    prefixes = {line.split("|", 1)[0].strip() for line in r.stdout.splitlines()}
    assert {"alpha", "beta", "watchdog"} <= prefixes and "beta starting" in r.stdout
    for name in ORDER:
        assert (wd.run_dir / "log" / f"{name}.log").exists()
    text = (wd.run_dir / "log" / "alpha.log").read_text()
    assert "alpha starting pid" in text and "[watchdog] started pid" in text


def test_down_stops_in_reverse_order_and_leaves_nothing(wd):
    pids = [m["pid"] for m in wd.status().values() if m["pid"]]
    t_down = time.monotonic_ns()
    r = wd.down()
    assert r.returncode == 0, r.stderr
    assert wd.proc.returncode == 0
    stops = {name: t for what, name, t, _ in wd.events(wd.events_path) if what == "stop" and t > t_down}
    assert stops["eps"] < stops["gamma"] < stops["beta"] < stops["alpha"], stops  # delta was SIGKILLed
    wait_for(lambda: all(not psutil.pid_exists(p) for p in pids), 5, what="every module gone")
    assert instance_processes(wd.prefix) == []
    assert shm_entries(wd.prefix) == []
    assert not (wd.run_dir / "supervisor.sock").exists()
    data = json.loads((wd.run_dir / "modules.json").read_text())
    assert {m["state"] for m in data["modules"]} == {"stopped", "disabled"}
    r = wd.cli("status")
    assert r.returncode == 1 and "no watchdog running" in r.stderr
