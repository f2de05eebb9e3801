"""Crash -> ready of the real modules with the watchdog's preloaded standby, beside the same machine
with `[watchdog] standby = false`, in one run (issue 16: aim p50 <= 300 ms under the same load).

`python -m benchmarks.bench_standby [--kills 5] [--load 1]`: the default machine (HAL, CU, RE, gRPC,
MQTT bridge with its embedded-broker setting as shipped) is started twice, alternately with and without
standby; each of re, grpc, mqtt, cu is SIGKILLed `--kills` times (every kill after the module has run
>= stable_run_s and, with standby, once its spare is preloaded). crash->ready = from kill() to the module
RUNNING again with a new pid in the watchdog's modules.json (polled every 2 ms). `--load N` runs N
busy-loop processes beside it for the whole run (both variants see the same load).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from tests.fixtures.progs.evo_harness import machine_config
from tests.helpers import REPO, remove_shm, unique_prefix, wait_for

VICTIMS = ("re", "grpc", "mqtt", "cu")
AIM_P50_MS = 300.0


def _busy(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def _modules(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in json.loads((run_dir / "modules.json").read_text())["modules"]}


def run_machine(tmp: Path, standby: bool, kills: int) -> dict[str, list[float]]:
    cfg, _ = machine_config(tmp / f"m{int(standby)}")
    text = (cfg / "config.toml").read_text()
    text = re.sub(r"(?m)^standby = \w+$", f"standby = {'true' if standby else 'false'}", text, count=1)
    text = re.sub(r"(?m)^stable_run_s = \d+", "stable_run_s = 1", text)
    text = re.sub(r"(?m)^max_restarts = \d+", "max_restarts = 1000", text)
    (cfg / "config.toml").write_text(text)
    prefix = unique_prefix("bsb")
    run_dir = tmp / f"run{int(standby)}"
    env = dict(os.environ, EVO_SHM_PREFIX=prefix, EVO_RUN_DIR=str(run_dir), PYTHONPATH=str(REPO))
    env.pop("EVO_CONFIG_DIR", None)
    out = open(tmp / f"up{int(standby)}.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "evo", "--config", str(cfg), "up"], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    times: dict[str, list[float]] = {v: [] for v in VICTIMS}
    try:
        wait_for(lambda: all(m["state"] == "running" for m in _modules(run_dir).values() if m["enabled"]), 60, 0.01,
                 "machine running")
        for _ in range(kills):
            for name in VICTIMS:
                def steady() -> dict[str, Any] | None:
                    m = _modules(run_dir)[name]
                    ok = m["state"] == "running" and time.time() - m["since"] >= 1.2
                    return m if ok and (not standby or m.get("standby_pid")) else None

                m = wait_for(steady, 60, 0.01, f"{name} steady{' with its standby' if standby else ''}")
                t0 = time.monotonic()
                os.kill(m["pid"], signal.SIGKILL)
                wait_for(lambda: (n := _modules(run_dir)[name])["state"] == "running" and n["pid"] != m["pid"], 60,
                         0.002, f"{name} running again")
                times[name].append((time.monotonic() - t0) * 1e9)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
        remove_shm(prefix)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--load", type=int, default=1, help="busy-loop processes beside the machine")
    args = ap.parse_args(argv)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.load)]
    for h in hogs:
        h.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench_standby_"))
    try:
        on = run_machine(tmp, True, args.kills)
        off = run_machine(tmp, False, args.kills)
    finally:
        stop.set()
        for h in hogs:
            h.join(5)
    rows, res = [], {}
    for name in (*VICTIMS, "all"):
        a = sum(on.values(), []) if name == "all" else on[name]
        b = sum(off.values(), []) if name == "all" else off[name]
        s_on, s_off = summarize(a), summarize(b)
        res[name] = {"standby": s_on, "no_standby": s_off}
        rows.append({"module": name, "on50": s_on["p50_ns"] / 1e6, "on99": s_on["max_ns"] / 1e6,
                     "off50": s_off["p50_ns"] / 1e6, "off99": s_off["max_ns"] / 1e6,
                     "x": ratio(s_off["p50_ns"], s_on["p50_ns"])})
    print(f"crash -> ready, {args.kills} kills per module, {args.load} busy process(es) beside (aim p50 <= "
          f"{AIM_P50_MS:.0f} ms with standby)")
    print_table(rows, [("module", "module", ""), ("standby p50 ms", "on50", ".0f"), ("standby max ms", "on99", ".0f"),
                       ("no standby p50 ms", "off50", ".0f"), ("no standby max ms", "off99", ".0f"),
                       ("faster x", "x", ".2f")])
    write_json("standby", {"machine": machine_info(), "kills": args.kills, "load": args.load, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
