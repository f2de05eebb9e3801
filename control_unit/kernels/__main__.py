"""`python -m control_unit.kernels`: compile every CU kernel into numba's cache (next to the source,
in __pycache__) and run each once on a small dummy core, printing what was compiled and how long it took.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from . import load, step

    k = load()
    st = step.Store(2)
    st.pi[step.PI_PIN_LIMIT_MIN:] = step.PIN_FALSE
    from common.shm.segments import HAL_AXIS_FEEDBACK

    fb = np.zeros(4, dtype=HAL_AXIS_FEEDBACK)
    t1 = time.perf_counter()
    st.s[step.S_DT] = 0.001
    k.gather_inputs(fb.view(np.uint8), st.bank.copy(), st.arena, st.layout, 0, True, False)
    k.cycle_step(st.arena, st.layout, 0.001)
    k.fill_status(np.zeros(step.CU_TO_RPC.fields["status"][0].itemsize, dtype=np.uint8), st.arena, st.layout, 0, 0)
    t_run = time.perf_counter() - t1
    what = ", ".join(k.compiled) if k.compiled else "nothing (all from the cache)"
    print(f"control_unit.kernels: compiled {what}; load {k.load_s:.2f} s, first run {t_run * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
