"""`python -m control_unit.kernels`: fill numba's cache (the fallback), build the AOT module the CU loads,
and run each kernel once on a small dummy core with both, printing what was compiled and how long it took.
"""
from __future__ import annotations

import sys

import numpy as np

from common.jit import Loaded, build_main


def _smoke(loaded: Loaded) -> None:
    from common.jit_table import array_table

    from . import load, outputs, step
    from common.shm.segments import HAL_AXIS_FEEDBACK

    k = load(loaded.backend)
    st = step.Store(2)
    st.pi[step.PI_PIN_LIMIT_MIN:] = step.PIN_FALSE
    fb = np.zeros(4, dtype=HAL_AXIS_FEEDBACK)
    st.s[step.S_DT] = 0.001
    k.gather_inputs(fb.view(np.uint8), st.bank.copy(), st.arena, st.layout, 0, True, False)
    k.gather_feedback(array_table([fb.view(np.uint8), st.bank.copy(), st.bank.copy(), st.bank.copy(), st.arena,
                                   st.layout]), 0)
    k.cycle_step(st.arena, st.layout, 0.001)
    status = np.zeros(step.CU_TO_RPC.fields["status"][0].itemsize, dtype=np.uint8)
    k.fill_status(status, st.arena, st.layout, 0, 0)
    f, b, i, q = np.zeros(2), np.zeros(2, dtype=bool), np.zeros(1, dtype=np.int64), np.zeros(16, dtype=np.uint64)
    k.write_hal_outputs(array_table([np.zeros(outputs.CU_TO_HAL.itemsize, dtype=np.uint8), f, f, f, b, b, q, i, i,
                                     q[:1], q[:1], b[:1]]))


def main() -> int:
    from . import KERNELS

    return build_main(KERNELS, _smoke)


if __name__ == "__main__":
    sys.exit(main())
