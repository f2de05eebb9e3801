"""The CAN connector in-process on python-can's virtual bus, against bare python-can peers.

Issue 13 / seed 002 FEAT_0046-0049: filters, overlapping filters, extended ids, FD frames, bytes never re-encoded,
interfaces not declared refused, payload sizing by kind, inbound drops reported, health from error frames and
bus-off with reconnect. Across processes (PROCESS gateway, udp_multicast, back-pressure): test_can_process.py.
"""
from __future__ import annotations

import itertools
import time
from typing import Iterator

import can
import pytest

from common.connector import (
    CanRouting,
    CodecError,
    ConfigurationError,
    Degraded,
    Down,
    DroppedInbound,
    HealthEvent,
    JsonCodec,
    RawCodec,
    ReceiveTimeout,
    Up,
)
from common.connector.can import CanConnector, CanInterface, CanOptions
from common.connector.reconnect import BackoffSettings
from common.connector.routing import CAN_FD_BRS, CAN_FD_ESI, CanFrameKind
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)
_n = itertools.count()


class Rig:
    """A connector owning two virtual interfaces (can0 FD-capable, can1 classical) and a peer bus on each."""

    def __init__(self, **kw) -> None:  # noqa: ANN003
        tag = f"ct{next(_n)}-{time.monotonic_ns()}"
        self.ch = {"can0": f"{tag}a", "can1": f"{tag}b"}
        opts = CanOptions({"can0": CanInterface("virtual", self.ch["can0"], fd=True),
                           "can1": CanInterface("virtual", self.ch["can1"])},
                          BackoffSettings(initial=0.05, max=0.2, jitter=0.0))
        self.c = CanConnector(opts, codec=RawCodec(), **kw)
        self.peer = {k: can.Bus(interface="virtual", channel=v, receive_own_messages=False) for k, v in self.ch.items()}
        self.events = self.c.subscribe_health()

    def start(self) -> None:
        self.c.start()
        wait_for(lambda: self.c.health == Up(), what="CAN connector Up")

    def frames(self, iface: str, n: int, timeout: float = 5.0) -> list[can.Message]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = self.peer[iface].recv(0.1)
            if m is not None:
                out.append(m)
        return out

    def close(self) -> None:
        self.c.stop()
        for b in self.peer.values():
            b.shutdown()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def msg(can_id: int, data: bytes, ext: bool = False, fd: bool = False) -> can.Message:
    return can.Message(arbitration_id=can_id, is_extended_id=ext, data=data, is_fd=fd)


def drain(reader) -> list:  # noqa: ANN001
    out = []
    while (m := reader.try_recv()) is not None:
        out.append((m.key, m.value))
    return out


def test_filters_with_masks_and_overlapping_filters_each_get_their_copy(rig: Rig) -> None:
    """REQ_0622/0624: id/mask filters with kernel semantics; overlapping channel filters each get a copy."""
    block = rig.c.reader(CanRouting("can0", 0x100, mask=0x700))  # 0x100..0x1FF
    exact = rig.c.reader(CanRouting("can0", 0x123))
    other = rig.c.reader(CanRouting("can1", 0x123))
    rig.start()
    for can_id in (0x123, 0x1FF, 0x200, 0x0FF, 0x124):
        rig.peer["can0"].send(msg(can_id, bytes([can_id & 0xFF])))
    wait_for(lambda: len(block._receiver._ring) == 3, what="three frames in the 0x1xx block")  # type: ignore[attr-defined]
    assert drain(block) == [("std:0x123", b"\x23"), ("std:0x1FF", b"\xff"), ("std:0x124", b"\x24")]
    assert drain(exact) == [("std:0x123", b"\x23")]
    assert drain(other) == []  # another interface


def test_extended_flag_is_preserved_end_to_end(rig: Rig) -> None:
    """REQ_0615: 11-bit and 29-bit ids of the same number reach separate readers; EFF set on the wire iff extended."""
    std = rig.c.reader(CanRouting("can1", 0x123))
    ext = rig.c.reader(CanRouting("can1", 0x123, extended=True))
    w_ext = rig.c.writer(CanRouting("can1", 0x1ABCDEF0, extended=True))
    w_std = rig.c.writer(CanRouting("can1", 0x7FF))
    rig.start()
    rig.peer["can1"].send(msg(0x123, b"s"))
    rig.peer["can1"].send(msg(0x123, b"x", ext=True))
    w_ext.send(b"\x01")
    w_std.send(b"\x02")
    got = rig.frames("can1", 2)
    assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in got] == \
        [(0x1ABCDEF0, True, b"\x01"), (0x7FF, False, b"\x02")]
    wait_for(lambda: len(std._receiver._ring) and len(ext._receiver._ring), what="both readers")  # type: ignore[attr-defined]
    assert drain(std) == [("std:0x123", b"s")] and drain(ext) == [("ext:0x00000123", b"x")]


