"""Connector framework (the taktora connector contracts in Python): envelope, codec, routing,
health, lifecycle, bounded channels and gateways; MQTT and Zenoh connectors build on it.
"""
from common.connector.channel import ChannelDescriptor, ChannelReader, ChannelWriter, Message
from common.connector.codec import JsonCodec, PayloadCodec, RawCodec
from common.connector.connector import Connector, GatewayMode, SignalStop, install_signal_stop
from common.connector.errors import (
    BackPressure,
    ChannelClosed,
    CodecError,
    ConfigurationError,
    ConnectorError,
    CrcMismatch,
    EnvelopeError,
    EnvelopeTooShort,
    IllegalTransition,
    NotConnected,
    PayloadTooLarge,
    ReceiveTimeout,
)
from common.connector.health import (
    Connecting,
    ConnectorEvent,
    ConnectorHealth,
    Degraded,
    Down,
    DroppedInbound,
    EnvelopeDiscarded,
    HealthEvent,
    HealthMonitor,
    HealthSubscription,
    Up,
)
from common.connector.reconnect import BackoffSettings, ExponentialBackoff, ReconnectPolicy
from common.connector.routing import (
    CanRouting,
    Direction,
    EthercatRouting,
    Iceoryx2Routing,
    MqttRouting,
    Routing,
    ZenohRouting,
)
from common.connector.transport import coalesced_wakes

__all__ = [
    "BackPressure", "BackoffSettings", "CanRouting", "ChannelClosed", "ChannelDescriptor", "ChannelReader",
    "ChannelWriter", "CodecError", "ConfigurationError", "Connecting", "Connector", "ConnectorError",
    "ConnectorEvent", "ConnectorHealth", "CrcMismatch", "Degraded", "Direction", "Down", "DroppedInbound",
    "EnvelopeDiscarded", "EnvelopeError", "EnvelopeTooShort", "EthercatRouting", "ExponentialBackoff",
    "GatewayMode", "HealthEvent", "HealthMonitor", "HealthSubscription", "Iceoryx2Routing", "IllegalTransition",
    "JsonCodec", "Message", "MqttRouting", "NotConnected", "PayloadCodec", "PayloadTooLarge", "RawCodec",
    "ReceiveTimeout", "ReconnectPolicy", "Routing", "SignalStop", "Up", "ZenohRouting", "coalesced_wakes",
    "install_signal_stop",
]
