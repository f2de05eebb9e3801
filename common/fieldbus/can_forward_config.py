"""`can_forward.toml`: which raw CAN frames the MQTT bridge publishes and which MQTT topics it sends as CAN frames.

Optional (absent or `enabled = false`: off); parsed strictly with the rest of the config directory.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config.errors import ParseError
from common.files import read_limited
from common.toml_text import MAX_TOML_BYTES, TomlTooDeep, parse_toml
from common.config.parsing import Collector, Ctx, check_keys, parse_table, spec, type_name

__all__ = ["CanForwardConfig", "ForwardInterface", "PublishRule", "SubscribeRule", "FILE_NAME", "check_can_forward",
           "load_can_forward"]

FILE_NAME = "can_forward.toml"


@dataclass(frozen=True, kw_only=True)
class ForwardInterface:
    """[interfaces.<name>]: a python-can bus the forwarder owns (<name> is what rules call `iface`)."""

    interface: str = spec("socketcan")
    channel: str = spec("can0")
    fd: bool = spec(False)
    bitrate: int = spec(0, bounds=(0, 8_000_000))  # 0: the interface's own (socketcan: `ip link`)


@dataclass(frozen=True, kw_only=True)
class PublishRule:
    """[[publish]]: CAN -> MQTT. Frames matching (can_id, mask, extended) go to <root>/<topic>/<id>."""

    iface: str = spec()
    can_id: int = spec(bounds=(0, 0x1FFFFFFF))
    mask: int = spec(0x7FF, bounds=(0, 0x1FFFFFFF))
    extended: bool = spec(False)
    fd: bool = spec(False)
    topic: str = spec()


@dataclass(frozen=True, kw_only=True)
class SubscribeRule:
    """[[subscribe]]: MQTT -> CAN. A message on <root>/<topic> ({"data": "<hex>"} or "<hex>") goes out as one frame."""

    topic: str = spec()
    iface: str = spec()
    can_id: int = spec(bounds=(0, 0x1FFFFFFF))
    extended: bool = spec(False)
    fd: bool = spec(False)


@dataclass(frozen=True)
class CanForwardConfig:
    enabled: bool
    interfaces: dict[str, ForwardInterface]
    publish: tuple[PublishRule, ...]
    subscribe: tuple[SubscribeRule, ...]


def _topic_ok(topic: str) -> bool:
    return bool(topic) and not any(c in topic for c in "+#\0") and not topic.startswith("/") and not topic.endswith("/")


def check_can_forward(config_dir: Path, col: Collector) -> CanForwardConfig | None:
    """Parse <config_dir>/can_forward.toml if present; errors (file, section, field) go to `col`."""
    path = Path(config_dir) / FILE_NAME
    if not path.is_file():
        return CanForwardConfig(False, {}, (), ())
    try:
        data = parse_toml(read_limited(path, MAX_TOML_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TomlTooDeep) as e:
        col.add(ParseError(f"cannot read: {e}", file=FILE_NAME))
        return None
    n0 = len(col.errors)
    top = Ctx(col, FILE_NAME, "")
    check_keys(data, ["enabled", "interfaces", "publish", "subscribe"], top)
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        top.parse_error("enabled", f"expected bool, got {type_name(enabled)}")
    ifaces: dict[str, ForwardInterface] = {}
    raw_ifaces = data.get("interfaces", {})
    if not isinstance(raw_ifaces, dict):
        top.parse_error("interfaces", f"expected a table of [interfaces.<name>], got {type_name(raw_ifaces)}")
        raw_ifaces = {}
    for name, table in raw_ifaces.items():
        ctx = Ctx(col, FILE_NAME, f"interfaces.{name}")
        if not 1 <= len(name) <= 15:
            ctx.invalid(None, "interface names are 1..15 characters")
        kw = parse_table(ForwardInterface, table, ctx)
        if kw is not None:
            ifaces[name] = ForwardInterface(**kw)
    rules: dict[str, list[Any]] = {"publish": [], "subscribe": []}
    for key, cls in (("publish", PublishRule), ("subscribe", SubscribeRule)):
        raw = data.get(key, [])
        if not isinstance(raw, list):
            top.parse_error(key, f"expected [[{key}]] tables, got {type_name(raw)}")
            continue
        for i, table in enumerate(raw):
            ctx = Ctx(col, FILE_NAME, f"{key}[{i}]")
            kw = parse_table(cls, table, ctx)
            if kw is None:
                continue
            rule = cls(**kw)
            if rule.iface not in raw_ifaces:
                ctx.invalid("iface", f"{rule.iface!r} is not one of [interfaces] ({', '.join(raw_ifaces) or 'none'})")
            elif rule.fd and rule.iface in ifaces and not ifaces[rule.iface].fd:
                ctx.invalid("fd", f"interface {rule.iface!r} is not opened with fd = true")
            if not _topic_ok(rule.topic):
                ctx.invalid("topic", f"{rule.topic!r}: a relative topic without wildcards or leading/trailing '/'")
            if rule.can_id > (0x1FFFFFFF if rule.extended else 0x7FF):
                ctx.invalid("can_id", f"0x{rule.can_id:X} is out of range for {'extended' if rule.extended else 'standard'} ids")
            rules[key].append(rule)
    if len(col.errors) != n0:
        return None
    return CanForwardConfig(bool(enabled), ifaces, tuple(rules["publish"]), tuple(rules["subscribe"]))


def load_can_forward(config_dir: Path) -> CanForwardConfig:
    """The forwarder's configuration (the loader validated it already); ConfigError if it is not valid."""
    col = Collector()
    cfg = check_can_forward(config_dir, col)
    col.raise_if_any()
    assert cfg is not None
    return cfg
