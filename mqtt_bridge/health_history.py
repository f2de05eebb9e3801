"""The recent health transitions the bridge publishes on `health/<connector>`.

Flapping is folded so a bounded list keeps what matters: a retry loop or a bridge that fills
and drains many times becomes one entry with a repeat count instead of pushing out the outage.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from common.connector.health import HealthEvent, health_name


@dataclass(slots=True)
class HistoryEntry:
    """One transition; `repeats` counts how often it recurred since `at` (reason is the latest)."""

    previous: str
    current: str
    reason: str | None
    at: float
    last_at: float
    repeats: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.previous,
            "to": self.current,
            "reason": self.reason,
            "at": self.at,
            "repeats": self.repeats,
            "last_at": self.last_at,
        }


class HealthHistory:
    """Bounded, thread-safe list of transitions with flap folding.

    - A -> B, B -> A, A -> B: the return and the repeat fold into the first A -> B (repeats + 1).
      Down -> Connecting -> Down cycles while a broker is away and Up <-> Degraded back-pressure
      flapping both stay one entry each.
    - B -> B (a new reason for the same state, e.g. another channel backs up) updates the entry
      that led into B.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 2:
            raise ValueError("a health history needs room for at least two entries")
        self.maxlen = maxlen
        self._entries: list[HistoryEntry] = []
        self._lock = threading.Lock()

    def add(self, event: HealthEvent) -> None:
        prev, cur = health_name(event.previous), health_name(event.current)
        reason = getattr(event.current, "reason", None)
        at = event.at_ns / 1e9
        with self._lock:
            e = self._entries
            if e and prev == cur and e[-1].current == cur:
                self._repeat(e[-1], reason, at)
                return
            if (
                len(e) >= 2
                and (e[-1].previous, e[-1].current) == (cur, prev)
                and (e[-2].previous, e[-2].current) == (prev, cur)
            ):
                e.pop()
                self._repeat(e[-1], reason, at)
                return
            e.append(HistoryEntry(prev, cur, reason, at, at))
            if len(e) > self.maxlen:
                del e[0]

    @staticmethod
    def _repeat(entry: HistoryEntry, reason: str | None, at: float) -> None:
        entry.repeats += 1
        entry.reason = reason
        entry.last_at = at

    def as_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [x.as_dict() for x in self._entries]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
