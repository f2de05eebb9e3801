"""Sparkplug B output of the MQTT bridge (issue 18): the machine as an edge node for Ignition-class SCADA.

`create(config, bridge)` is the factory listed in mqtt_bridge.bridge.build_outputs; None when disabled.
"""
from __future__ import annotations

from typing import Any


def create(config: Any, bridge: Any) -> Any:
    """The edge node when `[mqtt.sparkplug] enabled = true`, else None."""
    if not config.system.mqtt.sparkplug.enabled:
        return None
    from mqtt_bridge.sparkplug.edge_node import SparkplugEdgeNode

    return SparkplugEdgeNode(config, bridge)
