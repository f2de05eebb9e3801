"""The edge node's own MQTT connection: a bdSeq per CONNECT with NDEATH as its will, one ordered frame channel.

MQTT allows one will per connection, so Sparkplug gets a second MqttConnector beside the JSON tree's.
Every Sparkplug message goes through ONE outbound channel (so `seq` order is wire order); each frame
names its topic, QoS and the bdSeq of the session it was made for, and a frame of an older session
is dropped rather than published after the next session's NBIRTH.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from common.connector.channel import frame_keyed, unframe_keyed
from common.files import write_atomic
from common.connector.errors import CodecError, PayloadTooLarge
from common.connector.gateway import OutboundBinding
from common.connector.mqtt import MqttBackend, MqttConnector, MqttOptions
from common.connector.reconnect import ReconnectPolicy
from mqtt_bridge.sparkplug.payload import ndeath

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
FRAMES = "sparkplug-frames"  # the name of the one outbound channel
END_SESSION = 0x01  # frame flag: after this frame (an NDEATH), disconnect and start a new session
_HEAD = struct.Struct("<BBB")  # bdSeq, qos, flags


@dataclass(frozen=True, slots=True)
class Namespace:
    """Topic names of one edge node (Sparkplug 3.0, 4.1)."""

    group: str
    node: str

    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device_topic(self, kind: str, device: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{device}"

    @staticmethod
    def state(host_id: str) -> str:
        return f"{NAMESPACE}/STATE/{host_id}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One message for the wire, made for session `bdseq`."""

    bdseq: int
    topic: str
    payload: bytes
    qos: int = 0
    flags: int = 0


class FrameCodec:
    """`[u16 topic length][topic][u8 bdSeq][u8 qos][u8 flags][Sparkplug payload]` in an envelope."""

    format_name = "sparkplug-frame"

    def encode(self, value: Frame, buf: memoryview) -> int:
        try:
            return frame_keyed(buf, value.topic.encode("utf-8"),
                               _HEAD.pack(value.bdseq, value.qos, value.flags) + value.payload)
        except PayloadTooLarge as exc:
            raise CodecError(self.format_name, str(exc), exc) from exc

    def decode(self, payload: memoryview) -> Frame:
        topic, rest = unframe_keyed(payload)
        bd, qos, flags = _HEAD.unpack_from(rest, 0)
        return Frame(bd, topic, bytes(rest[_HEAD.size:]), qos, flags)


class BdSeqStore:
    """The birth/death sequence number, kept in a file so that a restarted bridge uses the next one.

    Sparkplug 3.0: bdSeq goes up by one with every MQTT CONNECT (0..255, then 0 again) and survives
    restarts of the edge node. An unwritable file is reported once; the count then lives in memory.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.value = self._load()
        self._warned = False

    def _load(self) -> int:
        if self.path is None:
            return -1
        try:
            v = int(self.path.read_text().strip())
            return v if 0 <= v <= 255 else -1
        except (OSError, ValueError):
            return -1

    def advance(self) -> int:
        """The bdSeq for the next CONNECT, stored before it is used. The file is read again each time:
        a process preloaded earlier (the watchdog's standby) must not reuse a value its predecessor took."""
        stored = -1 if self._warned else self._load()  # a file we cannot write no longer leads
        self.value = ((stored if stored >= 0 else self.value) + 1) % 256
        if self.path is not None:
            try:
                write_atomic(self.path, f"{self.value}\n")  # fsynced: a power loss must not bring back an old bdSeq
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("cannot keep the Sparkplug bdSeq in %s (%s): a restart starts again at 0",
                                self.path, exc)
        return self.value


class SparkplugBackend(MqttBackend):
    """MqttBackend whose will is a fresh NDEATH on every CONNECT and whose frame channel names its topic."""

    def __init__(self, options: MqttOptions, policy: ReconnectPolicy | None, bdseq: BdSeqStore,
                 ns: Namespace) -> None:
        super().__init__(options, policy)
        self.bdseq = bdseq
        self.ns = ns
        self.session_bdseq: int | None = None  # bdSeq of the current (or last attempted) CONNECT
        self.stale_frames = 0  # frames of an ended session, dropped

    def _connect(self) -> None:
        if self.client is not None:
            bd = self.bdseq.advance()
            self.client.will_set(self.ns.node_topic("NDEATH"), ndeath(bd), qos=1, retain=False)
            self.session_bdseq = bd
        super()._connect()

    def publish(self, binding: OutboundBinding, payload: memoryview) -> bool:
        if binding.name != FRAMES:
            return super().publish(binding, payload)
        c = self.client
        if c is None or not self.connected:
            return True  # dropped: the next session starts with births anyway
        topic, rest = unframe_keyed(payload)
        bd, qos, flags = _HEAD.unpack_from(rest, 0)
        if bd != self.session_bdseq:
            self.stale_frames += 1
            return True
        if c.want_write():
            return False
        info = c.publish(topic, bytes(rest[_HEAD.size:]), qos, False)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return False
        self.stats.published += 1
        if flags & END_SESSION:
            self._end_session("primary host went offline (Sparkplug: NDEATH, then a new session)")
        return True

    def _end_session(self, reason: str) -> None:
        c = self.client
        self._lost(reason)  # back off, then CONNECT again with the next bdSeq
        if c is not None and c.socket() is not None:
            c.disconnect()  # written after the NDEATH; a clean DISCONNECT, so no second death by will


class SparkplugConnector(MqttConnector):
    """The Sparkplug session's MqttConnector (in-process gateway)."""

    def __init__(self, options: MqttOptions, bdseq: BdSeqStore, ns: Namespace, **kw: Any) -> None:
        self._bdseq = bdseq  # before super().__init__: it makes the backend
        self._ns = ns
        super().__init__(options, "sparkplug", **kw)

    def make_backend(self) -> SparkplugBackend:
        return SparkplugBackend(self.options, self._policy, self._bdseq, self._ns)

    @property
    def backend(self) -> SparkplugBackend | None:
        return None if self.gateway is None else self.gateway.backend  # type: ignore[return-value]
