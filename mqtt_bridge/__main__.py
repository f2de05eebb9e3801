"""`python -m mqtt_bridge [--config DIR]`: the MQTT telemetry bridge process (evo-mqtt).

Loads the configuration and runs the bridge (mqtt_bridge.bridge.run); a bad config exits 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, load_config, resolve_config_dir
from common.connector import ConfigurationError

from mqtt_bridge.bridge import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mqtt_bridge", description="evo MQTT telemetry bridge")
    parser.add_argument(
        "--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged config/)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("mqtt_bridge")
    try:
        config = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        log.error("configuration refused:\n%s", e)
        return 2
    try:
        return run(config)
    except ConfigurationError as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
