"""CANopen and CAN benchmark: the canopen driver's exchange per HAL cycle against two emulated drives, beside a bare
python-can loop of the same frames on the same bus (the floor); the CAN connector's throughput beside bare python-can.

Run (root: it makes a private network namespace for udp_multicast): `.venv/bin/python -m benchmarks.bench_canopen
[--quick]` -> tables + benchmarks/results/canopen.json. The emulator is its own process, as on a real bus.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json

REPO = Path(__file__).resolve().parents[1]
GROUP = "239.74.163.2"


# --- the worker (runs inside the namespace) -------------------------------------------------------

def _emulator(nodes: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "hal.drivers.canopen_emulator", "--interface", "udp_multicast",
                          "--channel", GROUP, "--nodes", nodes], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and json.loads(p.stdout.readline()).get("ready")
    return p


def _stop(p: subprocess.Popen) -> None:
    assert p.stdin is not None
    p.stdin.close()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bench_driver(cycles: int) -> dict[str, Any]:
    """driver.cycle() with sync_every = 1 (2 RPDOs + SYNC out, snapshots in) and SYNC -> both drives' TPDOs."""
    sys.path.insert(0, str(REPO))
    from common.config import load_config
    from hal.drivers.base import DriverIO
    from hal.drivers.canopen import CanopenDriver

    tmp = Path(tempfile.mkdtemp(prefix="bench-canopen-"))
    cfg_dir = tmp / "cfg"
    shutil.copytree(REPO / "config" / "examples" / "canopen", cfg_dir)
    net = (cfg_dir / "canopen.toml").read_text()
    net = net.replace("sync_every = 2", "sync_every = 1")
    io_node = net.index("[[node]]\nid = 10")
    (cfg_dir / "canopen.toml").write_text(net[:io_node])  # two drives, no I/O node
    io_toml = "[Safety]\nio = []\n"
    (cfg_dir / "io.toml").write_text(io_toml)
    emu = _emulator("2:drive,3:drive")
    try:
        cfg = load_config(cfg_dir, check_roles=False)
        d = CanopenDriver(cfg, cfg.system.hal.driver_args)
        io = DriverIO()
        d.open(io)
        io.enable[:2] = True
        pc = time.perf_counter_ns
        deadline = time.monotonic() + 10
        while not (io.drive_ready[0] and io.drive_ready[1]) and time.monotonic() < deadline:
            d.cycle(io, pc(), 0.001)
            time.sleep(0.001)
        cost, turn = [], []
        links = d.links
        for k in range(cycles):
            io.target_position[0] = io.target_position[1] = (k % 1000) * 0.001
            t0 = pc()
            d.cycle(io, t0, 0.001)
            cost.append(pc() - t0)
            sync = d._last_sync_ns
            # wait (outside the measured cycle) for both drives' TPDOs of this SYNC: the turn-around
            end = time.monotonic_ns() + 20_000_000
            while time.monotonic_ns() < end and not all(lk.last_rx_ns >= sync for lk in links):
                time.sleep(0.00005)  # release the GIL: the TPDOs are handled by the notifier thread
            if all(lk.last_rx_ns >= sync for lk in links):
                turn.append(max(lk.last_rx_ns for lk in links) - sync)
        d.close()
        return {"cycle": summarize(cost), "turnaround": summarize(turn), "answered": len(turn), "cycles": cycles}
    finally:
        _stop(emu)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_bare(cycles: int) -> dict[str, Any]:
    """The floor: the same frames with python-can alone (controlword + target to 0x202/0x203, SYNC, read TPDOs)."""
    import can

    emu = _emulator("2:drive,3:drive")
    bus = can.Bus(interface="udp_multicast", channel=GROUP, receive_own_messages=False)
    try:
        # the minimum a master must do first: NMT start (the EDS default PDOs: RPDO1 = nothing mapped; we time the
        # frames, the node's answer is its default TPDO set on SYNC once mapped) -- map as the driver does via SDO
        import canopen

        from common.fieldbus.canopen_net import EvoNetwork

        net = EvoNetwork(bus, drop_own_echo=True)
        net.connect()
        for nid in (2, 3):
            node = canopen.RemoteNode(nid, str(REPO / "hal/drivers/eds/evo_drive.eds"))
            net.add_node(node)
            node.tpdo.read(from_od=True)
            node.tpdo[1].clear()
            node.tpdo[1].add_variable(0x6041)
            node.tpdo[1].add_variable(0x6064)
            node.tpdo[1].trans_type = 1
            node.tpdo[1].enabled = True
            for k in (2, 3, 4):
                node.tpdo[k].enabled = False
            node.tpdo.save()
            node.nmt.send_command(0x01)
        net.notifier.stop()
        own = {0x202, 0x203, 0x080, 0x000, 0x602, 0x603}
        frames = [can.Message(arbitration_id=0x202, is_extended_id=False, data=struct.pack("<Hi", 0x06, 0)),
                  can.Message(arbitration_id=0x203, is_extended_id=False, data=struct.pack("<Hi", 0x06, 0)),
                  can.Message(arbitration_id=0x080, is_extended_id=False, data=b"")]
        pc = time.perf_counter_ns
        cost, turn = [], []
        latest: dict[int, bytes] = {}
        for _k in range(cycles):
            t0 = pc()
            for m in frames:
                bus.send(m)
            while (m := bus.recv(0)) is not None:  # what arrived so far, never waiting
                if m.arbitration_id not in own:
                    latest[m.arbitration_id] = bytes(m.data)
            cost.append(pc() - t0)
            want = {0x182, 0x183}
            end = time.monotonic_ns() + 20_000_000
            t_sync = time.monotonic_ns()
            while want and time.monotonic_ns() < end:
                m = bus.recv(0.005)
                if m is not None and m.arbitration_id in want:
                    want.discard(m.arbitration_id)
            if not want:
                turn.append(time.monotonic_ns() - t_sync)
        return {"cycle": summarize(cost), "turnaround": summarize(turn), "answered": len(turn), "cycles": cycles}
    finally:
        bus.shutdown()
        _stop(emu)


