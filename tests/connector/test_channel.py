"""Channel contract on the in-process bridge: send-only/receive-only, BackPressure, codec errors, waits."""
from __future__ import annotations

import threading

import pytest

from common.connector import (
    BackPressure,
    ChannelClosed,
    ChannelDescriptor,
    ChannelReader,
    ChannelWriter,
    CodecError,
    Connecting,
    Degraded,
    HealthEvent,
    HealthMonitor,
    Iceoryx2Routing,
    NotConnected,
    ReceiveTimeout,
    Up,
)
from common.connector.channel import ChannelHooks, connected_gate
from common.connector.codec import RawCodec
from common.connector.transport import RingLink
from tests.helpers import wait_for


def _channel(capacity: int = 2, up: bool = True, max_payload: int = 64):
    monitor = HealthMonitor("c")
    if up:
        monitor.set_link(Connecting(1))
        monitor.set_link(Up())
    hooks = ChannelHooks(monitor, connected_gate(monitor))
    desc = ChannelDescriptor("ch", Iceoryx2Routing("svc"), max_payload=max_payload)
    ring = RingLink(capacity, desc.slot_size)
    ring._has_receiver = True
    return monitor, ChannelWriter(desc, ring.sender, hooks=hooks), ChannelReader(desc, ring.receiver, hooks=hooks)


def test_writer_only_sends_and_reader_only_receives() -> None:
    _m, w, r = _channel()
    assert hasattr(w, "send") and not any(hasattr(w, n) for n in ("recv", "try_recv", "__iter__"))
    assert hasattr(r, "try_recv") and not hasattr(r, "send")


def test_full_outbound_bridge_raises_backpressure_and_degrades_until_room() -> None:
    monitor, w, r = _channel(capacity=2)
    events = monitor.subscribe()
    assert w.send(1) == 1 and w.send(2) == 2
    with pytest.raises(BackPressure):
        w.send(3)
    assert isinstance(monitor.state, Degraded) and "outbound bridge full on ch" in monitor.state.reason
    assert r.try_recv().value == 1
    assert w.send(3) == 3  # sequence not consumed by the refused send
    assert monitor.state == Up()
    assert [type(e.current) for e in events.drain() if isinstance(e, HealthEvent)] == [Degraded, Up]


def test_send_while_not_connected_is_refused() -> None:
    _m, w, _r = _channel(up=False)
    with pytest.raises(NotConnected):
        w.send(1)


def test_encode_error_names_the_codec_and_consumes_nothing() -> None:
    _m, w, r = _channel(max_payload=8)
    with pytest.raises(CodecError) as info:
        w.send("far too long for eight bytes")
    assert info.value.format_name == "json"
    assert w.send("ok") == 1 and r.try_recv().value == "ok"


def test_decode_error_is_raised_not_silently_dropped() -> None:
    monitor = HealthMonitor("c")
    desc = ChannelDescriptor("ch", Iceoryx2Routing("svc"))
    ring = RingLink(4, desc.slot_size)
    ring._has_receiver = True
    w = ChannelWriter(desc, ring.sender, RawCodec(), ChannelHooks(monitor))
    r = ChannelReader(desc, ring.receiver, hooks=ChannelHooks(monitor))  # JSON reader, raw writer
    w.send(b"{broken")
    w.send(b'"fine"')
    with pytest.raises(CodecError):
        r.try_recv()
    assert r.try_recv().value == "fine"


def test_recv_waits_times_out_and_iteration_ends_on_close() -> None:
    _m, w, r = _channel(capacity=4)
    with pytest.raises(ReceiveTimeout):
        r.recv(0.05)
    threading.Timer(0.05, lambda: w.send("late")).start()
    assert r.recv(5).value == "late"
    w.send("a")
    w.send("b")
    seen = []

    def consume() -> None:
        for msg in r:
            seen.append(msg.value)

    t = threading.Thread(target=consume)
    t.start()
    w.send("c")
    wait_for(lambda: seen == ["a", "b", "c"])
    r.close()
    t.join(5)
    assert not t.is_alive()
    with pytest.raises(ChannelClosed):
        r.try_recv()
    w.close()
    with pytest.raises(ChannelClosed):
        w.send(1)