def test_fd_frames_carry_64_bytes_and_their_flags(rig: Rig) -> None:
    """REQ_0611/0613: FD channels carry up to 64 bytes with BRS/ESI from fd_flags; FD frames reach FD readers."""
    w = rig.c.writer(CanRouting("can0", 0x321, kind=CanFrameKind.FD, fd_flags=CAN_FD_BRS | CAN_FD_ESI))
    w_pad = rig.c.writer(CanRouting("can0", 0x322, kind=CanFrameKind.FD))
    r_fd = rig.c.reader(CanRouting("can0", 0x400, mask=0x700, kind=CanFrameKind.FD))
    r_classic = rig.c.reader(CanRouting("can0", 0x400, mask=0x700))
    rig.start()
    w.send(bytes(range(64)))
    w_pad.send(b"0123456789")  # 10 bytes: an FD DLC codes 12
    a, b = rig.frames("can0", 2)
    assert a.is_fd and a.bitrate_switch and a.error_state_indicator and bytes(a.data) == bytes(range(64))
    assert b.is_fd and not b.bitrate_switch and bytes(b.data) == b"0123456789\0\0"
    rig.peer["can0"].send(msg(0x401, bytes(48), fd=True))
    rig.peer["can0"].send(msg(0x402, b"classic"))
    wait_for(lambda: len(r_fd._receiver._ring) and len(r_classic._receiver._ring), what="both kinds")  # type: ignore[attr-defined]
    assert drain(r_fd) == [("std:0x401", bytes(48))] and drain(r_classic) == [("std:0x402", b"classic")]


def test_payload_sizing_follows_the_kind_and_undeclared_interfaces_are_refused(rig: Rig) -> None:
    """REQ_0612/0621: 8 bytes classical, 64 FD, overrides refused; an interface the gateway lacks is refused."""
    w = rig.c.writer(CanRouting("can1", 0x10))
    with pytest.raises(ConfigurationError, match="not one of the gateway's"):
        rig.c.writer(CanRouting("can7", 0x10))
    with pytest.raises(ConfigurationError, match="carries exactly 8 bytes"):
        rig.c.reader(CanRouting("can1", 0x11), max_payload=64)
    with pytest.raises(ConfigurationError, match="without fd=True"):
        rig.c.writer(CanRouting("can1", 0x12, kind=CanFrameKind.FD))
    rig.start()
    with pytest.raises(CodecError, match="channel payload holds 8 B"):
        w.send(bytes(9))
    w.send(bytes(8))
    assert len(rig.frames("can1", 1)) == 1


def test_outbound_is_the_codec_bytes_and_inbound_is_undecoded_until_the_reader() -> None:
    """REQ_0613/0614: the gateway moves bytes: JSON out as encoded, frames in decoded only by the reader's codec."""
    r = Rig()
    try:
        w = r.c.writer(CanRouting("can1", 0x55), codec=JsonCodec())
        rd = r.c.reader(CanRouting("can1", 0x56), codec=JsonCodec())
        r.start()
        w.send([1, 2])
        (m,) = r.frames("can1", 1)
        assert bytes(m.data) == b"[1,2]"
        r.peer["can1"].send(msg(0x56, b'{"a":1}'))
        assert rd.recv(5).value == {"a": 1}
    finally:
        r.close()


def test_a_full_inbound_bridge_reports_dropped_inbound(rig: Rig) -> None:
    """REQ_0608: a full inbound bridge drops the frame and emits DroppedInbound with the count."""
    r = rig.c.reader(CanRouting("can1", 0x7), capacity=2)
    rig.start()
    for i in range(20):
        rig.peer["can1"].send(msg(0x7, bytes([i])))
    drops: list[DroppedInbound] = []

    def accounted() -> bool:
        drops.extend(e for e in rig.events.drain() if isinstance(e, DroppedInbound))
        return sum(e.count for e in drops) == 18

    wait_for(accounted, what="18 frames reported dropped")
    assert [v for _k, v in drain(r)] == [b"\x00", b"\x01"]


def test_error_frames_are_health_only_and_bus_off_reconnects(rig: Rig) -> None:
    """REQ_0630-0636: error passive -> Degraded naming the interface; bus-off -> that interface down, the connector
    Degraded (the other is up), reopened with ExponentialBackoff; error frames never reach a reader."""
    everything = rig.c.reader(CanRouting("can1", 0, mask=0))  # every standard id
    rig.start()
    passive = can.Message(arbitration_id=0x004, is_error_frame=True, is_extended_id=False, data=bytes([0, 0x10]) + bytes(6))
    rig.peer["can1"].send(passive)
    wait_for(lambda: rig.c.health == Degraded("can1: error passive"), what="Degraded by error passive")
    busoff = can.Message(arbitration_id=0x040, is_error_frame=True, is_extended_id=False, data=bytes(8))
    rig.peer["can1"].send(busoff)
    wait_for(lambda: rig.c.health == Up(), what="can1 reopened after bus-off")
    history = [e.current for e in rig.events.drain() if isinstance(e, HealthEvent)]
    assert Degraded("can1: bus-off") in history, history
    assert drain(everything) == []  # error frames are not frames
    rig.peer["can1"].send(msg(0x33, b"after"))
    assert everything.recv(5).value == b"after"


def test_all_interfaces_down_is_down_with_every_reason() -> None:
    """REQ_0630: Down only when every owned interface is down; the reasons name each interface."""
    opts = CanOptions({"a": CanInterface("no_such_interface", "x"), "b": CanInterface("no_such_interface", "y")},
                      BackoffSettings(initial=0.05, max=0.1, jitter=0.0))
    c = CanConnector(opts, codec=RawCodec())
    events = c.subscribe_health()
    with c:
        def down_both() -> bool:
            h = c.health
            return isinstance(h, Down) and "a: cannot open no_such_interface" in h.reason and "b: cannot open" in h.reason

        wait_for(down_both, what="Down naming both interfaces")
    assert any(isinstance(e, HealthEvent) for e in events.drain())
    with pytest.raises(ReceiveTimeout):
        c2 = CanConnector(CanOptions({"a": CanInterface("virtual", "unused-x")}), codec=RawCodec())
        rd = c2.reader(CanRouting("a", 1))
        with c2:
            rd.recv(0.2)
