"""`python -m recipe_executor [--config DIR]`: load the configuration and run the recipe executor.

Exit code 0 on SIGTERM/SIGINT, 2 on a configuration error.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, load_config, resolve_config_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe_executor", description="evo recipe executor")
    parser.add_argument("--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, ./config)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        logging.getLogger("recipe_executor").error("configuration refused: %s", e)
        return 2
    from .service import run

    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
