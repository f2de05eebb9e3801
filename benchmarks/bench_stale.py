"""How long does the HAL's heartbeat stay unchanged, seen from a 1 kHz reader like the CU, on this VM?

Chooses `[cu] hal_stale_cycles` and `[cu] feedback_hold_cycles` with figures: a real HAL process on the
default machine, and in this process a 1 kHz CycleTimer loop that counts, per executed cycle, how many
cycles the hal_cu heartbeat has been unchanged (exactly the CU's `hal_age`). For each threshold N it
reports how often the age reached N (= false HAL-stale trips in a healthy machine) and the detection
time N ms. `python -m benchmarks.bench_stale [--seconds 600]`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks._stats import machine_info, print_table, write_json
from common.rt import CycleTimer, setup_realtime
from common.shm.p2p import TypedP2pReader, segment_name
from common.shm.segments import HAL_TO_CU
from tests.helpers import REPO, ModuleProcess, remove_shm, wait_for

THRESHOLDS = (2, 3, 5, 10, 20, 30, 50, 100)


def measure(seconds: float, fifo: bool) -> dict:
    prefix = f"bs{uuid.uuid4().hex[:8]}"
    os.environ["EVO_SHM_PREFIX"] = prefix
    tmp = Path(tempfile.mkdtemp(prefix="bench_stale_"))
    cfg = tmp / "config"
    shutil.copytree(REPO / "config", cfg)
    if fifo:  # the HAL as the CU's peer would run it, and this reader like the CU (priority 40)
        text = (cfg / "config.toml").read_text()
        (cfg / "config.toml").write_text(re.sub(r"(?ms)(^\[hal\]\n(?:(?!^\[).)*?)^rt_priority = \d+",
                                                r"\g<1>rt_priority = 41", text))
        setup_realtime(40)
    hal = ModuleProcess("hal", prefix, ["--config", str(cfg)], log_dir=tmp,
                        env={"EVO_RUN_DIR": str(tmp / "run")}).start()
    runs: list[int] = []  # length of every stretch of unchanged heartbeat (cycles)
    ages = np.zeros(10_001, np.int64)
    try:
        r = wait_for(lambda: TypedP2pReader.attach(segment_name("hal", "cu"), "cu", HAL_TO_CU, stale_reads=10**9),
                     timeout=20, what="hal_cu")
        hb0 = r.heartbeat  # measure the HAL in its stride, not its start-up
        wait_for(lambda: r.heartbeat > hb0 + 500, timeout=20, what="HAL cycling")
        timer = CycleTimer(1_000_000)
        last, age, cycles = -1, 0, 0
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            timer.wait()
            hb = r.heartbeat
            if hb != last:
                if age:
                    runs.append(age)
                last, age = hb, 0
            else:
                age += 1
            ages[min(age, 10_000)] += 1
            cycles += 1
            timer.done()
        overruns = timer.overruns
        r.close()
    finally:
        hal.stop()
        remove_shm(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    a = np.asarray(runs or [0])
    trips = {n: int((a >= n).sum()) for n in THRESHOLDS}
    return {
        "scheduling": "SCHED_FIFO" if fifo else "normal",
        "seconds": seconds, "cycles": cycles, "reader_overruns": overruns,
        "max_age_cycles": int(a.max()),
        "age_p99": float(np.percentile(np.repeat(np.arange(ages.size), ages), 99)),
        "trips": trips,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--fifo", action="store_true", help="HAL and reader under SCHED_FIFO (needs root/CAP_SYS_NICE)")
    args = ap.parse_args(argv)
    res = measure(args.seconds, args.fifo)
    rows = [{"n": n, "detect_ms": float(n), "trips": res["trips"][n],
             "per_hour": res["trips"][n] * 3600.0 / res["seconds"]} for n in THRESHOLDS]
    print(f"{res['scheduling']}: {res['cycles']} reader cycles in {res['seconds']:.0f} s, reader overruns {res['reader_overruns']}, "
          f"longest unchanged heartbeat {res['max_age_cycles']} cycles, age p99 {res['age_p99']:.0f}")
    print_table(rows, [("N (cycles)", "n", ""), ("detection ms", "detect_ms", ".0f"),
                       ("false trips", "trips", ""), ("per hour", "per_hour", ".1f")])
    write_json(f"stale_{'fifo' if args.fifo else 'normal'}", {"machine": machine_info(), **res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
