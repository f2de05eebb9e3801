"""The compiled entry point of a one-signature numba kernel, for cycle loops: no dispatcher type resolution per call.

The HAL uses it for hal_step, the CU for gather_feedback, cycle_step, fill_status and write_hal_outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def entry_point(kernel: Any, *args: Any) -> Callable[..., Any]:
    """`kernel`'s compiled entry point (it must have exactly one compiled signature). `args` are what
    the caller passes on every call (the same arrays, scalars of the same types): they are checked
    once here against that signature, because the entry point itself does not check them (the
    dispatcher's per-call check costs ~1 us with a handful of arrays)."""
    import numba

    sigs = kernel.signatures
    if len(sigs) != 1:
        raise TypeError(f"{kernel.__name__}: {len(sigs)} compiled signatures, entry_point() needs exactly one")
    got = tuple(numba.typeof(a) for a in args)
    if got != tuple(sigs[0]):
        raise TypeError(f"{kernel.__name__}: arguments {got} do not match the compiled {tuple(sigs[0])}")
    return kernel.overloads[sigs[0]].entry_point
