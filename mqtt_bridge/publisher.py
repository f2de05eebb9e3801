"""Publishes JSON bodies to topics through the MQTT connector, once per change for retained state.

One ChannelWriter per topic, made on first use; a body that could not be sent stays "changed".
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from common.connector import BackPressure, CodecError, MqttRouting, NotConnected
from common.connector.channel import ChannelWriter
from common.connector.mqtt import MqttConnector

log = logging.getLogger(__name__)

TOPIC_BRIDGE_CAPACITY = 8  # envelopes per topic between the bridge loop and the gateway
MAX_PAYLOAD = 16 * 1024


@dataclass(slots=True)
class PublishStats:
    sent: int = 0
    unchanged: int = 0
    not_connected: int = 0
    backpressure: int = 0
    codec_errors: int = 0


class TopicPublisher:
    """`publish(topic, body, retained=..., on_change=...)`; `invalidate()` after a reconnect."""

    def __init__(self, connector: MqttConnector, clock=time.time) -> None:
        self._connector = connector
        self._clock = clock
        self._writers: dict[tuple[str, int, bool], ChannelWriter] = {}
        self._last: dict[str, Any] = {}
        self.stats = PublishStats()

    def _writer(self, topic: str, qos: int, retained: bool) -> ChannelWriter:
        key = (topic, qos, retained)
        w = self._writers.get(key)
        if w is None:
            name = f"{topic}#q{qos}{'r' if retained else ''}"
            w = self._connector.writer(
                MqttRouting(topic, qos, retained), name=name, capacity=TOPIC_BRIDGE_CAPACITY, max_payload=MAX_PAYLOAD
            )
            self._writers[key] = w
        return w

    def publish(
        self, topic: str, body: dict[str, Any], *, retained: bool, qos: int = 1, on_change: bool = True
    ) -> bool:
        """Send `body` plus a "ts" (wall-clock seconds); with `on_change`, only if it differs
        from the last body sent on this topic. True if it went into the bridge."""
        if on_change and self._last.get(topic) == body:
            self.stats.unchanged += 1
            return False
        try:
            self._writer(topic, qos, retained).send({**body, "ts": round(self._clock(), 6)})
        except NotConnected:
            self.stats.not_connected += 1
            return False
        except BackPressure:
            self.stats.backpressure += 1
            return False
        except CodecError as e:
            self.stats.codec_errors += 1
            log.error("cannot encode %s: %s", topic, e)
            return False
        self.stats.sent += 1
        self._last[topic] = body  # also without on_change: a later on-change body compares to it
        return True

    def publish_raw(self, topic: str, body: Any, *, retained: bool, qos: int = 1) -> bool:
        """Send `body` as is (no timestamp, no change tracking): discovery configs and the like."""
        try:
            self._writer(topic, qos, retained).send(body)
        except (NotConnected, BackPressure):
            return False
        self.stats.sent += 1
        return True

    def forget(self, topic: str) -> None:
        self._last.pop(topic, None)

    def invalidate(self) -> None:
        """Forget what was sent: every retained topic goes out again (after a reconnect)."""
        self._last.clear()
