"""CAN connector on python-can (taktora FEAT_0046-0049): raw classical / FD frames on one or more interfaces.

A byte-only gateway: outbound payloads are the codec's bytes, inbound frame data goes undecoded to every matching reader.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import can

from common.connector.connector import Connector
from common.connector.errors import ConfigurationError
from common.connector.gateway import InboundBinding, OutboundBinding, ProtocolBackend
from common.connector.health import Connecting, Degraded, Down, Up
from common.connector.reconnect import BackoffSettings
from common.connector.routing import CAN_FD_BRS, CAN_FD_ESI, CanFrameKind, Direction, Routing, CanRouting

__all__ = ["CanInterface", "CanOptions", "CanBackend", "CanConnector", "frame_key", "payload_limit",
           "backend_from_options"]

CLASSIC_MAX = 8
FD_MAX = 64
KEY_OVERHEAD = 2 + 16  # inbound bridge slots carry [u16 len][key] before the frame data
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
# SocketCAN error-frame classes (linux/can/error.h): arbitration id bits and controller status in data[1]
CAN_ERR_CRTL = 0x004
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
CAN_ERR_CRTL_WARNING = 0x04 | 0x08  # rx / tx error warning
CAN_ERR_CRTL_PASSIVE = 0x10 | 0x20  # rx / tx error passive
CAN_ERR_CRTL_ACTIVE = 0x40  # back to error active
RECV_POLL_S = 0.2  # a reader thread notices stop() at least this often
QUIET_RECOVER_S = 2.0
NOTHING = [{"can_id": 0, "can_mask": 0x1FFFFFFF, "extended": True}]  # no reader yet: only ext id 0 passes  # error-passive/warning clears after this long without another error frame


def payload_limit(kind: CanFrameKind) -> int:
    """REQ_0612: a channel's payload ceiling follows its frame kind (8 bytes classical, 64 FD)."""
    return FD_MAX if kind is CanFrameKind.FD else CLASSIC_MAX


def frame_key(can_id: int, extended: bool) -> str:
    """The key an inbound message carries: `std:0x123` or `ext:0x1ABCDEF0`."""
    return f"ext:0x{can_id:08X}" if extended else f"std:0x{can_id:03X}"


