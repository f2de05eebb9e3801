"""coalesced_wakes(): a batch of sends wakes each gateway once (issue 15, "a machine that idles cheaply":
the MQTT bridge's 20 messages per tick woke its gateway thread 20 times), nothing is lost or delayed
past the end of the block, and other threads' wakes are never held back."""
from __future__ import annotations

import json
import threading

from common.connector import ChannelDescriptor, ChannelWriter, Iceoryx2Routing, MqttRouting, coalesced_wakes
from common.connector.mqtt import MqttConnector, MqttOptions
from common.connector.transport import RingLink, Waker
from tests.connector.observer import Observer
from tests.helpers import wait_for


def _rings(n: int, waker: Waker) -> tuple[list[ChannelWriter], list[RingLink]]:
    """n in-process bridges whose receivers wake one Waker on commit, as a gateway attaches them."""
    writers, rings = [], []
    for i in range(n):
        desc = ChannelDescriptor(f"ch{i}", Iceoryx2Routing(f"svc{i}"), max_payload=64)
        ring = RingLink(4, desc.slot_size)
        ring._has_receiver = True
        ring.receiver.attach_waker(waker)
        writers.append(ChannelWriter(desc, ring.sender))
        rings.append(ring)
    return writers, rings


def test_a_batch_of_sends_wakes_the_gateway_once_at_the_end() -> None:
    """20 sends on 20 bridges inside coalesced_wakes(): no wake while inside, one eventfd write at the
    end, every envelope there; the same sends outside the block wake 20 times."""
    waker = Waker()
    try:
        writers, rings = _rings(20, waker)
        with coalesced_wakes():
            for i, w in enumerate(writers):
                w.send({"i": i})
            with coalesced_wakes():  # a nested block joins the outer one
                writers[0].send({"i": "nested"})
            assert waker.wakes == 0 and not waker.wait(0.0)  # held until the end of the block
        assert waker.wakes == 1 and waker.wait(0.0)
        assert [len(r) for r in rings] == [2] + [1] * 19
        for w in writers:
            w.send({"again": True})
        assert waker.wakes == 21
    finally:
        waker.close()


def test_other_threads_wake_at_once_while_a_batch_is_open() -> None:
    """The deferral is per thread: a wake from another thread during this thread's batch goes out at
    once (a connector event or a stop() must never wait for someone else's scan)."""
    waker = Waker()
    try:
        with coalesced_wakes():
            waker.wake()
            assert waker.wakes == 0
            t = threading.Thread(target=waker.wake)
            t.start()
            t.join(5)
            assert waker.wakes == 1 and waker.wait(0.0)
        assert waker.wakes == 2
    finally:
        waker.close()


def test_a_batch_through_a_real_broker_arrives_whole_with_one_wake(broker) -> None:
    """Against a real mosquitto: 12 topics sent in one batch all reach a subscriber, and the gateway
    thread was woken once for them (its Waker counts eventfd writes)."""
    obs = Observer(broker.host, broker.port)
    c = MqttConnector(MqttOptions(port=broker.port), "batch")
    try:
        obs.subscribe("batch/#")
        writers = [c.writer(MqttRouting(f"batch/{i}", 1, False), name=f"b{i}") for i in range(12)]
        c.start()
        wait_for(lambda: c.health.__class__.__name__ == "Up", 10, what="connector Up")
        gw = c.gateway
        assert gw is not None
        wait_for(lambda: not gw.waker.wait(0.0), 5, what="gateway wakes drained")
        before = gw.waker.wakes
        with coalesced_wakes():
            for i, w in enumerate(writers):
                w.send({"i": i})
        # one for the batch (the connector's own threads may add one of theirs meanwhile): not 12
        assert 1 <= gw.waker.wakes - before <= 2
        wait_for(lambda: all(obs.on(f"batch/{i}") for i in range(12)), 10, what="all 12 topics at the subscriber")
        assert [json.loads(obs.on(f"batch/{i}")[0].payload)["i"] for i in range(12)] == list(range(12))
    finally:
        c.stop()
        obs.close()
