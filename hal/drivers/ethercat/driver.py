"""EthercatDriver: brings the segment to OP (identity check, start-up SDOs, PDO map), exchanges process data every
HAL cycle with a bounded receive, checks the working counter and AL states, and recovers lost SubDevices itself.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from common.config import ConfigError, EvoConfig
from common.fieldbus.ethercat_config import EthercatNetwork, SubDeviceConfig, SubDeviceKind, load_ethercat
from common.states import DriverState

from ..base import Driver, DriverError, DriverHealth, DriverIO
from .recovery import Recovery
from .routing import DriveRoute, IoRoute

log = logging.getLogger(__name__)

OP_POLL_S = 0.001  # start-up: one exchange per ms while waiting for OP
RECHECK_AFTER_WKC_NS = 10_000_000
MAP_ATTEMPTS = 3  # config_map again when SOEM could not read the whole PDO map / start-up SDOs failed  # a wrong working counter triggers a state check at most every 10 ms


def _pysoem() -> Any:
    try:
        import pysoem
    except ImportError as e:  # pragma: no cover - a dependency
        raise DriverError(f"the ethercat driver needs pysoem: {e}") from None
    return pysoem


def _ident(vendor: int, product: int, revision: int) -> str:
    return f"vendor 0x{vendor:08X} product 0x{product:08X} revision 0x{revision:08X}"


class EthercatDriver(Driver):
    """A pysoem (SOEM) MainDevice for the segment described by the network file (`[hal.driver_args] network`).

    open(): config_init (<= 0 SubDevices answering is an error, never a hang); every expected SubDevice checked
    against the network file (count, then vendor / product / revision: a mismatch names the position and both
    identities); per SubDevice in PRE-OP -> SAFE-OP the ESI's CoE InitCmds, the network file's `sdo` writes and
    0x6060 (mode of operation) by SDO; config_map; SAFE-OP; process data flowing while OP is requested (state
    checked with short time-outs between exchanges, bounded by [master] state_timeout_ms). The HAL reports ready
    only after this, i.e. in OP.

    cycle(): one LRW exchange (send, receive with [master] receive_timeout_us), working counter compared with
    the expected one of the SubDevices in OP; a mismatch or the periodic poll ([master] state_check_ms) reads
    the AL states. A SubDevice lost or out of OP: drive_fault (0x7500 communication error) on the axis it
    serves, its DI read 0, health DEGRADED (FAULT when none is left) with the AL status code as text; recovery
    (recovery.py) brings it back step by step with back-off, and the health says when it is back.
    CiA 402 per drive (cia402.py): walks the controlword to Operation enabled while the CU enables the axis,
    resets a fault when the CU drops enable; CSP: target_position -> 0x607A, CST: torque % -> 0x6071 per mille;
    actual values scaled by increments_per_unit.

    close(): drives disabled (shutdown controlword exchanged a few times), segment to INIT, socket closed.
    """

    name = "ethercat"
    persists_positions = False
    uses_targets = True

    def __init__(self, config: EvoConfig, args: Mapping[str, Any]) -> None:
        super().__init__(config, args)
        try:
            self.net: EthercatNetwork = load_ethercat(config)
        except ConfigError as e:
            raise DriverError(str(e)) from None
        m = self.net.master
        self.interface = str(args.get("interface") or m.interface)
        self.rx_timeout_us = m.receive_timeout_us
        self.check_ns = m.state_check_ms * 1_000_000
        self.routes: list[DriveRoute | IoRoute] = []
        for s in self.net.subdevices:
            assert s.esi_device is not None
            self.routes.append(DriveRoute(s, s.esi_device, config) if s.kind is SubDeviceKind.DRIVE
                               else IoRoute(s, s.esi_device))
        self.master: Any = None
        self.slaves: list[Any] = []
        self.recovery: Recovery | None = None
        self._health = DriverHealth(DriverState.OFFLINE, f"not started (interface {self.interface})")
        self._setup_errors: list[str] = []
        self.expected_wkc = 0
        self.last_wkc = 0
        self.wkc_errors = 0
        self._next_check = 0
        self._next_wkc_check = 0

    # --- start-up ----------------------------------------------------------------------------
    def open(self, io: DriverIO) -> None:
        pysoem = _pysoem()
        m = self.net.master
        pysoem.settings.timeouts.state = m.state_timeout_ms * 1000
        pysoem.settings.timeouts.ret = m.datagram_timeout_us
        master = pysoem.Master()
        try:
            master.open(self.interface)
        except ConnectionError as e:
            raise DriverError(f"EtherCAT: cannot open interface {self.interface!r} ({e}); it must exist and the "
                              "HAL needs root or CAP_NET_RAW") from None
        self.master = master
        try:
            self._bring_up(pysoem, io)
        except BaseException:
            self._shutdown_bus()
            raise
        # from now on every acyclic exchange (state reads, recovery) holds the cycle briefly: mailbox and
        # state-change waits bounded to 10 datagram time-outs each (SOEM's defaults are 20 ms / 700 ms)
        t = pysoem.settings.timeouts
        t.tx_mailbox = t.rx_mailbox = t.safe = 10 * m.datagram_timeout_us
        self.recovery = Recovery(self, pysoem, m.recovery_backoff_ms * 1_000_000, m.recovery_backoff_max_ms * 1_000_000,
                                 m.datagram_timeout_us)
        self._health = DriverHealth(DriverState.READY, f"{len(self.slaves)} SubDevices in OP on {self.interface}")
        log.info("EtherCAT: %d SubDevices in OP on %s, expected working counter %d",
                 len(self.slaves), self.interface, self.expected_wkc)

    def _bring_up(self, pysoem: Any, io: DriverIO) -> None:
        master, subs = self.master, self.net.subdevices
        n = master.config_init()
        if n <= 0:
            raise DriverError(f"EtherCAT: no SubDevice answered on {self.interface} (config_init returned {n}); "
                              f"expected {len(subs)}: check cabling and power")
        self.slaves = list(master.slaves)
        self._check_identities(subs)
        for s, slave in zip(subs, self.slaves):
            if s.esi_device is not None and s.esi_device.coe:
                slave.setup_func = self._setup_func(s)
        for attempt in range(1, MAP_ATTEMPTS + 1):
            self._setup_errors = []
            try:
                master.config_map()
            except pysoem.ConfigMapError as e:
                raise DriverError(f"EtherCAT: config_map failed ({e}): " + self._not_in(pysoem, pysoem.PREOP_STATE)
                                  + ("; " + "; ".join(self._setup_errors) if self._setup_errors else "")) from None
            problem = self._map_problem(subs)
            if not problem:
                break
            if attempt == MAP_ATTEMPTS:
                raise DriverError(problem)
            # a mailbox datagram lost during the SDO exchange (SOEM skips what it could not read): map again
            log.warning("EtherCAT: %s; mapping again (attempt %d of %d)", problem, attempt + 1, MAP_ATTEMPTS)
            master.state = pysoem.INIT_STATE
            master.write_state()
            if master.config_init() != len(self.slaves):
                raise DriverError(problem + "; the segment changed while mapping again")
            self.slaves = list(master.slaves)
            self._check_identities(subs)
            for s, slave in zip(subs, self.slaves):
                if s.esi_device is not None and s.esi_device.coe:
                    slave.setup_func = self._setup_func(s)
        self.expected_wkc = master.expected_wkc
        if self.net.master.dc:
            self._distributed_clocks()
        timeout_us = self.net.master.state_timeout_ms * 1000
        if master.state_check(pysoem.SAFEOP_STATE, timeout_us) != pysoem.SAFEOP_STATE:
            raise DriverError("EtherCAT: segment did not reach SAFE-OP: " + self._not_in(pysoem, pysoem.SAFEOP_STATE))
        self._go_op(pysoem, io)

    def _distributed_clocks(self) -> None:
        """[master] dc = true: SOEM's DC set-up, then SYNC0 at the HAL cycle on every DC-capable SubDevice."""
        if not self.master.config_dc():
            log.warning("EtherCAT: [master] dc = true, but no SubDevice on %s supports distributed clocks",
                        self.interface)
            return
        cycle_ns = self.config.system.hal.cycle_time_us * 1000
        for s, slave in zip(self.net.subdevices, self.slaves):
            try:
                slave.dc_sync(True, cycle_ns)
            except Exception as e:  # noqa: BLE001 - a SubDevice without DC: named, the others still sync
                log.warning("EtherCAT %s: no SYNC0 (%s)", s.label, e)

    def _map_problem(self, subs: tuple[SubDeviceConfig, ...]) -> str:
        """Why the mapped process image cannot be used ("" = it can)."""
        if self._setup_errors:
            return "EtherCAT start-up SDOs failed: " + "; ".join(self._setup_errors)
        for s, slave, r in zip(subs, self.slaves, self.routes):
            if len(slave.output) != r.rx.size or len(slave.input) != r.tx.size:
                return (f"EtherCAT {s.label}: process image {len(slave.output)} B out / {len(slave.input)} B in, but "
                        f"{s.esi_device.type_name if s.esi_device else '?'} in {s.esi_path.name} maps {r.rx.size} B / "
                        f"{r.tx.size} B (PDO assignment differs from the ESI)")
        return ""

    def _check_identities(self, subs: tuple[SubDeviceConfig, ...]) -> None:
        found = self.slaves
        problems = []
        for s, slave in zip(subs, found):
            want = s.identity
            got = (slave.man, slave.id, slave.rev)
            if want != got:
                assert s.esi_device is not None
                problems.append(f"{s.label}: expected {_ident(*want)} ({s.esi_device.type_name} from "
                                f"{s.esi_path.name}), found {_ident(*got)} ({slave.name})")
            elif s.alias:
                try:
                    alias = int.from_bytes(slave._fprd(0x0012, 2), "little")  # station alias register
                except Exception as e:  # noqa: BLE001 - reported as the mismatch it is
                    alias = f"unreadable ({e})"
                if alias != s.alias:
                    problems.append(f"{s.label}: expected station alias {s.alias}, found {alias}")
        for s in subs[len(found):]:
            assert s.esi_device is not None
            problems.append(f"{s.label}: expected {_ident(*s.identity)} ({s.esi_device.type_name}), found nothing "
                            f"(only {len(found)} SubDevice{'s' * (len(found) != 1)} answered)")
        for k in range(len(subs), len(found)):
            slave = found[k]
            problems.append(f"position {k + 1}: not in the network file, found {_ident(slave.man, slave.id, slave.rev)}"
                            f" ({slave.name})")
        if problems:
            raise DriverError("EtherCAT segment does not match " + self.net.file + ": " + "; ".join(problems))

    def _setup_func(self, s: SubDeviceConfig) -> Any:
        """PRE-OP -> SAFE-OP hook (also on recovery): ESI InitCmds, the network's SDOs, mode of operation."""
        dev = s.esi_device
        assert dev is not None
        writes: list[tuple[int, int, bytes, str]] = [
            (c.index, c.subindex, c.data, "ESI InitCmd") for c in dev.init_cmds if "PS" in c.transitions]
        writes += [(w.index, w.subindex, w.data(), "sdo") for w in s.sdo]
        if s.kind is SubDeviceKind.DRIVE:
            writes.append((0x6060, 0, bytes([s.mode.code]), f"mode {s.mode.value}"))

        def setup(slave: Any) -> None:
            for index, sub, data, what in writes:
                try:
                    slave.sdo_write(index, sub, data)
                except Exception as e:  # noqa: BLE001 - reported by open() / recovery with the object
                    self._setup_errors.append(f"{s.label}: SDO 0x{index:04X}:{sub:02X} ({what}) = {data.hex()}: {e}")

        return setup

    def _go_op(self, pysoem: Any, io: DriverIO) -> None:
        master = self.master
        master.state = pysoem.OP_STATE
        master.write_state()
        deadline = time.monotonic() + self.net.master.state_timeout_ms / 1000
        while True:
            self._exchange(io)
            if master.state_check(pysoem.OP_STATE, 2000) == pysoem.OP_STATE:
                break
            if time.monotonic() > deadline:
                raise DriverError("EtherCAT: segment did not reach OP within "
                                  f"{self.net.master.state_timeout_ms} ms: " + self._not_in(pysoem, pysoem.OP_STATE))
            time.sleep(OP_POLL_S)
        master.read_state()
        self._exchange(io)

    def _not_in(self, pysoem: Any, state: int) -> str:
        self.master.read_state()
        out = []
        for s, slave in zip(self.net.subdevices, self.slaves):
            if slave.state != state:
                out.append(f"{s.label} in {state_text(pysoem, slave.state, slave.al_status)}")
        return "; ".join(out) or "no SubDevice reports its state"

    # --- every cycle -------------------------------------------------------------------------
    def _exchange(self, io: DriverIO, now_ns: int = 0) -> int:
        slaves, routes = self.slaves, self.routes
        ok = self.recovery.ok if self.recovery is not None else None
        now_ns = now_ns or time.monotonic_ns()
        for k, r in enumerate(routes):
            slaves[k].output = r.pack(io, ok is None or ok[k], now_ns)
        self.master.send_processdata()
        wkc = self.master.receive_processdata(self.rx_timeout_us)
        self.last_wkc = wkc
        for k, r in enumerate(routes):
            if ok is None or ok[k]:
                if wkc > 0:
                    r.unpack(slaves[k].input, io)
            else:
                r.bus_lost(io)
        return wkc

    def cycle(self, io: DriverIO, now_ns: int, dt_s: float) -> None:
        rec = self.recovery
        assert rec is not None
        wkc = self._exchange(io, time.monotonic_ns())
        if wkc != rec.expected_wkc:
            self.wkc_errors += 1
            if now_ns >= self._next_wkc_check:
                self._next_wkc_check = now_ns + RECHECK_AFTER_WKC_NS
                self._next_check = now_ns
        if now_ns >= self._next_check:
            pending = rec.check(now_ns, wkc, io)
            self._next_check = now_ns + (RECHECK_AFTER_WKC_NS if pending else self.check_ns)
        if rec.down and now_ns >= rec.next_try:
            rec.step(now_ns)
            self._next_check = now_ns  # see the result at once
        self._health = rec.health()

    def health(self) -> DriverHealth:
        return self._health

    # --- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.master is None:
            return
        try:
            io = DriverIO()  # every enable low: shutdown controlwords, DO off
            for _ in range(5):
                self._exchange(io)
                time.sleep(OP_POLL_S)
        except Exception:  # noqa: BLE001 - the bus may be gone; INIT and close still follow
            log.debug("EtherCAT: final exchange failed", exc_info=True)
        self._shutdown_bus()

    def _shutdown_bus(self) -> None:
        pysoem = _pysoem()
        try:
            if self.slaves:
                self.master.state = pysoem.INIT_STATE
                self.master.write_state()
        except Exception:  # noqa: BLE001
            log.debug("EtherCAT: INIT request failed", exc_info=True)
        try:
            self.master.close()
        finally:
            self.master = None
            self._health = DriverHealth(DriverState.OFFLINE, f"closed (interface {self.interface})")


def state_text(pysoem: Any, state: int, al_status: int) -> str:
    """"SAFE-OP + ERROR (AL status 0x001B: Sync manager watchdog)" / "no answer"."""
    names = {pysoem.INIT_STATE: "INIT", pysoem.PREOP_STATE: "PRE-OP", pysoem.BOOT_STATE: "BOOT",
             pysoem.SAFEOP_STATE: "SAFE-OP", pysoem.OP_STATE: "OP"}
    if state == pysoem.NONE_STATE:
        return "no answer (lost)"
    base = names.get(state & 0x0F, f"state 0x{state:02X}")
    if state & pysoem.STATE_ERROR or al_status:
        return f"{base}{' + ERROR' if state & pysoem.STATE_ERROR else ''} (AL status 0x{al_status:04X}: " \
               f"{pysoem.al_status_code_to_string(al_status)})"
    return base
