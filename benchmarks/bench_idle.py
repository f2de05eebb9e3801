"""What the default machine costs while nothing happens: `evo up` for N s, each process's CPU summed.

Run: `.venv/bin/python -m benchmarks.bench_idle [--seconds 60] [--baseline COMMIT|none] [--out PATH]`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks._baseline import BASELINE_COMMIT, baseline_tree
from benchmarks._stats import machine_info, print_table, ratio, write_json

REPO = Path(__file__).resolve().parent.parent
AIM_TOTAL_PCT = 25.0
PRELOADED = ("hal", "cu", "re", "grpc", "mqtt")  # modules the watchdog keeps a loaded spare of
METHOD = (
    "`evo up` on a copy of the default machine (config/: HAL sim 1 kHz, CU 1 kHz, RE, MQTT bridge with its "
    "embedded mosquitto and Zenoh output, gRPC bridge with the HMI, standby spares) on free loopback ports, "
    "the configured scheduling (SCHED_FIFO for HAL and CU when permitted, the default since issue 15; "
    "EVO_RT=off for normal scheduling), nobody connected. Once every module runs and the spares are loaded, the CPU time "
    "(user+system, psutil) of every process of the instance is read, again after the window, and the "
    "difference is shown per process as % of one core. Side by side in one run: today's code (a git worktree "
    "of the baseline commit, same config) and the working tree. During each window a bare 1 kHz CycleTimer loop "
    "(a separate process, normal scheduling, nothing else) measures the box's floor: what one 1 kHz wake-up "
    "costs on this VM at that moment."
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_config(code: Path, dst: Path) -> Path:
    """`code`'s default machine on free loopback ports (MQTT, gRPC, HMI, Zenoh)."""
    cfg = dst / "cfg"
    shutil.copytree(code / "config", cfg)
    text = (cfg / "config.toml").read_text()
    for default in ("1883", "50051", "8080"):
        text = re.sub(rf"(?m)^port = {default}$", f"port = {free_port()}", text)
    text = text.replace('"tcp/127.0.0.1:7447"', f'"tcp/127.0.0.1:{free_port()}"')
    text = text.replace('"tcp/127.0.0.1:7448"', f'"tcp/127.0.0.1:{free_port()}"')
    (cfg / "config.toml").write_text(text)
    return cfg