WINDOW = 32  # frames in flight: udp_multicast has no flow control, a flood would only measure socket drops


def _pump(send_one: Any, recv_one: Any, n: int, timeout: float = 60.0) -> dict[str, Any]:
    """Send n frames keeping at most WINDOW unreceived; frames/s from the first send to the last receipt."""
    sent = got = 0
    t0 = time.perf_counter_ns()
    end = time.monotonic() + timeout
    while got < n and time.monotonic() < end:
        while sent < n and sent - got < WINDOW:
            send_one()
            sent += 1
        if recv_one():
            got += 1
    return {"frames": n, "received": got, "fps": got / ((time.perf_counter_ns() - t0) / 1e9)}


def bench_connector(frames: int) -> dict[str, Any]:
    """Outbound and inbound frames/s through the CAN connector (in-process gateway) vs bare python-can."""
    import can

    sys.path.insert(0, str(REPO))
    from common.connector import BackPressure, CanRouting, RawCodec, Up
    from common.connector.can import CanConnector, CanInterface, CanOptions

    payload = bytes(range(8))

    def bus() -> can.BusABC:
        return can.Bus(interface="udp_multicast", channel=GROUP, receive_own_messages=False)

    def recv_on(b: can.BusABC, can_id: int) -> Any:
        def one() -> bool:
            m = b.recv(0.05)
            return m is not None and m.arbitration_id == can_id
        return one

    out: dict[str, Any] = {}
    tx, rx = bus(), bus()
    msg_out = can.Message(arbitration_id=0x321, is_extended_id=False, data=payload)
    out["bare_out"] = _pump(lambda: tx.send(msg_out), recv_on(rx, 0x321), frames)
    tx.shutdown(), rx.shutdown()
    tx, rx = bus(), bus()
    msg_in = can.Message(arbitration_id=0x322, is_extended_id=False, data=payload)
    out["bare_in"] = _pump(lambda: tx.send(msg_in), recv_on(rx, 0x322), frames)
    tx.shutdown(), rx.shutdown()
    c = CanConnector(CanOptions({"can0": CanInterface("udp_multicast", GROUP)}), codec=RawCodec(),
                     outbound_capacity=256, inbound_capacity=256)
    w = c.writer(CanRouting("can0", 0x323))
    r = c.reader(CanRouting("can0", 0x324))
    with c:
        end = time.monotonic() + 10
        while c.health != Up() and time.monotonic() < end:
            time.sleep(0.01)
        retries = [0]

        def send_conn() -> None:
            while True:
                try:
                    w.send(payload)
                    return
                except BackPressure:
                    retries[0] += 1
                    time.sleep(0)

        rx = bus()
        out["connector_out"] = {**_pump(send_conn, recv_on(rx, 0x323), frames), "backpressure_retries": retries[0]}
        rx.shutdown()
        tx = bus()
        msg = can.Message(arbitration_id=0x324, is_extended_id=False, data=payload)

        def recv_conn() -> bool:
            try:
                r.recv(0.05)
                return True
            except Exception:  # noqa: BLE001 - ReceiveTimeout: nothing yet
                return False

        out["connector_in"] = _pump(lambda: tx.send(msg), recv_conn, frames)
        tx.shutdown()
    return out


