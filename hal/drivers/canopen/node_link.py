"""One configured CANopen node as the master sees it: start-up by SDO, PDO maps, heartbeat consumer, EMCY, snapshots.

Callbacks run in python-can's notifier thread and only store values; the HAL cycle reads them, never waits.
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any

import canopen
from canopen.sdo.exceptions import SdoError

from common.fieldbus.canopen_config import BusSettings, NodeConfig, NodeKind
from common.fieldbus.canopen_net import sdo_u32

from ..base import DriverError

NMT_START, NMT_RESET_COMM = 0x01, 0x82
ST_OPERATIONAL = 5
GRACE_NS = 50_000_000  # a heartbeat already on its way when NMT start went out still shows the old state


class NodeStartError(DriverError):
    """A node did not come up as configured (message names the node and the values)."""


def _entry_format(var: Any) -> str:
    return var.od.STRUCT_TYPES[var.od.data_type].format.lstrip("<")


class NodeLink:
    """Master-side state of one node. `configure()` (SDO, blocking) runs outside the HAL cycle."""

    def __init__(self, cfg: NodeConfig, index: int, bus: BusSettings, network: Any) -> None:
        self.cfg = cfg
        self.where = f"canopen.toml [node[{index}]] (node {cfg.id}{f', {cfg.name}' if cfg.name else ''})"
        self.bus = bus
        self.network = network
        self.node = canopen.RemoteNode(cfg.id, str(cfg.eds_path))
        self.node.sdo.RESPONSE_TIMEOUT = bus.sdo_timeout_ms / 1000.0
        network.add_node(self.node)
        self.lock = threading.Lock()
        # heartbeat consumer / NMT
        self.booted = threading.Event()
        self.boot_count = 0
        self.nmt_state = -1
        self.last_heartbeat_ns = 0
        self.configured = False  # PDOs set up and NMT started by us since the last boot-up
        self.problem = ""  # why this node is not usable right now ("" = fine)
        # EMCY
        self.emcy_code = 0
        self.emcy_register = 0
        # process data: packers for RPDOs, latest unpacked TPDOs (tuples) and when they came
        self.rpdo: list[tuple[int, struct.Struct]] = []
        self.tpdo_structs: dict[int, tuple[int, struct.Struct]] = {}
        self.tpdo: list[tuple[Any, ...] | None] = []
        self.last_rx_ns = 0
        self.configured_ns = 0
        self._hb_timeout_ns = bus.heartbeat_timeout_ms * 1_000_000
        self._pdo_timeout_ns = bus.pdo_timeout_ms * 1_000_000
        self._msg_unconfigured = "not configured"
        self._msg_rebooted = "booted again: re-configuring"
        self._msg_hb_lost = f"heartbeat lost (none for {bus.heartbeat_timeout_ms} ms)"
        self._msg_not_operational = "left NMT OPERATIONAL"
        self._msg_stale = f"TPDOs stale (none for {bus.pdo_timeout_ms} ms)"
        self._msg_waiting = "started, waiting for its first TPDO"
        network.subscribe(0x700 + cfg.id, self._on_heartbeat)
        network.subscribe(0x80 + cfg.id, self._on_emcy)

    @property
    def label(self) -> str:
        return self.cfg.label

    # --- notifier-thread callbacks ------------------------------------------------------------
    def _on_heartbeat(self, _can_id: int, data: bytearray, _ts: float) -> None:
        if not data:
            return
        state = data[0] & 0x7F
        self.last_heartbeat_ns = time.monotonic_ns()
        if state == 0:  # boot-up: everything we configured is gone
            self.configured = False
            self.boot_count += 1
            self.booted.set()
        self.nmt_state = state

    def _on_emcy(self, _can_id: int, data: bytearray, _ts: float) -> None:
        if len(data) < 3:
            return
        code, register = struct.unpack_from("<HB", data)
        self.emcy_code, self.emcy_register = code, register

    def _on_tpdo(self, can_id: int, data: bytearray, _ts: float) -> None:
        slot, st = self.tpdo_structs[can_id]
        if len(data) >= st.size:
            self.tpdo[slot] = st.unpack_from(data)
            self.last_rx_ns = time.monotonic_ns()

    # --- start-up (blocking SDO; never called from the HAL cycle) ----------------------------------
    def reset_communication(self) -> None:
        self.booted.clear()
        self.node.nmt.send_command(NMT_RESET_COMM)

    def configure(self) -> None:
        """Identity check, start-up writes, PDO mapping, heartbeat producer time, NMT OPERATIONAL."""
        self.configured = False
        try:
            self._check_identity()
            for w in self.cfg.sdo:
                obj = self.node.object_dictionary[w.index]
                od = obj if w.subindex == 0 and not hasattr(obj, "subindices") else obj[w.subindex]
                self.node.sdo.download(w.index, w.subindex, od.encode_raw(w.value))
            if self.cfg.kind is NodeKind.DRIVE:
                self.node.sdo[0x6060].raw = self.cfg.mode.code
            self._map_pdos()
            self.node.sdo[0x1017].raw = self.bus.heartbeat_ms
        except SdoError as e:
            raise NodeStartError(f"{self.where}: SDO failed during start-up: {e}") from e
        self.emcy_code = 0
        self.last_rx_ns = 0
        self.node.nmt.send_command(NMT_START)
        self.configured_ns = time.monotonic_ns()
        self.configured = True

    def _check_identity(self) -> None:
        want = self.cfg.identity
        got = {k: sdo_u32(self.node, 0x1018, s) for k, s in (("vendor_id", 1), ("product_code", 2), ("revision", 3))}
        bad = [f"{k} 0x{got[k]:08X} (expected 0x{getattr(want, k):08X})" for k in got if got[k] != getattr(want, k)]
        if bad:
            raise NodeStartError(f"{self.where}: wrong device: " + ", ".join(bad))

    def _map_pdos(self) -> None:
        """RPDO/TPDO configured by SDO from the config (never assumed), transmission type 1 (every SYNC)."""
        rx, tx = self._layout()
        net = self.network
        for pdos, layout in ((self.node.rpdo, rx), (self.node.tpdo, tx)):
            pdos.read(from_od=True)
            for k in range(1, 5):
                m = pdos[k]
                m.clear()
                entries = layout[k - 1] if k - 1 < len(layout) else ()
                for index, sub in entries:
                    m.add_variable(index, sub)
                m.trans_type = 1
                m.enabled = bool(entries)
            pdos.save()
            for k in range(1, 5):  # our own fast path receives / sends these frames
                m = pdos[k]
                if m.on_message in net.subscribers.get(m.cob_id, ()):
                    net.unsubscribe(m.cob_id, m.on_message)
        self.rpdo = [(m.cob_id, struct.Struct("<" + "".join(_entry_format(v) for v in m.map)))
                     for m in (self.node.rpdo[k] for k in range(1, 5)) if m.enabled]
        old = list(self.tpdo_structs)
        self.tpdo_structs = {}
        for slot, m in enumerate(m for m in (self.node.tpdo[k] for k in range(1, 5)) if m.enabled):
            self.tpdo_structs[m.cob_id] = (slot, struct.Struct("<" + "".join(_entry_format(v) for v in m.map)))
        self.tpdo = [None] * len(self.tpdo_structs)
        for cob in old:
            net.unsubscribe(cob, self._on_tpdo)
        for cob in self.tpdo_structs:
            net.subscribe(cob, self._on_tpdo)

    def _layout(self) -> tuple[list[tuple[tuple[int, int], ...]], list[tuple[tuple[int, int], ...]]]:
        c = self.cfg
        if c.kind is NodeKind.DRIVE:
            rx = [((0x6040, 0), (c.mode.target_object, 0))]
            tx = [((0x6041, 0), (0x6064, 0)), ((0x606C, 0), (0x6077, 0), (0x603F, 0))]
            return rx, tx
        rx, tx = [], []
        if c.do is not None:
            rx.append(tuple((0x6200, s) for s in range(1, c.do.count // 8 + 1)))
        if c.ao is not None:
            rx.append(tuple((0x6411, s) for s in range(1, c.ao.count + 1)))
        if c.di is not None:
            tx.append(tuple((0x6000, s) for s in range(1, c.di.count // 8 + 1)))
        if c.ai is not None:
            tx.append(tuple((0x6401, s) for s in range(1, c.ai.count + 1)))
        return rx, tx

    # --- judgement (cheap; HAL cycle and health) -------------------------------------------------------
    def judge(self, now_ns: int, sync_ns: int) -> str:
        """Why the node is unusable now ("" = fine): not configured, heartbeat lost, NMT state, TPDOs stale.
        Staleness counts from our last SYNC (`sync_ns`), so a HAL that was itself late does not blame the node.
        Returns one of a few constant texts (no allocation in the HAL cycle)."""
        if not self.configured:
            return self._msg_rebooted if self.boot_count > 1 else self._msg_unconfigured
        if self.last_heartbeat_ns and now_ns - self.last_heartbeat_ns > self._hb_timeout_ns:
            return self._msg_hb_lost
        if self.nmt_state != ST_OPERATIONAL and self.last_heartbeat_ns > self.configured_ns + GRACE_NS:
            return self._msg_not_operational
        if sync_ns - (self.last_rx_ns or self.configured_ns) > self._pdo_timeout_ns:
            return self._msg_stale
        if not self.last_rx_ns:
            return self._msg_waiting  # configured, NMT started: usable once it has answered a SYNC
        return ""

    def close(self) -> None:
        net = self.network
        for cob in self.tpdo_structs:
            net.unsubscribe(cob, self._on_tpdo)
        for cob, fn in ((0x700 + self.cfg.id, self._on_heartbeat), (0x80 + self.cfg.id, self._on_emcy)):
            if fn in net.subscribers.get(cob, ()):
                net.unsubscribe(cob, fn)
