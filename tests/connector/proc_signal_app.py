"""Subprocess for the signal test: an app with an MQTT connector stopped by install_signal_stop.

Prints READY once connected, and the final health after the signal; exits 0 on a clean stop.
"""
from __future__ import annotations

import sys
import time

from common.connector import MqttRouting, Up, install_signal_stop
from common.connector.mqtt import MqttConnector, MqttOptions


def main() -> int:
    port = int(sys.argv[1])
    c = MqttConnector(MqttOptions(port=port), "sigapp")
    w = c.writer(MqttRouting("sig/alive", qos=1))
    c.start()
    stop = install_signal_stop([c])
    deadline = time.monotonic() + 10
    while not isinstance(c.health, Up):
        if time.monotonic() > deadline:
            return 4
        time.sleep(0.01)
    w.send("yes")
    print("READY", flush=True)
    stop.wait()  # the main thread just waits; the handler stops the connector
    print(f"STOPPED signal={stop.signum} health={c.health!r} gateway_alive={c.gateway.running}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
