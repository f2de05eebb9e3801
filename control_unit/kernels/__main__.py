"""`python -m control_unit.kernels`: compile every CU kernel into numba's cache (next to the source,
in __pycache__) and run each once on a small dummy core, printing what was compiled and how long it took.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from . import load, outputs, step

    k = load()
    st = step.Store(2)
    st.pi[step.PI_PIN_LIMIT_MIN:] = step.PIN_FALSE
    from common.shm.segments import HAL_AXIS_FEEDBACK

    fb = np.zeros(4, dtype=HAL_AXIS_FEEDBACK)
    t1 = time.perf_counter()
    st.s[step.S_DT] = 0.001
    k.gather_inputs(fb.view(np.uint8), st.bank.copy(), st.arena, st.layout, 0, True, False)
    k.gather_feedback(fb.view(np.uint8), st.bank.copy(), st.bank.copy(), st.bank.copy(), st.arena, st.layout, 0)
    k.cycle_step(st.arena, st.layout, 0.001)
    status = np.zeros(step.CU_TO_RPC.fields["status"][0].itemsize, dtype=np.uint8)
    k.fill_status(status, st.arena, st.layout, 0, 0)
    f, b, i, q = np.zeros(2), np.zeros(2, dtype=bool), np.zeros(1, dtype=np.int64), np.zeros(16, dtype=np.uint64)
    k.write_hal_outputs(np.zeros(outputs.CU_TO_HAL.itemsize, dtype=np.uint8), f, f, f, b, b, q, i, i, q[:1], q[:1],
                        b[:1])
    t_run = time.perf_counter() - t1
    what = ", ".join(k.compiled) if k.compiled else "nothing (all from the cache)"
    print(f"control_unit.kernels: compiled {what}; load {k.load_s:.2f} s, first run {t_run * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
