"""The applications behind the emulated ESCs: a CiA 402 servo drive (CSP/CST dynamics) and an 8-channel DI/DO terminal.

Process images are packed and unpacked by the PDO entries of the device's ESI, like a real SubDevice's firmware.
"""
from __future__ import annotations

import struct
from typing import Any

from common.fieldbus.esi import DATA_TYPES, EsiDevice, Pdo

from .coe import Obj

SAFEOP, OP = 4, 8
MODE_CSP, MODE_CST = 8, 10
# statusword values (bit 4 voltage enabled, bit 9 remote)
SW_SWITCH_ON_DISABLED = 0x0250
SW_READY = 0x0231
SW_SWITCHED_ON = 0x0233
SW_OP_ENABLED = 0x0237
SW_QUICK_STOP = 0x0217
SW_FAULT = 0x0218
SW_FOLLOWING = 0x1000  # CSP/CST: the drive follows the cyclic target

# dynamics model constants (increments)
MAX_SPEED = 20_000_000.0  # inc/s the drive can follow in CSP
ACCEL_PER_PERMILLE = 4000.0  # CST: inc/s^2 per per-mille of rated torque
DAMPING = 4.0  # 1/s viscous friction in CST


class PdoImage:
    """Byte offsets and struct formats of the mapped objects of one direction (bit entries: bit offsets)."""

    def __init__(self, pdos: tuple[Pdo, ...]) -> None:
        self.fields: dict[tuple[int, int], tuple[int, str]] = {}
        self.bits: dict[tuple[int, int], int] = {}
        bit = 0
        for p in pdos:
            for e in p.entries:
                if not e.is_padding:
                    code = DATA_TYPES[e.data_type][1]
                    if code:
                        self.fields[(e.index, e.subindex)] = (bit // 8, "<" + code)
                    else:
                        self.bits[(e.index, e.subindex)] = bit
                bit += e.bit_len
        self.size = (bit + 7) // 8

    def get(self, data: bytes, index: int, sub: int = 0, default: Any = 0) -> Any:
        f = self.fields.get((index, sub))
        return struct.unpack_from(f[1], data, f[0])[0] if f else default

    def put(self, buf: bytearray, index: int, sub: int, value: Any) -> None:
        f = self.fields.get((index, sub))
        if f:
            struct.pack_into(f[1], buf, f[0], value)


class Cia402Drive:
    """A servo drive: CiA 402 state machine, CSP (position follows 0x607A) and CST (torque integrates)."""

    def __init__(self, esi: EsiDevice) -> None:
        self.rx = PdoImage(esi.rx_pdos)
        self.tx = PdoImage(esi.tx_pdos)
        self.buf = bytearray(self.tx.size)
        self.statusword = SW_SWITCH_ON_DISABLED
        self.controlword = 0
        self.mode = MODE_CSP
        self.max_torque = 1000
        self.position = 0.0
        self.velocity = 0.0
        self.torque = 0
        self.target_position = 0
        self.target_velocity = 0
        self.target_torque = 0
        self.error_code = 0
        self.pending_fault = 0
        self.al = 1
        self._last = 0.0

    # --- CoE objects ------------------------------------------------------------------------
    def _set_mode(self, v: int) -> None:
        if v not in (MODE_CSP, MODE_CST):
            raise ValueError(v)
        self.mode = v

    def _set_max_torque(self, v: int) -> None:
        self.max_torque = v

    def objects(self) -> dict[tuple[int, int], Obj]:
        return {
            (0x603F, 0): Obj("H", lambda: self.error_code),
            (0x6040, 0): Obj("H", lambda: self.controlword, lambda v: setattr(self, "controlword", v)),
            (0x6041, 0): Obj("H", lambda: self.statusword),
            (0x6060, 0): Obj("b", lambda: self.mode, self._set_mode),
            (0x6061, 0): Obj("b", lambda: self.mode),
            (0x6064, 0): Obj("i", lambda: int(self.position)),
            (0x606C, 0): Obj("i", lambda: int(self.velocity)),
            (0x6072, 0): Obj("H", lambda: self.max_torque, self._set_max_torque),
            (0x6077, 0): Obj("h", lambda: self.torque),
            (0x607A, 0): Obj("i", lambda: self.target_position),
            (0x6071, 0): Obj("h", lambda: self.target_torque),
            (0x6502, 0): Obj("I", lambda: (1 << (MODE_CSP - 1)) | (1 << (MODE_CST - 1))),
        }

    # --- process data -----------------------------------------------------------------------
    def al_changed(self, state: int) -> None:
        self.al = state
        if state != OP and self.statusword in (SW_OP_ENABLED, SW_SWITCHED_ON, SW_READY, SW_QUICK_STOP):
            self.statusword = SW_SWITCH_ON_DISABLED  # no cyclic commands outside OP: power stage off
            self.torque = 0

    def fault(self, code: int) -> None:
        self.pending_fault = code

    def outputs(self, data: bytes, now: float) -> None:
        rx = self.rx
        self.target_position = rx.get(data, 0x607A)
        self.target_velocity = rx.get(data, 0x60FF)
        self.target_torque = rx.get(data, 0x6071)
        mode = rx.get(data, 0x6060, 0, self.mode)
        if mode in (MODE_CSP, MODE_CST):
            self.mode = mode
        cw = rx.get(data, 0x6040)
        self._state_machine(cw)
        self.controlword = cw

    def _state_machine(self, cw: int) -> None:
        sw = self.statusword
        if self.pending_fault and sw != SW_FAULT:
            self.error_code, self.pending_fault = self.pending_fault, 0
            self.statusword = SW_FAULT
            self.torque = 0
            return
        if sw == SW_FAULT:
            if cw & 0x80 and not self.controlword & 0x80:  # fault reset: rising edge of bit 7
                self.error_code = 0
                self.statusword = SW_SWITCH_ON_DISABLED
            return
        low = cw & 0x0F
        if not cw & 0x02:  # disable voltage
            self.statusword = SW_SWITCH_ON_DISABLED
        elif not cw & 0x04:  # quick stop
            self.statusword = SW_QUICK_STOP if sw == SW_OP_ENABLED else SW_SWITCH_ON_DISABLED
        elif low & 0x07 == 0x06:  # shutdown
            self.statusword = SW_READY
        elif low == 0x07:  # switch on / disable operation
            if sw in (SW_READY, SW_OP_ENABLED, SW_SWITCHED_ON):
                self.statusword = SW_SWITCHED_ON
        elif low == 0x0F:  # enable operation
            if sw in (SW_SWITCHED_ON, SW_OP_ENABLED):
                if sw != SW_OP_ENABLED and self.mode == MODE_CSP:
                    self.target_position = int(self.position)
                self.statusword = SW_OP_ENABLED
            elif sw == SW_READY:
                self.statusword = SW_SWITCHED_ON

    def step(self, now: float) -> None:
        dt = min(max(now - self._last, 0.0), 0.05) if self._last else 0.0
        self._last = now
        if self.pending_fault and self.statusword != SW_FAULT:
            self._state_machine(self.controlword)
        if self.statusword == SW_QUICK_STOP:
            self.velocity = 0.0
            self.statusword = SW_SWITCH_ON_DISABLED
        if self.statusword != SW_OP_ENABLED or dt <= 0:
            if self.statusword != SW_OP_ENABLED:
                self.velocity, self.torque = 0.0, 0
            return
        if self.mode == MODE_CSP:
            step = max(-MAX_SPEED * dt, min(MAX_SPEED * dt, self.target_position - self.position))
            self.position += step
            self.velocity = step / dt
            self.torque = 0
        else:
            t = max(-self.max_torque, min(self.max_torque, self.target_torque))
            self.velocity += (t * ACCEL_PER_PERMILLE - DAMPING * self.velocity) * dt
            self.position += self.velocity * dt
            self.torque = t

    def inputs(self, now: float) -> bytes:
        self.step(now)
        tx, b = self.tx, self.buf
        sw = self.statusword | (SW_FOLLOWING if self.statusword == SW_OP_ENABLED else 0)
        tx.put(b, 0x6041, 0, sw)
        tx.put(b, 0x6064, 0, _i32(self.position))
        tx.put(b, 0x606C, 0, _i32(self.velocity))
        tx.put(b, 0x6077, 0, self.torque)
        tx.put(b, 0x6061, 0, self.mode)
        tx.put(b, 0x603F, 0, self.error_code)
        return bytes(b)

    def status(self) -> dict[str, Any]:
        return {"statusword": self.statusword, "controlword": self.controlword, "mode": self.mode,
                "actual_position": self.position, "velocity": self.velocity, "torque": self.torque,
                "target_position": self.target_position, "target_torque": self.target_torque,
                "error_code": self.error_code}


def _i32(x: float) -> int:
    v = int(round(x))
    return ((v + 2**31) % 2**32) - 2**31


class DigitalIo:
    """A DI/DO terminal: every BOOL output entry is a DO channel, every BOOL input entry a DI channel."""

    def __init__(self, esi: EsiDevice) -> None:
        self.rx = PdoImage(esi.rx_pdos)
        self.tx = PdoImage(esi.tx_pdos)
        self.do_bits = sorted(self.rx.bits.values())
        self.di_bits = sorted(self.tx.bits.values())
        self.do = 0  # channel bitmask as last applied
        self.di = 0
        self.buf = bytearray(self.tx.size)

    def al_changed(self, state: int) -> None:
        if state != OP:
            self.do = 0  # outputs to their safe state outside OP

    def outputs(self, data: bytes, now: float) -> None:
        v = 0
        for ch, bit in enumerate(self.do_bits):
            if data[bit // 8] >> (bit % 8) & 1:
                v |= 1 << ch
        self.do = v

    def inputs(self, now: float) -> bytes:
        b = self.buf
        b[:] = bytes(len(b))
        for ch, bit in enumerate(self.di_bits):
            if self.di >> ch & 1:
                b[bit // 8] |= 1 << (bit % 8)
        return bytes(b)

    def status(self) -> dict[str, Any]:
        return {"do": self.do, "di": self.di}
