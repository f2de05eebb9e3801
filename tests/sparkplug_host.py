"""A Sparkplug B host application for tests: a plain paho client that decodes with the compiled Tahu proto.

It keeps every message in arrival order, learns names and types from births, follows metrics by
alias in DATA messages, checks nothing itself (the tests do), and can publish STATE, NCMD and DCMD.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb
from tests.helpers import wait_for

VALUE_FIELD = {  # the oneof field each data type must use (Sparkplug 3.0, 6.4.16)
    pb.Int8: "int_value", pb.Int16: "int_value", pb.Int32: "int_value", pb.UInt8: "int_value",
    pb.UInt16: "int_value", pb.UInt32: "int_value", pb.Int64: "long_value", pb.UInt64: "long_value",
    pb.DateTime: "long_value", pb.Float: "float_value", pb.Double: "double_value", pb.Boolean: "boolean_value",
    pb.String: "string_value", pb.Text: "string_value",
}


@dataclass
class SpMessage:
    """One received Sparkplug message, decoded."""

    topic: str
    kind: str  # NBIRTH, DBIRTH, NDATA, DDATA, DDEATH, NDEATH, ...
    node: str
    device: str | None
    payload: pb.Payload
    at: float  # time.monotonic() on arrival
    raw_len: int

    @property
    def seq(self) -> int | None:
        return self.payload.seq if self.payload.HasField("seq") else None

    def metric(self, name: str) -> pb.Payload.Metric:
        return next(m for m in self.payload.metrics if m.name == name)

    def names(self) -> list[str]:
        return [m.name for m in self.payload.metrics]


def value_of(m: pb.Payload.Metric) -> Any:
    if m.is_null:
        return None
    f = m.WhichOneof("value")
    return None if f is None else getattr(m, f)


def prop_of(m: pb.Payload.Metric, key: str) -> Any:
    """The value of property `key` of a birth metric, None if it has none."""
    for k, v in zip(m.properties.keys, m.properties.values):
        if k == key:
            f = v.WhichOneof("value")
            return None if f is None else getattr(v, f)
    return None


def unit_of(m: pb.Payload.Metric) -> str | None:
    return prop_of(m, "engUnit")


@dataclass
class Birth:
    """What a birth told us about one metric."""

    name: str
    datatype: int
    unit: str | None


class HostApp:
    """Subscribes to `spBv1.0/<group>/#` (and STATE); `messages` in arrival order."""

    def __init__(self, host: str, port: int, group: str, host_id: str | None = None) -> None:
        self.group = group
        self.host_id = host_id
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"spb-host-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv311)
        self.messages: list[SpMessage] = []
        self.decode_errors: list[str] = []
        self.aliases: dict[int, Birth] = {}
        self.values: dict[str, Any] = {}  # metric name -> latest value (from births and data)
        self._lock = threading.Lock()
        self._subscribed: set[int] = set()
        self._connected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.add(mid)
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self._connected.wait(5), "host application could not connect"
        _rc, mid = self.client.subscribe(f"spBv1.0/{group}/#", 1)
        wait_for(lambda: mid in self._subscribed, 5, what="SUBACK for the Sparkplug namespace")

    # --- receiving ---
    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[0] != "spBv1.0":
            return
        p = pb.Payload()
        try:
            p.ParseFromString(bytes(msg.payload))
        except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
            with self._lock:
                self.decode_errors.append(f"{msg.topic}: {exc}")
            return
        m = SpMessage(msg.topic, parts[2], parts[3], parts[4] if len(parts) > 4 else None, p, time.monotonic(),
                      len(msg.payload))
        with self._lock:
            self.messages.append(m)
            if m.kind in ("NBIRTH", "DBIRTH"):
                for metric in p.metrics:
                    if metric.HasField("alias"):
                        self.aliases[metric.alias] = Birth(metric.name, metric.datatype, unit_of(metric))
                    self.values[metric.name] = value_of(metric)
            elif m.kind in ("NDATA", "DDATA"):
                for metric in p.metrics:
                    b = self.aliases.get(metric.alias)
                    if b is not None:
                        self.values[b.name] = value_of(metric)

    def of(self, kind: str, device: str | None = None, since: int = 0) -> list[SpMessage]:
        with self._lock:
            return [m for m in self.messages[since:] if m.kind == kind and (device is None or m.device == device)]

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait(self, kind: str, device: str | None = None, since: int = 0, timeout: float = 30.0,
             pred: Callable[[SpMessage], bool] = lambda m: True) -> SpMessage:
        """The first `kind` message (of `device`) at index >= `since` satisfying `pred`."""
        return wait_for(lambda: next((m for m in self.of(kind, device, since) if pred(m)), None), timeout,
                        what=f"{kind} {device or ''} after #{since}")

    def data_for(self, name: str, since: int = 0) -> list[tuple[SpMessage, Any]]:
        """(message, value) of every DATA message at index >= `since` that carries metric `name`."""
        out = []
        with self._lock:
            aliases = {a for a, b in self.aliases.items() if b.name == name}
            for m in self.messages[since:]:
                if m.kind in ("NDATA", "DDATA"):
                    for metric in m.payload.metrics:
                        if metric.alias in aliases:
                            out.append((m, value_of(metric)))
        return out

    def value(self, name: str) -> Any:
        with self._lock:
            return self.values.get(name)

    # --- sending (as a SCADA host would) ---
    def publish_state(self, online: bool, timestamp_ms: int | None = None) -> None:
        assert self.host_id, "no host id"
        body = {"online": online, "timestamp": timestamp_ms if timestamp_ms is not None else time.time_ns() // 10**6}
        self.client.publish(f"spBv1.0/STATE/{self.host_id}", json.dumps(body).encode(), 1, True).wait_for_publish(5)

    def command(self, topic: str, metrics: list[dict[str, Any]]) -> None:
        """NCMD/DCMD with metrics given as {name|alias, datatype, value}."""
        p = pb.Payload(timestamp=time.time_ns() // 10**6)
        for spec in metrics:
            m = p.metrics.add()
            if "name" in spec:
                m.name = spec["name"]
            if "alias" in spec:
                m.alias = spec["alias"]
            m.datatype = spec["datatype"]
            setattr(m, VALUE_FIELD[spec["datatype"]], spec["value"])
        self.client.publish(topic, p.SerializeToString(), 0, False).wait_for_publish(5)

    def rebirth(self, node: str) -> None:
        self.command(f"spBv1.0/{self.group}/NCMD/{node}",
                     [{"name": "Node Control/Rebirth", "datatype": pb.Boolean, "value": True}])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def seq_gaps(messages: list[SpMessage]) -> list[tuple[int, int, str]]:
    """Places where seq is not the previous + 1 (mod 256) among a node's messages that carry seq,
    counting from each NBIRTH (which must be 0). Empty = the sequence is intact."""
    gaps = []
    prev = None
    for m in messages:
        if m.kind in ("NDEATH", "STATE") or m.seq is None:
            continue
        if m.kind == "NBIRTH":
            if m.seq != 0:
                gaps.append((-1, m.seq, m.topic))
            prev = 0
            continue
        if prev is not None and m.seq != (prev + 1) % 256:
            gaps.append((prev, m.seq, m.topic))
        prev = m.seq
    return gaps