def worker(cycles: int, frames: int) -> dict[str, Any]:
    return {"driver": bench_driver(cycles), "bare": bench_bare(cycles), "connector": bench_connector(frames)}


# --- the main process (makes the namespace) -----------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer cycles and frames")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/canopen.json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cycles", type=int, default=3000, help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=5000, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.cycles, a.frames)))
        return 0
    cycles, frames = (1000, 2000) if a.quick else (a.cycles, a.frames)
    ns = f"evo-can-bench-{int(time.time())}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        print("bench_canopen needs root (ip netns add) for udp_multicast in a private namespace", file=sys.stderr)
        return 1
    try:
        for cmd in (("link", "set", "lo", "up"), ("link", "set", "lo", "multicast", "on"),
                    ("route", "add", "224.0.0.0/4", "dev", "lo")):
            subprocess.run(["ip", "netns", "exec", ns, "ip", *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks.bench_canopen", "--worker",
                            "--cycles", str(cycles), "--frames", str(frames)], cwd=REPO, capture_output=True,
                           text=True, timeout=900)
        if r.returncode != 0:
            print(r.stderr[-4000:], file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    info = machine_info()
    print(f"CANopen benchmark on {info['cpu_model']} ({info['cores']} cores), Python {info['python']}, "
          f"udp_multicast in a private namespace, emulator in its own process")
    d, b = res["driver"], res["bare"]
    rows = []
    for name, v in (("canopen driver.cycle()", d), ("bare python-can loop", b)):
        rows.append({"case": name, "p50_us": v["cycle"]["p50_ns"] / 1e3, "p99_us": v["cycle"]["p99_ns"] / 1e3,
                     "turn_p50_us": v["turnaround"]["p50_ns"] / 1e3, "turn_p99_us": v["turnaround"]["p99_ns"] / 1e3,
                     "answered": f"{v['answered']}/{v['cycles']}"})
    print("\nExchange per cycle, two drives (2 RPDOs + SYNC out, TPDO snapshots in), microseconds")
    print_table(rows, [("case", "case", ""), ("cycle p50", "p50_us", ".1f"), ("cycle p99", "p99_us", ".1f"),
                       ("SYNC->TPDOs p50", "turn_p50_us", ".0f"), ("p99", "turn_p99_us", ".0f"),
                       ("answered", "answered", "")])
    cyc_ratio = ratio(d["cycle"]["p50_ns"], b["cycle"]["p50_ns"])
    print(f"driver / bare cycle p50: {cyc_ratio:.2f}x")
    c = res["connector"]
    crow = [{"path": "outbound", "bare": c["bare_out"]["fps"], "conn": c["connector_out"]["fps"],
             "ratio": ratio(c["connector_out"]["fps"], c["bare_out"]["fps"]),
             "lost": f"{c['bare_out']['frames'] - c['bare_out']['received']}/"
                     f"{c['connector_out']['frames'] - c['connector_out']['received']}"},
            {"path": "inbound", "bare": c["bare_in"]["fps"], "conn": c["connector_in"]["fps"],
             "ratio": ratio(c["connector_in"]["fps"], c["bare_in"]["fps"]),
             "lost": f"{c['bare_in']['frames'] - c['bare_in']['received']}/"
                     f"{c['connector_in']['frames'] - c['connector_in']['received']}"}]
    print(f"\nCAN connector throughput, {frames} classical 8-byte frames, frames/s")
    print_table(crow, [("path", "path", ""), ("bare python-can", "bare", ".0f"), ("connector", "conn", ".0f"),
                       ("connector/bare", "ratio", ".2f"), ("lost bare/conn", "lost", "")])
    path = write_json("canopen", {"machine": info, "cycles": cycles, "frames": frames, **res}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
