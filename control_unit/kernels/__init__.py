"""The CU's compiled cycle kernels: `load()` gives them ready to run (common/jit.py: the module
`python -m control_unit.kernels` builds ahead of time — make setup / make kernels — else numba's JIT
with its cache), so that a CU start never compiles.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.jit import KernelSet, Loaded

from . import outputs, step

__all__ = ["KERNELS", "Kernels", "load", "outputs", "step"]

_S, _O = "control_unit.kernels.step", "control_unit.kernels.outputs"
KERNELS = KernelSet(
    "cu", "control_unit.kernels._aot", (_S, _O, "common.shm.seqlock_jit", "common.jit_table"),
    {"cycle_step": (_S, "cycle_step", step.CYCLE_STEP_SIG), "gather_inputs": (_S, "gather_inputs", step.GATHER_INPUTS_SIG),
     "gather_feedback": (_S, "gather_feedback", step.GATHER_FEEDBACK_SIG),
     "fill_status": (_S, "fill_status", step.FILL_STATUS_SIG),
     "write_hal_outputs": (_O, "write_hal_outputs", outputs.WRITE_HAL_OUTPUTS_SIG),
     "cu_publish": (_O, "cu_publish", outputs.CU_PUBLISH_SIG)},
    ("control_unit/kernels/step.py", "control_unit/kernels/outputs.py", "common/consts.py", "common/states.py",
     "common/shm/segments.py", "common/shm/p2p.py", "common/shm/views.py", "common/shm/seqlock_jit.py",
     "common/jit_table.py"))


@dataclass(frozen=True)
class Kernels:
    """The kernels, each checked on every call (a call with other types is a TypeError, never a
    compilation inside the cycle); `entry()` hands out a bare entry point for fixed arguments."""

    cycle_step: Callable[..., int]
    gather_inputs: Callable[..., None]
    gather_feedback: Callable[..., None]
    fill_status: Callable[..., bool]
    write_hal_outputs: Callable[..., None]
    loaded: Loaded

    @property
    def load_s(self) -> float:  # time load() took (AOT: about a millisecond; JIT cache hit: tenths of s)
        return self.loaded.load_s

    @property
    def compiled(self) -> tuple[str, ...]:  # JIT: kernels compiled now (cache misses)
        return self.loaded.compiled

    def entry(self, name: str, *args: Any) -> Callable[..., Any]:
        """`name`'s bare compiled entry point, `args` (what every call passes) checked once here."""
        return self.loaded.entry(name, *args)


_loaded: dict[str, Kernels] = {}


def load(backend: str | None = None) -> Kernels:
    """Every kernel ready for its run-time signature, once per process (and backend)."""
    ks = KERNELS.load(backend)
    k = _loaded.get(ks.backend)
    if k is None or k.loaded is not ks:
        k = _loaded[ks.backend] = Kernels(*(ks.checked(n) for n in ("cycle_step", "gather_inputs", "gather_feedback",
                                                                     "fill_status", "write_hal_outputs")), ks)
    return k
