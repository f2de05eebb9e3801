"""The health history the MQTT bridge retains: flap folding keeps an outage visible in a bounded list."""

from __future__ import annotations

import pytest

from common.connector.health import Connecting, Degraded, Down, HealthEvent, Up
from mqtt_bridge.health_history import HealthHistory

_T = 0


def _ev(prev, cur) -> HealthEvent:
    global _T
    _T += 1_000_000_000
    return HealthEvent("mqtt", prev, cur, _T)


def _steps(h: HealthHistory) -> list[tuple[str, str, int]]:
    return [(e["from"], e["to"], e["repeats"]) for e in h.as_list()]


def test_retry_loop_while_the_broker_is_away_folds_into_one_entry() -> None:
    h = HealthHistory(16)
    h.add(_ev(Down("init", 0), Connecting(0)))
    h.add(_ev(Connecting(0), Up()))
    h.add(_ev(Up(), Down("connection lost", 0)))
    for i in range(50):  # 50 refused attempts: far more than the list can hold unfolded
        h.add(_ev(Down("x", 0), Connecting(0)))
        h.add(_ev(Connecting(0), Down(f"refused {i}", 0)))
    h.add(_ev(Down("refused 49", 0), Connecting(0)))
    h.add(_ev(Connecting(0), Up()))
    assert _steps(h) == [
        ("Down", "Connecting", 0),
        ("Connecting", "Up", 0),
        ("Up", "Down", 0),
        ("Down", "Connecting", 50),
        ("Connecting", "Up", 0),
    ]
    entries = h.as_list()
    assert entries[2]["reason"] == "connection lost"  # why it went down is kept
    assert entries[3]["last_at"] > entries[3]["at"]


def test_backpressure_flapping_and_reason_updates_fold() -> None:
    h = HealthHistory(4)
    h.add(_ev(Connecting(0), Up()))
    h.add(_ev(Up(), Degraded("outbound bridge full on a")))
    h.add(_ev(Degraded("a"), Degraded("outbound bridge full on a; outbound bridge full on b")))
    for _ in range(20):
        h.add(_ev(Degraded("a"), Up()))
        h.add(_ev(Up(), Degraded("outbound bridge full on c")))
    assert _steps(h) == [("Connecting", "Up", 0), ("Up", "Degraded", 21)]
    assert h.as_list()[-1]["reason"] == "outbound bridge full on c"


def test_distinct_transitions_are_bounded_oldest_first() -> None:
    h = HealthHistory(3)
    h.add(_ev(Down("a", 0), Connecting(0)))
    h.add(_ev(Connecting(0), Up()))
    h.add(_ev(Up(), Degraded("full")))
    h.add(_ev(Degraded("full"), Down("lost", 0)))
    assert _steps(h) == [("Connecting", "Up", 0), ("Up", "Degraded", 0), ("Degraded", "Down", 0)]
    assert len(h) == 3


def test_too_small_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        HealthHistory(1)
