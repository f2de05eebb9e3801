"""`python -m hal [--config DIR]`: the hardware abstraction layer process.

Loads the configuration, then runs the cycle (hal.cycle.run); a bad config or driver exits 2.
"""
from __future__ import annotations

import sys

from common.module_main import module_main
from common.shm.p2p import WriterAlreadyExists

from common.jit import KernelLoadError

from .drivers.base import DriverError
from .engine import EngineError


def _load():  # noqa: ANN202
    from .cycle import run
    from .engine import resolve_engine

    try:
        compiled = resolve_engine() == "compiled"
    except EngineError:
        compiled = False  # reported by run(): exit 2
    if compiled:  # numba's cache read here: a preloaded HAL has it done before its turn
        from .kernels import load

        load()
    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("hal", "evo hardware abstraction layer", _load, argv, {DriverError: 2, WriterAlreadyExists: 1, EngineError: 2, KernelLoadError: 2})


if __name__ == "__main__":
    sys.exit(main())
