"""`python -m mqtt_bridge [--config DIR]`: the MQTT telemetry bridge process (evo-mqtt).

Loads the configuration and runs the bridge (mqtt_bridge.bridge.run); a bad config exits 2.
"""
from __future__ import annotations

import logging
import os
import sys

from common.connector import ConfigurationError
from common.module_main import module_main


def _load():  # noqa: ANN202
    from mqtt_bridge.bridge import run

    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("mqtt_bridge", "evo MQTT telemetry bridge", _load, argv, {ConfigurationError: 2})


if __name__ == "__main__":
    rc = main()
    # Everything is stopped and flushed by now (segments closed, MQTT offline sent, Zenoh session
    # closed); zenoh's native threads may still call into a finalizing interpreter and abort the
    # process ("FATAL: exception not rethrown"), which the watchdog would log as a crash: skip teardown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
