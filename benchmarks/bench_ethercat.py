"""EtherCAT: the HAL cycle with the ethercat driver against the emulated SubDevices, beside a bare pysoem loop.

Run (root): `.venv/bin/python -m benchmarks.bench_ethercat [--cycles N] [--rounds R]` -> tables +
benchmarks/results/ethercat.json. Makes its own network namespace with a veth pair; deletes it afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json

REPO = Path(__file__).resolve().parent.parent
PERIOD_S = 0.001
RECEIVE_TIMEOUT_US = 2000  # both sides: one cycle's receive
DATAGRAM_TIMEOUT_US = 20000  # both sides: acyclic datagrams (the emulator on a busy host answers late)
METHOD = (
    "One network namespace with a veth pair (ecm: MainDevice, ecs: emulator); the emulator "
    "(`python -m hal.drivers.ethercat_emulator --devices drive,drive,io8`, pure Python on an AF_PACKET socket) "
    "in its own process. In one process inside the namespace, alternating rounds of: floor = a bare pysoem "
    "loop (the segment brought to OP once, then send_processdata + receive_processdata(2000 us) per cycle, "
    "acyclic datagram time-out 20 ms on both sides, the evo side's receive time-out also 2000 us; "
    "timed with perf_counter_ns around both); evo = HalCycle.step() with the ethercat driver on "
    "config/examples/ethercat (no CU attached: drives disabled, outputs safe, the same 62-byte LRW image), "
    "timed around the driver's cycle (exchange + CiA 402 / bit routing + working-counter check) and around "
    "the whole step (I/O semantics and four segment commits included). Both paced at 1 kHz by sleeping to "
    "the next absolute 1 ms deadline outside the timed region; no SCHED_FIFO. Ratio = evo / floor."
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


# --- inner: runs inside the namespace -----------------------------------------------------------

def _pace(next_t: float) -> float:
    next_t += PERIOD_S
    d = next_t - time.perf_counter()
    if d > 0:
        time.sleep(d)
    else:
        next_t = time.perf_counter()
    return next_t


def floor_round(cycles: int) -> dict[str, Any]:
    import pysoem

    pysoem.settings.timeouts.ret = DATAGRAM_TIMEOUT_US
    m = pysoem.Master()
    m.open("ecm")
    try:
        if m.config_init() <= 0:
            raise RuntimeError("no SubDevice answered")
        m.config_map()
        m.state_check(pysoem.SAFEOP_STATE, 5_000_000)
        m.state = pysoem.OP_STATE
        m.write_state()
        for _ in range(5000):
            m.send_processdata()
            m.receive_processdata(2000)
            if m.state_check(pysoem.OP_STATE, 2000) == pysoem.OP_STATE:
                break
        else:
            raise RuntimeError("floor: the segment did not reach OP")
        expected = m.expected_wkc
        for _ in range(200):  # settle: first exchanges after OP
            m.send_processdata()
            m.receive_processdata(2000)
        out = np.empty(cycles, np.int64)
        bad = 0
        pc = time.perf_counter_ns
        t = time.perf_counter()
        for i in range(cycles):
            t = _pace(t)
            t0 = pc()
            m.send_processdata()
            wkc = m.receive_processdata(RECEIVE_TIMEOUT_US)
            out[i] = pc() - t0
            bad += wkc != expected
        m.state = pysoem.INIT_STATE
        m.write_state()
        return {"exchange": summarize(out), "wkc_errors": int(bad), "expected_wkc": expected}
    finally:
        m.close()


def evo_round(cycles: int, tmp: Path) -> dict[str, Any]:
    os.environ["EVO_SHM_PREFIX"] = f"be{uuid.uuid4().hex[:8]}"
    os.environ["EVO_RUN_DIR"] = str(tmp / "run")
    from common.config import load_config
    from hal.cycle import HalCycle

    cfg_dir = tmp / f"cfg-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "config" / "examples" / "ethercat", cfg_dir)
    net = cfg_dir / "ethercat.toml"  # the floor's settings: same receive and datagram time-outs
    net.write_text(net.read_text().replace("receive_timeout_us = 500", f"receive_timeout_us = {RECEIVE_TIMEOUT_US}")
                   .replace("datagram_timeout_us = 2000", f"datagram_timeout_us = {DATAGRAM_TIMEOUT_US}"))
    hal = HalCycle(load_config(cfg_dir))
    try:
        drv = hal.driver
        inner = drv.cycle
        d_ns = np.empty(cycles, np.int64)
        s_ns = np.empty(cycles, np.int64)
        k = [0]
        pc = time.perf_counter_ns

        def timed(io, now_ns, dt_s):  # noqa: ANN001, ANN202
            t0 = pc()
            inner(io, now_ns, dt_s)
            d_ns[k[0]] = pc() - t0

        drv.cycle = timed
        t = time.perf_counter()
        for i in range(cycles):
            t = _pace(t)
            k[0] = i
            t0 = pc()
            hal.step(pc(), PERIOD_S)
            s_ns[i] = pc() - t0
            hal.housekeeping(pc())
        return {"driver_cycle": summarize(d_ns), "hal_step": summarize(s_ns), "wkc_errors": int(drv.wkc_errors),
                "expected_wkc": drv.expected_wkc, "health": drv.health().state.name}
    finally:
        hal.close()


def inner(cycles: int, rounds: int, out: Path) -> int:
    res: dict[str, list] = {"floor": [], "evo": []}
    with tempfile.TemporaryDirectory() as td:
        for r in range(rounds):
            res["floor"].append(floor_round(cycles))
            res["evo"].append(evo_round(cycles, Path(td)))
    out.write_text(json.dumps(res))
    return 0


# --- outer: namespace, emulator, report -------------------------------------------------------------

def _merge(rounds: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Pool the rounds: median of the per-round percentiles (each round has the same sample count)."""
    return {f: float(np.median([r[key][f] for r in rounds])) for f in ("p50_ns", "p99_ns", "p999_ns", "max_ns")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=5000, help="cycles per round and side (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inner is not None:
        return inner(a.cycles, a.rounds, a.inner)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("bench_ethercat needs root and iproute2 (network namespace, raw sockets)", file=sys.stderr)
        return 1
    ns = f"evo-ecat-bench-{os.getpid()}"
    _ip("netns", "add", ns)
    emu = None
    try:
        for cmd in (("link", "set", "lo", "up"), ("link", "add", "ecm", "type", "veth", "peer", "name", "ecs"),
                    ("link", "set", "ecm", "up"), ("link", "set", "ecs", "up")):
            _ip("-n", ns, *cmd)
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "inner.json"
            emu = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "hal.drivers.ethercat_emulator",
                                    "--interface", "ecs", "--devices", "drive,drive,io8", "--di-init", "1",
                                    "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.PIPE)
            assert emu.stdout is not None
            if not emu.stdout.readline().startswith(b"READY"):
                raise RuntimeError("the emulator did not start")
            rc = subprocess.call(["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks.bench_ethercat",
                                  "--inner", str(out), "--cycles", str(a.cycles), "--rounds", str(a.rounds)], cwd=REPO)
            if rc:
                return rc
            res = json.loads(out.read_text())
    finally:
        if emu is not None:
            emu.terminate()
            emu.wait(10)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    floor = _merge(res["floor"], "exchange")
    drv = _merge(res["evo"], "driver_cycle")
    step = _merge(res["evo"], "hal_step")
    rows = []
    for name, s in (("floor: bare pysoem send+receive", floor), ("evo: ethercat driver cycle", drv),
                    ("evo: whole HAL step", step)):
        rows.append({"what": name, "p50_us": s["p50_ns"] / 1e3, "p99_us": s["p99_ns"] / 1e3,
                     "p99.9_us": s["p999_ns"] / 1e3, "max_us": s["max_ns"] / 1e3,
                     "p50_x_floor": ratio(s["p50_ns"], floor["p50_ns"]), "p99_x_floor": ratio(s["p99_ns"], floor["p99_ns"])})
    print_table(rows, [("what", "what", ""), ("p50 us", "p50_us", ".1f"), ("p99 us", "p99_us", ".1f"),
                       ("p99.9 us", "p99.9_us", ".1f"), ("max us", "max_us", ".0f"),
                       ("p50 x floor", "p50_x_floor", ".2f"), ("p99 x floor", "p99_x_floor", ".2f")])
    wkc = {"floor": sum(r["wkc_errors"] for r in res["floor"]), "evo": sum(r["wkc_errors"] for r in res["evo"])}
    print(f"working-counter errors: floor {wkc['floor']}, evo {wkc['evo']} "
          f"(of {a.cycles * a.rounds} cycles each)")
    write_json("ethercat", {"machine": machine_info(), "method": METHOD, "cycles_per_round": a.cycles,
                            "rounds": a.rounds, "rows": rows, "wkc_errors": wkc, "raw": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
