"""One emulated EtherCAT SubDevice controller (ESC): registers, SII EEPROM, FMMUs, sync managers, AL states.

`Esc.datagram()` applies one datagram as it passes the SubDevice; the application (drive, I/O) plugs in via `App`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from common.fieldbus.esi import EsiDevice

from .coe import CoeServer
from .sii import build_sii

# EtherCAT commands
NOP, APRD, APWR, APRW, FPRD, FPWR, FPRW, BRD, BWR, BRW, LRD, LWR, LRW, ARMW, FRMW = range(15)
AP_CMDS = (APRD, APWR, APRW, ARMW)
FP_CMDS = (FPRD, FPWR, FPRW, FRMW)
B_CMDS = (BRD, BWR, BRW)
L_CMDS = (LRD, LWR, LRW)
READS = (APRD, FPRD, BRD, APRW, FPRW, BRW)
WRITES = (APWR, FPWR, BWR, APRW, FPRW, BRW)

INIT, PREOP, BOOT, SAFEOP, OP = 1, 2, 3, 4, 8
AL_ERR = 0x10
STATE_NAMES = {INIT: "INIT", PREOP: "PRE-OP", BOOT: "BOOT", SAFEOP: "SAFE-OP", OP: "OP"}
# AL status codes (ETG.1000.6)
AL_INVALID_STATE_CHANGE = 0x0011
AL_UNKNOWN_STATE = 0x0012
AL_BOOT_NOT_SUPPORTED = 0x0013
AL_INVALID_MAILBOX_CONFIG = 0x0016
AL_INVALID_OUTPUT_CONFIG = 0x001D
AL_INVALID_INPUT_CONFIG = 0x001E
AL_SM_WATCHDOG = 0x001B

REG_STATION, REG_ALIAS = 0x0010, 0x0012
REG_DLSTATUS = 0x0110
REG_ALCTL, REG_ALSTAT, REG_ALCODE = 0x0120, 0x0130, 0x0134
REG_EEPCTL, REG_EEPADR, REG_EEPDAT = 0x0502, 0x0504, 0x0508
REG_FMMU, REG_SM = 0x0600, 0x0800
EEP_BUSY, EEP_READ64 = 0x8000, 0x0040
N_FMMU, N_SM = 8, 8
SM_FULL = 0x08  # SM status: mailbox full


class App(Protocol):
    """The SubDevice's application: exchanges the process images (bytes of the output / input SM)."""

    def outputs(self, data: bytes, now: float) -> None: ...
    def inputs(self, now: float) -> bytes: ...
    def al_changed(self, state: int) -> None: ...


@dataclass
class _Fmmu:
    log_start: int
    length: int
    log_start_bit: int
    log_end_bit: int
    phys: int
    phys_bit: int
    kind: int  # 1 read, 2 write
    active: bool

    @property
    def bytewise(self) -> bool:
        return self.log_start_bit == 0 and self.log_end_bit == 7 and self.phys_bit == 0