@dataclass(frozen=True, slots=True)
class CanInterface:
    """One interface the gateway owns: the routing's `iface` name -> a python-can bus."""

    interface: str = "socketcan"  # python-can interface
    channel: str = "can0"
    fd: bool = False
    bitrate: int | None = None  # adapters that set it (socketcan takes it from `ip link`)
    data_bitrate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other python-can bus arguments

    def open_bus(self) -> can.BusABC:
        kw: dict[str, Any] = {"interface": self.interface, "channel": self.channel, "receive_own_messages": False,
                              **self.extra}
        if self.fd:
            kw["fd"] = True
        if self.bitrate is not None:
            kw["bitrate"] = self.bitrate
        if self.data_bitrate is not None:
            kw["data_bitrate"] = self.data_bitrate
        return can.Bus(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {"interface": self.interface, "channel": self.channel, "fd": self.fd, "bitrate": self.bitrate,
                "data_bitrate": self.data_bitrate, "extra": dict(self.extra)}


@dataclass(frozen=True, slots=True)
class CanOptions:
    """The gateway's interfaces (REQ_0620) and its reconnect policy (REQ_0634)."""

    ifaces: dict[str, CanInterface]
    reconnect: BackoffSettings = BackoffSettings()

    def __post_init__(self) -> None:
        if not self.ifaces:
            raise ConfigurationError("CAN connector needs at least one interface")
        for name in self.ifaces:
            if not name or len(name) > 15:
                raise ConfigurationError(f"CAN iface name {name!r} must be 1..15 characters")

    def to_dict(self) -> dict[str, Any]:
        r = self.reconnect
        return {"ifaces": {k: v.to_dict() for k, v in self.ifaces.items()},
                "reconnect": {"initial": r.initial, "max": r.max, "factor": r.factor, "jitter": r.jitter}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CanOptions":
        return cls({k: CanInterface(**v) for k, v in data["ifaces"].items()}, BackoffSettings(**data["reconnect"]))


def backend_from_options(options: dict[str, Any]) -> "CanBackend":
    return CanBackend(CanOptions.from_dict(options))


class _Iface:
    """One owned interface: its bus, reader thread, routing table and health sub-state."""

    def __init__(self, name: str, cfg: CanInterface, backend: "CanBackend") -> None:
        self.name = name
        self.cfg = cfg
        self.backend = backend
        self.bus: can.BusABC | None = None
        self.lock = threading.Lock()
        self.readers: list[tuple[InboundBinding, int, int, bool, bool]] = []  # binding, id, mask, extended, fd
        self.state: Any = Down(f"{name}: not opened", time.time_ns())
        self.passive = ""  # error-passive / warning reason while it lasts
        self.last_error = 0.0
        self.policy = backend.options.reconnect.policy()
        self.thread: threading.Thread | None = None
        # udp_multicast hands a bus its own frames back; on CAN one id has one sender, so ours are echoes
        self.echoes = cfg.interface == "udp_multicast"
        self.own: frozenset[tuple[int, bool]] = frozenset()
        self.sent = 0
        self.received = 0
        self.error_frames = 0
        self.dropped_down = 0

    def filters(self) -> list[dict[str, Any]]:
        """REQ_0622: the union of every inbound channel's (id, mask, extended) on this interface."""
        seen: list[dict[str, Any]] = []
        for _b, can_id, mask, ext, _fd in self.readers:
            f = {"can_id": can_id, "can_mask": mask, "extended": ext}
            if f not in seen:
                seen.append(f)
        return seen

    def apply_filters(self) -> None:
        """On socketcan one CAN_RAW_FILTER setsockopt in the kernel (error frames pass it, CAN_RAW_ERR_FILTER);
        other interfaces filter in python-can's software, which would also drop error frames: there the
        demultiplexer's own match (the same semantics) is the filter."""
        bus = self.bus
        if bus is not None and self.cfg.interface == "socketcan":
            bus.set_filters(self.filters() or NOTHING)  # python-can reads an empty list as "everything"

    def run(self, stop: threading.Event) -> None:
        """Reader thread: open, receive, and on a bus failure close and reopen with back-off (REQ_0633)."""
        while not stop.is_set():
            if self.bus is None and not self._open(stop):
                continue
            try:
                msg = self.bus.recv(RECV_POLL_S) if self.bus is not None else None
            except (can.CanError, OSError, ValueError) as e:
                self._fail(f"{self.name}: receive failed: {e}")
                continue
            if msg is None:
                self._maybe_recover()
                continue
            if msg.is_error_frame:
                self._error_frame(msg)
                continue
            self.received += 1
            self._demux(msg)

    def _open(self, stop: threading.Event) -> bool:
        self.backend.set_iface(self, "connecting")
        try:
            bus = self.cfg.open_bus()
        except Exception as e:  # noqa: BLE001 - python-can raises CanError, OSError, ValueError, ImportError ...
            self.backend.set_iface(self, Down(f"{self.name}: cannot open {self.cfg.interface} "
                                              f"{self.cfg.channel!r}: {e}", time.time_ns()))
            stop.wait(self.policy.next_delay())
            return False
        with self.lock:
            self.bus = bus
            self.apply_filters()
        self.policy.reset()
        self.passive = ""
        self.backend.set_iface(self, Up())
        return True

    def _fail(self, reason: str) -> None:
        with self.lock:
            bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
        self.backend.set_iface(self, Down(reason, time.time_ns()))
        self.backend.stop_event.wait(self.policy.next_delay())

    def _error_frame(self, msg: can.Message) -> None:
        """REQ_0631-0633: error frames only drive health; bus-off closes and reopens the interface."""
        self.error_frames += 1
        self.last_error = time.monotonic()
        cls = msg.arbitration_id
        ctrl = msg.data[1] if len(msg.data) > 1 else 0
        if cls & CAN_ERR_BUSOFF:
            self._fail(f"{self.name}: bus-off")
        elif cls & CAN_ERR_RESTARTED or (cls & CAN_ERR_CRTL and ctrl & CAN_ERR_CRTL_ACTIVE):
            self._set_passive("")
        elif cls & CAN_ERR_CRTL and ctrl & CAN_ERR_CRTL_PASSIVE:
            self._set_passive(f"{self.name}: error passive")
        elif cls & CAN_ERR_CRTL and ctrl & CAN_ERR_CRTL_WARNING:
            self._set_passive(f"{self.name}: error warning")
        else:
            self._set_passive(f"{self.name}: bus errors (class 0x{cls:03X})")

    def _set_passive(self, reason: str) -> None:
        if reason != self.passive:
            self.passive = reason
            self.backend.set_iface(self, Degraded(reason) if reason else Up())

    def _maybe_recover(self) -> None:
        if self.passive and time.monotonic() - self.last_error > QUIET_RECOVER_S:
            self._set_passive("")

    def _demux(self, msg: can.Message) -> None:
        """REQ_0624: every reader whose (id, mask, extended, kind) matches gets its own copy of the bytes."""
        arb, ext, fd = msg.arbitration_id, msg.is_extended_id, msg.is_fd
        if self.echoes and (arb, ext) in self.own:
            return
        key = None
        data = bytes(msg.data)
        for binding, can_id, mask, r_ext, r_fd in self.readers:
            if r_ext is not ext or r_fd is not fd or (arb ^ can_id) & mask:
                continue
            if key is None:
                key = frame_key(arb, ext)
            if not binding.deliver(key, data):
                binding.count_drop()
                self.backend.wake()

    def send(self, msg: can.Message) -> bool | None:
        """True sent; False the bus cannot take it now (retry); None the interface is down (dropped)."""
        bus = self.bus
        if bus is None:
            self.dropped_down += 1
            return None
        try:
            bus.send(msg, timeout=0)
        except can.CanOperationError as e:
            if "buffer" in str(e).lower() or getattr(e, "error_code", None) == 105:  # ENOBUFS: tx queue full
                return False
            self._fail_async(f"{self.name}: send failed: {e}")
            return None
        except (can.CanError, OSError) as e:
            self._fail_async(f"{self.name}: send failed: {e}")
            return None
        self.sent += 1
        return True

    def _fail_async(self, reason: str) -> None:
        """A send failure on the gateway thread: mark it; the reader thread reopens."""
        with self.lock:
            bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001
                pass
        self.backend.set_iface(self, Down(reason, time.time_ns()))


class CanBackend(ProtocolBackend):
    """The gateway's CAN side: one python-can bus and reader thread per interface, writes on the gateway thread."""

    kind = "can"

    def __init__(self, options: CanOptions) -> None:
        super().__init__()
        self.options = options
        self.stop_event = threading.Event()
        self.ifaces = {name: _Iface(name, cfg, self) for name, cfg in options.ifaces.items()}
        self._health_lock = threading.Lock()

    def wake(self) -> None:
        if self.gateway is not None:
            self.gateway.waker.wake()

    def open(self) -> None:
        self.stop_event.clear()
        for it in self.ifaces.values():
            it.thread = threading.Thread(target=it.run, args=(self.stop_event,), name=f"can-rx:{it.name}", daemon=True)
            it.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        for it in self.ifaces.values():
            if it.thread is not None:
                it.thread.join(timeout=2.0)
                it.thread = None
            with it.lock:
                bus, it.bus = it.bus, None
            if bus is not None:
                bus.shutdown()

    def set_iface(self, it: _Iface, state: Any) -> None:
        """REQ_0630: the connector's health is the worst of its interfaces (Down only when all are down);
        every change of the aggregate is one HealthEvent (REQ_0635)."""
        with self._health_lock:
            it.state = Connecting(time.time_ns()) if state == "connecting" else state
            states = [i.state for i in self.ifaces.values()]
            absent = [s for s in states if isinstance(s, (Down, Connecting))]
            reasons = [f"{i.name}: connecting" if isinstance(i.state, Connecting) else i.state.reason
                       for i in self.ifaces.values() if isinstance(i.state, (Down, Degraded, Connecting))]
            if len(absent) == len(states):
                connecting = [s for s in absent if isinstance(s, Connecting)]
                link: Any = (Connecting(min(s.since for s in connecting)) if connecting
                             else Down("; ".join(reasons), min(s.since for s in absent)))
            elif reasons:
                link = Degraded("; ".join(reasons))
            else:
                link = Up()
            current = self.monitor.link
            if type(current) is type(link) and isinstance(link, (Down, Connecting)):
                return  # still down / still connecting: no transition (the table has no Down -> Down)
            if isinstance(current, Down) and not isinstance(link, (Down, Connecting)):
                self.monitor.set_link(Connecting(time.time_ns()))  # Down -> Connecting -> Up is the legal path
            if not (isinstance(current, (Up, Degraded)) and isinstance(link, Connecting)):
                self.monitor.set_link(link)
        self.wake()

    def add_inbound(self, binding: InboundBinding) -> None:
        r = binding.routing
        assert isinstance(r, CanRouting)
        it = self.ifaces[r.iface]
        with it.lock:
            it.readers = [*it.readers, (binding, r.can_id, r.effective_mask, r.extended, r.kind is CanFrameKind.FD)]
            it.apply_filters()  # REQ_0623: recomputed without reopening the interface

    def add_outbound(self, binding: OutboundBinding) -> None:
        r = binding.routing
        assert isinstance(r, CanRouting)
        it = binding.handle = self.ifaces[r.iface]
        it.own = it.own | {(r.can_id, r.extended)}

    def publish(self, binding: OutboundBinding, payload: memoryview) -> bool:
        r = binding.routing
        assert isinstance(r, CanRouting)
        data = bytes(payload)
        fd = r.kind is CanFrameKind.FD
        if fd and len(data) not in FD_LENGTHS:  # an FD frame's DLC codes one of 16 lengths: pad with zeros
            data = data.ljust(next(n for n in FD_LENGTHS if n >= len(data)), b"\0")
        msg = can.Message(arbitration_id=r.can_id, is_extended_id=r.extended, data=data, is_fd=fd,
                          bitrate_switch=bool(r.fd_flags & CAN_FD_BRS), error_state_indicator=bool(r.fd_flags & CAN_FD_ESI))
        result = binding.handle.send(msg)
        if result is None:
            binding.discarded_down += 1
            return True
        return result


class CanConnector(Connector):
    """CAN connector: `writer(CanRouting("can0", 0x123))`, `reader(CanRouting("can0", 0x100, mask=0x700))`.

    Readers get `Message.key` = `std:0x123` / `ext:0x1ABCDEF0` and the frame's bytes through the codec (RawCodec
    for plain bytes). A classical channel carries up to 8 bytes, an FD channel up to 64 (REQ_0612); a routing naming
    an interface the gateway does not own is a ConfigurationError (REQ_0621).
    """

    kind = "can"
    routing_type = CanRouting

    def __init__(self, options: CanOptions, name: str = "can", **connector_kw: Any) -> None:
        self.options = options
        super().__init__(name, **connector_kw)

    def make_backend(self) -> CanBackend:
        return CanBackend(self.options)

    def options_dict(self) -> dict[str, Any]:
        return self.options.to_dict()

    def default_channel_name(self, routing: Routing) -> str:
        assert isinstance(routing, CanRouting)
        mask = "" if routing.mask is None else f"&0x{routing.mask:X}"
        return f"{routing.iface}/{frame_key(routing.can_id, routing.extended)}{mask}.{routing.kind.value}"

    def _declare(self, routing: Routing, direction: Direction, name: str | None, max_payload: int | None,
                 capacity: int | None) -> Any:
        if isinstance(routing, CanRouting):
            if routing.iface not in self.options.ifaces:
                raise ConfigurationError(f"{self.name}: interface {routing.iface!r} is not one of the gateway's "
                                         f"({', '.join(self.options.ifaces)})")
            if routing.kind is CanFrameKind.FD and not self.options.ifaces[routing.iface].fd:
                raise ConfigurationError(f"{self.name}: FD channel on {routing.iface!r}, an interface opened "
                                         "without fd=True")
            limit = payload_limit(routing.kind)
            if max_payload is not None and max_payload != limit:
                raise ConfigurationError(f"{self.name}: a {routing.kind.value} CAN channel carries exactly {limit} "
                                         f"bytes at most; max_payload={max_payload} contradicts it")
            max_payload = limit + (KEY_OVERHEAD if direction is Direction.INBOUND else 0)
        return super()._declare(routing, direction, name, max_payload, capacity)
