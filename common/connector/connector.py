"""The `Connector` base: lifecycle, health and the writer()/reader() factories.

Subclasses supply the protocol backend; the gateway runs in-process or in its own process.
"""
from __future__ import annotations

import abc
import enum
import signal
import threading
from typing import Any, ClassVar, Iterable

from common.connector.channel import (
    DEFAULT_MAX_PAYLOAD,
    ChannelDescriptor,
    ChannelHooks,
    ChannelReader,
    ChannelWriter,
    connected_gate,
)
from common.connector.codec import JsonCodec, PayloadCodec
from common.connector.errors import ConfigurationError
from common.connector.gateway import (
    ChannelSpec,
    Gateway,
    GatewayProcess,
    GatewaySpec,
    HealthMirror,
    ProtocolBackend,
    spawn_gateway_process,
    wake_group,
)
from common.connector.health import ConnectorHealth, HealthMonitor, HealthSubscription, Listener
from common.connector.iceoryx2_transport import Iceoryx2Transport
from common.connector.routing import Direction, Routing, validate_for
from common.connector.transport import InProcessTransport, Transport


class GatewayMode(enum.Enum):
    IN_PROCESS = "in_process"  # the gateway is a thread of this process
    PROCESS = "process"  # the gateway is its own process; bridges are iceoryx2 services


