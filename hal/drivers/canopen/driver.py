"""The CANopen HAL driver (`[hal] driver = "canopen"`): CiA 402 drives and CiA 401 I/O nodes on a python-can bus.

The cycle writes RPDOs + SYNC and reads the latest TPDO snapshots; a supervisor thread re-configures rebooted nodes.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import can
from canopen.sdo.exceptions import SdoError
import numpy as np

from common.config import ConfigError, EvoConfig, HomingMethod
from common.connector.reconnect import ExponentialBackoff
from common.drive_errors import drive_error_text
from common.fieldbus.canopen_config import DriveMode, NodeKind, StopMode, load_canopen
from common.fieldbus.canopen_net import EvoNetwork, open_network
from common.states import DriverState

from ..base import Driver, DriverError, DriverHealth, DriverIO
from ..cia402 import CW_DISABLE_VOLTAGE, CW_FAULT_RESET, CW_SHUTDOWN, DriveState, controlword, decode
from .node_link import NodeLink, NodeStartError

log = logging.getLogger(__name__)
logging.getLogger("canopen").setLevel(logging.WARNING)  # its INFO is one line per SDO transfer

SYNC_COB_ID = 0x080
NMT_PREOP = 0x80
ERR_HEARTBEAT = 0x8130  # CiA 301: life guard or heartbeat error
ERR_COMMUNICATION = 0x8100  # CiA 301: communication (stale process data, node not configured)
SUPERVISE_S = 0.02
FIRST_TPDO_TIMEOUT_S = 2.0
_OE = DriveState.OPERATION_ENABLED
_FAULTS = (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE)


@dataclass(eq=False)
class _Axis:
    """One drive's row in the cycle: the link, its axis index, scaling and the controlword sent last."""

    link: NodeLink
    i: int
    mode: DriveMode
    cpu: float
    absolute: bool
    quick_stop: bool = False  # enable low -> quick stop (canopen.toml stop = "quick_stop")
    cw: int = 0
    state: DriveState = DriveState.NOT_READY
    ok: bool = False
    fault_seen_ns: int = 0  # when the drive's FAULT was first seen (0: not in fault)


@dataclass(eq=False)
class _IoNode:
    link: NodeLink
    di: range | None
    do: range | None
    ai: range | None
    ao: range | None
    last_di: Any = None  # the TPDO tuple last unpacked (a new tuple arrives with every TPDO)
    last_ai: Any = None


