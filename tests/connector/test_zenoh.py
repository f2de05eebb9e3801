"""ZenohConnector with two real Zenoh sessions on loopback (peer mode, explicit endpoints)."""
from __future__ import annotations

import pytest

from common.connector import Connecting, Down, DroppedInbound, HealthEvent, Up, ZenohRouting
from common.connector.routing import Congestion
from common.connector.zenoh import ZenohConnector, ZenohOptions
from tests.helpers import free_port, wait_for


def _pair(port: int):
    a = ZenohConnector(ZenohOptions(listen=(f"tcp/127.0.0.1:{port}",)), name="za")
    b = ZenohConnector(ZenohOptions(connect=(f"tcp/127.0.0.1:{port}",)), name="zb")
    return a, b


def _put_until(writer, reader, value, timeout: float = 10.0):
    """Subscriptions propagate asynchronously: put until the reader has something."""
    def attempt():
        writer.send(value)
        try:
            return reader.recv(0.1)
        except Exception:
            return None

    return wait_for(attempt, timeout, what="a put to reach the subscriber")


def test_put_reaches_subscriber_through_both_connectors() -> None:
    a, b = _pair(free_port())
    ev_a, ev_b = a.subscribe_health(), b.subscribe_health()
    w = a.writer(ZenohRouting("evo/m1/axes/0"))
    r = b.reader(ZenohRouting("evo/m1/**"))
    with a, b:
        wait_for(lambda: a.health == Up() and b.health == Up(), what="both sessions up")
        msg = _put_until(w, r, {"pos": 1.5, "unit": "mm"})
        assert msg.key == "evo/m1/axes/0" and msg.value == {"pos": 1.5, "unit": "mm"}
        while r.try_recv() is not None:  # extra copies of the probing puts
            pass
        seq = w.send({"pos": 2.0, "unit": "mm"})
        nxt = r.recv(5)
        assert nxt.value == {"pos": 2.0, "unit": "mm"} and seq > 1
    for ev in (ev_a, ev_b):
        kinds = [type(e.current) for e in ev.drain() if isinstance(e, HealthEvent)]
        assert kinds[:2] == [Connecting, Up] and kinds[-1].__name__ == "Down"


def test_inbound_flood_into_a_tiny_bridge_reports_dropped_inbound() -> None:
    a, b = _pair(free_port())
    w = a.writer(ZenohRouting("flood/x", congestion=Congestion.BLOCK), capacity=256)
    r = b.reader(ZenohRouting("flood/x"), capacity=2)
    events = b.subscribe_health()
    with a, b:
        wait_for(lambda: a.health == Up() and b.health == Up())
        _put_until(w, r, -1)
        while r.try_recv() is not None:
            pass
        binding = b.gateway.inbound[0]
        base = binding.delivered + binding.dropped_total
        total = 200
        for i in range(total):
            w.send(i)
        wait_for(lambda: binding.delivered + binding.dropped_total - base >= total, what="every put accounted for")
        drops: list[DroppedInbound] = []

        def flushed() -> bool:
            drops.extend(e for e in events.drain() if isinstance(e, DroppedInbound))
            return sum(e.count for e in drops) == binding.dropped_total

        wait_for(flushed, what="drop events flushed")
        got = [m.value for m in iter(r.try_recv, None) if m.value != -1]  # -1: a late probing put
        assert got == list(range(len(got))) and 0 < len(got) <= 2
        assert binding.dropped_total >= total - 2 and all(e.channel == "flood/x" for e in drops)


def test_losing_the_only_peer_goes_down_and_its_return_restores() -> None:
    """Issue 14: peer-count-driven health — every peer gone is Down with the reason, then
    Connecting (Zenoh keeps dialling), Up again once a peer is back."""
    port = free_port()
    a, b = _pair(port)
    events = a.subscribe_health()
    with a:
        b.start()
        wait_for(lambda: a.health == Up() and b.health == Up())
        b.stop()
        wait_for(lambda: isinstance(a.health, Connecting), what="a connecting again without peers")
        downs = [e.current for e in events.drain() if isinstance(e, HealthEvent) and isinstance(e.current, Down)]
        assert downs and "no zenoh router or peer connected" in downs[-1].reason
        b2 = ZenohConnector(ZenohOptions(connect=(f"tcp/127.0.0.1:{port}",)), name="zb2")
        with b2:
            wait_for(lambda: a.health == Up(), what="a up again once a peer is back")


def test_options_validation() -> None:
    from common.connector.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        ZenohOptions(mode="mesh")
    with pytest.raises(ConfigurationError):
        ZenohOptions(min_peers=-1)
    o = ZenohOptions(listen=["tcp/127.0.0.1:7447"])
    assert ZenohOptions.from_dict(o.to_dict()) == o
