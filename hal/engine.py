"""Which implementation runs the HAL's per-cycle work: the numba kernels (hal/kernels.py) or the numpy reference.

IoProcessor and SimDriver take `engine=`; without it, $EVO_HAL_ENGINE decides, else "compiled".
"""
from __future__ import annotations

import os

ENGINES = ("compiled", "numpy")
ENV_ENGINE = "EVO_HAL_ENGINE"


class EngineError(ValueError):
    """An unknown engine name (the HAL exits 2 with this message)."""


def resolve_engine(engine: str | None = None) -> str:
    """`engine`, else $EVO_HAL_ENGINE, else "compiled"; anything else is an EngineError naming the source."""
    source = "engine argument"
    if engine is None:
        engine = os.environ.get(ENV_ENGINE) or "compiled"
        source = f"${ENV_ENGINE}"
    if engine not in ENGINES:
        raise EngineError(f"{source}: unknown HAL engine {engine!r}; known: {', '.join(ENGINES)}")
    return engine
