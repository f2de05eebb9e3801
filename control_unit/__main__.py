"""`python -m control_unit [--config DIR]`: the control unit process (1 kHz cycle)."""
from __future__ import annotations

import sys

from common.jit import KernelLoadError
from common.module_main import module_main
from common.rt import process_setup


def _load():  # noqa: ANN202
    from .cycle import run
    from .kernels import load

    load()  # the AOT module (or numba's cache) read here: a preloaded CU has it done before its turn (as the HAL)
    return run


def main(argv: list[str] | None = None) -> int:
    process_setup("evo-cu")
    return module_main("control_unit", "evo control unit (1 kHz cycle)", _load, argv, {KernelLoadError: 2})


if __name__ == "__main__":
    sys.exit(main())