@dataclass
class Instance:
    """One `evo up` of the code in `code` with its own prefix, run directory and ports."""

    code: Path
    tmp: Path
    prefix: str = field(default_factory=lambda: f"bidle{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.cfg = machine_config(self.code, self.tmp)
        self.env = dict(os.environ, PYTHONPATH=str(self.code), PYTHONUNBUFFERED="1", EVO_SHM_PREFIX=self.prefix,
                        EVO_RUN_DIR=str(self.tmp / "run"))
        self.env.pop("EVO_NOTIFY_FD", None)
        self.env.pop("EVO_CONFIG_DIR", None)

    def start(self) -> None:
        self.log = open(self.tmp / "evo-up.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "evo", "--config", str(self.cfg), "up"], cwd=self.code,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def status(self) -> dict[str, Any] | None:
        r = subprocess.run([sys.executable, "-m", "evo", "--config", str(self.cfg), "status", "--json"],
                           cwd=self.code, env=self.env, capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_settled(self, timeout: float = 90.0) -> dict[str, Any]:
        """Every enabled module running and, where the watchdog keeps one, its spare loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"evo up exited {self.proc.returncode}: {self.output()}")
            try:
                doc = self.status()
            except (subprocess.TimeoutExpired, ValueError):
                doc = None
            if doc and all(m["state"] in ("running", "disabled") for m in doc["modules"]):
                ours = [m for m in doc["modules"] if m["state"] == "running" and m["name"] in PRELOADED]
                if all(m["standby_pid"] for m in ours):
                    return doc
            time.sleep(0.5)
        raise TimeoutError(f"{self.code}: machine not settled within {timeout} s: {self.output()}")

    def output(self) -> str:
        try:
            return (self.tmp / "evo-up.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for entry in Path("/dev/shm").glob(f"{self.prefix}*"):
            entry.unlink(missing_ok=True)
        for entry in Path("/dev/shm").glob(f"sem.{self.prefix}*"):
            entry.unlink(missing_ok=True)


def _label(p: psutil.Process, modules: dict[int, str]) -> str:
    """The module a process runs (its spare marked "standby"), else its process name."""
    if p.pid in modules:
        return modules[p.pid]
    try:
        return p.name()
    except psutil.Error:
        return "?"


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


BARE_LOOP = r"""
import os, sys, time
from common.rt import CycleTimer
seconds = float(sys.argv[1])
t = CycleTimer(1_000_000)
end = time.perf_counter_ns() + int(seconds * 1e9)
c0 = os.times()
while time.perf_counter_ns() < end:
    t.wait()
    t.done()
c1 = os.times()
print((c1.user + c1.system - c0.user - c0.system) / seconds * 100.0)
"""


def measure(inst: Instance, seconds: float) -> dict[str, Any]:
    """CPU % of one core per process of the instance over `seconds` (the tree is re-read every second:
    a process that appears mid-window counts from its first sight)."""
    doc = inst.wait_settled()
    assert inst.proc is not None
    modules = {m["pid"]: m["name"] for m in doc["modules"] if m["pid"]}
    modules.update({m["standby_pid"]: f"{m['name']} (standby)" for m in doc["modules"] if m["standby_pid"]})
    modules[inst.proc.pid] = "watchdog"
    root = psutil.Process(inst.proc.pid)
    first: dict[int, tuple[str, float]] = {}
    last: dict[int, float] = {}

    def scan() -> None:
        for p in [root, *root.children(recursive=True)]:
            try:
                cpu = _cpu(p)
            except psutil.Error:
                continue
            if p.pid not in first:
                first[p.pid] = (_label(p, modules), cpu)
            last[p.pid] = cpu

    load0 = list(os.getloadavg())
    # the box's floor in the same window: a bare 1 kHz CycleTimer loop (normal scheduling), nothing else
    bare = subprocess.Popen([sys.executable, "-c", BARE_LOOP, str(seconds)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    t0 = time.monotonic()
    scan()
    while (left := t0 + seconds - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        scan()
    elapsed = time.monotonic() - t0
    out, _ = bare.communicate(timeout=seconds + 60)
    bare_pct = float(out.strip().splitlines()[-1])
    per: dict[str, float] = {}
    for pid, (label, start) in first.items():
        per[label] = per.get(label, 0.0) + 100.0 * (last[pid] - start) / elapsed
    restarts = [m["name"] for m, m0 in zip(inst.status()["modules"], doc["modules"]) if m["pid"] != m0["pid"]]
    return {"elapsed_s": elapsed, "loadavg_at_window_start": load0,
            "per_process_pct": dict(sorted(per.items())), "total_pct": sum(per.values()),
            "bare_1khz_loop_pct": bare_pct, "total_in_bare_loops": sum(per.values()) / bare_pct if bare_pct else None,
            "processes": len(first), "restarted_during_window": restarts}


def warm_kernels(code: Path) -> None:
    """Fill numba's cache of a baseline tree (a fresh worktree has none: its HAL and CU would compile
    for minutes at start) the way `make kernels` does."""
    for module in ("control_unit.kernels", "hal.kernels"):
        if (code / module.replace(".", "/")).with_suffix(".py").exists() or (code / module.replace(".", "/")).is_dir():
            subprocess.run([sys.executable, "-m", module], cwd=code, env=dict(os.environ, PYTHONPATH=str(code)),
                           check=True, capture_output=True, timeout=1800)


def run_variant(code: Path, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        inst = Instance(code, Path(tmp))
        inst.start()
        try:
            return measure(inst, seconds)
        finally:
            inst.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--baseline", default=BASELINE_COMMIT, help="commit of today's code, or 'none'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    info = machine_info()
    variants: dict[str, dict[str, Any]] = {}
    if args.baseline != "none":
        with baseline_tree(args.baseline) as base:
            print(f"baseline {args.baseline}: compiling its kernels ...", flush=True)
            warm_kernels(base)
            print(f"baseline {args.baseline}: {args.seconds:.0f} s idle ...", flush=True)
            variants[f"baseline {args.baseline}"] = run_variant(base, args.seconds)
    print(f"working tree: {args.seconds:.0f} s idle ...", flush=True)
    variants["working tree"] = run_variant(REPO, args.seconds)

    labels = sorted({k for v in variants.values() for k in v["per_process_pct"]})
    rows = []
    for label in labels + ["TOTAL"]:
        row: dict[str, Any] = {"process": label}
        for name, v in variants.items():
            row[name] = v["total_pct"] if label == "TOTAL" else v["per_process_pct"].get(label)
        if len(variants) == 2:
            a, b = (row[n] for n in variants)
            row["ratio"] = ratio(b, a) if a is not None and b is not None else None
        rows.append(row)
    cols = [("process", "process", "")] + [(f"{n} %core", n, ".1f") for n in variants]
    if len(variants) == 2:
        cols.append(("new/old", "ratio", ".2f"))
    print_table(rows, cols)
    total = variants["working tree"]["total_pct"]
    print(f"whole machine at idle: {total:.1f} % of one core (aim <= {AIM_TOTAL_PCT:.0f} %)")
    print("the box's floor in the same windows, a bare 1 kHz CycleTimer loop: "
          + ", ".join(f"{n} {v['bare_1khz_loop_pct']:.1f} % (machine = {v['total_in_bare_loops']:.1f} bare loops)"
                      for n, v in variants.items()))
    scheduling = "normal (EVO_RT=off)" if os.environ.get("EVO_RT", "").lower() in ("off", "0", "no", "false") \
        else "configured (SCHED_FIFO for HAL and CU when permitted)"
    print(f"scheduling: {scheduling}; load average at each window's start: "
          + ", ".join(f"{n} {v['loadavg_at_window_start'][0]:.2f}" for n, v in variants.items()))
    out = write_json("idle", {"method": METHOD, "machine": info, "seconds": args.seconds, "scheduling": scheduling,
                               "aim_total_pct": AIM_TOTAL_PCT, "variants": variants, "rows": rows}, args.out)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
