"""Zenoh connector on eclipse-zenoh: put/subscribe with the routing's QoS knobs.

Zenoh owns reconnects; health follows the session and its peer count (no ReconnectPolicy).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import zenoh as _z

from common.connector.connector import Connector
from common.connector.errors import ConfigurationError
from common.connector.gateway import InboundBinding, OutboundBinding, ProtocolBackend
from common.connector.health import Connecting, Down, Up, is_connected
from common.connector.routing import Congestion, Reliability, Routing, ZenohRouting

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
    min_peers: int = 1  # Up once this many peers/routers are connected
    retry_s: float = 1.0  # re-open after zenoh.open itself failed

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"Zenoh mode must be one of {_MODES}, got {self.mode!r}")
        if self.min_peers < 0:
            raise ConfigurationError("Zenoh min_peers must be >= 0")
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "connect", tuple(self.connect))

    def to_config(self) -> "_z.Config":
        conf = _z.Config()
        conf.insert_json5("mode", json.dumps(self.mode))
        conf.insert_json5("listen/endpoints", json.dumps(list(self.listen)))
        conf.insert_json5("connect/endpoints", json.dumps(list(self.connect)))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(self.multicast_scouting))
        return conf

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "listen": list(self.listen),
            "connect": list(self.connect),
            "multicast_scouting": self.multicast_scouting,
            "min_peers": self.min_peers,
            "retry_s": self.retry_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZenohOptions":
        return cls(**data)


class ZenohBackend(ProtocolBackend):
    """One zenoh.Session; subscriber callbacks deliver straight into the (thread-safe) bridges."""

    kind = "zenoh"

    def __init__(self, options: ZenohOptions) -> None:
        super().__init__()
        self.options = options
        self.session: Any = None
        self._listener: Any = None
        self._next_open = 0.0
        self._peers_changed = True
        self._next_check = 0.0
        self.published = 0

    def open(self) -> None:
        self._next_open = time.monotonic()

    def _open_session(self) -> None:
        self.monitor.set_link(Connecting(self.monitor.now_ns()))
        try:
            self.session = _z.open(self.options.to_config())
        except Exception as exc:  # zenoh.ZError: bad locator, port taken, ...
            self.session = None
            self.monitor.set_link(Down(f"zenoh open failed: {exc}", self.monitor.now_ns()))
            self._next_open = time.monotonic() + self.options.retry_s
            return
        self._listener = self.session.info.declare_transport_events_listener(self._on_transport, history=False)
        assert self.gateway is not None
        for b in self.gateway.outbound:
            self.add_outbound(b)
        for ib in self.gateway.inbound:
            self.add_inbound(ib)
        self._peers_changed = True

    def _on_transport(self, _event: Any) -> None:  # zenoh thread
        self._peers_changed = True
        if self.gateway is not None:
            self.gateway.waker.wake()

    def peer_count(self) -> int:
        if self.session is None:
            return 0
        info = self.session.info
        return len(list(info.peers_zid())) + len(list(info.routers_zid()))

    def _evaluate(self) -> None:
        self._peers_changed = False
        peers = self.peer_count()
        link = self.monitor.link
        if peers >= self.options.min_peers:
            self.monitor.recover("peers")
            if not is_connected(link):
                self.monitor.set_link(Up())
        elif is_connected(link):
            self.monitor.degrade("peers", f"{peers} zenoh peers < {self.options.min_peers}")

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
        return PEER_RECHECK_S

    def close(self) -> None:
        assert self.gateway is not None
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
