"""Reconnect policies: how long to wait before the next connection attempt.

`ExponentialBackoff` grows the delay by `factor` up to `max`, with a bounded random jitter.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.connector.errors import ConfigurationError


@runtime_checkable
class ReconnectPolicy(Protocol):
    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances the policy."""
        ...

    def reset(self) -> None:
        """Called after a successful connection."""
        ...


class ExponentialBackoff:
    """delay_n = min(max, initial * factor**n) * (1 + u), u uniform in [-jitter, +jitter], capped at max."""

    def __init__(
        self,
        initial: float = 0.1,
        max: float = 10.0,  # noqa: A002 - the contract's parameter name
        factor: float = 2.0,
        jitter: float = 0.1,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or max < initial:
            raise ConfigurationError("backoff needs 0 < initial <= max")
        if factor < 1.0:
            raise ConfigurationError("backoff factor must be >= 1")
        if not 0.0 <= jitter < 1.0:
            raise ConfigurationError("backoff jitter must be in [0, 1)")
        self.initial = initial
        self.max = max
        self.factor = factor
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random(seed)
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay for attempt number `attempt` (0-based)."""
        try:
            return min(self.max, self.initial * self.factor**attempt)
        except OverflowError:  # a long outage: the delay has long since reached max
            return self.max

    def next_delay(self) -> float:
        base = self.base_delay(self._attempt)
        self._attempt += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return min(self.max, base)

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """Serialisable parameters of an `ExponentialBackoff`."""

    initial: float = 0.1
    max: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2

    def policy(self, seed: int | None = None) -> ExponentialBackoff:
        return ExponentialBackoff(self.initial, self.max, self.factor, self.jitter, seed=seed)
