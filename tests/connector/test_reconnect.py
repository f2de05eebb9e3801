"""Reconnect policy contract: exponential growth, cap, reset, jitter bounds, determinism."""
from __future__ import annotations

import pytest

from common.connector.errors import ConfigurationError
from common.connector.reconnect import BackoffSettings, ExponentialBackoff, ReconnectPolicy


def test_sequence_without_jitter_grows_and_caps() -> None:
    b = ExponentialBackoff(initial=0.1, max=1.0, factor=2.0, jitter=0.0)
    assert isinstance(b, ReconnectPolicy)
    assert [round(b.next_delay(), 9) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)


def test_jitter_stays_within_bounds_and_capped_at_max() -> None:
    b = ExponentialBackoff(initial=0.1, max=2.0, factor=3.0, jitter=0.25, seed=1)
    for attempt in range(40):
        base = min(2.0, 0.1 * 3.0**attempt)
        d = b.next_delay()
        assert base * 0.75 - 1e-12 <= d <= min(2.0, base * 1.25) + 1e-12


def test_jitter_actually_varies_and_is_deterministic_with_a_seed() -> None:
    a = ExponentialBackoff(1.0, 1.0, 1.0, 0.5, seed=42)
    b = ExponentialBackoff(1.0, 1.0, 1.0, 0.5, seed=42)
    da = [a.next_delay() for _ in range(20)]
    assert da == [b.next_delay() for _ in range(20)]
    assert len(set(da)) > 10


def test_long_outages_do_not_overflow() -> None:
    b = ExponentialBackoff(0.1, 5.0, 10.0, 0.0)
    for _ in range(2000):
        d = b.next_delay()
    assert d == 5.0


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "max": 1}, {"factor": 0.5}, {"jitter": 1.0}])
def test_invalid_parameters(kwargs) -> None:
    with pytest.raises(ConfigurationError):
        ExponentialBackoff(**kwargs)


def test_settings_make_a_policy() -> None:
    p = BackoffSettings(0.5, 4.0, 2.0, 0.0).policy()
    assert [p.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
