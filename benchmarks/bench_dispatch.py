"""What a compiled kernel's entry point costs per array argument, back to back and paced like a 1 kHz cycle.

Three no-op kernels built ahead of time by numba.pycc (as `make kernels` builds the HAL's and the CU's): one
with hal_step's old signature (5 scalars + 9 arrays), one with its signature since common/jit_table.py (5
scalars + 1 read-only uint8 array + the table), one with today's (4 scalars + the table + the table of the
polled segments' mappings); a Python no-op beside them. The HAL's real arrays are passed
(the same objects a cycle passes). Run: `.venv/bin/python -m benchmarks.bench_dispatch [--out PATH]`.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._stats import machine_info, print_table, summarize, write_json
from benchmarks.bench_hal import PACE_S, _hal_cycle, _load, _setup_env, _timed_region

_BUILD = r"""
import sys
from numba.pycc import CC
from common.jit import Arg, Sig
I64, F64 = Arg("int64", 0), Arg("float64", 0)
cc = CC("_noops")
cc.output_dir = sys.argv[1]
def args9(phase, flags, now, dt, seen, src, a, b, c, d, e, f, g, h):
    return 0
def table(phase, flags, now, dt, seen, src, tab):
    return 0
def tables2(phase, flags, now, dt, tab, src):
    return 0
u8 = Arg("uint8")
cc.export("args9", Sig("int64", (I64, I64, I64, F64, I64, Arg("uint8", readonly=True), u8, u8, u8, u8,
                                 Arg("int64"), u8, u8, u8)).numba())(args9)
cc.export("table", Sig("int64", (I64, I64, I64, F64, I64, Arg("uint8", readonly=True),
                                 Arg("int64", readonly=True))).numba())(table)
cc.export("tables2", Sig("int64", (I64, I64, I64, F64, Arg("int64", readonly=True),
                                   Arg("int64", readonly=True))).numba())(tables2)
cc.compile()
"""


def _build(out: Path) -> Any:
    import subprocess

    from benchmarks.bench_hal import REPO

    subprocess.run([sys.executable, "-c", _BUILD, str(out)], cwd=REPO, check=True, capture_output=True, timeout=600)
    so = next(out.glob("_noops*.so"))
    spec = importlib.util.spec_from_file_location("_noops", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def bench(cycles: int) -> dict[str, Any]:
    from common.jit_table import table_arrays
    from hal import kernels as K

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        mod = _build(tmp)
        _setup_env(tmp)
        hal = _hal_cycle(_load(tmp, 64, 1024), "compiled", "aot")
        try:
            tab = hal.fused.table
            a = table_arrays(tab)
            nine = (a[K.T_CU], a[K.T_HAL], a[K.T_OUT], a[K.T_H], a[K.T_LAYS], a[K.T_IO], a[K.T_SIM], a[K.T_CU_SEG])
            src = np.zeros(64, np.uint8)  # (a segment header's size, read-only: the old cu_src when not read)
            src.flags.writeable = False
            sources = hal.fused.sources
            calls = {
                "no-op, 9 array arguments (hal_step before the table)":
                    lambda: mod.args9(0, 0, 0, 0.0, -1, src, *nine),
                "no-op, 1 array + the table (hal_step in stop 25)": lambda: mod.table(0, 0, 0, 0.0, -1, src, tab),
                "no-op, 2 tables (hal_step now)": lambda: mod.tables2(0, 0, 0, 0.0, tab, sources),
                "Python no-op (a lambda)": lambda: None,
            }
            res: dict[str, Any] = {}
            pc = time.perf_counter_ns
            with _timed_region() as rt:
                for paced in (False, True):
                    for name, f in calls.items():
                        for _ in range(200):
                            f()
                        out = np.empty(cycles, np.int64)
                        for i in range(cycles):
                            t0 = pc()
                            f()
                            out[i] = pc() - t0
                            if paced:
                                time.sleep(PACE_S)
                        res[f"{'paced' if paced else 'back to back'}: {name}"] = {
                            k.replace("_ns", "_us"): v / 1e3 if k.endswith("_ns") else v for k, v in summarize(out).items()}
            res["rt_active"] = rt
        finally:
            hal.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=5000)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/dispatch.json)")
    args = ap.parse_args(argv)
    res = {"machine": machine_info(), "method": __doc__.split("\n\n")[1]}
    r = bench(args.cycles)
    res.update(r)
    print(f"entry-point cost, microseconds (SCHED_FIFO: {r['rt_active']}; paced: a {PACE_S * 1e3:.1f} ms sleep "
          "before each call)")
    print_table([{"call": k, **v} for k, v in r.items() if isinstance(v, dict)],
                [("call", "call", ""), ("p50", "p50_us", ".2f"), ("p99", "p99_us", ".2f"),
                 ("p99.9", "p999_us", ".2f"), ("max", "max_us", ".1f")])
    print(f"\nresults: {write_json('dispatch', res, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
