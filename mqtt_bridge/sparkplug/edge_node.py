"""The MQTT bridge as a Sparkplug B edge node: births, data by exception, deaths, Rebirth, primary host.

A BridgeOutput: the bridge hands every scan's samples to `scan()`; this turns them into NBIRTH /
DBIRTH / NDATA / DDATA / DDEATH on its own MQTT session (session.py). Read-only: the one command
honoured is Node Control/Rebirth; every other NCMD/DCMD is refused, logged and counted.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from common.config import EvoConfig
from common.connector import BackPressure, CodecError, Connecting, HealthEvent, MqttRouting, NotConnected
from common.connector.codec import RawCodec
from common.connector.health import ConnectorEvent, health_name, is_connected
from mqtt_bridge.health_history import HealthHistory
from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb
from mqtt_bridge.sparkplug.metrics import REBIRTH, DeviceSpec, MetricSpec, Samples, Source, build_catalogue
from mqtt_bridge.sparkplug.payload import (
    add_birth_metric,
    add_data_metric,
    bdseq_metric,
    metric_names,
    ndeath,
    new_payload,
    now_ms,
    read_command,
)
from mqtt_bridge.sparkplug.session import (
    END_SESSION,
    FRAMES,
    BdSeqStore,
    Frame,
    FrameCodec,
    Namespace,
    SparkplugConnector,
)

log = logging.getLogger(__name__)

FRAME_CAPACITY = 64  # frames between the bridge loop and the gateway (a birth burst is 1 + devices)
MAX_FRAME = 64 * 1024  # the largest birth (an I/O group of ~1000 points) still fits
COMMAND_BURST = 32  # commands/STATE messages taken per scan (bounded work per scan)
HEALTH_HISTORY = 16  # transitions kept in the JSON tree's retained health/sparkplug payload
LOGGED_REFUSALS = 10  # refusals logged one by one; after that every 100th (a flood must not flood the log)
_UNSET = object()
_NO_WATCHDOG = "no-watchdog"  # modules.json does not list the source's module: the segment alone decides


@dataclass(slots=True)
class EdgeStats:
    nbirths: int = 0
    dbirths: int = 0
    ddeaths: int = 0
    ndata: int = 0
    ddata: int = 0
    rebirths: int = 0  # Rebirth commands honoured
    refused: int = 0  # NCMD/DCMD refused (logged)
    backpressure: int = 0  # frames not taken by a full channel (retried next scan)
    codec_errors: int = 0


class SparkplugEdgeNode:
    """One Sparkplug edge node (group, node id) fed from the bridge's samples."""

    name = "sparkplug"

    def __init__(self, config: EvoConfig, bridge: Any, connector: SparkplugConnector | None = None) -> None:
        spc = config.system.mqtt.sparkplug
        self.ns = Namespace(spc.group_id, spc.edge_node_id or config.machine_id)
        self.primary = spc.primary_host_id or None
        self.catalogue = build_catalogue(config, spc.metrics, spc.deadband)
        self._modules_watch = bridge.modules
        self._publisher = bridge.publisher  # the JSON tree's: health/sparkplug beside health/mqtt
        self._health_topic = bridge.topics.health(self.name)
        if connector is None:
            options = dataclasses.replace(
                bridge.connector.options,  # same broker, credentials and TLS as the JSON tree
                client_id=f"evo-spb-{self.ns.node}-{os.getpid()}",
                will=None,  # the backend sets NDEATH with the bdSeq of each CONNECT
                birth=None,
            )
            store = BdSeqStore(config.run_dir() / f"sparkplug-{self.ns.group}-{self.ns.node}.bdseq")
            connector = SparkplugConnector(options, store, self.ns, max_payload=MAX_FRAME)
        self.connector = connector
        self._frames = connector.writer(MqttRouting(self.ns.node_topic("NDATA"), 0, False), name=FRAMES,
                                        capacity=FRAME_CAPACITY, codec=FrameCodec())
        raw = RawCodec()
        self._ncmd = connector.reader(MqttRouting(self.ns.node_topic("NCMD"), 1), name="ncmd", codec=raw)
        self._dcmd = connector.reader(MqttRouting(self.ns.device_topic("DCMD", "+"), 1), name="dcmd", codec=raw)
        self._state = None
        if self.primary:
            self._state = connector.reader(MqttRouting(Namespace.state(self.primary), 1), name="state", codec=raw)
        connector.add_health_listener(self._on_connector_event)
        self._history = HealthHistory(HEALTH_HISTORY)
        self._health_dirty = threading.Event()
        self._new_session = threading.Event()
        self.session: int | None = None  # bdSeq of the session being served
        self.primary_online = self.primary is None
        self._primary_ts = -1
        self.node_born = False
        self._rebirth = False
        self.born: set[str] = set()
        self._born_of: dict[str, Any] = {}  # device -> the writer (module pid) it was born from
        self._last: dict[int, Any] = {}
        self.seq = 0
        self._node_specs: tuple[MetricSpec, ...] = self.catalogue.node
        self._module_names: frozenset[str] = frozenset()
        self.samples = Samples()
        self.stats = EdgeStats()

    # --- connector events (gateway thread: record only) ---
    def _on_connector_event(self, event: ConnectorEvent) -> None:
        if not isinstance(event, HealthEvent):
            return
        self._history.add(event)
        self._health_dirty.set()
        if is_connected(event.current) and isinstance(event.previous, Connecting):
            self._new_session.set()

    # --- lifecycle ---
    def start(self) -> None:
        log.info("Sparkplug B edge node %s (device%s %s)%s", self.ns.node_topic("NBIRTH"),
                 "s" if len(self.catalogue.devices) != 1 else "", ", ".join(d.id for d in self.catalogue.devices),
                 f", waiting for primary host {self.primary!r}" if self.primary else "")
        self.connector.start()

    def stop(self) -> None:
        if self.session is not None and is_connected(self.connector.health):
            # Sparkplug: an edge node that disconnects on purpose sends its NDEATH first (a clean
            # DISCONNECT suppresses the will); the gateway drains it before closing
            self._send(Frame(self.session, self.ns.node_topic("NDEATH"), ndeath(self.session), qos=1))
        self.connector.stop()

    # --- one scan ---
    def scan(self, now: float, cu: Any, hal: Any, re_: Any, statuses: dict[str, str], telemetry_due: bool) -> None:
        s = self.samples
        s.cu = None if cu is None else cu["status"]
        s.hal = None if hal is None else hal["io"]
        s.re = None if re_ is None else re_["status"]
        s.statuses = statuses
        s.modules = self._modules_watch.modules
        s.refused = self.stats.refused
        if self._new_session.is_set():
            self._new_session.clear()
            self._start_session()
        if self._health_dirty.is_set() or telemetry_due:
            self._publish_health()
        if self.session is None or not is_connected(self.connector.health):
            return
        self._take_commands()
        if not self.primary_online:
            return
        if not self.node_born or self._rebirth or not set(s.modules) <= self._module_names:
            if not self._nbirth():
                return
        self._ndata()
        for dev in self.catalogue.devices:
            writer = self._writer_of(dev.source)
            live = writer is not None and s.of(dev.source) is not None
            if live and dev.id not in self.born:
                self._dbirth(dev, writer)
            elif live and self._born_of[dev.id] != writer:
                # the source's process was replaced faster than its segment could look stale (a
                # preloaded standby takes the segment over within one heartbeat window): the device
                # a host knew is gone all the same; it is born again from the new process next scan
                self._ddeath(dev, "its source module was restarted")
            elif live:
                self._ddata(dev)
            elif dev.id in self.born:
                self._ddeath(dev, "its source is not live")

    def _writer_of(self, source: Source) -> Any:
        """Which process writes `source`: the watchdog's pid of the module while it is running; None
        while it is not; a constant for a bridge without a watchdog (only the segment says then)."""
        entry = (self.samples.modules or {}).get(source.value)
        if entry is None:
            return _NO_WATCHDOG
        return entry.get("pid") if entry.get("state") == "running" else None

    def _start_session(self) -> None:
        backend = self.connector.backend
        self.session = None if backend is None else backend.session_bdseq
        self.node_born = False
        self._rebirth = False
        self.born.clear()
        self._last.clear()
        self.primary_online = self.primary is None
        log.info("Sparkplug session bdSeq=%s%s", self.session,
                 f"; births wait for primary host {self.primary!r}" if self.primary else "")

    def _publish_health(self) -> None:
        """health/sparkplug in the JSON tree: the session's link, births and counters (sent on change)."""
        self._health_dirty.clear()
        state = self.connector.health
        backend = self.connector.backend
        body: dict[str, Any] = {
            "connector": self.name,
            "state": health_name(state),
            "reason": getattr(state, "reason", None),
            "events": self._history.as_list(),
            "sparkplug": {
                "node": self.ns.node_topic("NBIRTH"),
                "bdseq": self.session,
                "primary_host": self.primary,
                "primary_online": self.primary_online,
                "node_born": self.node_born,
                "devices_born": sorted(self.born),
                # counters that move with every data message stay out: this body changes only on events
                **{k: v for k, v in dataclasses.asdict(self.stats).items() if k not in ("ndata", "ddata")},
            },
        }
        if backend is not None:
            st = backend.stats
            body["link"] = {"attempts": st.attempts, "connects": st.connects, "failures": st.failures,
                            "last_failure": st.last_failure or None}
        # on change only; a body that could not be sent stays "changed" and goes with the next tick
        self._publisher.publish(self._health_topic, body, retained=True)

    # --- sending ---
    def _send(self, frame: Frame) -> bool:
        try:
            self._frames.send(frame)
        except BackPressure:
            self.stats.backpressure += 1
            return False
        except NotConnected:
            return False
        except CodecError as exc:
            self.stats.codec_errors += 1
            log.error("cannot send %s: %s", frame.topic, exc)
            return False
        return True

    def _emit(self, topic: str, payload: pb.Payload) -> bool:
        """Send a message carrying the next seq; the seq is used up only if the message went out."""
        assert self.session is not None
        payload.seq = self.seq
        if not self._send(Frame(self.session, topic, payload.SerializeToString())):
            return False
        self.seq = (self.seq + 1) % 256
        return True

    def _nbirth(self) -> bool:
        assert self.session is not None
        s = self.samples
        names = frozenset(s.modules) | self._module_names if self.node_born else frozenset(s.modules)
        specs = self.catalogue.node + self.catalogue.module_metrics(names)
        ts = now_ms()
        p = new_payload(None, ts)
        bdseq_metric(p, self.session, ts)
        p.metrics.add(name=REBIRTH, alias=self.catalogue.rebirth_alias, timestamp=ts, datatype=pb.Boolean,
                      boolean_value=False)
        values = {}
        for spec in specs:
            v = spec.value(s)
            add_birth_metric(p, spec, v, ts)
            values[spec.alias] = v
        self.seq = 0  # NBIRTH always carries seq 0 (Sparkplug 3.0, 6.4.18)
        if not self._emit(self.ns.node_topic("NBIRTH"), p):
            return False
        self._node_specs = specs
        self._module_names = names
        self._last.clear()
        self._last.update(values)
        self.node_born = True
        self._rebirth = False
        self.born.clear()  # every device is born again after an NBIRTH
        self.stats.nbirths += 1
        return True

    def _changes(self, specs: tuple[MetricSpec, ...]) -> list[tuple[MetricSpec, Any]]:
        out = []
        last = self._last
        s = self.samples
        for spec in specs:
            v = spec.value(s)
            old = last.get(spec.alias, _UNSET)
            if old is _UNSET or (v is None) != (old is None):
                out.append((spec, v))
            elif v is not None and (abs(v - old) > spec.deadband if spec.deadband > 0.0 else v != old):
                out.append((spec, v))
        return out

    def _ndata(self) -> None:
        changes = self._changes(self._node_specs)
        if changes and self._emit(self.ns.node_topic("NDATA"), self._data_payload(changes)):
            self._remember(changes)
            self.stats.ndata += 1

    def _ddata(self, dev: DeviceSpec) -> None:
        changes = self._changes(dev.metrics)
        if changes and self._emit(self.ns.device_topic("DDATA", dev.id), self._data_payload(changes)):
            self._remember(changes)
            self.stats.ddata += 1

    def _data_payload(self, changes: list[tuple[MetricSpec, Any]]) -> pb.Payload:
        ts = now_ms()
        p = new_payload(None, ts)
        for spec, v in changes:
            add_data_metric(p, spec, v, ts)
        return p

    def _remember(self, changes: list[tuple[MetricSpec, Any]]) -> None:
        for spec, v in changes:
            self._last[spec.alias] = v  # a deadband compares with the value last REPORTED

    def _dbirth(self, dev: DeviceSpec, writer: Any) -> None:
        ts = now_ms()
        p = new_payload(None, ts)
        values = []
        for spec in dev.metrics:
            v = spec.value(self.samples)
            add_birth_metric(p, spec, v, ts)
            values.append((spec, v))
        if self._emit(self.ns.device_topic("DBIRTH", dev.id), p):
            self._remember(values)
            self.born.add(dev.id)
            self._born_of[dev.id] = writer
            self.stats.dbirths += 1

    def _ddeath(self, dev: DeviceSpec, why: str) -> None:
        if self._emit(self.ns.device_topic("DDEATH", dev.id), new_payload(None, now_ms())):
            self.born.discard(dev.id)
            self.stats.ddeaths += 1
            log.info("Sparkplug device %s dead: %s (%s)", dev.id, why, dev.source.value)

    # --- inbound: commands and the primary host's STATE ---
    def _take_commands(self) -> None:
        for reader, handle in ((self._ncmd, self._on_ncmd), (self._dcmd, self._on_dcmd), (self._state, self._on_state)):
            if reader is None:
                continue
            for _ in range(COMMAND_BURST):
                msg = reader.try_recv()
                if msg is None:
                    break
                handle(msg.key or "", bytes(msg.value))

    def _refuse(self, kind: str, topic: str, what: str) -> None:
        self.stats.refused += 1
        if self.stats.refused > LOGGED_REFUSALS and self.stats.refused % 100:
            return
        log.warning("refused %s on %s (%s): the bridge is read-only, commands go through gRPC (%d refused so far)",
                    kind, topic, what, self.stats.refused)

    def _on_ncmd(self, topic: str, data: bytes) -> None:
        try:
            metrics = read_command(data)
        except ValueError as exc:
            self._refuse("NCMD", topic, str(exc))
            return
        alias = self.catalogue.rebirth_alias
        rebirth = [m for m in metrics if m.name == REBIRTH or (m.name is None and m.alias == alias)]
        others = [m for m in metrics if m not in rebirth]
        if any(m.value is True for m in rebirth):
            self._rebirth = True
            self.stats.rebirths += 1
            log.info("Rebirth requested on %s: NBIRTH and every DBIRTH follow", topic)
        elif rebirth:
            others += rebirth  # Rebirth=false asks for nothing we do
        if others or not metrics:
            self._refuse("NCMD", topic, metric_names(others) or "no metrics")

    def _on_dcmd(self, topic: str, data: bytes) -> None:
        try:
            what = metric_names(read_command(data)) or "no metrics"
        except ValueError as exc:
            what = str(exc)
        self._refuse("DCMD", topic, what)

    def _on_state(self, topic: str, data: bytes) -> None:
        try:
            body = json.loads(data)
            online = body["online"]
            ts = int(body.get("timestamp", 0))
            if not isinstance(online, bool):
                raise ValueError("'online' is not a boolean")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed STATE message on %s: %s", topic, exc)
            return
        if ts < self._primary_ts:  # Sparkplug 3.0: an older STATE than the last one is stale
            return
        self._primary_ts = ts
        if online and not self.primary_online:
            log.info("primary host %r is online: births go out", self.primary)
            self.primary_online = True
        elif not online and self.primary_online:
            self.primary_online = False
            if self.node_born and self.session is not None:
                # Sparkplug 3.0 (5.9): NDEATH, disconnect, and wait for the host in a new session
                log.warning("primary host %r went offline: NDEATH and a new session", self.primary)
                self._send(Frame(self.session, self.ns.node_topic("NDEATH"), ndeath(self.session), qos=1,
                                 flags=END_SESSION))
                self.node_born = False
            else:
                log.info("primary host %r is offline: births wait for it", self.primary)