class Connector(abc.ABC):
    """Base of every protocol connector.

    Usable as a context manager (`start` on enter, `stop` on exit). Channels may be created
    before or after `start`; in PROCESS mode they must all exist before `spawn_gateway`.
    """

    kind: ClassVar[str] = ""
    routing_type: ClassVar[type[Routing]] = Routing

    def __init__(
        self,
        name: str,
        *,
        codec: PayloadCodec | None = None,
        mode: GatewayMode = GatewayMode.IN_PROCESS,
        prefix: str = "evo",
        transport: Transport | None = None,
        outbound_capacity: int = 64,
        inbound_capacity: int = 64,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if not name or "/" in name:
            raise ConfigurationError("connector name must be non-empty and contain no '/'")
        if outbound_capacity < 1 or inbound_capacity < 1:
            raise ConfigurationError("bridge capacities must be >= 1")
        self.name = name
        self.mode = mode
        self.prefix = prefix
        self.codec: PayloadCodec = codec if codec is not None else JsonCodec()
        self.outbound_capacity = outbound_capacity
        self.inbound_capacity = inbound_capacity
        self.max_payload = max_payload
        self.monitor = HealthMonitor(name)
        if transport is None:
            transport = InProcessTransport() if mode is GatewayMode.IN_PROCESS else Iceoryx2Transport(prefix)
        self.transport = transport
        self._hooks = ChannelHooks(self.monitor, connected_gate(self.monitor))
        self._channels: dict[tuple[Direction, str], ChannelSpec] = {}
        self._handles: list[ChannelWriter | ChannelReader] = []
        self._lock = threading.Lock()
        self._started = False
        self._mirror: HealthMirror | None = None
        self.gateway: Gateway | None = None
        if mode is GatewayMode.IN_PROCESS:
            self.gateway = Gateway(name, self.make_backend(), self.monitor, transport)

    # --- subclass surface ---
    @abc.abstractmethod
    def make_backend(self) -> ProtocolBackend:
        """The protocol backend the gateway drives."""

    @abc.abstractmethod
    def options_dict(self) -> dict[str, Any]:
        """Serialisable options, for a separate gateway process."""

    def default_channel_name(self, routing: Routing) -> str:
        return repr(routing)

    # --- health ---
    @property
    def health(self) -> ConnectorHealth:
        return self.monitor.state

    def subscribe_health(self, maxlen: int = 1024) -> HealthSubscription:
        """A queue of every HealthEvent / DroppedInbound / EnvelopeDiscarded from now on."""
        return self.monitor.subscribe(maxlen)

    def add_health_listener(self, fn: Listener) -> None:
        """Call `fn(event)` on every event (on the thread that caused it; keep it short)."""
        self.monitor.add_listener(fn)

    # --- channels ---
    def _declare(
        self, routing: Routing, direction: Direction, name: str | None, max_payload: int | None, capacity: int | None
    ) -> ChannelSpec:
        if not isinstance(routing, self.routing_type):
            wanted, got = self.routing_type.__name__, type(routing).__name__
            raise ConfigurationError(f"{type(self).__name__} needs {wanted}, got {got}")
        validate_for(routing, direction)
        desc = ChannelDescriptor(name or self.default_channel_name(routing), routing, max_payload or self.max_payload)
        default_cap = self.outbound_capacity if direction is Direction.OUTBOUND else self.inbound_capacity
        spec = ChannelSpec(desc, direction, capacity or default_cap)
        with self._lock:
            if (direction, desc.name) in self._channels:
                raise ConfigurationError(f"{self.name}: {direction.value} channel {desc.name!r} already exists")
            if self.mode is GatewayMode.PROCESS and self._started:
                raise ConfigurationError("in PROCESS mode every channel must exist before the gateway starts")
            self._channels[(direction, desc.name)] = spec
        return spec

    def writer(
        self,
        routing: Routing,
        *,
        name: str | None = None,
        max_payload: int | None = None,
        capacity: int | None = None,
        codec: PayloadCodec | None = None,
    ) -> ChannelWriter:
        """A send-only handle publishing to `routing`."""
        spec = self._declare(routing, Direction.OUTBOUND, name, max_payload, capacity)
        service = spec.service(self.name)
        if self.gateway is not None:
            self.gateway.add_channel(spec)  # the receiving end first, so the sender sees it attached
        sender = self.transport.open_sender(service, spec.capacity, spec.descriptor.slot_size, wake_group(self.name))
        w: ChannelWriter = ChannelWriter(spec.descriptor, sender, codec or self.codec, self._hooks)
        self._handles.append(w)
        return w

    def reader(
        self,
        routing: Routing,
        *,
        name: str | None = None,
        max_payload: int | None = None,
        capacity: int | None = None,
        codec: PayloadCodec | None = None,
    ) -> ChannelReader:
        """A receive-only handle for messages matching `routing` (wildcards allowed)."""
        spec = self._declare(routing, Direction.INBOUND, name, max_payload, capacity)
        service = spec.service(self.name)
        receiver = self.transport.open_receiver(service, spec.capacity, spec.descriptor.slot_size, f"{service}.ev")
        if self.gateway is not None:
            self.gateway.add_channel(spec)
        r: ChannelReader = ChannelReader(spec.descriptor, receiver, codec or self.codec, self._hooks, keyed=True)
        self._handles.append(r)
        return r

    def channels(self) -> list[ChannelSpec]:
        with self._lock:
            return list(self._channels.values())

    # --- separate gateway process ---
    def gateway_spec(self) -> GatewaySpec:
        return GatewaySpec(self.kind, self.name, self.prefix, self.options_dict(), tuple(self.channels()))

    def spawn_gateway(self, **popen_kw: Any) -> GatewayProcess:
        """Start the gateway process for the channels declared so far (PROCESS mode)."""
        if self.mode is not GatewayMode.PROCESS:
            raise ConfigurationError("spawn_gateway needs GatewayMode.PROCESS")
        return spawn_gateway_process(self.gateway_spec(), **popen_kw)

    # --- lifecycle ---
    def start(self) -> "Connector":
        with self._lock:
            if self._started:
                return self
            self._started = True
        if self.gateway is not None:
            self.gateway.start()
        elif isinstance(self.transport, Iceoryx2Transport):
            self._mirror = HealthMirror(self.monitor, self.transport)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the gateway (or the health mirror), close every handle; health ends Down."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        if self.gateway is not None:
            self.gateway.stop(timeout)
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
        for h in self._handles:
            h.close()

    @property
    def started(self) -> bool:
        return self._started

    def __enter__(self) -> "Connector":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SignalStop:
    """Returned by `install_signal_stop`: the event set on SIGINT/SIGTERM, and `restore()`."""

    def __init__(self, connectors: list[Connector], signals: Iterable[int]) -> None:
        self.connectors = connectors
        self.event = threading.Event()
        self.stopped = threading.Event()  # set once every connector has stopped
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        for s in signals:
            self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():
            return
        self.signum = signum
        self.event.set()
        # stop on another thread: the interrupted main thread may hold locks stop() needs
        threading.Thread(target=self._stop_all, name="signal-stop", daemon=True).start()

    def _stop_all(self) -> None:
        try:
            for c in self.connectors:
                c.stop()
        finally:
            self.stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a signal arrived and every connector stopped."""
        return self.event.wait(timeout) and self.stopped.wait(timeout)

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


def install_signal_stop(
    connectors: Iterable[Connector], signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
) -> SignalStop:
    """Stop every connector cleanly on SIGINT/SIGTERM (call from the main thread)."""
    return SignalStop(list(connectors), signals)

