"""`python -m hal [--config DIR]`: the hardware abstraction layer process.

Loads the configuration, then runs the cycle (hal.cycle.run); a bad config or driver exits 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, load_config, resolve_config_dir
from common.shm.p2p import WriterAlreadyExists

from .cycle import run
from .drivers.base import DriverError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hal", description="evo hardware abstraction layer")
    parser.add_argument("--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged config/)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("hal")
    try:
        config = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        log.error("configuration refused:\n%s", e)
        return 2
    try:
        return run(config)
    except DriverError as e:
        log.error("%s", e)
        return 2
    except WriterAlreadyExists as e:
        log.error("another HAL is running on this instance: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
