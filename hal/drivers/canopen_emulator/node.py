"""One emulated CANopen node: NMT slave, SDO server (canopen.LocalNode), heartbeat, SYNC-driven PDOs, EMCY.

Profiles (CiA 402 drive, CiA 401 I/O) subclass it; fault injection: heartbeat off, silent, reboot, EMCY.
"""
from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import canopen

PDO_INVALID = 0x80000000
STATE_NAMES = {0: "BOOT-UP", 4: "STOPPED", 5: "OPERATIONAL", 127: "PRE-OPERATIONAL"}
NMT_START, NMT_STOP, NMT_PREOP, NMT_RESET_NODE, NMT_RESET_COMM = 0x01, 0x02, 0x80, 0x81, 0x82


@dataclass(frozen=True)
class Pdo:
    """A configured PDO as read from the node's own dictionary: COB-ID, transmission type, mapping."""

    cob_id: int
    trans_type: int
    entries: tuple[tuple[int, int, int], ...]  # (index, subindex, bits)


class EmulatedNode:
    """A canopen.LocalNode with the NMT behaviour of a real slave; profile logic in subclasses."""

    kind = ""

    def __init__(self, node_id: int, eds: Path, identity: dict[str, int] | None = None) -> None:
        self.id = node_id
        self.node = canopen.LocalNode(node_id, str(eds))
        self.identity = dict(identity or {})
        self.lock = threading.RLock()
        self.net: Any = None
        self.silent = False
        self.heartbeat_enabled = True
        self.heartbeat_ms = 0
        self.tpdos: list[Pdo] = []
        self.rpdos: dict[int, Pdo] = {}
        self.sync_count = 0
        self.boots = 0
        self.node._write_callbacks.remove(self.node.nmt.on_write)  # 0x1017 handled here (injection)
        self.node.add_write_callback(self._on_write)

    # --- dictionary access -------------------------------------------------------------------
    def get(self, index: int, sub: int = 0) -> Any:
        obj = self.node._find_object(index, sub)
        return obj.decode_raw(self.node.get_data(index, sub))

    def put(self, index: int, sub: int, value: Any) -> None:
        obj = self.node._find_object(index, sub)
        self.node.data_store.setdefault(index, {})[sub] = obj.encode_raw(value)

    # --- network -----------------------------------------------------------------------------
    def attach(self, net: Any) -> None:
        self.net = net
        net.add_node(self.node)
        net.unsubscribe(0, self.node.nmt.on_command)
        net.subscribe(0, self._on_nmt)
        net.subscribe(0x80, self._on_sync)

    @property
    def nmt_state(self) -> int:
        return self.node.nmt._state

    def _set_state(self, state: int) -> None:
        self.node.nmt._state = state
        self.node.nmt.update_heartbeat()

    def boot(self, *, full: bool = True) -> None:
        """Power-on (full) or reset communication: defaults back, boot-up frame, PRE-OPERATIONAL."""
        with self.lock:
            self.node.nmt.stop_heartbeat()
            if full:
                self.node.data_store.clear()
            else:
                for index in [i for i in self.node.data_store if 0x1000 <= i <= 0x1FFF]:
                    del self.node.data_store[index]
            for sub, key in ((1, "vendor_id"), (2, "product_code"), (3, "revision")):
                if key in self.identity:
                    self.put(0x1018, sub, self.identity[key])
            self._unsubscribe_rpdos()
            self.tpdos, self.rpdos = [], {}
            self.sync_count = 0
            self.heartbeat_ms = int(self.get(0x1017))
            self.on_reset(full)
            self.boots += 1
            self.node.nmt._state = 0
            if not self.silent:
                self.net.send_message(0x700 + self.id, bytes([0]))
            self.node.nmt._state = 127
            self._restart_heartbeat()

    def _restart_heartbeat(self) -> None:
        self.node.nmt.stop_heartbeat()
        if self.heartbeat_ms and self.heartbeat_enabled and not self.silent:
            self.node.nmt.start_heartbeat(self.heartbeat_ms)

    def _on_write(self, index: int, subindex: int, od: Any, data: bytes) -> None:
        if index == 0x1017:
            (self.heartbeat_ms,) = struct.unpack_from("<H", data)
            self._restart_heartbeat()

    def _on_nmt(self, can_id: int, data: bytearray, _ts: float) -> None:
        if self.silent or len(data) < 2 or data[1] not in (0, self.id):
            return
        cmd = data[0]
        with self.lock:
            if cmd in (NMT_RESET_NODE, NMT_RESET_COMM):
                self.boot(full=cmd == NMT_RESET_NODE)
            elif cmd == NMT_START:
                self._load_pdos()
                self._set_state(5)
            elif cmd == NMT_STOP:
                self._set_state(4)
            elif cmd == NMT_PREOP:
                self._set_state(127)

    # --- PDOs --------------------------------------------------------------------------------
    def _read_pdo(self, com: int, mapping: int) -> Pdo | None:
        if com not in self.node.object_dictionary:
            return None
        cob = int(self.get(com, 1))
        if cob & PDO_INVALID:
            return None
        entries = []
        for sub in range(1, int(self.get(mapping, 0)) + 1):
            v = int(self.get(mapping, sub))
            entries.append((v >> 16, (v >> 8) & 0xFF, v & 0xFF))
        return Pdo(cob & 0x7FF, int(self.get(com, 2)), tuple(entries))

    def _unsubscribe_rpdos(self) -> None:
        for cob in self.rpdos:
            self.net.unsubscribe(cob, self._on_rpdo)

    def _load_pdos(self) -> None:
        """The PDO configuration the master wrote (or the EDS defaults), applied on NMT start."""
        self._unsubscribe_rpdos()
        self.tpdos = [p for k in range(4) if (p := self._read_pdo(0x1800 + k, 0x1A00 + k)) is not None]
        self.rpdos = {p.cob_id: p for k in range(4) if (p := self._read_pdo(0x1400 + k, 0x1600 + k)) is not None}
        for cob in self.rpdos:
            self.net.subscribe(cob, self._on_rpdo)

    def _on_rpdo(self, can_id: int, data: bytearray, _ts: float) -> None:
        if self.silent or self.nmt_state != 5:
            return
        pdo = self.rpdos.get(can_id)
        if pdo is None:
            return
        off = 0
        with self.lock:
            for index, sub, bits in pdo.entries:
                n = bits // 8
                chunk = bytes(data[off : off + n])
                if len(chunk) == n:
                    self.node.set_data(index, sub, chunk)
                off += n

    def _on_sync(self, can_id: int, data: bytearray, _ts: float) -> None:
        if self.silent or self.nmt_state != 5:
            return
        with self.lock:
            self.sync_count += 1
            self.on_sync(time.monotonic())
            frames = []
            for p in self.tpdos:
                if 1 <= p.trans_type <= 240 and self.sync_count % p.trans_type == 0:
                    frames.append((p.cob_id, b"".join(self.node.get_data(i, s) for i, s, _ in p.entries)))
        for cob, payload in frames:
            self.net.send_message(cob, payload)

    # --- fault injection -----------------------------------------------------------------------
    def set_silent(self, on: bool) -> None:
        """Silent: answers nothing and sends nothing (a node unplugged or powered off)."""
        with self.lock:
            if on == self.silent:
                return
            self.silent = on
            cob = 0x600 + self.id
            if on:
                self.net.unsubscribe(cob, self.node.sdo.on_request)
            else:
                self.net.subscribe(cob, self.node.sdo.on_request)
            self._restart_heartbeat()

    def set_heartbeat(self, on: bool) -> None:
        with self.lock:
            self.heartbeat_enabled = on
            self._restart_heartbeat()

    def emcy(self, code: int, register: int = 0x01, data: bytes = b"") -> None:
        with self.lock:
            self.put(0x1001, 0, register)
            self.on_emcy(code)
            if not self.silent:
                self.node.emcy.send(code, register, data.ljust(5, b"\0")[:5])

    # --- profile hooks -------------------------------------------------------------------------
    def on_reset(self, full: bool) -> None:
        """Profile state back to power-on (called with the lock held)."""

    def on_sync(self, now: float) -> None:
        """Advance the process before the synchronous TPDOs go out (lock held)."""

    def on_emcy(self, code: int) -> None:
        """An injected error (lock held)."""

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"kind": self.kind, "nmt": STATE_NAMES.get(self.nmt_state, str(self.nmt_state)),
                    "heartbeat_ms": self.heartbeat_ms, "heartbeat_enabled": self.heartbeat_enabled,
                    "silent": self.silent, "boots": self.boots, "syncs": self.sync_count,
                    "tpdos": [hex(p.cob_id) for p in self.tpdos], "rpdos": [hex(c) for c in self.rpdos],
                    **self.profile_status()}

    def profile_status(self) -> dict[str, Any]:
        return {}
