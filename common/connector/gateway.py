"""The gateway: one thread owning a protocol session and moving envelopes across the bridges.

Runs in-process (a thread next to the application) or as its own process over iceoryx2.
"""
from __future__ import annotations

import abc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from common.connector import envelope
from common.connector.channel import ChannelDescriptor, ChannelHooks, frame_keyed
from common.connector.errors import ConfigurationError, EnvelopeError, PayloadTooLarge
from common.connector.health import (
    Down,
    DroppedInbound,
    EnvelopeDiscarded,
    HealthEvent,
    HealthMonitor,
    health_from_dict,
    health_to_dict,
    is_connected,
)
from common.connector.iceoryx2_transport import Iceoryx2Transport
from common.connector.routing import Direction, routing_from_dict, routing_to_dict
from common.connector.transport import EnvelopeReceiver, EnvelopeSender, Transport, Waker

__all__ = [
    "ChannelSpec",
    "Gateway",
    "GatewayProcess",
    "GatewaySpec",
    "HealthForwarder",
    "HealthMirror",
    "Iceoryx2Transport",
    "InboundBinding",
    "OutboundBinding",
    "ProtocolBackend",
    "register_backend",
    "run_gateway_process",
    "spawn_gateway_process",
]

OUTBOUND_BUDGET = 256  # envelopes drained per channel per loop pass, so no channel starves others
IDLE_TICK_S = 0.5  # the loop runs at least this often (timers, cross-process retries)
HEALTH_SLOT = 1024
HEALTH_CAPACITY = 64
HEALTH_REPEAT_S = 1.0  # a process gateway re-announces its state so late readers catch up


def wake_group(connector: str) -> str:
    """Event service every outbound bridge of `connector` notifies (the gateway listens)."""
    return f"{connector}/gateway.wake"


def health_service(connector: str) -> str:
    return f"{connector}/health"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel as the gateway needs it: descriptor, direction and bridge capacity."""

    descriptor: ChannelDescriptor
    direction: Direction
    capacity: int

    def service(self, connector: str) -> str:
        return self.descriptor.service(connector, self.direction)

    def to_dict(self) -> dict[str, Any]:
        d = self.descriptor
        return {
            "name": d.name,
            "routing": routing_to_dict(d.routing),
            "max_payload": d.max_payload,
            "direction": self.direction.value,
            "capacity": self.capacity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChannelSpec":
        desc = ChannelDescriptor(data["name"], routing_from_dict(data["routing"]), int(data["max_payload"]))
        return cls(desc, Direction(data["direction"]), int(data["capacity"]))


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """Everything a separate gateway process needs; shared by both sides as JSON."""

    kind: str
    connector: str
    prefix: str
    options: dict[str, Any]
    channels: tuple[ChannelSpec, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "connector": self.connector,
                "prefix": self.prefix,
                "options": self.options,
                "channels": [c.to_dict() for c in self.channels],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "GatewaySpec":
        data = json.loads(text)
        channels = tuple(ChannelSpec.from_dict(c) for c in data["channels"])
        return cls(data["kind"], data["connector"], data["prefix"], data["options"], channels)


class OutboundBinding:
    """Gateway end of an application -> protocol bridge."""

    def __init__(self, spec: ChannelSpec, receiver: EnvelopeReceiver) -> None:
        self.spec = spec
        self.receiver = receiver
        self.routing = spec.descriptor.routing
        self.name = spec.descriptor.name
        self.handle: Any = None  # backend-owned (e.g. a declared Zenoh publisher)
        self.sent = 0
        self.discarded_down = 0  # drained while not connected (no durable outbox)


class InboundBinding:
    """Gateway end of a protocol -> application bridge; `deliver` is thread-safe."""

    def __init__(self, spec: ChannelSpec, sender: EnvelopeSender) -> None:
        self.spec = spec
        self.sender = sender
        self.routing = spec.descriptor.routing
        self.name = spec.descriptor.name
        self._limit = spec.descriptor.max_payload
        self._lock = threading.Lock()
        self._sequence = 0
        self.handle: Any = None
        self.pending = 0  # messages withheld for this channel (protocol flow control)
        self.delivered = 0
        self.unattached = 0  # arrived while no reader was attached
        self._dropped = 0  # since the last DroppedInbound event
        self.dropped_total = 0

    def deliver(self, key: str, data: bytes | memoryview) -> bool:
        """Put one inbound message into the bridge; False if the bridge is full."""
        with self._lock:
            if not self.sender.connected():
                self.unattached += 1
                return True
            slot = self.sender.loan()
            if slot is None:
                return False
            try:
                n = frame_keyed(envelope.payload_area(slot)[: self._limit], key.encode("utf-8"), data)
            except PayloadTooLarge:
                self.sender.abort()
                self._dropped += 1
                self.dropped_total += 1
                return True
            length = envelope.seal(slot, sequence=self._sequence + 1, timestamp_ns=time.time_ns(), payload_len=n)
            if not self.sender.commit(length):
                return False
            self._sequence += 1
            self.delivered += 1
            return True

    def count_drop(self, n: int = 1) -> None:
        with self._lock:
            self._dropped += n
            self.dropped_total += n

    def take_drops(self) -> int:
        with self._lock:
            n, self._dropped = self._dropped, 0
            return n


class ProtocolBackend(abc.ABC):
    """The protocol half of a gateway; every method runs on the gateway thread unless noted."""

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    def bind(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    @property
    def monitor(self) -> HealthMonitor:
        assert self.gateway is not None
        return self.gateway.monitor

    @abc.abstractmethod
    def open(self) -> None:
        """Start the session (or its first connection attempt)."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session cleanly."""

    def poll(self, timeout: float) -> None:
        """Block for protocol I/O or a gateway wake-up, at most `timeout` seconds."""
        assert self.gateway is not None
        self.gateway.waker.wait(timeout)

    def service(self) -> float | None:
        """Timers and deferred work; returns seconds until it next needs to run (None: idle)."""
        return None

    @abc.abstractmethod
    def publish(self, binding: OutboundBinding, payload: memoryview) -> bool:
        """Send one payload (copy it; the view dies after return); False: cannot take it now."""

    def add_outbound(self, binding: OutboundBinding) -> None:
        """A new outbound channel (e.g. declare a publisher)."""

    def add_inbound(self, binding: InboundBinding) -> None:
        """A new inbound channel (e.g. subscribe)."""


