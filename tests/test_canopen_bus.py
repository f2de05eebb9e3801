"""CANopen across processes on udp_multicast inside a private network namespace: `evo canopen scan` and a HAL that
refuses to start on a missing node or a wrong identity.

Issue 13: "scan lists two emulated drives and one I/O node with their identities"; "missing node / wrong identity at
start: nothing starts, the message names node and values".
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from tests.canopen_support import EmulatorProcess, NetNs, canopen_config
from tests.helpers import module_env, remove_shm, shm_entries, unique_prefix

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def buses(tmp_path_factory):
    """Three emulated buses, each in its own namespace (udp_multicast sockets share a port: groups on one host
    would hear each other): complete, node 3 missing, node 3 of the wrong product."""
    log = tmp_path_factory.mktemp("emu")
    made: dict[str, tuple[NetNs, EmulatorProcess | None]] = {}
    try:
        for key, nodes in (("full", "2:drive,3:drive,10:io:di=0x3"), ("missing", "2:drive,10:io:di=0x3"),
                           ("wrong", "2:drive,3:drive:product_code=0x999,10:io:di=0x3")):
            ns = NetNs().create()
            made[key] = (ns, None)
            made[key] = (ns, EmulatorProcess(ns, nodes, log=log / f"{key}.log"))
        yield {k: v[0] for k, v in made.items()}
    finally:
        for ns, emu in made.values():
            if emu is not None:
                emu.stop()
            ns.delete()


def test_scan_lists_two_drives_and_an_io_node_with_their_identities(buses) -> None:
    """`evo canopen scan --json`: node id, vendor id, product code, revision, device type, NMT state per node."""
    ns = buses["full"]
    r = ns.run([sys.executable, "-m", "evo", "canopen", "scan", "--interface", "udp_multicast", "--channel",
                "239.74.163.2", "--json"], timeout=60)
    assert r.returncode == 0, r.stderr
    nodes = {n["node_id"]: n for n in json.loads(r.stdout)["nodes"]}
    assert sorted(nodes) == [2, 3, 10]
    for nid in (2, 3):
        n = nodes[nid]
        assert (n["vendor_id"], n["product_code"], n["revision"], n["device_type"]) == \
            (0x45564F00, 0x402, 0x10000, 0x00020192), n
        assert n["nmt_state"] == "PRE-OPERATIONAL" and n["serial"] == 1
    assert nodes[10]["product_code"] == 0x401 and nodes[10]["device_type"] == 0x000F0191
    table = ns.run([sys.executable, "-m", "evo", "canopen", "scan", "--interface", "udp_multicast", "--channel",
                    "239.74.163.2"], timeout=60)
    assert table.returncode == 0 and "  10  0x45564F00  0x00000401  0x00010000  0x000F0191  PRE-OPERATIONAL" in table.stdout


@pytest.mark.parametrize("bus, expected", [
    ("missing", ["no boot-up within 500 ms", "[node[1]] (node 3, Y drive)"]),
    ("wrong", ["[node[1]] (node 3, Y drive): wrong device", "product_code 0x00000999 (expected 0x00000402)"]),
])
def test_hal_refuses_to_start_naming_the_node_and_values(buses, tmp_path, bus, expected) -> None:
    """The HAL process exits 2 with the node and the values; it leaves no segment behind (nothing starts)."""
    ns = buses[bus]
    cfg = canopen_config(tmp_path / "cfg", canopen_edit={r"^boot_timeout_ms = 3000$": "boot_timeout_ms = 500"})
    prefix = unique_prefix("cob")
    try:
        r = ns.run([sys.executable, "-m", "hal", "--config", str(cfg)], env=module_env(prefix,
                   EVO_RUN_DIR=str(tmp_path / "run")), timeout=60)
        assert r.returncode == 2, r.stderr[-3000:]
        for text in expected:
            assert text in r.stderr, r.stderr[-3000:]
        assert shm_entries(prefix) == []
    finally:
        remove_shm(prefix)


def test_evo_up_starts_nothing_when_a_node_is_the_wrong_device(buses, tmp_path) -> None:
    """`evo up` on the canopen machine with node 3 the wrong product: the HAL refuses (exit 2) naming the node and
    the values, no other module is started, evo up exits 2."""
    from tests.fixtures.progs.evo_harness import EvoUp, instance_processes

    ns = buses["wrong"]
    cfg = canopen_config(tmp_path / "cfg")
    prefix = unique_prefix("cou")
    modules = [
        {"name": "hal", "argv": [*ns.prefix(), "{python}", "-m", "hal", "--config", "{config}"],
         "ready_segments": ["hal_cu"], "liveness_segments": ["hal_cu"], "ready_timeout_s": 40.0},
        {"name": "cu", "package": "control_unit", "liveness_segments": ["cu_hal"], "ready_timeout_s": 40.0},
    ]
    up = EvoUp(tmp_path / "up", prefix, modules)
    up.config_dir = cfg
    try:
        up.start()
        assert up.proc is not None
        rc = up.proc.wait(120)
        out = up.output()
        assert rc == 2, out[-3000:]
        assert "(node 3, Y drive): wrong device" in out and "product_code 0x00000999 (expected 0x00000402)" in out
        assert "cu: started" not in out
    finally:
        up.stop()
        for pid in instance_processes(prefix):
            os.kill(pid, signal.SIGKILL)
        remove_shm(prefix)
