"""`python -m control_unit [--config DIR]`: the control unit process."""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, format_errors, load_config, resolve_config_dir
from common.rt import process_setup


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="control_unit", description="evo control unit (1 kHz cycle)")
    ap.add_argument("--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    process_setup("evo-cu")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        logging.getLogger("control_unit").error("configuration refused:\n%s", format_errors(e))
        return 2
    from .cycle import run

    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
