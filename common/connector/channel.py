"""Typed channel handles: `ChannelWriter` can only send, `ChannelReader` can only receive.

Both sit on one end of a bounded bridge; values are codec-encoded straight into envelope slots.
"""
from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, TypeVar

from common.connector import envelope
from common.connector.codec import JsonCodec, PayloadCodec
from common.connector.errors import (
    BackPressure,
    ChannelClosed,
    ConfigurationError,
    EnvelopeError,
    NotConnected,
    PayloadTooLarge,
    ReceiveTimeout,
)
from common.connector.health import DroppedInbound, EnvelopeDiscarded, HealthMonitor, is_connected
from common.connector.routing import Direction, Routing
from common.connector.transport import EnvelopeReceiver, EnvelopeSender

T = TypeVar("T")

DEFAULT_MAX_PAYLOAD = 4096
_KEY_LEN = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class ChannelDescriptor:
    """A logical channel: name (unique per connector and direction), routing, payload ceiling."""

    name: str
    routing: Routing
    max_payload: int = DEFAULT_MAX_PAYLOAD

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 200:
            raise ConfigurationError("channel name must be 1..200 characters")
        if not 1 <= self.max_payload <= 16 * 1024 * 1024:
            raise ConfigurationError("channel max_payload must be 1 B..16 MiB")

    @property
    def slot_size(self) -> int:
        return envelope.envelope_size(self.max_payload)

    def service(self, connector: str, direction: Direction) -> str:
        """Deterministic bridge name: one service per channel direction."""
        return f"{connector}/{self.name}.{direction.value}"


@dataclass(frozen=True, slots=True)
class Message(Generic[T]):
    """One received value with its envelope metadata; `key` is the protocol topic/key if any."""

    value: T
    sequence: int
    timestamp_ns: int
    correlation_id: bytes
    key: str | None = None


def frame_keyed(buf: memoryview, key: bytes, data: bytes | memoryview) -> int:
    """Write `[u16 key_len][key][data]` (the protocol key of an inbound message); returns length."""
    n = 2 + len(key) + len(data)
    if n > len(buf):
        raise PayloadTooLarge(f"inbound message of {n} B exceeds channel payload of {len(buf)} B")
    _KEY_LEN.pack_into(buf, 0, len(key))
    buf[2 : 2 + len(key)] = key
    buf[2 + len(key) : n] = data
    return n


def unframe_keyed(payload: memoryview) -> tuple[str, memoryview]:
    if len(payload) < 2:
        raise PayloadTooLarge("keyed payload shorter than its length prefix")
    (klen,) = _KEY_LEN.unpack_from(payload, 0)
    if 2 + klen > len(payload):
        raise PayloadTooLarge("keyed payload shorter than its key")
    return str(payload[2 : 2 + klen], "utf-8"), payload[2 + klen :]


@dataclass(slots=True)
class ChannelHooks:
    """What a channel handle reports into: the connector's health monitor and its send gate."""

    monitor: HealthMonitor
    can_send: Callable[[], bool] = field(default=lambda: True)

    def backpressure(self, channel: str, on: bool) -> None:
        cause = f"backpressure:{channel}"
        if on:
            self.monitor.degrade(cause, f"outbound bridge full on {channel}")
        elif self.monitor.is_degraded_by(cause):
            self.monitor.recover(cause)

    def discarded(self, channel: str, reason: str) -> None:
        self.monitor.emit(EnvelopeDiscarded(self.monitor.connector, channel, reason, self.monitor.now_ns()))
        self.monitor.degrade(f"envelope:{channel}", f"invalid envelopes discarded on {channel}")

    def valid(self, channel: str) -> None:
        self.monitor.recover(f"envelope:{channel}")

    def dropped(self, channel: str, count: int) -> None:
        self.monitor.emit(DroppedInbound(self.monitor.connector, channel, count, self.monitor.now_ns()))


def connected_gate(monitor: HealthMonitor) -> Callable[[], bool]:
    return lambda: is_connected(monitor.state)


