"""A plain paho client for tests: the independent other side of the broker (not a fake).

Collects every message it receives; publishes raw bytes.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import wait_for


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Observer:
    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: list[Seen] = []
        self._lock = threading.Lock()
        self._subscribed: set[int] = set()
        self._connected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.add(mid)
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self._connected.wait(5), "observer could not connect"

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append(Seen(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _rc, mid = self.client.subscribe(topic, qos)
        wait_for(lambda: mid in self._subscribed, 5, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos, retain)
        if qos:
            info.wait_for_publish(5)

    def on(self, topic: str) -> list[Seen]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
