"""Per-protocol routing values (frozen dataclasses) and their validation.

Structure is checked at construction; direction rules (no publish wildcards) by `validate_for`.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from common.connector.errors import ConfigurationError


class Direction(enum.Enum):
    """Which way a channel carries data, seen from the application."""

    OUTBOUND = "out"  # application -> protocol (ChannelWriter)
    INBOUND = "in"  # protocol -> application (ChannelReader)


class Routing:
    """Marker base of every routing value; adds no behaviour."""

    __slots__ = ()


# --- MQTT --------------------------------------------------------------------------------------


def _check_mqtt_filter(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError("MQTT topic must be a non-empty string")
    if "\x00" in topic:
        raise ConfigurationError(f"MQTT topic {topic!r} contains NUL")
    if len(topic.encode("utf-8")) > 65535:
        raise ConfigurationError("MQTT topic longer than 65535 bytes")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigurationError(f"MQTT topic {topic!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ConfigurationError(f"MQTT topic {topic!r}: '+' must be a whole level")


def has_mqtt_wildcard(topic: str) -> bool:
    """True if the topic is a filter (contains + or #)."""
    return "+" in topic or "#" in topic


@dataclass(frozen=True, slots=True)
class MqttRouting(Routing):
    """MQTT topic (a filter for readers), QoS 0/1 and the retained flag for publishes."""

    topic: str
    qos: int = 0
    retained: bool = False

    def __post_init__(self) -> None:
        _check_mqtt_filter(self.topic)
        if self.qos not in (0, 1):
            raise ConfigurationError(f"MQTT qos must be 0 or 1, got {self.qos!r} (QoS 2 unsupported)")
        if not isinstance(self.retained, bool):
            raise ConfigurationError("MQTT retained must be a bool")


# --- Zenoh -------------------------------------------------------------------------------------


class Congestion(enum.Enum):
    BLOCK = "block"
    DROP = "drop"


class Priority(enum.IntEnum):
    REAL_TIME = 1
    INTERACTIVE_HIGH = 2
    INTERACTIVE_LOW = 3
    DATA_HIGH = 4
    DATA = 5
    DATA_LOW = 6
    BACKGROUND = 7


class Reliability(enum.Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


def _check_key_expr(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigurationError("Zenoh key_expr must be a non-empty string")
    if key.startswith("/") or key.endswith("/") or "//" in key:
        raise ConfigurationError(f"Zenoh key_expr {key!r}: empty chunk or leading/trailing '/'")
    for ch in "#?$":
        if ch in key:
            raise ConfigurationError(f"Zenoh key_expr {key!r}: {ch!r} is not allowed")
    for chunk in key.split("/"):
        if "*" in chunk and chunk not in ("*", "**"):
            raise ConfigurationError(f"Zenoh key_expr {key!r}: '*' must be a whole chunk ('*' or '**')")


@dataclass(frozen=True, slots=True)
class ZenohRouting(Routing):
    """Zenoh key expression and the publisher QoS knobs."""

    key_expr: str
    congestion: Congestion = Congestion.DROP
    priority: Priority = Priority.DATA
    reliability: Reliability = Reliability.RELIABLE
    express: bool = False

    def __post_init__(self) -> None:
        _check_key_expr(self.key_expr)
        for name, kind in (("congestion", Congestion), ("priority", Priority), ("reliability", Reliability)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigurationError(f"Zenoh {name} must be a {kind.__name__}")


# --- CAN ---------------------------------------------------------------------------------------


class CanFrameKind(enum.Enum):
    CLASSIC = "classic"
    FD = "fd"


CAN_FD_BRS = 0x01  # bit-rate switch
CAN_FD_ESI = 0x02  # error-state indicator


@dataclass(frozen=True, slots=True)
class CanRouting(Routing):
    """One CAN identifier (with acceptance mask) on one SocketCAN interface."""

    iface: str
    can_id: int
    extended: bool = False
    mask: int | None = None  # None: exact match on all id bits
    kind: CanFrameKind = CanFrameKind.CLASSIC
    fd_flags: int = 0

    def __post_init__(self) -> None:
        if not self.iface or len(self.iface) > 15:
            raise ConfigurationError("CAN iface must be 1..15 characters")
        limit = 0x1FFFFFFF if self.extended else 0x7FF
        if not 0 <= self.can_id <= limit:
            kind = "extended" if self.extended else "standard"
            raise ConfigurationError(f"CAN id {self.can_id:#x} out of range for {kind} ids")
        if self.mask is not None and not 0 <= self.mask <= limit:
            raise ConfigurationError(f"CAN mask {self.mask:#x} out of range")
        if not isinstance(self.kind, CanFrameKind):
            raise ConfigurationError("CAN kind must be a CanFrameKind")
        if self.fd_flags & ~(CAN_FD_BRS | CAN_FD_ESI):
            raise ConfigurationError(f"CAN fd_flags {self.fd_flags:#x} has unknown bits")
        if self.fd_flags and self.kind is not CanFrameKind.FD:
            raise ConfigurationError("CAN fd_flags are only valid on FD frames")

    @property
    def effective_mask(self) -> int:
        return self.mask if self.mask is not None else (0x1FFFFFFF if self.extended else 0x7FF)


# --- EtherCAT ----------------------------------------------------------------------------------


class PdoDirection(enum.Enum):
    RX = "rx"  # MainDevice -> SubDevice outputs
    TX = "tx"  # SubDevice inputs -> MainDevice


MAX_PDI_BITS = 1486 * 8  # one Ethernet frame's worth of process data


@dataclass(frozen=True, slots=True)
class EthercatRouting(Routing):
    """A bit slice of one SubDevice's process image, optionally naming the mapped PDO entry."""

    subdevice: int  # position on the bus (or configured station address)
    direction: PdoDirection
    bit_offset: int
    bit_length: int
    pdo_index: int | None = None  # e.g. 0x1A00
    pdo_subindex: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.subdevice <= 0xFFFF:
            raise ConfigurationError("EtherCAT subdevice must be 0..65535")
        if not isinstance(self.direction, PdoDirection):
            raise ConfigurationError("EtherCAT direction must be a PdoDirection")
        if self.bit_offset < 0 or not 1 <= self.bit_length <= MAX_PDI_BITS:
            raise ConfigurationError("EtherCAT bit_offset >= 0 and bit_length 1..11888 required")
        if self.bit_offset + self.bit_length > MAX_PDI_BITS:
            raise ConfigurationError("EtherCAT slice ends beyond the process image")
        if self.pdo_index is not None and not 0x1600 <= self.pdo_index <= 0x1BFF:
            raise ConfigurationError(f"EtherCAT pdo_index {self.pdo_index:#x} outside 0x1600..0x1BFF")
        if self.pdo_subindex is not None and not 0 <= self.pdo_subindex <= 0xFF:
            raise ConfigurationError("EtherCAT pdo_subindex must be 0..255")


# --- iceoryx2 ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Iceoryx2Routing(Routing):
    """A plain iceoryx2 publish-subscribe service."""

    service_name: str

    def __post_init__(self) -> None:
        if not self.service_name or len(self.service_name) > 255:
            raise ConfigurationError("iceoryx2 service_name must be 1..255 characters")


# --- direction rules and (de)serialisation -----------------------------------------------------


def validate_for(routing: Routing, direction: Direction) -> None:
    """Direction-specific rules: a writer may not publish to a wildcard."""
    if direction is Direction.OUTBOUND:
        if isinstance(routing, MqttRouting) and has_mqtt_wildcard(routing.topic):
            raise ConfigurationError(f"cannot publish to MQTT wildcard topic {routing.topic!r}")
        if isinstance(routing, ZenohRouting) and "*" in routing.key_expr:
            raise ConfigurationError(f"cannot publish to Zenoh wildcard key {routing.key_expr!r}")


ROUTING_TYPES: dict[str, type[Routing]] = {
    cls.__name__: cls for cls in (MqttRouting, ZenohRouting, CanRouting, EthercatRouting, Iceoryx2Routing)
}


def routing_to_dict(routing: Routing) -> dict[str, Any]:
    """JSON-friendly form (enums by value), tagged with the routing type."""
    out: dict[str, Any] = {"type": type(routing).__name__}
    for f in dataclasses.fields(routing):  # type: ignore[arg-type]
        v = getattr(routing, f.name)
        out[f.name] = v.value if isinstance(v, enum.Enum) else v
    return out


def routing_from_dict(data: dict[str, Any]) -> Routing:
    """Inverse of `routing_to_dict`."""
    data = dict(data)
    cls = ROUTING_TYPES.get(data.pop("type", ""))
    if cls is None:
        raise ConfigurationError(f"unknown routing type in {data!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        v = data[f.name]
        enum_type = _ENUM_FIELDS.get((cls, f.name))
        kwargs[f.name] = enum_type(v) if enum_type is not None and v is not None else v
    return cls(**kwargs)


_ENUM_FIELDS: dict[tuple[type, str], type[enum.Enum]] = {
    (ZenohRouting, "congestion"): Congestion,
    (ZenohRouting, "priority"): Priority,
    (ZenohRouting, "reliability"): Reliability,
    (CanRouting, "kind"): CanFrameKind,
    (EthercatRouting, "direction"): PdoDirection,
}