class Gateway:
    """Owns the backend and the gateway ends of every bridge; one loop thread does all I/O."""

    def __init__(self, connector: str, backend: ProtocolBackend, monitor: HealthMonitor, transport: Transport) -> None:
        self.connector = connector
        self.backend = backend
        self.monitor = monitor
        self.transport = transport
        self.waker = Waker()
        self.hooks = ChannelHooks(monitor)
        self.outbound: list[OutboundBinding] = []
        self.inbound: list[InboundBinding] = []
        self._new: list[OutboundBinding | InboundBinding] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self.error: BaseException | None = None
        backend.bind(self)

    # --- channels (any thread) ---
    def add_channel(self, spec: ChannelSpec) -> OutboundBinding | InboundBinding:
        """Open the gateway end of a channel's bridge; the loop adopts it on its next pass."""
        service = spec.service(self.connector)
        size = spec.descriptor.slot_size
        binding: OutboundBinding | InboundBinding
        if spec.direction is Direction.OUTBOUND:
            receiver = self.transport.open_receiver(service, spec.capacity, size, wake_group(self.connector))
            binding = OutboundBinding(spec, receiver)
        else:
            sender = self.transport.open_sender(service, spec.capacity, size, f"{service}.ev")
            binding = InboundBinding(spec, sender)
        with self._lock:
            self._new.append(binding)
        self.waker.wake()
        return binding

    @property
    def adopting(self) -> bool:
        """True while some added channel is not yet wired into the loop."""
        return bool(self._new)

    def _adopt(self) -> None:
        with self._lock:
            new, self._new = self._new, []
        for b in new:
            if isinstance(b, OutboundBinding):
                self.outbound.append(b)
                self.backend.add_outbound(b)
                b.receiver.attach_waker(self.waker)
            else:
                self.inbound.append(b)
                b.sender.attach_space_waker(self.waker)
                self.backend.add_inbound(b)

    # --- lifecycle ---
    def start(self) -> None:
        """Run the loop on a daemon thread (the in-process deployment)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"gateway:{self.connector}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.waker.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._running

    def run(self) -> None:
        """The gateway loop; returns after `stop()`. Protocol errors propagate (no recovery here)."""
        self._running = True
        try:
            self._adopt()
            self.backend.open()
            while not self._stop.is_set():
                self._adopt()
                due = self.backend.service()
                more = self._drain_outbound()
                self._flush_drops()
                wait = IDLE_TICK_S if due is None else max(0.0, min(due, IDLE_TICK_S))
                if more:
                    wait = min(wait, 0.005)  # the backend refused some: retry soon, not hot
                self.backend.poll(wait)
            self._adopt()
            self._drain_outbound()  # what was sent before stop() still goes out (best effort)
            self.backend.poll(0.0)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._running = False
            try:
                self.backend.close()
            finally:
                link = self.monitor.link
                if not isinstance(link, Down):
                    self.monitor.set_link(Down("stopped", self.monitor.now_ns()))

    def _drain_outbound(self) -> bool:
        """Move envelopes to the protocol; True if some were left because the backend was full."""
        left = False
        connected = is_connected(self.monitor.link)
        for b in self.outbound:
            for _ in range(OUTBOUND_BUDGET):
                view = b.receiver.peek()
                if view is None:
                    self.hooks.backpressure(b.name, False)  # the bridge emptied: room again
                    break
                try:
                    _header, payload = envelope.decode(view)
                except EnvelopeError as exc:
                    b.receiver.release()
                    self.hooks.discarded(b.name, str(exc))
                    continue
                if not connected:
                    b.discarded_down += 1
                    b.receiver.release()
                    continue
                if not self.backend.publish(b, payload):
                    left = True
                    break
                b.sent += 1
                b.receiver.release()
            else:
                left = True
        return left

    def _flush_drops(self) -> None:
        for b in self.inbound:
            n = b.take_drops()
            if n:
                self.hooks.dropped(b.name, n)


# --- health across the process boundary -------------------------------------------------------


def _event_to_dict(event: Any) -> dict[str, Any] | None:
    if isinstance(event, HealthEvent):
        return {"type": "health", "current": health_to_dict(event.current), "at_ns": event.at_ns}
    if isinstance(event, DroppedInbound):
        return {"type": "dropped", "channel": event.channel, "count": event.count, "at_ns": event.at_ns}
    if isinstance(event, EnvelopeDiscarded):
        return {"type": "discarded", "channel": event.channel, "reason": event.reason, "at_ns": event.at_ns}
    return None


class HealthForwarder:
    """Gateway-process side: publishes health events (and the state, repeatedly) over iceoryx2."""

    def __init__(self, monitor: HealthMonitor, transport: Iceoryx2Transport) -> None:
        self._monitor = monitor
        service = health_service(monitor.connector)
        self._sender = transport.open_sender(service, HEALTH_CAPACITY, HEALTH_SLOT, f"{service}.ev")
        self._lock = threading.Lock()
        self._seq = 0
        monitor.add_listener(self._on_event)

    def _on_event(self, event: Any) -> None:
        data = _event_to_dict(event)
        if data is not None:
            self._send(data)

    def announce(self) -> None:
        self._send({"type": "state", "current": health_to_dict(self._monitor.state), "at_ns": time.time_ns()})

    def _send(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        with self._lock:
            slot = self._sender.loan()
            if slot is None:
                return
            self._seq += 1
            n = envelope.encode(slot, payload, sequence=self._seq, timestamp_ns=time.time_ns())
            self._sender.commit(n)

    def close(self) -> None:
        self._monitor.remove_listener(self._on_event)
        self._sender.close()


class HealthMirror:
    """Application side of a process gateway: replays its health into the local monitor."""

    def __init__(self, monitor: HealthMonitor, transport: Iceoryx2Transport) -> None:
        self._monitor = monitor
        service = health_service(monitor.connector)
        self._receiver = transport.open_receiver(service, HEALTH_CAPACITY, HEALTH_SLOT, f"{service}.ev")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"health-mirror:{monitor.connector}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._receiver.wait(0.2)
            while (view := self._receiver.peek()) is not None:
                try:
                    _h, payload = envelope.decode(view)
                    data = json.loads(bytes(payload))
                except (EnvelopeError, ValueError):
                    data = None
                self._receiver.release()
                if data is not None:
                    self._apply(data)

    def _apply(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind in ("health", "state"):
            self._monitor.set_link(health_from_dict(data["current"]), force=True)
        elif kind == "dropped":
            connector = self._monitor.connector
            self._monitor.emit(DroppedInbound(connector, data["channel"], int(data["count"]), int(data["at_ns"])))
        elif kind == "discarded":
            connector = self._monitor.connector
            self._monitor.emit(EnvelopeDiscarded(connector, data["channel"], data["reason"], int(data["at_ns"])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._receiver.close()


# --- the separate-process deployment ----------------------------------------------------------


def _mqtt_backend(options: dict[str, Any]) -> ProtocolBackend:
    from common.connector.mqtt import MqttBackend, MqttOptions

    return MqttBackend(MqttOptions.from_dict(options))


def _zenoh_backend(options: dict[str, Any]) -> ProtocolBackend:
    from common.connector.zenoh import ZenohBackend, ZenohOptions

    return ZenohBackend(ZenohOptions.from_dict(options))


def _can_backend(options: dict[str, Any]) -> ProtocolBackend:
    from common.connector.can import backend_from_options

    return backend_from_options(options)


BackendFactory = Callable[[dict[str, Any]], ProtocolBackend]
#: gateway kind -> factory(options) (each imports its protocol library lazily: only the one in use loads).
#: Third-party backends register here, or through the `evo.connector_backends` entry-point group.
_BACKENDS: dict[str, BackendFactory] = {"mqtt": _mqtt_backend, "zenoh": _zenoh_backend, "can": _can_backend}
ENTRY_POINT_GROUP = "evo.connector_backends"


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Add a gateway kind (a plug-in's protocol backend): `factory(options_dict) -> ProtocolBackend`."""
    _BACKENDS[kind] = factory


