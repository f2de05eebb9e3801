"""Connector health: the four states, the legal-transition table and the event stream.

`HealthMonitor` derives health from the link state plus named degradations and emits events.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Union

from common.connector.errors import IllegalTransition


@dataclass(frozen=True, slots=True)
class Up:
    """Connected and every bridge has room."""


@dataclass(frozen=True, slots=True)
class Connecting:
    """A connection attempt is under way since `since` (wall-clock ns)."""

    since: int


@dataclass(frozen=True, slots=True)
class Degraded:
    """Connected, but something (a full bridge, bad envelopes, missing peers) is wrong."""

    reason: str


@dataclass(frozen=True, slots=True)
class Down:
    """Not connected since `since` (wall-clock ns), for `reason`."""

    reason: str
    since: int


ConnectorHealth = Union[Up, Connecting, Degraded, Down]

# previous variant -> variants it may move to
LEGAL_TRANSITIONS: dict[type, frozenset[type]] = {
    Down: frozenset({Connecting}),
    Connecting: frozenset({Up, Degraded, Down}),
    Up: frozenset({Degraded, Down}),
    Degraded: frozenset({Up, Degraded, Down}),
}


def is_legal(previous: ConnectorHealth, current: ConnectorHealth) -> bool:
    """True if `previous -> current` is in the legal-transition table."""
    return type(current) in LEGAL_TRANSITIONS[type(previous)]


def is_connected(state: ConnectorHealth) -> bool:
    """Up or Degraded: traffic can flow."""
    return isinstance(state, (Up, Degraded))


def health_name(state: ConnectorHealth) -> str:
    return type(state).__name__


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One transition between health states."""

    connector: str
    previous: ConnectorHealth
    current: ConnectorHealth
    at_ns: int


@dataclass(frozen=True, slots=True)
class DroppedInbound:
    """`count` inbound messages were dropped because the channel's inbound bridge was full."""

    connector: str
    channel: str
    count: int
    at_ns: int


@dataclass(frozen=True, slots=True)
class EnvelopeDiscarded:
    """An envelope failed validation (CRC, length, version) and was discarded."""

    connector: str
    channel: str
    reason: str
    at_ns: int


ConnectorEvent = Union[HealthEvent, DroppedInbound, EnvelopeDiscarded]


class HealthSubscription:
    """A bounded, thread-safe queue of connector events; the oldest are dropped when full."""

    def __init__(self, monitor: "HealthMonitor", maxlen: int) -> None:
        self._monitor = monitor
        self._events: collections.deque[ConnectorEvent] = collections.deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self.overflowed = 0
        self._closed = False

    def _push(self, event: ConnectorEvent) -> None:
        with self._cond:
            if len(self._events) == self._events.maxlen:
                self.overflowed += 1
            self._events.append(event)
            self._cond.notify_all()

    def try_get(self) -> ConnectorEvent | None:
        with self._cond:
            return self._events.popleft() if self._events else None

    def get(self, timeout: float | None = None) -> ConnectorEvent | None:
        """Next event, or None after `timeout` seconds (or once closed and empty)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._events and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._events.popleft() if self._events else None

    def drain(self) -> list[ConnectorEvent]:
        with self._cond:
            out = list(self._events)
            self._events.clear()
            return out

    def __iter__(self) -> Iterator[ConnectorEvent]:
        while True:
            ev = self.get()
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        self._monitor._unsubscribe(self)
        with self._cond:
            self._closed = True
            self._cond.notify_all()


Listener = Callable[[ConnectorEvent], None]


class HealthMonitor:
    """Owns one connector's health; every change goes through the transition table.

    Health = the link state (set by the protocol side) unless it is Up/Degraded and there are
    named degradations, in which case it is Degraded with their reasons. Listeners run on the
    thread that caused the change, under the monitor lock: keep them short and non-blocking.
    """

    def __init__(self, connector: str, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.connector = connector
        self._clock = clock_ns
        self._lock = threading.RLock()
        self._state: ConnectorHealth = Down("not started", clock_ns())
        self._link: ConnectorHealth = self._state
        self._degradations: dict[str, str] = {}
        self._subscriptions: list[HealthSubscription] = []
        self._listeners: list[Listener] = []

    @property
    def state(self) -> ConnectorHealth:
        return self._state

    @property
    def link(self) -> ConnectorHealth:
        return self._link

    def now_ns(self) -> int:
        return self._clock()

    # --- subscribers ---
    def subscribe(self, maxlen: int = 1024) -> HealthSubscription:
        sub = HealthSubscription(self, maxlen)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: HealthSubscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def emit(self, event: ConnectorEvent) -> None:
        """Deliver a non-transition event (DroppedInbound, EnvelopeDiscarded) to subscribers."""
        with self._lock:
            for sub in self._subscriptions:
                sub._push(event)
            for fn in list(self._listeners):
                fn(event)

    # --- transitions ---
    def transition(self, new: ConnectorHealth, *, force: bool = False) -> bool:
        """Move to `new`; False if already there; `IllegalTransition` if not in the table."""
        with self._lock:
            previous = self._state
            if new == previous:
                return False
            if not force and not is_legal(previous, new):
                raise IllegalTransition(
                    f"{self.connector}: {health_name(previous)} -> {health_name(new)} is not a legal transition"
                )
            self._state = new
            self.emit(HealthEvent(self.connector, previous, new, self._clock()))
            return True

    def set_link(self, link: ConnectorHealth, *, force: bool = False) -> bool:
        """Set the protocol link state and re-derive health (force: mirror a remote state)."""
        with self._lock:
            self._link = link
            return self._apply(force)

    def degrade(self, cause: str, reason: str) -> bool:
        """Add or update a named degradation."""
        with self._lock:
            if self._degradations.get(cause) == reason:
                return False
            self._degradations[cause] = reason
            return self._apply(False)

    def recover(self, cause: str) -> bool:
        """Clear a named degradation (no-op if absent)."""
        with self._lock:
            if self._degradations.pop(cause, None) is None:
                return False
            return self._apply(False)

    def is_degraded_by(self, cause: str) -> bool:
        return cause in self._degradations

    def degradations(self) -> dict[str, str]:
        with self._lock:
            return dict(self._degradations)

    def _apply(self, force: bool) -> bool:
        link = self._link
        if is_connected(link) and self._degradations:
            reasons = ([link.reason] if isinstance(link, Degraded) else []) + list(self._degradations.values())
            return self.transition(Degraded("; ".join(reasons)), force=force)
        return self.transition(link, force=force)


def health_to_dict(state: ConnectorHealth) -> dict:
    """JSON-friendly form: {"state": "Down", "reason": ..., "since": ...}."""
    out: dict = {"state": health_name(state)}
    for attr in ("reason", "since"):
        if hasattr(state, attr):
            out[attr] = getattr(state, attr)
    return out


def health_from_dict(data: dict) -> ConnectorHealth:
    kind = data.get("state")
    if kind == "Up":
        return Up()
    if kind == "Connecting":
        return Connecting(int(data["since"]))
    if kind == "Degraded":
        return Degraded(str(data["reason"]))
    if kind == "Down":
        return Down(str(data["reason"]), int(data["since"]))
    raise ValueError(f"unknown health state {kind!r}")
