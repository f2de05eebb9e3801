"""A canopen Network on a python-can bus, shared by the HAL driver, the emulator and `evo canopen scan`.

Drops the bus's echoes of our own frames (python-can's udp_multicast returns them) and counts bus error frames.
"""
from __future__ import annotations

import struct
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import can
import canopen
from canopen.sdo.exceptions import SdoError

__all__ = ["EvoNetwork", "open_network", "NMT_STATE_NAMES", "NodeIdentity", "scan", "sdo_u32"]

#: heartbeat byte -> NMT state (CiA 301)
NMT_STATE_NAMES = {0: "BOOT-UP", 4: "STOPPED", 5: "OPERATIONAL", 127: "PRE-OPERATIONAL"}


class EvoNetwork(canopen.Network):
    """canopen.Network that ignores its own frames coming back and watches error frames.

    In CANopen every COB-ID has one producer, so a frame with an id this network has sent is its own
    echo (udp_multicast delivers those even with receive_own_messages=False).
    """

    def __init__(self, bus: can.BusABC | None = None, *, drop_own_echo: bool = False) -> None:
        super().__init__(bus)
        self.drop_own_echo = drop_own_echo
        self.own_ids: set[int] = set()
        self.error_frames = 0
        self.last_error_ns = 0
        self.bus_kw: dict[str, Any] = {}  # how open_network made the bus (reopen makes another)
        self.listeners.append(_ErrorFrameListener(self))

    def send_message(self, can_id: int, data: bytes, remote: bool = False) -> None:
        if self.drop_own_echo:
            self.own_ids.add(can_id)
        super().send_message(can_id, data, remote)

    def send_periodic(self, can_id: int, data: bytes, period: float, remote: bool = False) -> Any:
        if self.drop_own_echo:
            self.own_ids.add(can_id)
        return super().send_periodic(can_id, data, period, remote)

    def frame(self, can_id: int, size: int) -> can.Message:
        """A reusable standard frame for a cyclic COB-ID (fill `.data` in place, then `send_frame`)."""
        if self.drop_own_echo:
            self.own_ids.add(can_id)
        return can.Message(arbitration_id=can_id, is_extended_id=False, data=bytes(size))

    def send_frame(self, msg: can.Message) -> None:
        """Send a prepared frame (the HAL cycle's path: no Message built per send)."""
        with self.send_lock:
            self.bus.send(msg)  # type: ignore[union-attr]

    def reopen(self) -> None:
        """Close the bus and open it again with the same arguments; subscriptions and nodes stay (a bus that
        failed: a controller gone, an adapter unplugged and back). can.CanError / OSError if it cannot."""
        if self.notifier is not None:
            self.notifier.stop(self.NOTIFIER_CYCLE)
            self.notifier = None
        with self.send_lock:
            old, self.bus = self.bus, None
            if old is not None:
                try:
                    old.shutdown()
                except Exception:  # noqa: BLE001 - it failed already
                    pass
            self.bus = can.Bus(**self.bus_kw)
        self.notifier = can.Notifier(self.bus, self.listeners, self.NOTIFIER_CYCLE)

    def notify(self, can_id: int, data: bytearray, timestamp: float) -> None:
        if can_id in self.own_ids:
            return
        super().notify(can_id, data, timestamp)


class _ErrorFrameListener(can.Listener):
    def __init__(self, network: EvoNetwork) -> None:
        self.network = network

    def on_message_received(self, msg: can.Message) -> None:
        if msg.is_error_frame:
            self.network.error_frames += 1
            self.network.last_error_ns = time.monotonic_ns()


def open_network(interface: str, channel: str, bitrate: int = 500_000, **bus_kw: Any) -> EvoNetwork:
    """A connected network (bus + notifier thread); can.CanError / OSError when the bus cannot open."""
    kw: dict[str, Any] = {"interface": interface, "channel": channel, "receive_own_messages": False, **bus_kw}
    if interface in ("socketcan", "pcan", "kvaser", "ixxat", "vector", "slcan", "gs_usb", "canalystii", "seeedstudio"):
        kw["bitrate"] = bitrate
    bus = can.Bus(**kw)
    net = EvoNetwork(bus, drop_own_echo=interface == "udp_multicast")
    net.bus_kw = kw
    net.connect()
    return net


def sdo_u32(node: Any, index: int, subindex: int) -> int:
    """One unsigned 32-bit SDO upload (independent of the node's EDS)."""
    data = node.sdo.upload(index, subindex)
    return int.from_bytes(bytes(data[:4]).ljust(4, b"\0"), "little")


@dataclass(frozen=True)
class NodeIdentity:
    """What `evo canopen scan` reports per node."""

    node_id: int
    vendor_id: int | None
    product_code: int | None
    revision: int | None
    serial: int | None
    device_type: int | None
    nmt_state: str
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan(net: EvoNetwork, *, wait_s: float = 0.5, sdo_timeout_s: float = 0.3, limit: int = 127) -> list[NodeIdentity]:
    """Every node that answers: SDO search (0x1000) plus heartbeats seen, then 0x1018 and 0x1000 by SDO."""
    states: dict[int, int] = {}
    lock = threading.Lock()

    def on_heartbeat(can_id: int, data: bytearray, _ts: float) -> None:
        if data:
            with lock:
                states[can_id - 0x700] = data[0] & 0x7F

    for nid in range(1, limit + 1):
        net.subscribe(0x700 + nid, on_heartbeat)
    try:
        net.scanner.reset()
        net.scanner.search(limit)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(0.02)
        found = sorted(set(net.scanner.nodes) | set(states))
        out = []
        for nid in found:
            node = canopen.RemoteNode(nid, canopen.ObjectDictionary())
            node.sdo.RESPONSE_TIMEOUT = sdo_timeout_s
            net.add_node(node)
            vals: dict[str, int | None] = {}
            error = ""
            for key, (index, sub) in {"device_type": (0x1000, 0), "vendor_id": (0x1018, 1),
                                      "product_code": (0x1018, 2), "revision": (0x1018, 3),
                                      "serial": (0x1018, 4)}.items():
                try:
                    vals[key] = sdo_u32(node, index, sub)
                except (SdoError, struct.error) as e:
                    vals[key] = None
                    if key != "serial":
                        error = error or f"0x{index:04X}:{sub:02X}: {e}"
            with lock:
                st = states.get(nid)
            out.append(NodeIdentity(nid, vals["vendor_id"], vals["product_code"], vals["revision"], vals["serial"],
                                    vals["device_type"], NMT_STATE_NAMES.get(st, "UNKNOWN") if st is not None
                                    else "UNKNOWN (no heartbeat)", error))
            del net[nid]
        return out
    finally:
        for nid in range(1, limit + 1):
            net.unsubscribe(0x700 + nid, on_heartbeat)
