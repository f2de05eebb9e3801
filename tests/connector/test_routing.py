"""Routing contract: frozen values, structural validation, direction rules, JSON round trip."""
from __future__ import annotations

import dataclasses

import pytest

from common.connector.errors import ConfigurationError
from common.connector.routing import (
    CanFrameKind,
    CanRouting,
    Congestion,
    Direction,
    EthercatRouting,
    Iceoryx2Routing,
    MqttRouting,
    PdoDirection,
    Priority,
    Reliability,
    ZenohRouting,
    routing_from_dict,
    routing_to_dict,
    validate_for,
)


def test_routings_are_frozen_and_hashable() -> None:
    r = MqttRouting("evo/m1/state", qos=1, retained=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.qos = 0  # type: ignore[misc]
    assert hash(r) == hash(MqttRouting("evo/m1/state", 1, True))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": ""},
        {"topic": "a/b", "qos": 2},
        {"topic": "a/b", "qos": -1},
        {"topic": "a/#/b"},
        {"topic": "a/b#"},
        {"topic": "a/+b"},
        {"topic": "a\x00b"},
        {"topic": "a", "retained": "yes"},
    ],
)
def test_mqtt_routing_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        MqttRouting(**kwargs)


def test_mqtt_wildcards_are_for_readers_only() -> None:
    for topic in ("a/+/c", "a/#", "#", "+"):
        r = MqttRouting(topic)
        validate_for(r, Direction.INBOUND)
        with pytest.raises(ConfigurationError, match="wildcard"):
            validate_for(r, Direction.OUTBOUND)
    validate_for(MqttRouting("a/b/c"), Direction.OUTBOUND)


def test_zenoh_routing_validation() -> None:
    r = ZenohRouting("evo/m1/**", Congestion.BLOCK, Priority.REAL_TIME, Reliability.BEST_EFFORT, express=True)
    validate_for(r, Direction.INBOUND)
    with pytest.raises(ConfigurationError):
        validate_for(r, Direction.OUTBOUND)
    for bad in ("", "/a", "a/", "a//b", "a/b*", "a?b", "a#"):
        with pytest.raises(ConfigurationError):
            ZenohRouting(bad)
    with pytest.raises(ConfigurationError):
        ZenohRouting("a", priority=3)  # type: ignore[arg-type]


def test_can_routing_validation() -> None:
    CanRouting("vcan0", 0x7FF)
    CanRouting("vcan0", 0x1FFFFFFF, extended=True, mask=0x1FFFFF00)
    CanRouting("vcan0", 0x10, kind=CanFrameKind.FD, fd_flags=0x03)
    assert CanRouting("vcan0", 0x10).effective_mask == 0x7FF
    for kwargs in (
        {"iface": "", "can_id": 1},
        {"iface": "vcan0", "can_id": 0x800},
        {"iface": "vcan0", "can_id": 0x20000000, "extended": True},
        {"iface": "vcan0", "can_id": 1, "mask": 0x1000},
        {"iface": "vcan0", "can_id": 1, "fd_flags": 0x01},
        {"iface": "vcan0", "can_id": 1, "kind": CanFrameKind.FD, "fd_flags": 0x80},
    ):
        with pytest.raises(ConfigurationError):
            CanRouting(**kwargs)


def test_ethercat_routing_validation() -> None:
    EthercatRouting(0, PdoDirection.TX, bit_offset=0, bit_length=16, pdo_index=0x1A00, pdo_subindex=1)
    for kwargs in (
        {"subdevice": -1, "direction": PdoDirection.RX, "bit_offset": 0, "bit_length": 1},
        {"subdevice": 0, "direction": "rx", "bit_offset": 0, "bit_length": 1},
        {"subdevice": 0, "direction": PdoDirection.RX, "bit_offset": 0, "bit_length": 0},
        {"subdevice": 0, "direction": PdoDirection.RX, "bit_offset": 11880, "bit_length": 16},
        {"subdevice": 0, "direction": PdoDirection.RX, "bit_offset": 0, "bit_length": 8, "pdo_index": 0x6000},
        {"subdevice": 0, "direction": PdoDirection.RX, "bit_offset": 0, "bit_length": 8, "pdo_subindex": 256},
    ):
        with pytest.raises(ConfigurationError):
            EthercatRouting(**kwargs)


def test_iceoryx2_routing_validation() -> None:
    Iceoryx2Routing("evo/cu/state")
    with pytest.raises(ConfigurationError):
        Iceoryx2Routing("")


@pytest.mark.parametrize(
    "routing",
    [
        MqttRouting("a/+/c", 1, False),
        ZenohRouting("a/b", Congestion.BLOCK, Priority.BACKGROUND, Reliability.BEST_EFFORT, True),
        CanRouting("can0", 0x123, False, 0x7F0, CanFrameKind.FD, 1),
        EthercatRouting(3, PdoDirection.RX, 8, 16, 0x1600, 2),
        Iceoryx2Routing("svc"),
    ],
)
def test_json_round_trip(routing) -> None:
    assert routing_from_dict(routing_to_dict(routing)) == routing


def test_unknown_routing_type_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        routing_from_dict({"type": "Nope"})