def known_backends() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS))


def backend_for(spec: GatewaySpec) -> ProtocolBackend:
    """Build the protocol backend a spec names, from the registry (then the entry points)."""
    factory = _BACKENDS.get(spec.kind)
    if factory is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec.kind:
                factory = _BACKENDS[spec.kind] = ep.load()
                break
    if factory is None:
        raise ConfigurationError(f"unknown gateway kind {spec.kind!r}; known: {', '.join(known_backends())}")
    return factory(spec.options)


def run_gateway_process(spec: GatewaySpec) -> int:
    """Main of a gateway process: serve `spec` over iceoryx2 until SIGINT/SIGTERM; exit code."""
    transport = Iceoryx2Transport(spec.prefix)
    monitor = HealthMonitor(spec.connector)
    gateway = Gateway(spec.connector, backend_for(spec), monitor, transport)
    forwarder = HealthForwarder(monitor, transport)
    for ch in spec.channels:
        gateway.add_channel(ch)

    def _on_signal(signum: int, _frame: Any) -> None:
        gateway.stop(timeout=0)

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_announce = threading.Event()

    def _announce() -> None:
        while not stop_announce.wait(HEALTH_REPEAT_S):
            forwarder.announce()

    announcer = threading.Thread(target=_announce, name="health-announce", daemon=True)
    announcer.start()
    try:
        gateway.run()
    finally:
        stop_announce.set()
        announcer.join(timeout=2.0)
        forwarder.close()
        transport.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


class GatewayProcess:
    """Handle on a spawned gateway process."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def spawn_gateway_process(spec: GatewaySpec, *, env: dict[str, str] | None = None, **popen_kw: Any) -> GatewayProcess:
    """Start `python -m common.connector gateway` serving `spec`."""
    args = [sys.executable, "-m", "common.connector", "gateway", "--spec-json", spec.to_json()]
    full_env = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    return GatewayProcess(subprocess.Popen(args, env=full_env, **popen_kw))
