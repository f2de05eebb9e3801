"""`python -m recipe_executor [--config DIR]`: load the configuration and run the recipe executor.

Exit code 0 on SIGTERM/SIGINT, 2 on a configuration error.
"""
from __future__ import annotations

import sys

from common.module_main import module_main


def _load():  # noqa: ANN202
    from .service import run

    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("recipe_executor", "evo recipe executor", _load, argv)


if __name__ == "__main__":
    sys.exit(main())