class ChannelWriter(Generic[T]):
    """Send-only handle. `send` never blocks: a full bridge raises `BackPressure`."""

    def __init__(
        self,
        descriptor: ChannelDescriptor,
        sender: EnvelopeSender,
        codec: PayloadCodec | None = None,
        hooks: ChannelHooks | None = None,
    ) -> None:
        self.descriptor = descriptor
        self._sender = sender
        self._codec = codec if codec is not None else JsonCodec()
        self._hooks = hooks
        self._lock = threading.Lock()
        self._sequence = 0
        self._backpressured = False
        self._closed = False

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def sequence(self) -> int:
        """Sequence number of the last envelope sent (0 before the first)."""
        return self._sequence

    def send(self, value: T, *, correlation_id: bytes = b"") -> int:
        """Encode `value` into the bridge; returns its sequence number.

        Raises `BackPressure` (bridge full; health goes Degraded), `NotConnected`,
        `CodecError` (carrying the codec's format name) or `ChannelClosed`.
        """
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            if self._hooks is not None and not self._hooks.can_send():
                raise NotConnected(f"{self._hooks.monitor.connector}: not connected ({self._hooks.monitor.state})")
            slot = self._sender.loan()
            if slot is None:
                self._set_backpressure(True)
                raise BackPressure(self.name)
            try:
                n = self._codec.encode(value, envelope.payload_area(slot)[: self.descriptor.max_payload])
                sequence = self._sequence + 1
                length = envelope.seal(
                    slot, sequence=sequence, timestamp_ns=time.time_ns(), payload_len=n, correlation_id=correlation_id
                )
            except BaseException:
                self._sender.abort()
                raise
            if not self._sender.commit(length):
                if not self._sender.connected():
                    raise NotConnected(f"no gateway is attached to channel {self.name!r}")
                self._set_backpressure(True)
                raise BackPressure(self.name)
            self._sequence = sequence
            if self._backpressured:
                self._set_backpressure(False)
            return sequence

    def _set_backpressure(self, on: bool) -> None:
        self._backpressured = on
        if self._hooks is not None:
            self._hooks.backpressure(self.name, on)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sender.close()


class ChannelReader(Generic[T]):
    """Receive-only handle: `try_recv`, `recv(timeout)` and iteration, all yielding `Message`s."""

    def __init__(
        self,
        descriptor: ChannelDescriptor,
        receiver: EnvelopeReceiver,
        codec: PayloadCodec | None = None,
        hooks: ChannelHooks | None = None,
        *,
        keyed: bool = False,
    ) -> None:
        self.descriptor = descriptor
        self._receiver = receiver
        self._codec = codec if codec is not None else JsonCodec()
        self._hooks = hooks
        self._keyed = keyed
        self._lock = threading.Lock()
        self._last_sequence: int | None = None
        self.missed = 0  # envelopes skipped, judged by sequence gaps
        self.discarded = 0  # envelopes that failed validation
        self._closed = False

    @property
    def name(self) -> str:
        return self.descriptor.name

    def try_recv(self) -> Message[T] | None:
        """The next message, or None if none is waiting.

        An envelope failing CRC/length checks is discarded (and reported); a codec failure
        raises `CodecError` after consuming the envelope, so it is never silently lost.
        """
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            while True:
                view = self._receiver.peek()
                if view is None:
                    return None
                try:
                    header, payload = envelope.decode(view)
                except EnvelopeError as exc:
                    self._receiver.release()
                    self.discarded += 1
                    if self._hooks is not None:
                        self._hooks.discarded(self.name, str(exc))
                    continue
                try:
                    key = None
                    if self._keyed:
                        key, payload = unframe_keyed(payload)
                    value = self._codec.decode(payload)
                finally:
                    del payload
                    self._receiver.release()
                self._track(header.sequence)
                return Message(value, header.sequence, header.timestamp_ns, header.correlation_id, key)

    def _track(self, sequence: int) -> None:
        last = self._last_sequence
        if last is not None and sequence > last + 1:
            self.missed += sequence - last - 1
        self._last_sequence = sequence
        if self.discarded and self._hooks is not None:
            self._hooks.valid(self.name)

    def recv(self, timeout: float | None = None) -> Message[T]:
        """Block for the next message; `ReceiveTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.try_recv()
            if msg is not None:
                return msg
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ReceiveTimeout(f"nothing on channel {self.name!r} within {timeout} s")
            # bounded waits so close() is noticed
            self._receiver.wait(0.2 if remaining is None else min(remaining, 0.2))

    def __iter__(self) -> Iterator[Message[T]]:
        """Yield messages until the reader is closed."""
        while not self._closed:
            try:
                yield self.recv(timeout=0.2)
            except ReceiveTimeout:
                continue
            except ChannelClosed:
                return

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._receiver.close()
