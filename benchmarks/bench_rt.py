"""Real-time figures of the whole machine against the box's own floor: HAL and CU overruns beside a bare loop.

Run: `.venv/bin/python -m benchmarks.bench_rt [--seconds 60] [--out PATH]` -> table + results/rt.json.
`--loop-cost`: instead, the CPU cost of the CycleLoop skeleton with an empty step beside a bare
CycleTimer loop (three processes side by side, normal scheduling) -> results/rt_loop_cost.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._baseline import baseline_tree
from benchmarks._stats import machine_info, print_table, ratio, write_json
from benchmarks.bench_idle import Instance

REPO = Path(__file__).resolve().parent.parent
PERIOD_NS = 1_000_000  # the default machine's HAL and CU period
FIFO_BARE_PRIORITY = 40  # the bare loop runs at the CU's default priority
AIM_RATIO = 1.2  # CU / HAL overruns at most 1.2x the bare loop's
METHOD = (
    "`evo up` on a copy of the default machine (own prefix, run dir, free ports) for the window, once with "
    "[hal]/[cu] rt_priority = 0 (normal scheduling) and once with the defaults (SCHED_FIFO 41/40 + mlockall). "
    "During the same window a separate process runs a bare CycleTimer loop of the same 1 ms period under the "
    "same scheduling (SCHED_FIFO 40 in the FIFO run), doing nothing but reading the CU's published "
    "hal_age_cycles (one aligned u32 load) to record the largest HAL heartbeat gap the CU showed. Overruns are "
    "skipped ticks (CycleTimer: a wake-up a whole period or more late); HAL and CU overruns and cycles are "
    "the difference of their published CYCLE_STATS counters (hal_mqt, cu_mqt) read by the bare loop itself at its "
    "first and its last cycle, so that the three count over the same window (their histograms and longest "
    "cycles: read around the bare process). Wake jitter p99 comes from the "
    "25 us-bucket histograms every loop publishes (the bare loop's exact p99 beside it)."
)

BARE_LOOP = r"""
import json, mmap, os, sys, time
import numpy as np
from common.rt import CycleTimer, setup_realtime
seconds, prio, seg, off = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
counters = json.loads(sys.argv[5])  # {"hal": [path, cycle_count offset, overruns offset], "cu": [...]}
rt = setup_realtime(prio)
maps = []


def u(path, o, fmt):
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
    os.close(fd)
    maps.append(mm)
    return memoryview(mm)[o:o + (4 if fmt == "I" else 8)].cast(fmt)


