"""`python -m control_unit.kernels`: compile every CU kernel into numba's cache (next to the source,
in __pycache__) and run each once on a small dummy core, printing what was compiled and how long it took.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    t0 = time.perf_counter()
    from . import load, step

    t_import = time.perf_counter() - t0
    k = load()
    st = step.Store(2)
    pf = np.zeros((len(step.PF_ROWS), 2))
    pi = np.zeros((len(step.PI_ROWS), 2), dtype=np.int64)
    pb = np.zeros((len(step.PB_ROWS), 2), dtype=np.bool_)
    pi[step.PI_PIN_LIMIT_MIN:] = step.PIN_FALSE
    from common.shm.segments import HAL_AXIS_FEEDBACK

    fb = np.zeros(4, dtype=HAL_AXIS_FEEDBACK)[:2]
    views = tuple(fb[f] for f in ("position", "velocity", "torque_estimate", "drive_ready", "drive_fault",
                                  "referenced"))
    t1 = time.perf_counter()
    st.s[step.S_DT] = 0.001
    k.gather_inputs(*views, st.bank.copy(), st.f, st.b, st.bits, st.bank, pi, st.si)
    k.cycle_step(st.f, st.b, st.u8, st.errors, st.tmode, st.master, st.sp_hist, st.bits, st.lc, pf, pi, pb,
                 np.zeros(0, dtype=np.int64), st.s, st.si, st.ev, 0.001)
    t_run = time.perf_counter() - t1
    what = ", ".join(k.compiled) if k.compiled else "nothing (all from the cache)"
    print(f"control_unit.kernels: compiled {what}; load {k.load_s:.2f} s (numba import {t_import:.2f} s), "
          f"first run {t_run * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
