"""[mqtt.sparkplug] of config.toml: the Sparkplug B edge node's settings, parsed and checked strictly.

Ids are single MQTT topic levels; deadbands are finite numbers >= 0 keyed by a metric-name pattern.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from .parsing import Collector, Ctx, parse_table, type_name
from .schema import SparkplugConfig

SECTION = "mqtt.sparkplug"
_RESERVED = ("/", "+", "#", "\0")  # Sparkplug 3.0: ids are one topic level without wildcards


def _check_id(ctx: Ctx, key: str, value: str, *, required: bool) -> None:
    if required and not value:
        ctx.invalid(key, "must not be empty")
    bad = [c for c in _RESERVED if c in value]
    if bad:
        ctx.invalid(key, f"{value!r}: must not contain {' '.join(repr(c) for c in bad)} (one topic level)")


def parse_sparkplug(table: Any, col: Collector, file: str) -> SparkplugConfig | None:
    """The [mqtt.sparkplug] table as a SparkplugConfig, or None after recording its errors in `col`."""
    ctx = Ctx(col, file, SECTION)
    if not isinstance(table, dict):
        ctx.parse_error(None, f"expected a table, got {type_name(table)}")
        return None
    n0 = len(col.errors)
    kw = parse_table(SparkplugConfig, table, ctx)
    deadband = _parse_deadband(table.get("deadband", {}), ctx)
    if kw is None or deadband is None:
        return None
    _check_id(ctx, "group_id", kw["group_id"], required=True)
    _check_id(ctx, "edge_node_id", kw["edge_node_id"], required=False)
    _check_id(ctx, "primary_host_id", kw["primary_host_id"], required=False)
    if not kw["metrics"]:
        ctx.invalid("metrics", "must name at least one pattern (\"*\" = every metric)")
    elif any(not p for p in kw["metrics"]):
        ctx.invalid("metrics", "patterns must not be empty strings")
    if len(col.errors) != n0:
        return None
    return SparkplugConfig(**kw, deadband=deadband)


def _parse_deadband(raw: Any, ctx: Ctx) -> MappingProxyType | None:
    if not isinstance(raw, dict):
        ctx.parse_error("deadband", f"expected a table of pattern = number, got {type_name(raw)}")
        return None
    out: dict[str, float] = {}
    ok = True
    for pattern, value in raw.items():
        key = f"deadband.{pattern!r}" if not pattern.isidentifier() else f"deadband.{pattern}"
        if not pattern:
            ctx.invalid("deadband", "a metric pattern must not be empty")
            ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            ctx.parse_error(key, f"expected a number, got {type_name(value)} {value!r}")
            ok = False
        elif not math.isfinite(value) or value < 0:
            ctx.invalid(key, f"{value!r}: a deadband is a finite number >= 0")
            ok = False
        else:
            out[pattern] = float(value)
    return MappingProxyType(out) if ok else None
