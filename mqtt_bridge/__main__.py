"""`python -m mqtt_bridge [--config DIR]`: the MQTT telemetry bridge process (evo-mqtt).

Loads the configuration and runs the bridge (mqtt_bridge.bridge.run); a bad config exits 2.
"""
from __future__ import annotations

import sys

from common.connector import ConfigurationError
from common.module_main import module_main


def _load():  # noqa: ANN202
    from mqtt_bridge.bridge import run

    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("mqtt_bridge", "evo MQTT telemetry bridge", _load, argv, {ConfigurationError: 2})


if __name__ == "__main__":
    sys.exit(main())
