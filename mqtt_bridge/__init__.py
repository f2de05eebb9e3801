"""evo MQTT bridge: read-only telemetry from shared memory and the watchdog to MQTT topics.

Publishes through the connector framework's MqttConnector (`python -m mqtt_bridge`).
"""
