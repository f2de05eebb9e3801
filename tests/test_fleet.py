"""Issue 14: the fleet — three machines (own EVO_SHM_PREFIX, ports, machine ids) and one router on
one box, seen through `evo fleet` (real CLI subprocesses, real Zenoh sessions on 127.0.0.1,
explicit endpoints, scouting off). Each machine is kept light: HAL, CU and the MQTT bridge (one
also runs the RE), cycles at 500 Hz, no gRPC bridge, no broker (its MQTT side just retries).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, free_port, module_env, unique_prefix, wait_for
from tests.zenoh_support import (
    client,
    ep,
    machine_config,
    start_machine,
    start_router,
    stop_machine,
    zenoh_section,
)

IDS = ("fleet-a", "fleet-b", "fleet-c")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    router_port = free_port()
    router_cfg = machine_config(tmp / "router-cfg", "router", zenoh_section(listen=(ep(free_port()),),
                                                                            router_listen=(ep(router_port),)))
    router = start_router(unique_prefix("fr"), router_cfg, tmp)
    machines: dict[str, dict] = {}
    probe = None
    try:
        for mid in IDS:
            off = ("grpc",) if mid == "fleet-c" else ("grpc", "re")
            cfg = machine_config(tmp / mid / "cfg", mid, zenoh_section(listen=(ep(free_port()),), connect=(ep(router_port),)),
                                 modules_off=off, mosquitto=False, cycle_time_us=2000,
                                 watchdog={"max_restarts": 0} if mid == "fleet-c" else None)
            prefix = unique_prefix("fl")
            machines[mid] = {"cfg": cfg, "prefix": prefix, "tmp": tmp / mid, "up": start_machine(tmp / mid, prefix, cfg)}
        for m in machines.values():
            m["up"].wait_api(90)  # generous: three machines on a 2-core box shared with other suites
            m["up"].wait_all_running(150)
        probe = client(ep(router_port), name="fleet-probe")
        wait_for(lambda: all(f"evo/{mid}" in probe.alive("evo/*") for mid in IDS), 30, 0.1, "every machine's token")
        yield type("Fleet", (), dict(router=router, router_port=router_port, machines=machines, probe=probe, tmp=tmp))
    finally:
        if probe is not None:
            probe.stop()
        left = []
        for m in machines.values():
            left += stop_machine(m["up"])
        router.stop()
        assert not left, f"processes left behind: {left}"


def fleet_cli(f, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", "fleet", *args, "--connect", ep(f.router_port)], cwd=REPO,
                          env=module_env("fleetcli"), capture_output=True, text=True, timeout=timeout)


def fleet_ls(f) -> dict[str, dict]:
    """`evo fleet ls --json` as a real CLI subprocess."""
    r = fleet_cli(f, "ls", "--json")
    assert r.returncode == 0, r.stderr
    return {m["machine_id"]: m for m in json.loads(r.stdout)["machines"]}


def fleet_rows(f) -> dict[str, dict]:
    """The same survey in-process (the code behind `evo fleet ls`), for polling without a CLI start."""
    from dataclasses import asdict

    from evo.fleet import survey

    return {r.machine_id: asdict(r) for r in survey(f.probe, "evo", 2.0).rows}


def test_fleet_ls_lists_all_three_machines(fleet) -> None:
    """Must exist: `evo fleet ls` lists all three machines (id, state, safety, modules, recipe)."""
    rows = fleet_ls(fleet)
    assert set(IDS) <= set(rows)
    for mid in IDS:
        r = rows[mid]
        assert r["online"] and r["state"] and r["safety"] and r["error"] is None, r
        assert {"hal", "cu", "mqtt"} <= set(r["modules_up"]) and r["modules_down"] == [], r
        assert r["last_change"] and r["zenoh"] == "Up"
    assert rows["fleet-c"]["recipe"] and "re" in rows["fleet-c"]["modules_up"]
    table = fleet_cli(fleet, "ls")
    assert table.returncode == 0 and all(mid in table.stdout for mid in IDS) and "MACHINE" in table.stdout


def test_fleet_status_prints_one_machine_and_names_the_missing(fleet) -> None:
    """`evo fleet status MACHINE` prints one machine's snapshot; an unknown one is a clear error."""
    r = fleet_cli(fleet, "status", "fleet-b", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["machine_id"] == "fleet-b" and len(s["axes"]) == 4 and "hal" in s["modules"]
    text = fleet_cli(fleet, "status", "fleet-b")
    assert text.returncode == 0 and "machine fleet-b" in text.stdout and "axes:" in text.stdout
    bad = fleet_cli(fleet, "status", "nope", "--timeout", "1")
    assert bad.returncode == 1 and "nope" in bad.stderr and "fleet-a" in bad.stderr


def test_killed_watchdog_leaves_the_fleet_and_comes_back(fleet) -> None:
    """Must exist: one machine's watchdog SIGKILLed -> it leaves the list (liveliness, no time-out
    guess), and comes back when restarted."""
    seen: list[tuple[str, bool, float]] = []
    sub = fleet.probe.watch_alive("evo/fleet-a", lambda k, alive: seen.append((k, alive, time.monotonic())),
                                  history=False)
    m = fleet.machines["fleet-a"]
    try:
        t_kill = time.monotonic()
        m["up"].proc.kill()  # the watchdog; its children follow by PDEATHSIG
        m["up"].proc.wait(10)
        def left() -> float | None:
            """The undeclare event, or (had a loaded router dropped the event) a liveliness query without it."""
            t = next((t for k, a, t in seen if not a), None)
            if t is None and "evo/fleet-a" not in fleet.probe.alive("evo/fleet-a", timeout_s=1.0):
                t = time.monotonic()
            return t

        gone = wait_for(left, 15, 0.01, "fleet-a's token gone")
        print(f"fleet-a left the fleet {gone - t_kill:.3f} s after SIGKILL")
        rows = fleet_rows(fleet)
        assert "fleet-a" not in rows and {"fleet-b", "fleet-c"} <= set(rows)
        stop_machine(m["up"])  # nothing of the killed instance may be left
        m["up"] = start_machine(m["tmp"] / "again", m["prefix"], m["cfg"])
        m["up"].wait_api(90)
        m["up"].wait_all_running(150)
        wait_for(lambda: any(a for k, a, t in seen if t > gone), 30, 0.02, "fleet-a's token back")
        assert "fleet-a" in fleet_ls(fleet)  # the CLI sees it again
    finally:
        sub.undeclare()


def test_killed_module_shows_down_in_the_fleet_view(fleet) -> None:
    """Must exist: one module killed -> that module shows down in the fleet view (ls and watch)."""
    m = fleet.machines["fleet-c"]
    watch = subprocess.Popen([sys.executable, "-m", "evo", "fleet", "watch", "--json", "--duration", "60",
                              "--connect", ep(fleet.router_port)], cwd=REPO, env=module_env("fleetwatch"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[dict] = []

        def watch_saw(pred) -> bool:
            import select

            while select.select([watch.stdout], [], [], 0.05)[0]:
                line = watch.stdout.readline()
                if not line:
                    break
                lines.append(json.loads(line))
            return any(pred(e) for e in lines)

        wait_for(lambda: watch_saw(lambda e: e["machine"] == "fleet-c" and e["event"] == "online"), 30, 0.0,
                 "the watch listing fleet-c")
        pid = m["up"].status()["re"]["pid"]
        import os
        import signal

        os.kill(pid, signal.SIGKILL)  # max_restarts = 0: it stays down (failed)
        m["up"].wait_state("re", "failed", timeout=30)
        wait_for(lambda: watch_saw(lambda e: e["event"] == "module down" and e.get("module") == "re"
                                   and e["machine"] == "fleet-c"), 15, 0.0, "the watch reporting re down")
        row = fleet_rows(fleet)["fleet-c"]
        assert "re" in row["modules_down"] and "re" not in row["modules_up"], row
        table = fleet_cli(fleet, "ls")
        assert "DOWN: re" in table.stdout
        r = m["up"].cli("start", "re")  # exit 1 with "not settled yet" when a loaded box is slow to start it
        assert "re started" in r.stdout, (r.stdout, r.stderr)
        wait_for(lambda: not fleet_rows(fleet)["fleet-c"]["modules_down"], 120, 0.1, "re up again in the fleet view")
    finally:
        watch.kill()
        watch.wait(10)
