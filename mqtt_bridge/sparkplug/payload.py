"""Sparkplug B payloads on the generated Tahu protobuf classes: births, data, deaths, and reading commands.

Values go into the oneof field their data type names; births carry names, types and units, data
carries aliases only (Sparkplug 3.0, 6.4).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb
from mqtt_bridge.sparkplug.metrics import BDSEQ, MetricSpec

_INT32 = frozenset({pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32})
_INT64 = frozenset({pb.Int64, pb.UInt64, pb.DateTime})
_STRING = frozenset({pb.String, pb.Text, pb.UUID})
ENG_UNIT = "engUnit"  # the property keys Ignition's MQTT Engine reads as the tag's unit and range
ENG_LOW = "engLow"
ENG_HIGH = "engHigh"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def set_value(metric: pb.Payload.Metric, datatype: int, value: Any) -> None:
    """Put `value` into the field of its data type; None = is_null."""
    if value is None:
        metric.is_null = True
    elif datatype == pb.Boolean:
        metric.boolean_value = bool(value)
    elif datatype == pb.Double:
        metric.double_value = float(value)
    elif datatype == pb.Float:
        metric.float_value = float(value)
    elif datatype in _STRING:
        metric.string_value = str(value)
    elif datatype in _INT32:
        metric.int_value = int(value) & 0xFFFF_FFFF  # signed types travel as two's complement
    elif datatype in _INT64:
        metric.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    else:
        raise ValueError(f"no Sparkplug value field for data type {datatype}")


def get_value(metric: pb.Payload.Metric) -> Any:
    """The value of a received metric (None when null or absent)."""
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    return None if field is None else getattr(metric, field)


def add_birth_metric(payload: pb.Payload, spec: MetricSpec, value: Any, ts: int) -> None:
    m = payload.metrics.add(name=spec.name, alias=spec.alias, timestamp=ts, datatype=spec.datatype)
    set_value(m, spec.datatype, value)
    if spec.unit:
        m.properties.keys.append(ENG_UNIT)
        m.properties.values.add(type=pb.String, string_value=spec.unit)
    if spec.eng_range is not None:
        for key, v in zip((ENG_LOW, ENG_HIGH), spec.eng_range):
            m.properties.keys.append(key)
            m.properties.values.add(type=pb.Double, double_value=float(v))


def add_data_metric(payload: pb.Payload, spec: MetricSpec, value: Any, ts: int) -> None:
    m = payload.metrics.add(alias=spec.alias, timestamp=ts)
    set_value(m, spec.datatype, value)


def new_payload(seq: int | None, ts: int) -> pb.Payload:
    p = pb.Payload(timestamp=ts)
    if seq is not None:
        p.seq = seq
    return p


def bdseq_metric(payload: pb.Payload, bdseq: int, ts: int) -> None:
    payload.metrics.add(name=BDSEQ, timestamp=ts, datatype=pb.Int64, long_value=bdseq)


def ndeath(bdseq: int, ts: int | None = None) -> bytes:
    """The NDEATH payload: the bdSeq of the session it ends, no seq (Sparkplug 3.0, 6.4.8)."""
    ts = now_ms() if ts is None else ts
    p = new_payload(None, ts)
    bdseq_metric(p, bdseq, ts)
    return p.SerializeToString()


@dataclass(frozen=True, slots=True)
class CommandMetric:
    """One metric of a received NCMD/DCMD: by name, by alias, or both."""

    name: str | None
    alias: int | None
    value: Any


def read_command(data: bytes) -> list[CommandMetric]:
    """The metrics of an NCMD/DCMD payload; ValueError when it is not a Sparkplug payload."""
    p = pb.Payload()
    try:
        p.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError (a Message.Error); say why
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc
    return [CommandMetric(m.name if m.HasField("name") else None, m.alias if m.HasField("alias") else None,
                          get_value(m)) for m in p.metrics]


def metric_names(metrics: Iterable[CommandMetric]) -> str:
    return ", ".join(m.name or f"alias {m.alias}" for m in metrics)