class Esc:
    """Register space (64 KiB), EEPROM, and the AL state machine of one SubDevice."""

    def __init__(self, position: int, esi: EsiDevice, app: App, *, last: bool, serial: int = 0) -> None:
        self.position = position  # 1-based, bus order
        self.esi = esi
        self.app = app
        self.last = last
        self.sii = build_sii(esi, serial=serial)
        self.mem = bytearray(0x10000)
        self.coe = CoeServer(esi, app, serial) if esi.coe else None
        self._mbx_last = b""
        self.out_sm = esi.sm("Outputs")
        self.in_sm = esi.sm("Inputs")
        self.out_bytes = (esi.rx_bits + 7) // 8
        self.in_bytes = (esi.tx_bits + 7) // 8
        self.power_on()

    # --- life cycle --------------------------------------------------------------------------
    def power_on(self) -> None:
        """Registers as after power-up: INIT, station address 0, no FMMU / SM configured."""
        m = self.mem
        m[:] = bytes(len(m))
        m[0x0000] = 0x11  # type: ESC
        m[0x0001] = 0x01
        m[0x0004] = N_FMMU
        m[0x0005] = N_SM
        m[0x0006] = 8  # KiB process RAM
        m[0x0007] = 0x0F  # ports 0/1 MII
        struct.pack_into("<H", m, 0x0008, 0x0000)  # features: no DC (SOEM then sends no DC traffic)
        struct.pack_into("<H", m, REG_ALIAS, struct.unpack_from("<H", self.sii, 0x04 * 2)[0])
        struct.pack_into("<H", m, REG_DLSTATUS, 0x0211 if self.last else 0x0A31)
        struct.pack_into("<H", m, REG_EEPCTL, EEP_READ64)
        self._set_al(INIT, 0)
        self.fmmus: list[_Fmmu] = []
        self.frames = 0

    @property
    def station(self) -> int:
        return struct.unpack_from("<H", self.mem, REG_STATION)[0]

    @property
    def al_state(self) -> int:
        return self.mem[REG_ALSTAT] & 0x0F

    @property
    def al_error(self) -> bool:
        return bool(self.mem[REG_ALSTAT] & AL_ERR)

    @property
    def al_code(self) -> int:
        return struct.unpack_from("<H", self.mem, REG_ALCODE)[0]

    def _set_al(self, state: int, code: int, error: bool = False) -> None:
        old = self.mem[REG_ALSTAT] & 0x0F
        struct.pack_into("<H", self.mem, REG_ALSTAT, state | (AL_ERR if error else 0))
        struct.pack_into("<H", self.mem, REG_ALCODE, code)
        if state != old:
            if state == INIT:
                self._mailbox_reset()
            self.app.al_changed(state)

    def fail(self, state: int, code: int) -> None:
        """Fault injection / local error: fall back to `state` with the error flag and `code`."""
        self._set_al(state, code, True)

    # --- register access ---------------------------------------------------------------------
    def read(self, ado: int, n: int) -> bytes:
        end = ado + n
        if self.in_sm is not None and self.in_bytes and self._sm_active(self.in_sm.index):
            start = self._sm_start(self.in_sm.index)
            if ado < start + self.in_bytes and end > start:
                self.mem[start:start + self.in_bytes] = self.app.inputs(self._now)
        data = bytes(self.mem[ado:end])
        mbx_in = self.esi.sm("MBoxIn")
        if mbx_in is not None and self.mem[REG_SM + 8 * 1 + 5] & SM_FULL:
            s, ln = self._sm_start(1), self._sm_len(1)
            if ado <= s + ln - 1 < end:  # the last byte read empties the mailbox
                self.mem[REG_SM + 8 + 5] &= ~SM_FULL & 0xFF
        return data

    def write(self, ado: int, data: bytes | memoryview) -> None:
        end = ado + len(data)
        keep = {}
        for lo, hi in self._read_only(ado, end):
            keep[lo] = bytes(self.mem[lo:hi])
        old_repeat = self.mem[REG_SM + 8 + 6] & 0x02
        self.mem[ado:end] = data
        if ado <= REG_SM + 8 < end:  # SM1 (re)configured: its buffer starts empty, as in a real ESC
            self._mailbox_reset()
        for lo, b in keep.items():
            self.mem[lo:lo + len(b)] = b
        if ado <= REG_ALCTL < end:
            self._al_control(self.mem[REG_ALCTL])
        if ado < REG_FMMU + 16 * N_FMMU and end > REG_FMMU:
            self._load_fmmus()
        if ado <= REG_EEPCTL + 1 < end:
            self._eeprom_command()
        if ado <= REG_SM + 8 + 6 < end and (self.mem[REG_SM + 8 + 6] & 0x02) != old_repeat:
            self._mailbox_repeat()
        if self.coe is not None and self._sm_active(0):
            s, ln = self._sm_start(0), self._sm_len(0)
            if ado <= s + ln - 1 < end:
                self._mailbox_request(bytes(self.mem[s:s + ln]))

    @staticmethod
    def _read_only(lo: int, hi: int) -> list[tuple[int, int]]:
        out = []
        for a, b in ((0x0000, 0x0010), (REG_DLSTATUS, REG_DLSTATUS + 2), (REG_ALSTAT, REG_ALSTAT + 6)):
            if lo < b and hi > a:
                out.append((max(a, lo), min(b, hi)))
        if lo < REG_SM + 8 * N_SM and hi > REG_SM:
            for n in range(N_SM):
                a = REG_SM + 8 * n + 5
                if lo <= a < hi:
                    out.append((a, a + 1))
        return out

    def _sm_start(self, n: int) -> int:
        return struct.unpack_from("<H", self.mem, REG_SM + 8 * n)[0]

    def _sm_len(self, n: int) -> int:
        return struct.unpack_from("<H", self.mem, REG_SM + 8 * n + 2)[0]

    def _sm_active(self, n: int) -> bool:
        return bool(self.mem[REG_SM + 8 * n + 6] & 0x01) and self._sm_len(n) > 0

    # --- EEPROM ------------------------------------------------------------------------------
    def _eeprom_command(self) -> None:
        ctl = struct.unpack_from("<H", self.mem, REG_EEPCTL)[0]
        cmd = (ctl >> 8) & 0x07
        if cmd == 0x01:  # read 8 bytes at the word address
            addr = struct.unpack_from("<I", self.mem, REG_EEPADR)[0] * 2
            chunk = self.sii[addr:addr + 8].ljust(8, b"\xff")
            self.mem[REG_EEPDAT:REG_EEPDAT + 8] = chunk
        struct.pack_into("<H", self.mem, REG_EEPCTL, EEP_READ64 | (ctl & 0x0001))  # done, not busy, no error

    # --- AL state machine --------------------------------------------------------------------
    def _al_control(self, value: int) -> None:
        req, ack = value & 0x0F, bool(value & AL_ERR)
        cur, err = self.al_state, self.al_error
        if err and not ack and req >= cur:
            return  # an error must be acknowledged before going up (or sideways)
        if req not in STATE_NAMES:
            self._set_al(cur, AL_UNKNOWN_STATE, True)
            return
        if req == BOOT:
            self._set_al(cur, AL_BOOT_NOT_SUPPORTED, True)
            return
        if req <= cur:
            self._set_al(req, 0)
            return
        # going up one step at a time: INIT -> PRE-OP -> SAFE-OP -> OP
        order = [INIT, PREOP, SAFEOP, OP]
        if order.index(req) != order.index(cur) + 1:
            self._set_al(cur, AL_INVALID_STATE_CHANGE, True)
            return
        if req == PREOP and self.coe is not None and not (self._sm_active(0) and self._sm_active(1)):
            self._set_al(cur, AL_INVALID_MAILBOX_CONFIG, True)
            return
        if req == SAFEOP:
            code = self._check_pd_config()
            if code:
                self._set_al(cur, code, True)
                return
        self._set_al(req, 0)

    def _check_pd_config(self) -> int:
        for sm, nbytes, code in ((self.out_sm, self.out_bytes, AL_INVALID_OUTPUT_CONFIG),
                                 (self.in_sm, self.in_bytes, AL_INVALID_INPUT_CONFIG)):
            if sm is None or not nbytes:
                continue
            if not self._sm_active(sm.index) or self._sm_len(sm.index) != nbytes or self._sm_start(sm.index) != sm.start:
                return code
        return 0

    def _load_fmmus(self) -> None:
        out = []
        for n in range(N_FMMU):
            ls, ln, sb, eb, ps, pb, kind, act = struct.unpack_from("<IHBBHBBB", self.mem, REG_FMMU + 16 * n)
            if act & 1 and ln:
                out.append(_Fmmu(ls, ln, sb, eb, ps, pb, kind, True))
        self.fmmus = out

    # --- mailbox (CoE) -----------------------------------------------------------------------
    def _mailbox_request(self, raw: bytes) -> None:
        assert self.coe is not None
        reply = self.coe.handle(raw, self.al_state)
        if reply is None:
            return
        self._mbx_last = reply
        self._mailbox_put(reply)

    def _mailbox_reset(self) -> None:
        self.mem[REG_SM + 8 + 5] &= ~SM_FULL & 0xFF
        self._mbx_last = b""

    def _mailbox_put(self, reply: bytes) -> None:
        s, ln = self._sm_start(1), self._sm_len(1)
        self.mem[s:s + ln] = reply[:ln].ljust(ln, b"\0")
        self.mem[REG_SM + 8 + 5] |= SM_FULL

    def _mailbox_repeat(self) -> None:
        if self._mbx_last:
            self._mailbox_put(self._mbx_last)
        ack = self.mem[REG_SM + 8 + 6] & 0x02  # the repeat ack follows the request toggle
        self.mem[REG_SM + 8 + 7] = (self.mem[REG_SM + 8 + 7] & ~0x02 & 0xFF) | ack

    # --- datagrams ---------------------------------------------------------------------------
    _now = 0.0

    def datagram(self, cmd: int, adp: int, ado: int, laddr: int, data: memoryview, now: float) -> tuple[int, int]:
        """Apply one datagram; returns (working counter increment, new ADP)."""
        self._now = now
        if cmd in AP_CMDS:
            hit = adp == 0
            adp = (adp + 1) & 0xFFFF
            if not hit:
                return 0, adp
            return self._physical(cmd, ado, data), adp
        if cmd in FP_CMDS:
            if adp != self.station:
                return 0, adp
            return self._physical(cmd, ado, data), adp
        if cmd in B_CMDS:
            adp = (adp + 1) & 0xFFFF
            if cmd == BRD:
                cur = self.read(ado, len(data))
                data[:] = bytes(a | b for a, b in zip(data, cur))
                return 1, adp
            return self._physical(cmd, ado, data), adp
        if cmd in L_CMDS:
            return self._logical(cmd, laddr, data, now), adp
        return 0, adp

    def _physical(self, cmd: int, ado: int, data: memoryview) -> int:
        if cmd in (ARMW, FRMW):
            data[:] = self.read(ado, len(data))
            return 1
        wkc = 0
        incoming = bytes(data) if cmd in WRITES else b""
        if cmd in READS:
            data[:] = self.read(ado, len(data))
            wkc += 1
        if cmd in WRITES:
            self.write(ado, incoming)
            wkc += 2 if cmd in (APRW, FPRW, BRW) else 1
        return wkc

    def _logical(self, cmd: int, laddr: int, data: memoryview, now: float) -> int:
        state = self.al_state
        if state < SAFEOP or not self.fmmus:
            return 0
        n = len(data)
        got_read = got_write = False
        incoming = bytes(data)
        for f in self.fmmus:
            lo, hi = max(f.log_start, laddr), min(f.log_start + f.length, laddr + n)
            if lo >= hi:
                continue
            if f.kind & 2 and cmd in (LWR, LRW) and state == OP:
                self._fmmu_write(f, incoming, laddr, lo, hi)
                got_write = True
            if f.kind & 1 and cmd in (LRD, LRW):
                self._fmmu_read(f, data, laddr, lo, hi)
                got_read = True
        if got_write and self.out_sm is not None:
            s = self._sm_start(self.out_sm.index)
            self.app.outputs(bytes(self.mem[s:s + self.out_bytes]), now)
        if cmd == LRW:
            return (1 if got_read else 0) + (2 if got_write else 0)
        return 1 if (got_read or got_write) else 0

    def _fmmu_write(self, f: _Fmmu, incoming: bytes, laddr: int, lo: int, hi: int) -> None:
        if f.bytewise:
            p = f.phys + (lo - f.log_start)
            self.mem[p:p + hi - lo] = incoming[lo - laddr:hi - laddr]
            return
        for bit, pbit in self._bits(f, laddr, lo, hi):
            src = incoming[bit // 8 - laddr] >> (bit % 8) & 1
            byte = pbit // 8
            self.mem[byte] = (self.mem[byte] & ~(1 << (pbit % 8)) & 0xFF) | (src << (pbit % 8))

    def _fmmu_read(self, f: _Fmmu, data: memoryview, laddr: int, lo: int, hi: int) -> None:
        if f.bytewise:
            p = f.phys + (lo - f.log_start)
            data[lo - laddr:hi - laddr] = self.read(p, hi - lo)
            return
        span = f.phys + (f.length + 1)
        self.read(f.phys, span - f.phys)  # refresh the input image
        for bit, pbit in self._bits(f, laddr, lo, hi):
            v = self.mem[pbit // 8] >> (pbit % 8) & 1
            i = bit // 8 - laddr
            data[i] = (data[i] & ~(1 << (bit % 8)) & 0xFF) | (v << (bit % 8))

    @staticmethod
    def _bits(f: _Fmmu, laddr: int, lo: int, hi: int):  # noqa: ANN205
        first = f.log_start * 8 + f.log_start_bit
        last = (f.log_start + f.length - 1) * 8 + f.log_end_bit
        for bit in range(max(first, lo * 8), min(last, hi * 8 - 1) + 1):
            yield bit, f.phys * 8 + f.phys_bit + (bit - first)
