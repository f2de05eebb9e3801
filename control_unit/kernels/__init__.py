"""The CU's compiled cycle kernels (numba): `load()` gives the kernels ready to run, compiled for
the exact signatures the core passes or loaded from numba's cache; `python -m control_unit.kernels`
fills that cache (make setup / make kernels) so that a CU start never compiles.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import outputs, step

__all__ = ["Kernels", "load", "outputs", "step"]


@dataclass(frozen=True)
class Kernels:
    """The compiled entry points, each with one signature and compilation disabled afterwards: a
    call with other types is refused at once instead of compiling inside the cycle."""

    cycle_step: Callable[..., int]
    gather_inputs: Callable[..., None]
    gather_feedback: Callable[..., None]
    fill_status: Callable[..., None]
    write_hal_outputs: Callable[..., None]
    load_s: float  # time load() took (cache hit: tens of ms; cold: compile time)
    compiled: tuple[str, ...]  # kernels compiled now (cache misses); empty when all came from the cache


_ENTRIES = ((step, "cycle_step", step.CYCLE_STEP_SIG), (step, "gather_inputs", step.GATHER_INPUTS_SIG),
            (step, "gather_feedback", step.GATHER_FEEDBACK_SIG),
            (step, "fill_status", step.FILL_STATUS_SIG),
            (outputs, "write_hal_outputs", outputs.WRITE_HAL_OUTPUTS_SIG))
_loaded: Kernels | None = None


def _misses(dispatcher: Any) -> int:
    return sum(dispatcher.stats.cache_misses.values())


def load() -> Kernels:
    """Compile (or load from cache) every entry point for its run-time signature, once per process."""
    global _loaded
    if _loaded is None:
        t0 = time.perf_counter()
        compiled = []
        for module, name, sig in _ENTRIES:
            kernel = getattr(module, name)
            before = _misses(kernel)
            kernel.compile(sig)
            kernel.disable_compile()
            if _misses(kernel) > before:
                compiled.append(name)
        _loaded = Kernels(step.cycle_step, step.gather_inputs, step.gather_feedback, step.fill_status, outputs.write_hal_outputs,
                          time.perf_counter() - t0, tuple(compiled))
    return _loaded