age = u(seg, off, "I")
loops = {k: (u(p, c, "Q"), u(p, o, "Q")) for k, (p, c, o) in counters.items()}
n = int(seconds * 1e9 // %(period)d)
late = np.zeros(n, dtype=np.int64)
timer = CycleTimer(%(period)d)
max_age = 0
i = 0
end = time.perf_counter_ns() + int(seconds * 1e9)
first = last = None
while i < n and time.perf_counter_ns() < end:
    late[i] = timer.wait() + (timer.ticks - 1) * %(period)d  # raw lateness, skipped periods included
    a = age[0]
    if a > max_age:
        max_age = a
    if i == 0:  # the HAL's and CU's counters over exactly this loop's window (aligned u64 loads)
        first = {k: (c[0], o[0], timer.overruns) for k, (c, o) in loops.items()}
    timer.done()
    i += 1
last = {k: (c[0], o[0], timer.overruns) for k, (c, o) in loops.items()}
late = late[:i]
same_window = {k: {"cycles": last[k][0] - first[k][0], "overruns": last[k][1] - first[k][1],
                   "bare_overruns": last[k][2] - first[k][2]} for k in loops} if first else {}
print(json.dumps({"rt_active": rt, "cycles": timer.cycle_count, "overruns": timer.overruns,
                  "hist": timer.hist.tolist(), "p99_late_ns": float(np.percentile(late, 99)) if i else 0.0,
                  "max_late_ns": int(late.max()) if i else 0, "cu_max_hal_age_cycles": int(max_age),
                  "same_window": same_window}))
del age, loops, u
for mm in maps:
    mm.close()
""" % {"period": PERIOD_NS}


LOOP_COST = r"""
import json, os, sys, time
import numpy as np
from common.rt import CycleLoop, CycleTimer, StopFlag
from common.shm.segments import CYCLE_STATS
seconds, kind = float(sys.argv[1]), sys.argv[2]
period = %(period)d
stats = (np.zeros((), CYCLE_STATS), np.zeros((), CYCLE_STATS))  # the CU publishes into cu_rpc and cu_mqt
t0, c0 = time.monotonic(), os.times()
end = time.perf_counter_ns() + int(seconds * 1e9)
if kind == "bare":
    timer = CycleTimer(period)
    while time.perf_counter_ns() < end:
        timer.wait()
        timer.done()
    cycles = timer.cycle_count
else:
    stop = StopFlag()
    kw = {} if kind == "loop_every_cycle" else {"auto_publish": False}  # the baseline's loop has no such option
    loop = CycleLoop("bench", period, stop, **kw)
    loop.start(stats)
    n = [0]
    def step(now_ns, ticks):
        n[0] += 1
        if kind == "loop_on_commit" and n[0] %% 10 == 0:  # like the CU: with the 10 ms status beat
            loop.publish()
        if now_ns >= end:
            stop.set()
    loop.run(step)
    cycles = n[0]
c1, t1 = os.times(), time.monotonic()
cpu = (c1.user - c0.user) + (c1.system - c0.system)
print(json.dumps({"kind": kind, "cycles": cycles, "wall_s": t1 - t0, "cpu_pct": 100.0 * cpu / (t1 - t0),
                  "user_pct": 100.0 * (c1.user - c0.user) / (t1 - t0),
                  "system_pct": 100.0 * (c1.system - c0.system) / (t1 - t0)}))
""" % {"period": PERIOD_NS}
LOOP_KINDS = {"bare": "bare CycleTimer loop (wait + done)",
              "loop_every_cycle": "CycleLoop, empty step, figures into 2 stats views every cycle (auto_publish)",
              "loop_on_commit": "CycleLoop, empty step, auto_publish=False, publish() every 10th cycle (the CU now)"}


def run_loop_cost(seconds: float, out: str | None = None, baseline: str = "none") -> dict[str, Any]:
    """The loops at once (same load for each), normal scheduling, CPU % of one core; with a baseline
    commit also that commit's CycleLoop (figures every cycle, as it always did)."""
    with contextlib.ExitStack() as stack:
        runs = [(k, REPO) for k in LOOP_KINDS]
        if baseline != "none":
            runs.append(("loop_every_cycle", stack.enter_context(baseline_tree(baseline))))
        procs = [(k, tree, subprocess.Popen([sys.executable, "-c", LOOP_COST, str(seconds), k], cwd=tree,
                                            env=dict(os.environ, PYTHONPATH=str(tree)), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)) for k, tree in runs]
        rows = []
        for k, tree, p in procs:
            o, e = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise RuntimeError(f"{k} failed: {e}")
            row = json.loads(o.strip().splitlines()[-1])
            row["what"] = LOOP_KINDS[k] if tree == REPO else f"CycleLoop of {baseline}, empty step (figures every cycle)"
            rows.append(row)
    bare = rows[0]["cpu_pct"]
    for r in rows:
        r["to_bare"] = ratio(r["cpu_pct"], bare)
    result = {"benchmark": "rt_loop_cost", "machine": machine_info(), "load_avg": os.getloadavg(),
              "config": {"seconds": seconds, "period_ns": PERIOD_NS, "baseline": baseline}, "rows": rows}
    result["path"] = str(write_json("rt_loop_cost", result, out))
    print_table(rows, [("loop", "what", ""), ("cycles", "cycles", ""), ("% core", "cpu_pct", ".2f"),
                       ("user", "user_pct", ".2f"), ("system", "system_pct", ".2f"), ("x bare", "to_bare", ".2f")])
    print(f"results: {result['path']}")
    return result


def _stats(prefix: str, key: str) -> dict[str, Any]:
    from common.shm.p2p import TypedP2pReader
    from common.shm.segments import SEGMENTS

    spec = SEGMENTS[key]
    r = TypedP2pReader.attach(spec.name(prefix), spec.reader, spec.dtype, exclusive=False, stale_reads=1 << 30)
    try:
        st = r.read()["stats"]
        return {"cycles": int(st["cycle_count"]), "overruns": int(st["overruns"]), "hist": st["jitter_hist"].tolist(),
                "max_cycle_ns": int(st["max_cycle_ns"]), "rt_active": bool(st["rt_active"])}
    finally:
        r.close()


def _p99_from_hist(hist: list[int]) -> float | None:
    """Upper edge (us) of the bucket holding the 99th percentile; the last bucket is open-ended."""
    from common.shm.segments import JITTER_BUCKET_US

    h = np.asarray(hist, dtype=np.int64)
    total = int(h.sum())
    if total <= 0:
        return None
    k = int(np.searchsorted(np.cumsum(h), 0.99 * total))
    return float((k + 1) * JITTER_BUCKET_US)


def _window(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    hist = [y - x for x, y in zip(a["hist"], b["hist"])]
    cycles = b["cycles"] - a["cycles"]
    overruns = b["overruns"] - a["overruns"]
    return {"cycles": cycles, "overruns": overruns, "overrun_pct": 100.0 * overruns / max(1, cycles + overruns),
            "p99_wake_us": _p99_from_hist(hist), "max_cycle_us": b["max_cycle_ns"] / 1000, "rt_active": b["rt_active"]}


def run_variant(fifo: bool, seconds: float) -> dict[str, Any]:
    """One `evo up` (normal or FIFO) with a bare loop beside it for `seconds`."""
    from common.consts import P2P_HEADER_SIZE
    from common.shm.p2p import segment_name, shm_path
    from common.shm.segments import CU_STATUS, CU_TO_MQT, CYCLE_STATS, SEGMENTS

    with tempfile.TemporaryDirectory(prefix="bench_rt_") as tmp:
        inst = Instance(REPO, Path(tmp))
        inst.env.pop("EVO_RT", None)  # the suite's override must not leak into a benchmark
        if not fifo:
            text = (inst.cfg / "config.toml").read_text()
            text = re.sub(r"(?m)^rt_priority = \d+$", "rt_priority = 0", text)
            (inst.cfg / "config.toml").write_text(text)
        try:
            inst.start()
            inst.wait_settled()
            off = P2P_HEADER_SIZE + CU_TO_MQT.fields["status"][1] + CU_STATUS.fields["hal_age_cycles"][1]
            seg = shm_path(segment_name("cu", "mqt", inst.prefix))
            counters = {}
            for who, key in (("hal", "hal_mqt"), ("cu", "cu_mqt")):
                base = P2P_HEADER_SIZE + SEGMENTS[key].dtype.fields["stats"][1]
                counters[who] = [shm_path(SEGMENTS[key].name(inst.prefix)), base + CYCLE_STATS.fields["cycle_count"][1],
                                 base + CYCLE_STATS.fields["overruns"][1]]
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_LOOP, str(seconds), str(FIFO_BARE_PRIORITY if fifo else 0), seg, str(off),
                 json.dumps(counters)],
                cwd=REPO, env=inst.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            hal0, cu0 = _stats(inst.prefix, "hal_mqt"), _stats(inst.prefix, "cu_mqt")
            out, err = bare.communicate(timeout=seconds + 60)
            hal1, cu1 = _stats(inst.prefix, "hal_mqt"), _stats(inst.prefix, "cu_mqt")
            if bare.returncode != 0:
                raise RuntimeError(f"bare loop failed: {err}")
            b = json.loads(out.strip().splitlines()[-1])
        finally:
            inst.stop()
    bare_row = {"cycles": b["cycles"], "overruns": b["overruns"],
                "overrun_pct": 100.0 * b["overruns"] / max(1, b["cycles"] + b["overruns"]),
                "p99_wake_us": _p99_from_hist(b["hist"]), "p99_wake_exact_us": b["p99_late_ns"] / 1000,
                "max_wake_ms": b["max_late_ns"] / 1e6, "rt_active": b["rt_active"]}
    hal, cu = _window(hal0, hal1), _window(cu0, cu1)
    for who, row in (("hal", hal), ("cu", cu)):
        # the counts and the ratio over the bare loop's own window: its first to its last cycle (the reads
        # around it also cover the bare process's start and exit); histograms from the reads around it
        w = b["same_window"][who]
        row["window_around_bare"] = {"cycles": row["cycles"], "overruns": row["overruns"]}
        row["cycles"], row["overruns"] = w["cycles"], w["overruns"]
        row["overrun_pct"] = 100.0 * w["overruns"] / max(1, w["cycles"] + w["overruns"])
        bare_pct = 100.0 * w["bare_overruns"] / max(1, b["cycles"] + b["overruns"])
        row["overruns_to_bare"] = ratio(row["overrun_pct"], bare_pct) if w["bare_overruns"] else None
        row["aim_met"] = row["overrun_pct"] <= AIM_RATIO * bare_pct or row["overruns"] <= 1
    return {"scheduling": "SCHED_FIFO" if fifo else "normal", "bare": bare_row, "hal": hal, "cu": cu,
            "cu_max_hal_age_cycles": b["cu_max_hal_age_cycles"]}


def run(seconds: float, out: str | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    variants = [run_variant(False, seconds), run_variant(True, seconds)]
    result = {
        "benchmark": "rt",
        "machine": machine_info(),
        "config": {"seconds": seconds, "period_ns": PERIOD_NS, "method": METHOD, "aim_ratio": AIM_RATIO,
                   "duration_s": round(time.monotonic() - t0, 1)},
        "variants": variants,
    }
    result["path"] = str(write_json("rt", result, out))
    return result


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nrt benchmark — {m['cpu_model']}, {m['cores']} cores, Python {m['python']}; "
          f"{result['config']['seconds']:.0f} s per scheduling, 1 kHz\n")
    rows = []
    for v in result["variants"]:
        for who in ("bare", "hal", "cu"):
            r = v[who]
            rows.append({"sched": v["scheduling"], "loop": {"bare": "bare CycleTimer loop", "hal": "HAL",
                                                            "cu": "CU"}[who],
                         "cycles": r["cycles"], "overruns": r["overruns"], "pct": r["overrun_pct"],
                         "x_bare": r.get("overruns_to_bare"), "p99": r["p99_wake_us"], "rt": r["rt_active"]})
    print_table(rows, [("scheduling", "sched", ""), ("loop", "loop", ""), ("cycles", "cycles", ""),
                       ("overruns", "overruns", ""), ("% of ticks", "pct", ".3f"), ("x bare", "x_bare", ".2f"),
                       ("p99 wake us (hist)", "p99", ".0f"), ("FIFO", "rt", "")])
    for v in result["variants"]:
        aims = ", ".join(f"{w} {'met' if v[w]['aim_met'] else 'MISSED'}" for w in ("hal", "cu"))
        print(f"{v['scheduling']}: overruns <= {AIM_RATIO}x bare: {aims}; bare exact p99 wake "
              f"{v['bare']['p99_wake_exact_us']:.0f} us, worst {v['bare']['max_wake_ms']:.1f} ms; "
              f"CU max HAL heartbeat gap seen {v['cu_max_hal_age_cycles']} cycles")
    print(f"results: {result['path']} ({result['config']['duration_s']} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="window per scheduling (default 60)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/rt.json)")
    ap.add_argument("--loop-cost", action="store_true", help="the CycleLoop skeleton's CPU beside a bare loop")
    ap.add_argument("--baseline", default="none", help="--loop-cost: also this commit's CycleLoop (git worktree)")
    a = ap.parse_args(argv)
    if a.loop_cost:
        run_loop_cost(a.seconds, a.out, a.baseline)
        return 0
    report(run(a.seconds, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
