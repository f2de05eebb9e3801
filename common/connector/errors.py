"""Connector error types shared by every part of the connector framework.

One hierarchy rooted at `ConnectorError` so callers can catch framework failures in one place.
"""
from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector-framework error."""


class ConfigurationError(ConnectorError):
    """A routing, descriptor or option value is invalid."""


class BackPressure(ConnectorError):
    """The outbound bridge of a channel is full; the value was not accepted."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"outbound bridge full on channel {channel!r}")
        self.channel = channel


class NotConnected(ConnectorError):
    """The connector (or its gateway) is not connected; nothing is buffered durably."""


class ChannelClosed(ConnectorError):
    """The channel (or its connector) was closed."""


class ReceiveTimeout(ConnectorError, TimeoutError):
    """`ChannelReader.recv` saw nothing within its timeout."""


class IllegalTransition(ConnectorError):
    """A health transition outside the legal-transition table was requested."""


class CodecError(ConnectorError):
    """A payload codec failed to encode or decode; carries the codec's format name."""

    def __init__(self, format_name: str, message: str, source: BaseException | None = None) -> None:
        super().__init__(f"{format_name} codec: {message}")
        self.format_name = format_name
        self.source = source
        if source is not None:
            self.__cause__ = source


class EnvelopeError(ConnectorError):
    """An envelope could not be encoded or failed validation."""


class EnvelopeTooShort(EnvelopeError):
    """The buffer is shorter than the header or than header + declared payload."""


class PayloadTooLarge(EnvelopeError):
    """The payload does not fit the channel's maximum payload size."""


class CrcMismatch(EnvelopeError):
    """The stored CRC32 does not match the header and payload bytes."""


class UnsupportedVersion(EnvelopeError):
    """The envelope carries a version this build does not understand."""
