"""Health contract: the legal-transition table, events on every transition, subscriptions."""
from __future__ import annotations

import itertools
import threading

import pytest

from common.connector.errors import IllegalTransition
from common.connector.health import (
    LEGAL_TRANSITIONS,
    Connecting,
    Degraded,
    Down,
    DroppedInbound,
    HealthEvent,
    HealthMonitor,
    Up,
    health_from_dict,
    health_to_dict,
)

SAMPLES = {Up: Up(), Connecting: Connecting(1), Degraded: Degraded("r"), Down: Down("r", 1)}
EXPECTED_LEGAL = {
    (Down, Connecting),
    (Connecting, Up),
    (Connecting, Degraded),
    (Connecting, Down),
    (Up, Degraded),
    (Up, Down),
    (Degraded, Up),
    (Degraded, Degraded),
    (Degraded, Down),
}


def _monitor_in(state) -> HealthMonitor:
    m = HealthMonitor("c", clock_ns=itertools.count(100).__next__)
    m.transition(state, force=True)
    return m


def test_the_table_is_exactly_the_documented_one() -> None:
    legal = {(a, b) for a, targets in LEGAL_TRANSITIONS.items() for b in targets}
    assert legal == EXPECTED_LEGAL


@pytest.mark.parametrize("prev,new", list(itertools.product(SAMPLES, SAMPLES)))
def test_every_pair_is_accepted_or_rejected_per_table(prev, new) -> None:
    m = _monitor_in(SAMPLES[prev])
    target = Degraded("other") if (prev, new) == (Degraded, Degraded) else (
        Down("other", 2) if (prev, new) == (Down, Down) else SAMPLES[new])
    if prev is new and prev is not Degraded and prev is not Down:
        assert m.transition(target) is False  # no change, no event
        return
    sub = m.subscribe()
    if (prev, new) in EXPECTED_LEGAL:
        assert m.transition(target) is True
        (ev,) = sub.drain()
        assert ev == HealthEvent("c", SAMPLES[prev], target, ev.at_ns)
    else:
        with pytest.raises(IllegalTransition, match=f"{prev.__name__} -> {new.__name__}"):
            m.transition(target)
        assert m.state == SAMPLES[prev] and sub.drain() == []


def test_initial_state_is_down_not_started() -> None:
    m = HealthMonitor("x")
    assert isinstance(m.state, Down) and m.state.reason == "not started"


def test_link_and_degradations_derive_health_with_one_event_per_transition() -> None:
    m = HealthMonitor("c")
    sub = m.subscribe()
    m.set_link(Connecting(5))
    m.set_link(Up())
    m.degrade("backpressure:a", "outbound bridge full on a")
    m.degrade("backpressure:b", "outbound bridge full on b")
    m.degrade("backpressure:b", "outbound bridge full on b")  # unchanged: no event
    m.recover("backpressure:a")
    m.recover("backpressure:b")
    m.recover("backpressure:b")  # absent: no event
    m.degrade("x", "while up")
    m.set_link(Down("lost", 9))  # Degraded -> Down; degradations hidden while down
    m.set_link(Connecting(10))
    m.set_link(Up())  # still degraded by "x" -> Connecting -> Degraded
    states = [type(e.current).__name__ for e in sub.drain()]
    assert states == ["Connecting", "Up", "Degraded", "Degraded", "Degraded", "Up", "Degraded", "Down",
                      "Connecting", "Degraded"]
    assert m.state == Degraded("while up")


def test_listeners_and_non_transition_events() -> None:
    m = HealthMonitor("c")
    seen = []
    m.add_listener(seen.append)
    m.set_link(Connecting(1))
    m.emit(DroppedInbound("c", "chan", 3, 7))
    m.remove_listener(seen.append)
    m.set_link(Up())
    assert [type(e).__name__ for e in seen] == ["HealthEvent", "DroppedInbound"]


def test_subscription_get_blocks_until_an_event_and_is_bounded() -> None:
    m = HealthMonitor("c")
    sub = m.subscribe(maxlen=2)
    threading.Timer(0.05, lambda: m.set_link(Connecting(1))).start()
    ev = sub.get(timeout=5)
    assert isinstance(ev, HealthEvent) and isinstance(ev.current, Connecting)
    assert sub.get(timeout=0.01) is None
    for i in range(5):
        m.emit(DroppedInbound("c", "x", i, i))
    assert [e.count for e in sub.drain()] == [3, 4] and sub.overflowed == 3
    sub.close()
    m.emit(DroppedInbound("c", "x", 9, 9))
    assert sub.drain() == []


@pytest.mark.parametrize("state", list(SAMPLES.values()))
def test_dict_round_trip(state) -> None:
    assert health_from_dict(health_to_dict(state)) == state
