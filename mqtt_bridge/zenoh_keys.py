"""Publishes JSON bodies to Zenoh keys through the Zenoh connector, once per change for state keys.

The Zenoh twin of `publisher.TopicPublisher`: one ChannelWriter per key, made on first use.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from common.connector import BackPressure, CodecError, NotConnected, ZenohRouting
from common.connector.channel import ChannelWriter
from common.connector.routing import Congestion
from common.connector.zenoh import ZenohConnector
from mqtt_bridge.publisher import PublishStats

log = logging.getLogger(__name__)

KEY_BRIDGE_CAPACITY = 8  # envelopes per key between the bridge loop and the gateway
MAX_PAYLOAD = 16 * 1024


class KeyPublisher:
    """`publish(key, body, on_change=...)`; `invalidate()` after a new session."""

    def __init__(self, connector: ZenohConnector, clock=time.time) -> None:
        self._connector = connector
        self._clock = clock
        self._writers: dict[str, ChannelWriter] = {}
        self._last: dict[str, Any] = {}
        self.stats = PublishStats()

    def _writer(self, key: str, congestion: Congestion) -> ChannelWriter:
        w = self._writers.get(key)
        if w is None:
            w = self._connector.writer(ZenohRouting(key, congestion=congestion), name=key,
                                       capacity=KEY_BRIDGE_CAPACITY, max_payload=MAX_PAYLOAD)
            self._writers[key] = w
        return w

    def publish(self, key: str, body: dict[str, Any], *, on_change: bool = True,
                congestion: Congestion = Congestion.BLOCK) -> bool:
        """Send `body` plus "ts"; with `on_change` only if it differs from the last one sent on
        `key`. True if it went into the bridge (a full bridge is counted, never silent)."""
        if on_change and self._last.get(key) == body:
            self.stats.unchanged += 1
            return False
        try:
            self._writer(key, congestion).send({**body, "ts": round(self._clock(), 6)})
        except NotConnected:
            self.stats.not_connected += 1
            return False
        except BackPressure:
            self.stats.backpressure += 1
            return False
        except CodecError as e:
            self.stats.codec_errors += 1
            log.error("cannot encode %s: %s", key, e)
            return False
        self.stats.sent += 1
        self._last[key] = body
        return True

    def invalidate(self) -> None:
        """Forget what was sent: every on-change key goes out again."""
        self._last.clear()
