"""`python -m grpc_bridge [--config DIR]`: the operator API (gRPC) of the machine.

Parses arguments, loads the configuration, and calls grpc_bridge.server.run.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, format_errors, load_config, resolve_config_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grpc_bridge", description=__doc__)
    ap.add_argument("--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        print(format_errors(e), file=sys.stderr)
        return 2
    from grpc_bridge.server import run

    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
