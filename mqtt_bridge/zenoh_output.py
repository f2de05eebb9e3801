"""The bridge's Zenoh output (issue 14): the machine tree on Zenoh, queryables and liveliness.

Fed by the bridge's scan (same samples as MQTT, same JSON); commands stay on gRPC (read-only).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from common.config import EvoConfig
from common.config.schema import ZenohConfig
from common.connector import ConfigurationError, Connecting, HealthEvent, Up
from common.connector.health import ConnectorEvent, health_name, is_connected
from common.connector.routing import Congestion
from common.connector.zenoh import ZenohConnector, ZenohOptions
from common.connector.zenoh_query import QueryRequest, ZenohQueryable
from common.shm.views import flat_bytes
from mqtt_bridge.health_history import HealthHistory
from mqtt_bridge.payloads import (
    IO_KINDS,
    driver_payload,
    module_payload,
    state_payload,
    state_unavailable,
)
from mqtt_bridge.topics import Topics
from mqtt_bridge.zenoh_answers import (
    BadQuery,
    ScanView,
    answers,
    axis_body,
    io_body,
    parse_filters,
    recipe_body,
)
from mqtt_bridge.zenoh_keys import MAX_PAYLOAD, KeyPublisher

log = logging.getLogger(__name__)

CONNECTOR_NAME = "zenoh"
HEALTH_HISTORY = 16
QUERY_CAPACITY = 32  # queries waiting for the answering thread; more are answered "busy"
REFRESH_S = 1.0  # every key is put again this often unchanged (late subscribers; queries answer at once)


class Snapshot:
    """The last scan's samples, copied (the readers reuse their buffers), for the query thread.

    Queries are answered at once from what the last scan read (at most one scan, 20 ms, old: the
    same data the tree publishes), never from the segments directly: the bridge is their only reader.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._buf: dict[str, Any] = {}
        self.samples: dict[str, Any] = {"cu": None, "hal": None, "re": None}
        self.statuses: dict[str, str] = {}
        self.state: dict[str, Any] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        self.last_change: float | None = None
        self.scans = 0

    def update(self, samples: dict[str, Any], statuses: dict[str, str], state: dict[str, Any],
               modules: dict[str, dict[str, Any]], last_change: float | None) -> None:
        with self.lock:
            for key, sample in samples.items():
                if sample is None:
                    self.samples[key] = None
                    continue
                buf = self._buf.get(key)
                if buf is None or buf.dtype != sample.dtype or buf.shape != sample.shape:
                    buf = self._buf[key] = sample.copy()
                else:
                    np.copyto(flat_bytes(buf), flat_bytes(sample))  # a flat copy: ~10x a structured one
                self.samples[key] = buf
            self.statuses, self.state, self.modules, self.last_change = dict(statuses), state, modules, last_change
            self.scans += 1


def zenoh_options(z: ZenohConfig) -> ZenohOptions:
    """Connector options from `[zenoh]`: explicit endpoints, scouting as configured (off by default).
    With connect endpoints, health needs one of them (a router or peer); without, an open
    (listening) session is Up."""
    return ZenohOptions(
        mode=z.mode,
        listen=z.listen if z.mode == "peer" else (),
        connect=z.connect,
        multicast_scouting=z.multicast_scouting,
        gossip_scouting=z.gossip_scouting,
        min_peers=1 if z.connect else 0,
        query_timeout_s=z.query_timeout_s,
    )


def health_body(name: str, state: Any, history: HealthHistory, link: dict[str, Any] | None) -> dict[str, Any]:
    body = {"connector": name, "state": health_name(state), "reason": getattr(state, "reason", None),
            "events": history.as_list()}
    if link is not None:
        body["link"] = link
    return body