class CanopenDriver(Driver):
    """CiA 402 drives serve axes (CSP / PV / CST per node), CiA 401 nodes serve io.toml pins.

    Start-up (open): NMT reset communication, boot-up of every node within boot_timeout_ms (a missing node is a
    DriverError naming it), identity check against canopen.toml, start-up SDO writes, mode of operation, RPDO/TPDO
    mapping by SDO, heartbeat producer time, NMT OPERATIONAL, then SYNC until every node's TPDOs came back.

    Cycle: every `sync_every` HAL cycles one RPDO per drive (controlword + the mode's target), the I/O nodes' DO/AO
    RPDOs and a SYNC; every cycle the latest TPDO snapshot (statusword, position, velocity, torque, 0x603F; DI, AI)
    fills the status side. A node that is not configured, lost its heartbeat, left OPERATIONAL or whose TPDOs are
    older than pdo_timeout_ms is a drive fault on its axis (error 0x8130 / 0x8100) and zeroes its inputs. EMCY
    codes reach drive_error_code. A node that boots again is re-configured by the supervisor thread on its own.
    """

    name = "canopen"
    uses_targets = True

    def __init__(self, config: EvoConfig, args: Mapping[str, Any]) -> None:
        super().__init__(config, args)
        try:
            self.net_cfg = load_canopen(config)
        except ConfigError as e:
            raise DriverError(str(e)) from None
        self.bus = self.net_cfg.bus
        sync_period_ms = self.bus.sync_every * config.system.hal.cycle_time_us / 1000.0
        if self.bus.pdo_timeout_ms < 2 * sync_period_ms:
            raise DriverError(f"{self.net_cfg.file} [bus] pdo_timeout_ms: {self.bus.pdo_timeout_ms} ms is less than two "
                              f"SYNC periods ({sync_period_ms:g} ms: sync_every x [hal] cycle_time_us)")
        self.network: EvoNetwork | None = None
        self.links: list[NodeLink] = []
        self.axes: list[_Axis] = []
        self.io_nodes: list[_IoNode] = []
        self._n = 0
        self._fault_hold_ns = self.bus.fault_reset_ms * 1_000_000
        self._last_sync_ns = 0
        self._frames: dict[int, can.Message] = {}  # one reusable frame per cyclic COB-ID
        self._sync: can.Message | None = None
        self._bus_error = ""
        self._bus_error_at = 0.0
        self._bus_backoff = ExponentialBackoff(self.bus.reconnect_ms / 1000.0, 10.0, 2.0, 0.1)
        self._bus_retry_at = 0.0
        self._errors_seen = 0
        self._error_frames_at = 0
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._retry_at: dict[int, float] = {}
        self._reported: dict[int, str] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def open(self, io: DriverIO) -> None:
        b = self.bus
        try:
            self.network = open_network(b.interface, b.channel, b.bitrate)
        except Exception as e:  # noqa: BLE001 - python-can raises CanError, OSError, ValueError, ImportError ...
            raise DriverError(f"{self.net_cfg.file} [bus]: cannot open {b.interface} channel {b.channel!r}: {e}") from None
        self._sync = self.network.frame(SYNC_COB_ID, 0)
        try:
            self._start_nodes()
            self._build_tables()
            self._await_first_tpdos()
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="canopen-supervisor", daemon=True)
        self._supervisor.start()
        self.cycle(io, time.perf_counter_ns(), 0.0)
        log.info("CANopen %s %s: %d nodes OPERATIONAL (%s)", b.interface, b.channel, len(self.links),
                 ", ".join(f"{lk.cfg.id}:{lk.cfg.kind.value}" for lk in self.links))

    def _start_nodes(self) -> None:
        assert self.network is not None
        self.links = [NodeLink(n, i, self.bus, self.network) for i, n in enumerate(self.net_cfg.nodes)]
        for link in self.links:
            link.reset_communication()
        deadline = time.monotonic() + self.bus.boot_timeout_ms / 1000.0
        missing = [lk for lk in self.links if not lk.booted.wait(max(0.0, deadline - time.monotonic()))]
        if missing:
            raise DriverError(
                "no boot-up within {} ms after NMT reset communication from {} on {} channel {!r}".format(
                    self.bus.boot_timeout_ms, "; ".join(lk.where for lk in missing), self.bus.interface, self.bus.channel))
        for link in self.links:
            link.configure()

    def _build_tables(self) -> None:
        for link in self.links:
            c = link.cfg
            if c.kind is NodeKind.DRIVE:
                ax = self.config.axis(c.axis)
                self.axes.append(_Axis(link, c.axis - 1, c.mode, c.counts_per_unit,
                                       ax.homing.method is HomingMethod.ABSOLUTE, c.stop is StopMode.QUICK_STOP))
            else:
                self.io_nodes.append(_IoNode(link, *(getattr(c, k).pins if getattr(c, k) is not None else None
                                                     for k in ("di", "do", "ai", "ao"))))

    def _await_first_tpdos(self) -> None:
        """SYNC until every node answered with its TPDOs (proves OPERATIONAL and the mapping)."""
        assert self.network is not None
        deadline = time.monotonic() + FIRST_TPDO_TIMEOUT_S
        while time.monotonic() < deadline:
            self._send_outputs(None)
            if all(lk.last_rx_ns and all(t is not None for t in lk.tpdo) for lk in self.links):
                return
            time.sleep(0.005)
        silent = [lk.where for lk in self.links if not lk.last_rx_ns]
        raise DriverError(f"no TPDO after NMT start and SYNC within {FIRST_TPDO_TIMEOUT_S:g} s from " + "; ".join(silent))

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5.0)
            self._supervisor = None
        net = self.network
        if net is None:
            return
        try:  # leave the drives disabled, the nodes PRE-OPERATIONAL (no PDO traffic), the bus closed
            for a in self.axes:
                if a.link.configured and a.link.rpdo:
                    cob, st = a.link.rpdo[0]
                    net.send_message(cob, st.pack(CW_SHUTDOWN if a.state is _OE else CW_DISABLE_VOLTAGE, 0))
            net.send_message(SYNC_COB_ID, b"")
            for link in self.links:
                link.node.nmt.send_command(NMT_PREOP)
        except (can.CanError, OSError) as e:
            log.warning("CANopen close: could not leave the nodes safe: %s", e)
        for link in self.links:
            link.close()
        try:
            net.disconnect()
        except Exception as e:  # noqa: BLE001 - teardown continues
            log.warning("CANopen close: %s", e)
        self.network = None

    # --- the cycle ---------------------------------------------------------------------------------
    def cycle(self, io: DriverIO, now_ns: int, dt_s: float) -> None:
        mono = time.monotonic_ns()
        self._n += 1
        sync = self._last_sync_ns
        for a in self.axes:
            reason = a.link.judge(mono, sync)
            a.link.problem = reason
            a.ok = not reason
        for n in self.io_nodes:
            n.link.problem = n.link.judge(mono, sync)
        if self._n % self.bus.sync_every == 0:
            self._send_outputs(io)
        self._read_inputs(io)

    def _send_outputs(self, io: DriverIO | None) -> None:
        """One RPDO per drive and I/O node, then SYNC. io=None: start-up (drives held disabled)."""
        net = self.network
        assert net is not None
        try:
            for a in self.axes:
                link = a.link
                if not link.configured or not link.rpdo:
                    continue
                t1 = link.tpdo[0] if link.tpdo else None
                a.state = state = decode(t1[0]) if t1 is not None else DriveState.NOT_READY
                enable = io is not None and a.ok and bool(io.enable[a.i])
                if state in _FAULTS:  # held fault_reset_ms before a reset: the code is seen, resets are paced
                    now = time.monotonic_ns()
                    if not a.fault_seen_ns:
                        a.fault_seen_ns = now
                    if now - a.fault_seen_ns >= self._fault_hold_ns:
                        a.fault_seen_ns = now  # next reset attempt one period later if it faults again
                    else:
                        enable = True  # a FAULT with enable high stays latched (controlword 0)
                else:
                    a.fault_seen_ns = 0
                a.cw = cw = controlword(state, enable, not a.cw & CW_FAULT_RESET, a.quick_stop)
                if state is not _OE or io is None:
                    target = t1[1] if (t1 is not None and a.mode is DriveMode.CSP) else 0  # hold where it is
                elif a.mode is DriveMode.CSP:
                    target = int(round(io.target_position[a.i] * a.cpu))
                elif a.mode is DriveMode.PV:
                    target = int(round(io.target_velocity[a.i] * a.cpu))
                else:
                    target = max(-32768, min(32767, int(round(io.torque[a.i] * 10.0))))  # % -> per mille
                cob, st = link.rpdo[0]
                frame = self._frame(cob, st.size)
                st.pack_into(frame.data, 0, cw, target)
                net.send_frame(frame)
            for n in self.io_nodes:
                link = n.link
                if link.configured and link.rpdo:
                    self._send_io(n, io)
            net.send_frame(self._sync)
            self._last_sync_ns = time.monotonic_ns()
        except (can.CanError, OSError, AttributeError) as e:  # AttributeError: the bus is being reopened
            if not self._bus_error:
                log.error("CANopen bus %s %s: send failed: %s", self.bus.interface, self.bus.channel, e)
                self._bus_error_at = time.monotonic()
            self._bus_error = f"send failed: {e}"
        else:
            if self._bus_error:
                log.info("CANopen bus %s %s: sending again", self.bus.interface, self.bus.channel)
                self._bus_backoff.reset()
            self._bus_error = ""

    def _send_io(self, n: _IoNode, io: DriverIO | None) -> None:
        net = self.network
        assert net is not None
        k = 0
        if n.do is not None:
            cob, st = n.link.rpdo[k]
            k += 1
            frame = self._frame(cob, st.size)
            if io is not None:
                bits = np.unpackbits(io.do_bank.view(np.uint8), bitorder="little")[n.do.start:n.do.stop]
                frame.data[:] = np.packbits(bits, bitorder="little").tobytes()
            net.send_frame(frame)
        if n.ao is not None:
            cob, st = n.link.rpdo[k]
            frame = self._frame(cob, st.size)
            if io is not None:
                raw = np.rint(np.clip(io.ao[n.ao.start:n.ao.stop], 0.0, 1.0) * 32767.0).astype(np.int16)
                frame.data[:] = raw.tobytes()
            net.send_frame(frame)

    def _frame(self, cob: int, size: int) -> can.Message:
        frame = self._frames.get(cob)
        if frame is None:
            assert self.network is not None
            frame = self._frames[cob] = self.network.frame(cob, size)
        return frame

    def _read_inputs(self, io: DriverIO) -> None:
        for a in self.axes:
            i = a.i
            link = a.link
            tp = link.tpdo
            t1 = tp[0] if tp else None
            t2 = tp[1] if len(tp) > 1 else None
            if t1 is not None:
                a.state = decode(t1[0])
                io.position[i] = t1[1] / a.cpu
            if t2 is not None:
                io.velocity[i] = t2[0] / a.cpu
                io.torque_estimate[i] = t2[1] / 10.0
            emcy = link.emcy_code if link.emcy_register else 0
            fault = not a.ok or a.state in _FAULTS or emcy != 0
            io.drive_fault[i] = fault
            io.drive_ready[i] = a.ok and a.state is _OE
            io.referenced[i] = a.absolute
            if not fault:
                io.drive_error_code[i] = 0
                io.axis_state[i] = (DriverState.ENABLED if a.state is _OE else
                                    DriverState.INIT if io.enable[i] else DriverState.READY)
            else:
                if not a.ok:
                    code = ERR_HEARTBEAT if link.problem is link._msg_hb_lost else ERR_COMMUNICATION
                else:
                    code = (t2[2] if t2 is not None and t2[2] else 0) or emcy or link.emcy_code
                io.drive_error_code[i] = code
                io.axis_state[i] = DriverState.FAULT if link.configured else DriverState.OFFLINE
        for n in self.io_nodes:
            link = n.link
            tp = link.tpdo
            ok = not link.problem
            k = 0
            if n.di is not None:
                vals = tp[k] if ok and tp else None
                k += 1
                if vals is None:
                    io.di[n.di.start:n.di.stop] = False
                    n.last_di = None
                elif vals is not n.last_di:
                    n.last_di = vals
                    io.di[n.di.start:n.di.stop] = np.unpackbits(np.array(vals, np.uint8), bitorder="little")
            if n.ai is not None:
                vals = tp[k] if ok and len(tp) > k else None
                if vals is None:
                    io.ai[n.ai.start:n.ai.stop] = 0.0
                    n.last_ai = None
                elif vals is not n.last_ai:
                    n.last_ai = vals
                    io.ai[n.ai.start:n.ai.stop] = np.clip(np.array(vals, np.float64) / 32767.0, 0.0, 1.0)

    # --- health and recovery -----------------------------------------------------------------------
    def health(self) -> DriverHealth:
        b = self.bus
        if self.network is None:
            return DriverHealth(DriverState.OFFLINE, "bus closed")
        if self._bus_error:
            return DriverHealth(DriverState.FAULT, f"bus {b.interface} {b.channel}: {self._bus_error}")
        problems = [f"{lk.label}: {lk.problem}" for lk in self.links if lk.problem]
        for lk in self.links:
            if lk.emcy_code and lk.emcy_register:
                problems.append(f"{lk.label}: EMCY {drive_error_text(lk.emcy_code)}")
        frames = self.network.error_frames
        if frames != self._errors_seen:
            self._errors_seen, self._error_frames_at = frames, time.monotonic_ns()
        if self._error_frames_at and time.monotonic_ns() - self._error_frames_at < 1_000_000_000:
            problems.append("bus error frames seen")
        if problems:
            return DriverHealth(DriverState.DEGRADED, "; ".join(problems))
        return DriverHealth(DriverState.READY, f"{len(self.links)} nodes OPERATIONAL on {b.interface} {b.channel}")

    def _reopen_bus(self) -> None:
        """A bus that refuses frames is closed and opened again, with exponential back-off."""
        now = time.monotonic()
        if now < max(self._bus_retry_at, self._bus_error_at + self.bus.reconnect_ms / 1000.0):
            return
        assert self.network is not None
        try:
            self.network.reopen()
        except Exception as e:  # noqa: BLE001 - python-can raises many kinds; retried with back-off
            delay = self._bus_backoff.next_delay()
            self._bus_retry_at = now + delay
            log.warning("CANopen bus %s %s: reopen failed (%s); next try in %.1f s", self.bus.interface,
                        self.bus.channel, e, delay)
            return
        self._bus_retry_at = now + self._bus_backoff.next_delay()
        log.info("CANopen bus %s %s reopened", self.bus.interface, self.bus.channel)

    def _supervise(self) -> None:
        """Reopen a failed bus; re-configure nodes that booted again (power cycle, reset) or fell out of
        OPERATIONAL, retrying every reconnect_ms."""
        while not self._stop.wait(SUPERVISE_S):
            if self._bus_error:
                self._reopen_bus()
                continue
            for link in self.links:
                if link.configured and link.problem is link._msg_not_operational:
                    link.configured = False  # alive but out of OPERATIONAL (NMT stop, its error behaviour)
                    link.booted.set()
                if link.configured or not link.booted.is_set():
                    continue
                now = time.monotonic()
                if now < self._retry_at.get(link.cfg.id, 0.0):
                    continue
                try:
                    link.configure()
                except (DriverError, SdoError, can.CanError, OSError) as e:
                    self._retry_at[link.cfg.id] = now + self.bus.reconnect_ms / 1000.0
                    msg = str(e)
                    if self._reported.get(link.cfg.id) != msg:
                        self._reported[link.cfg.id] = msg
                        log.warning("CANopen %s: re-configuration failed, retrying every %d ms: %s", link.label,
                                    self.bus.reconnect_ms, msg)
                    continue
                self._reported.pop(link.cfg.id, None)
                log.info("CANopen %s booted again: re-configured and OPERATIONAL", link.label)


__all__ = ["CanopenDriver", "NodeStartError"]
