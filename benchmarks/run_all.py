"""Run every benchmark in sequence (`make bench`); each writes benchmarks/results/<name>.json.

`python -m benchmarks.run_all [--quick] [--only shm,hal,...]` — figures go to BENCHMARKS.md by hand.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHES = ["shm", "hal", "cu", "re", "grpc", "hmi", "watchdog", "mqtt", "sparkplug", "zenoh", "ethercat", "canopen",
           "idle",  # issue 15: the whole machine at idle beside a worktree of today's code
           "rt",  # issue 15: HAL/CU overruns of the whole machine beside a bare loop, normal and FIFO
           "grpc_wait",  # issue 15: how a grpc.aio handler waits for another party, a bare server
           "dispatch"]  # issue 15: a compiled kernel's entry point per array argument, back to back and paced
QUICK_FLAG = {"cu": ["--quick"], "rt": ["--seconds", "15"], "grpc_wait": ["--n", "200"], "dispatch": ["--cycles", "1000"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="shorter runs where a benchmark supports it")
    args = ap.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b in args.only.split(",")]
    failed = []
    for name in chosen:
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}"] + (QUICK_FLAG.get(name, []) if args.quick else [])
        print(f"\n=== {' '.join(cmd[1:])} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        print(f"=== bench_{name}: exit {rc} in {time.monotonic() - t0:.0f} s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
