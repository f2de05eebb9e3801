"""`python -m grpc_bridge [--config DIR]`: the operator API (gRPC) of the machine.

Loads the configuration and calls grpc_bridge.server.run; a bad config exits 2.
"""
from __future__ import annotations

import sys

from common.module_main import module_main


def _load():  # noqa: ANN202
    from grpc_bridge.server import run

    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("grpc_bridge", "evo operator API (gRPC)", _load, argv)


if __name__ == "__main__":
    sys.exit(main())