class ZenohOutput:
    """One BridgeOutput: publishes `<key_prefix>/<machine_id>/...`, answers queries on `.../**`,
    holds a liveliness token for the machine and one per running module."""

    name = CONNECTOR_NAME

    def __init__(self, config: EvoConfig, bridge: Any, connector: ZenohConnector | None = None) -> None:
        z = config.system.zenoh
        self.bridge = bridge
        self.keys = Topics(z.key_prefix, config.machine_id)
        self.connector = connector or ZenohConnector(zenoh_options(z), CONNECTOR_NAME, max_payload=MAX_PAYLOAD)
        self.publisher = KeyPublisher(self.connector)
        self.queryable: ZenohQueryable | None = None
        self.module_tokens: dict[str, Any] = {}  # declared module tokens -> the pid each stands for
        self.queries_answered = 0
        self._history = HealthHistory(HEALTH_HISTORY)
        self._mqtt_history = HealthHistory(HEALTH_HISTORY)
        self._dirty_zenoh = threading.Event()  # health/* to publish on Zenoh
        self._dirty_mqtt = threading.Event()  # health/zenoh to publish on MQTT
        self._new_session = threading.Event()
        self._state_body: dict[str, Any] | None = None
        self._last_change: float | None = None
        self._next_refresh = 0.0
        self.snapshot = Snapshot()
        self._answering: threading.Thread | None = None
        self._stopping = threading.Event()
        self.connector.add_health_listener(self._on_event)
        bridge.connector.add_health_listener(self._on_mqtt_event)

    # --- connector events (their threads: record only) ---
    def _on_event(self, event: ConnectorEvent) -> None:
        if not isinstance(event, HealthEvent):
            return
        log.log(logging.INFO if isinstance(event.current, Up) else logging.WARNING, "zenoh: %s", event.current)
        self._history.add(event)
        self._dirty_zenoh.set()
        self._dirty_mqtt.set()
        if is_connected(event.current) and isinstance(event.previous, Connecting):
            self._new_session.set()

    def _on_mqtt_event(self, event: ConnectorEvent) -> None:
        if isinstance(event, HealthEvent):
            self._mqtt_history.add(event)
            self._dirty_zenoh.set()

    # --- lifecycle ---
    def start(self) -> None:
        self.connector.start()
        self.connector.declare_token(self.keys.root)
        self.queryable = self.connector.queryable(f"{self.keys.root}/**", capacity=QUERY_CAPACITY)
        self._answering = threading.Thread(target=self._answer_loop, name="evo-zenoh-queries", daemon=True)
        self._answering.start()
        log.info("zenoh: %s/... (%s)", self.keys.root, self.connector.options.to_dict())

    def stop(self) -> None:
        self._stopping.set()
        for key in list(self.module_tokens):
            self.connector.undeclare_token(key)
        self.module_tokens.clear()
        self.connector.stop()  # closes the queryable: the answering thread wakes and ends
        if self._answering is not None:
            self._answering.join(2.0)

    # --- health bodies ---
    def _link(self) -> dict[str, Any] | None:
        b = self.connector.backend
        if b is None:
            return None
        st = b.stats
        return {"opens": st.opens, "open_failures": st.open_failures, "losses": st.losses,
                "peers": st.peers, "routers": st.routers, "last_failure": st.last_failure or None}

    def zenoh_health(self) -> dict[str, Any]:
        return health_body(CONNECTOR_NAME, self.connector.health, self._history, self._link())

    def mqtt_health(self) -> dict[str, Any]:
        return health_body("mqtt", self.bridge.connector.health, self._mqtt_history, None)

    # --- one scan ---
    def scan(self, now: float, cu: Any, hal: Any, re_: Any, statuses: dict[str, str], telemetry_due: bool) -> None:
        if self._new_session.is_set():
            self._new_session.clear()
            self.publisher.invalidate()  # a new subscriber side: every state key goes out again
        cu_status = statuses.get("cu", "absent")
        state = state_payload(cu["status"], statuses) if cu is not None else state_unavailable(cu_status, statuses)
        state["driver"] = driver_payload(hal["io"]) if hal is not None else None
        if state != self._state_body:
            self._state_body = state
            self._last_change = round(time.time(), 6)
        pub = self.publisher
        # Zenoh keeps nothing for late joiners: every key goes out on change (telemetry values at
        # most at telemetry_hz) and again every REFRESH_S unchanged, so a new subscriber has the
        # whole tree within REFRESH_S — and at once from the `**` queryable. (Re-putting the whole
        # unchanged tree at telemetry_hz cost the idle machine ~20 messages per tick.)
        refresh = now >= self._next_refresh
        if refresh:
            self._next_refresh = now + REFRESH_S
        changed_only = not refresh
        pub.publish(self.keys.state, state, on_change=changed_only)
        view = self._view(cu, hal, re_, statuses, state)
        for kind in IO_KINDS:
            if hal is None or kind in ("di", "do") or telemetry_due or refresh:  # analog: at most telemetry_hz
                pub.publish(self.keys.io(kind), io_body(view, kind), on_change=changed_only)
        if telemetry_due or refresh or cu is None:
            for ax in view.axes:
                pub.publish(self.keys.axis(ax.id), axis_body(view, ax), on_change=changed_only,
                            congestion=Congestion.DROP)
        if telemetry_due or refresh or re_ is None:
            pub.publish(self.keys.recipe, recipe_body(view), on_change=changed_only)
        self._sync_modules(view, changed_only)
        if refresh:
            self._dirty_zenoh.set()
        self._publish_health()
        self.snapshot.update({"cu": cu, "hal": hal, "re": re_}, statuses, state, view.modules, self._last_change)

    def _view(self, cu: Any, hal: Any, re_: Any, statuses: dict[str, str], state: dict[str, Any]) -> ScanView:
        b = self.bridge
        b.modules.poll()  # idempotent: the bridge's own poll then sees no change
        return ScanView(self.keys.machine_id, cu, hal, re_, statuses, state, b.axes, b.points,
                        dict(b.modules.modules), {}, self._last_change)

    def _sync_modules(self, view: ScanView, changed_only: bool = True) -> None:
        running: dict[str, Any] = {}  # token key -> the pid it stands for
        for name, entry in view.modules.items():
            try:
                key = self.keys.module(name)
            except ConfigurationError:
                continue
            self.publisher.publish(key, module_payload(entry), on_change=changed_only)
            if entry.get("state") == "running":
                running[key] = entry.get("pid")
        for key, pid in self.module_tokens.items():
            if running.get(key) != pid:
                # gone, or replaced by a new process (a promoted standby can be running again before
                # this scan saw it down): observers see the token vanish, and come back if replaced
                self.connector.undeclare_token(key)
        for key, pid in running.items():
            if self.module_tokens.get(key) != pid:
                self.connector.declare_token(key)
        self.module_tokens = running

    def _publish_health(self) -> None:
        if self._dirty_zenoh.is_set():
            self._dirty_zenoh.clear()
            ok = self.publisher.publish(self.keys.health(CONNECTOR_NAME), self.zenoh_health(), on_change=False)
            ok = self.publisher.publish(self.keys.health("mqtt"), self.mqtt_health(), on_change=False) and ok
            if not ok:
                self._dirty_zenoh.set()  # not connected: it goes out with the next session
        if self._dirty_mqtt.is_set():
            self._dirty_mqtt.clear()
            bp = self.bridge.publisher
            if not bp.publish(self.bridge.topics.health(CONNECTOR_NAME), self.zenoh_health(), retained=True,
                              on_change=False):
                self._dirty_mqtt.set()

    # --- queries (their own thread, answered from the last scan's snapshot) ---
    def _answer_loop(self) -> None:
        q = self.queryable
        assert q is not None
        while not self._stopping.is_set() and not q.closed:
            req = q.recv(0.5)
            if req is not None:
                try:
                    self._answer_from_snapshot(q, req)
                except Exception:
                    log.exception("answering %s failed", req.selector)
                    q.reply_err(req.ticket, "internal error answering the query", selector=req.selector)

    def _answer_from_snapshot(self, q: ZenohQueryable, req: QueryRequest) -> None:
        snap = self.snapshot
        connectors = {CONNECTOR_NAME: self.zenoh_health(), "mqtt": self.mqtt_health()}
        with snap.lock:
            if not snap.scans:
                q.reply_err(req.ticket, "the bridge has not scanned its sources yet", selector=req.selector)
                return
            view = ScanView(self.keys.machine_id, snap.samples["cu"], snap.samples["hal"], snap.samples["re"],
                            snap.statuses, snap.state, self.bridge.axes, self.bridge.points, snap.modules,
                            connectors, snap.last_change)
            try:
                filters = parse_filters(req.parameters, view.axes)
            except BadQuery as e:
                q.reply_err(req.ticket, str(e), selector=req.selector)
                return
            replies = answers(self.keys, view, req.key_expr, filters)  # plain dicts: no buffer escapes the lock
        self.queries_answered += 1
        if not replies:
            q.reply_err(req.ticket, f"no key of {self.keys.root} matches {req.key_expr!r}", selector=req.selector)
            return
        now = round(time.time(), 6)
        for key, body in replies:
            q.reply(req.ticket, key, {**body, "ts": now})
        q.terminate(req.ticket)


def create(config: EvoConfig, bridge: Any) -> ZenohOutput | None:
    """The output factory for `build_outputs` (None when `[zenoh] enabled = false`)."""
    return ZenohOutput(config, bridge) if config.system.zenoh.enabled else None
