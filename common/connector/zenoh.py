"""Zenoh connector on eclipse-zenoh: put/subscribe, liveliness tokens, queryables and queries.

Zenoh owns reconnects; health follows the session and its peer count (no ReconnectPolicy).
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import zenoh as _z

from common.connector.connector import Connector
from common.connector.errors import ConfigurationError, NotConnected
from common.connector.gateway import InboundBinding, OutboundBinding, ProtocolBackend
from common.connector.health import Connecting, Down, Up, is_connected
from common.connector.routing import Congestion, Reliability, Routing, ZenohRouting
from common.connector.routing import _check_key_expr as validate_key_expr
from common.connector.zenoh_query import QueryResult, ZenohQueryable, run_query

_CONGESTION = {Congestion.BLOCK: _z.CongestionControl.BLOCK, Congestion.DROP: _z.CongestionControl.DROP}
_RELIABILITY = {Reliability.RELIABLE: _z.Reliability.RELIABLE, Reliability.BEST_EFFORT: _z.Reliability.BEST_EFFORT}
_MODES = ("peer", "client", "router")
PEER_RECHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class ZenohOptions:
    """Session topology: mode and explicit locators (carried to zenoh.Config verbatim)."""

    mode: str = "peer"
    listen: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()
    multicast_scouting: bool = False
    min_peers: int = 1  # Up once this many peers/routers are connected (0: Up once the session is open)
    retry_s: float = 1.0  # re-open after zenoh.open itself failed (port taken, bad locator) ...
    retry_max_s: float = 30.0  # ... doubling up to this
    gossip_scouting: bool = False
    query_timeout_s: float = 2.0  # default time-out of query() and of an unanswered queryable query

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"Zenoh mode must be one of {_MODES}, got {self.mode!r}")
        if self.min_peers < 0:
            raise ConfigurationError("Zenoh min_peers must be >= 0")
        if self.mode == "client" and not self.connect:
            raise ConfigurationError("Zenoh client mode needs at least one connect endpoint")
        if not 0 < self.retry_s <= self.retry_max_s:
            raise ConfigurationError("Zenoh retry_s must be > 0 and <= retry_max_s")
        if self.query_timeout_s <= 0:
            raise ConfigurationError("Zenoh query_timeout_s must be > 0")
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "connect", tuple(self.connect))

    def to_config(self) -> _z.Config:
        conf = _z.Config()
        conf.insert_json5("mode", json.dumps(self.mode))
        conf.insert_json5("listen/endpoints", json.dumps(list(self.listen)))
        conf.insert_json5("connect/endpoints", json.dumps(list(self.connect)))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(self.multicast_scouting))
        conf.insert_json5("scouting/gossip/enabled", json.dumps(self.gossip_scouting))
        # zenoh's same-host shared-memory transport is off: its segments (/dev/shm/*.zenoh: a 1.3 MB one per
        # process and 16 MB pools per pair of peers) outlive a SIGKILLed process — each kill the watchdog
        # makes would leave ~35 MB of RAM behind — and evo's messages are small enough for loopback TCP
        conf.insert_json5("transport/shared_memory/enabled", "false")
        return conf

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "listen": list(self.listen),
            "connect": list(self.connect),
            "multicast_scouting": self.multicast_scouting,
            "min_peers": self.min_peers,
            "retry_s": self.retry_s,
            "retry_max_s": self.retry_max_s,
            "gossip_scouting": self.gossip_scouting,
            "query_timeout_s": self.query_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZenohOptions:
        return cls(**data)


@dataclass(slots=True)
class ZenohStats:
    """Link counters (published with the connector's health)."""

    opens: int = 0  # sessions opened
    open_failures: int = 0
    last_failure: str = ""
    peers: int = 0  # peers + routers at the last check
    routers: int = 0
    losses: int = 0  # times every router/peer went away


class ZenohBackend(ProtocolBackend):
    """One zenoh.Session; subscriber callbacks deliver straight into the (thread-safe) bridges.

    Health: Down while the session cannot open (the reason says why, e.g. the listen port is
    taken), retried with a doubling delay. With `min_peers` 0 the open session is Up. Otherwise
    Connecting until that many peers/routers are connected, Up while they are, Degraded with
    fewer, and Down (then Connecting again: Zenoh keeps dialling) once all of them are gone.
    """

    kind = "zenoh"

    def __init__(self, options: ZenohOptions) -> None:
        super().__init__()
        self.options = options
        self.session: Any = None
        self._listener: Any = None
        self._next_open = 0.0
        self._retry = options.retry_s
        self._peers_changed = True
        self._next_check = 0.0
        self._lock = threading.RLock()  # session handle vs token/queryable calls from other threads
        self._tokens: dict[str, Any] = {}  # key -> declared token (None until a session exists)
        self.queryables: list[ZenohQueryable] = []
        self.stats = ZenohStats()
        self.published = 0

    def open(self) -> None:
        self._next_open = time.monotonic()

    def _open_session(self) -> None:
        self.monitor.set_link(Connecting(self.monitor.now_ns()))
        try:
            session = _z.open(self.options.to_config())
        except Exception as exc:  # zenoh.ZError: bad locator, port taken, ...
            self.stats.open_failures += 1
            # zenoh's messages name the Rust source file they came from: keep only what happened
            self.stats.last_failure = "zenoh open failed: " + re.sub(r"\s+at /\S+?\.rs:\d+\.?", "", str(exc)).strip()
            self.monitor.set_link(Down(self.stats.last_failure, self.monitor.now_ns()))
            self._next_open = time.monotonic() + self._retry
            self._retry = min(self._retry * 2, self.options.retry_max_s)
            return
        self._retry = self.options.retry_s
        self.stats.opens += 1
        with self._lock:
            self.session = session
            self._listener = session.info.declare_transport_events_listener(self._on_transport, history=False)
            assert self.gateway is not None
            for b in self.gateway.outbound:
                self.add_outbound(b)
            for ib in self.gateway.inbound:
                self.add_inbound(ib)
            for key in self._tokens:
                self._tokens[key] = session.liveliness().declare_token(key)
            for q in self.queryables:
                self._declare_queryable(q)
        self._peers_changed = True

    def _on_transport(self, _event: Any) -> None:  # zenoh thread
        self._peers_changed = True
        if self.gateway is not None:
            self.gateway.waker.wake()

    def peer_count(self) -> int:
        if self.session is None:
            return 0
        info = self.session.info
        self.stats.peers = len(list(info.peers_zid()))
        self.stats.routers = len(list(info.routers_zid()))
        return self.stats.peers + self.stats.routers

    def _evaluate(self) -> None:
        self._peers_changed = False
        peers = self.peer_count()
        link = self.monitor.link
        want = self.options.min_peers
        if peers >= want:
            self.monitor.recover("peers")
            if not is_connected(link):
                if isinstance(link, Down):
                    self.monitor.set_link(Connecting(self.monitor.now_ns()))
                self.monitor.set_link(Up())
        elif peers == 0 and is_connected(link):
            self.stats.losses += 1
            where = ", ".join(self.options.connect) or "listen " + ", ".join(self.options.listen)
            self.monitor.recover("peers")
            self.monitor.set_link(Down(f"no zenoh router or peer connected ({where})", self.monitor.now_ns()))
        elif isinstance(link, Down):
            self.monitor.set_link(Connecting(self.monitor.now_ns()))  # Zenoh keeps dialling on its own
        elif is_connected(link):
            self.monitor.degrade("peers", f"{peers} zenoh peers < {want}")

    def service(self) -> float | None:
        if self.session is None:
            now = time.monotonic()
            if now >= self._next_open:
                self._open_session()
            if self.session is None:
                return max(0.0, self._next_open - time.monotonic())
        now = time.monotonic()
        # transport events are the fast path; a periodic re-check is the safety net
        if self._peers_changed or now >= self._next_check:
            self._next_check = now + PEER_RECHECK_S
            self._evaluate()
        wait = PEER_RECHECK_S
        for q in list(self.queryables):
            nxt = q.expire(now)
            if nxt is not None:
                wait = min(wait, nxt + 0.001)
        return wait

    def close(self) -> None:
        assert self.gateway is not None
        with self._lock:
            for q in self.queryables:
                q.close()
                if q.handle is not None:
                    q.handle.undeclare()
                    q.handle = None
            for key, tok in list(self._tokens.items()):
                if tok is not None:
                    tok.undeclare()
                self._tokens[key] = None
            for b in [*self.gateway.outbound, *self.gateway.inbound]:
                if b.handle is not None:
                    b.handle.undeclare()
                    b.handle = None
            if self._listener is not None:
                self._listener.undeclare()
                self._listener = None
            if self.session is not None:
                self.session.close()
                self.session = None

    # --- liveliness and queryables (any thread) ---
    def declare_token(self, key: str) -> None:
        with self._lock:
            if key in self._tokens:
                return
            self._tokens[key] = self.session.liveliness().declare_token(key) if self.session is not None else None

    def undeclare_token(self, key: str) -> None:
        with self._lock:
            tok = self._tokens.pop(key, None)
            if tok is not None:
                tok.undeclare()

    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def add_queryable(self, q: ZenohQueryable) -> None:
        with self._lock:
            self.queryables.append(q)
            if self.session is not None:
                self._declare_queryable(q)
        if self.gateway is not None:
            self.gateway.waker.wake()

    def _declare_queryable(self, q: ZenohQueryable) -> None:
        if q.handle is None:
            q.handle = self.session.declare_queryable(q.key_expr, q._on_query)

    def publish(self, binding: OutboundBinding, payload: memoryview) -> bool:
        if binding.handle is None:
            self.add_outbound(binding)
            if binding.handle is None:
                return True  # no session: dropped (no durable outbox)
        binding.handle.put(bytes(payload))
        self.published += 1
        return True

    def add_outbound(self, binding: OutboundBinding) -> None:
        if self.session is None or binding.handle is not None:
            return
        r = binding.routing
        assert isinstance(r, ZenohRouting)
        binding.handle = self.session.declare_publisher(
            r.key_expr,
            congestion_control=_CONGESTION[r.congestion],
            priority=getattr(_z.Priority, r.priority.name),
            express=r.express,
            reliability=_RELIABILITY[r.reliability],
        )

    def add_inbound(self, binding: InboundBinding) -> None:
        if self.session is None or binding.handle is not None:
            return
        r = binding.routing
        assert isinstance(r, ZenohRouting)
        gateway = self.gateway

        def on_sample(sample: Any) -> None:  # zenoh thread
            if not binding.deliver(str(sample.key_expr), sample.payload.to_bytes()):
                binding.count_drop()
                if gateway is not None:
                    gateway.waker.wake()

        binding.handle = self.session.declare_subscriber(r.key_expr, on_sample)


class ZenohConnector(Connector):
    """Zenoh connector: `writer(ZenohRouting(key))`, `reader(ZenohRouting("a/**"))`."""

    kind = "zenoh"
    routing_type = ZenohRouting

    def __init__(self, options: ZenohOptions, name: str = "zenoh", **connector_kw: Any) -> None:
        self.options = options
        super().__init__(name, **connector_kw)

    def make_backend(self) -> ZenohBackend:
        return ZenohBackend(self.options)

    def options_dict(self) -> dict[str, Any]:
        return self.options.to_dict()

    def default_channel_name(self, routing: Routing) -> str:
        assert isinstance(routing, ZenohRouting)
        return routing.key_expr

    # --- Zenoh-only surface (in-process gateway) ---
    @property
    def backend(self) -> ZenohBackend | None:
        return None if self.gateway is None else self.gateway.backend  # type: ignore[return-value]

    def _in_process_backend(self) -> ZenohBackend:
        b = self.backend
        if b is None:
            raise ConfigurationError("liveliness and queries need the in-process gateway (GatewayMode.IN_PROCESS)")
        return b

    @property
    def session(self) -> Any:
        """The open zenoh.Session, or None (not started, or zenoh.open failing)."""
        b = self.backend
        return None if b is None else b.session

    def declare_token(self, key_expr: str) -> None:
        """Hold a liveliness token on `key_expr` while the connector runs (re-declared whenever a
        session is (re)opened); observers see it vanish when it is undeclared or we die."""
        validate_key_expr(key_expr)
        if "*" in key_expr:
            raise ConfigurationError(f"a liveliness token needs a concrete key, got {key_expr!r}")
        self._in_process_backend().declare_token(key_expr)

    def undeclare_token(self, key_expr: str) -> None:
        self._in_process_backend().undeclare_token(key_expr)

    def tokens(self) -> list[str]:
        return self._in_process_backend().tokens()

    def queryable(self, key_expr: str, *, capacity: int = 16, timeout_s: float | None = None) -> ZenohQueryable:
        """Answer queries on `key_expr` from the caller's own thread (bounded inbox, see
        `ZenohQueryable`); an unanswered query gets a time-out error after `timeout_s`."""
        validate_key_expr(key_expr)
        if capacity < 1:
            raise ConfigurationError("queryable capacity must be >= 1")
        q = ZenohQueryable(self, key_expr, capacity, timeout_s or self.options.query_timeout_s)
        self._in_process_backend().add_queryable(q)
        return q

    def alive(self, key_expr: str, *, timeout_s: float | None = None) -> list[str]:
        """Keys of the liveliness tokens matching `key_expr` right now (sorted)."""
        session = self.session
        if session is None:
            raise NotConnected(f"{self.name}: no Zenoh session")
        replies = session.liveliness().get(key_expr, timeout=timeout_s or self.options.query_timeout_s)
        return sorted({str(r.ok.key_expr) for r in replies if r.ok is not None})

    def watch_alive(self, key_expr: str, on_change: Any, *, history: bool = True) -> Any:
        """Call `on_change(key, alive: bool)` (on a Zenoh thread) whenever a token matching
        `key_expr` appears or vanishes; `history` first reports the tokens alive now. Returns the
        subscriber (undeclare it to stop)."""
        session = self.session
        if session is None:
            raise NotConnected(f"{self.name}: no Zenoh session")
        return session.liveliness().declare_subscriber(
            key_expr, lambda s: on_change(str(s.key_expr), s.kind == _z.SampleKind.PUT), history=history)

    def query(self, selector: str, *, timeout_s: float | None = None, value: Any = None) -> QueryResult:
        """`get(selector)` with a fresh correlation id; only replies carrying it are kept.
        Blocks until every queryable answered or the time-out; `NotConnected` without a session."""
        return run_query(self.session, self.codec, selector, timeout_s or self.options.query_timeout_s, value)
