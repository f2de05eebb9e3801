"""Process-image routing: which bytes and bits of a SubDevice's PDOs carry which axis value or DI/DO/AI/AO pin.

Layouts come from the ESI PDO entries (in SM order, as SOEM maps them); pack/unpack work on preallocated buffers.
"""
from __future__ import annotations

import struct
import time

from common.config import EvoConfig, HomingMethod
from common.fieldbus.esi import DATA_TYPES, EsiDevice, Pdo
from common.fieldbus.ethercat_config import DriveMode, SubDeviceConfig
from common.states import DriverState

from ..base import DriverIO
from ..cia402 import DriveState, controlword, decode

COMM_ERROR = 0x7500  # CiA 301 "communication error": the drive's SubDevice is lost or not in OP
#: a drive fault is reset (enable low) only after it has been shown this long: the bridges (10-20 Hz) and the
#: operator see the drive's error code before it goes
FAULT_HOLD_NS = 1_000_000_000


class Layout:
    """Offsets of the mapped objects of one direction: byte-aligned values and single bits."""

    def __init__(self, pdos: tuple[Pdo, ...]) -> None:
        self.values: dict[tuple[int, int], tuple[int, struct.Struct]] = {}
        self.bits: list[tuple[tuple[int, int], int]] = []  # (key, bit offset) in PDO order
        bit = 0
        for p in pdos:
            for e in p.entries:
                if not e.is_padding:
                    code = DATA_TYPES[e.data_type][1]
                    if e.bit_len == 1:
                        self.bits.append(((e.index, e.subindex), bit))
                    elif code:
                        self.values[(e.index, e.subindex)] = (bit // 8, struct.Struct("<" + code))
                bit += e.bit_len
        self.size = (bit + 7) // 8

    def value(self, index: int, sub: int = 0) -> tuple[int, struct.Struct] | None:
        return self.values.get((index, sub))

    def words(self) -> list[tuple[int, struct.Struct]]:
        """The integer values in PDO order (what AI/AO pin blocks take)."""
        return [v for v in self.values.values() if v[1].format[-1] in "bBhHiI"]


def _type_range(s: struct.Struct) -> tuple[float, float]:
    bits = s.size * 8
    if s.format[-1].islower():
        return float(-(1 << (bits - 1))), float((1 << (bits - 1)) - 1)
    return 0.0, float((1 << bits) - 1)


class DriveRoute:
    """One CiA 402 drive: controlword / targets out, statusword / actual values / error code in."""

    def __init__(self, sub: SubDeviceConfig, dev: EsiDevice, config: EvoConfig) -> None:
        self.sub = sub
        self.i = sub.axis - 1
        self.mode = sub.mode
        self.csp = sub.mode is DriveMode.CSP
        self.scale = sub.increments_per_unit
        self.absolute = config.axis(sub.axis).homing.method is HomingMethod.ABSOLUTE
        self.rx, self.tx = Layout(dev.rx_pdos), Layout(dev.tx_pdos)
        self.out = bytearray(self.rx.size)
        self.cw = self.rx.value(0x6040)
        self.tpos = self.rx.value(0x607A)
        self.tvel = self.rx.value(0x60FF)
        self.ttrq = self.rx.value(0x6071)
        self.mop = self.rx.value(0x6060)
        self.sw = self.tx.value(0x6041)
        self.apos = self.tx.value(0x6064)
        self.avel = self.tx.value(0x606C)
        self.atrq = self.tx.value(0x6077)
        self.err = self.tx.value(0x603F)
        self.state = DriveState.NOT_READY
        self.statusword = 0
        self.error_code = 0
        self.actual_inc = 0
        self._phase = False
        self.fault_since = 0
        if self.mop is not None:
            self.mop[1].pack_into(self.out, self.mop[0], sub.mode.code)

    def pack(self, io: DriverIO, bus_ok: bool, now_ns: int) -> bytes:
        """The outputs for this cycle (controlword walks the state machine; targets scaled to increments)."""
        i = self.i
        self._phase = not self._phase
        enable = bus_ok and io.enable.item(i)
        may_reset = self._phase and now_ns - self.fault_since >= FAULT_HOLD_NS
        cw = controlword(self.state, enable, may_reset)
        assert self.cw is not None
        self.cw[1].pack_into(self.out, self.cw[0], cw)
        following = self.state is DriveState.OPERATION_ENABLED and enable
        if self.tpos is not None:
            # until the drive follows, the target is where it stands: enabling never jumps
            t = io.target_position.item(i) * self.scale if following and self.csp else self.actual_inc
            self.tpos[1].pack_into(self.out, self.tpos[0], _clamp_i32(t))
        if self.tvel is not None:
            v = io.target_velocity.item(i) * self.scale if following else 0.0
            self.tvel[1].pack_into(self.out, self.tvel[0], _clamp_i32(v))
        if self.ttrq is not None:
            t = io.torque.item(i) * 10.0 if following and not self.csp else 0.0  # % -> per mille
            self.ttrq[1].pack_into(self.out, self.ttrq[0], int(max(-32768, min(32767, round(t)))))
        return bytes(self.out)

    def unpack(self, data: bytes, io: DriverIO) -> None:
        i = self.i
        assert self.sw is not None and self.apos is not None
        sw = self.sw[1].unpack_from(data, self.sw[0])[0]
        self.statusword = sw
        self.state = st = decode(sw)
        self.actual_inc = self.apos[1].unpack_from(data, self.apos[0])[0]
        io.position[i] = self.actual_inc / self.scale
        io.velocity[i] = self.avel[1].unpack_from(data, self.avel[0])[0] / self.scale if self.avel else 0.0
        io.torque_estimate[i] = self.atrq[1].unpack_from(data, self.atrq[0])[0] / 10.0 if self.atrq else 0.0
        fault = st in (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE)
        if fault and not io.drive_fault[i]:
            self.fault_since = time.monotonic_ns()
        self.error_code = self.err[1].unpack_from(data, self.err[0])[0] if (fault and self.err) else 0
        io.drive_fault[i] = fault
        io.drive_error_code[i] = self.error_code if fault else 0
        io.drive_ready[i] = st is DriveState.OPERATION_ENABLED
        io.referenced[i] = self.absolute
        if fault:
            io.axis_state[i] = DriverState.FAULT
        elif st is DriveState.OPERATION_ENABLED:
            io.axis_state[i] = DriverState.ENABLED
        elif io.enable[i]:
            io.axis_state[i] = DriverState.INIT
        else:
            io.axis_state[i] = DriverState.READY

    def bus_lost(self, io: DriverIO) -> None:
        """The SubDevice is gone or out of OP: a drive fault the CU stops on (values hold)."""
        i = self.i
        self.state = DriveState.NOT_READY
        io.drive_fault[i] = True
        io.drive_ready[i] = False
        io.drive_error_code[i] = COMM_ERROR
        io.axis_state[i] = DriverState.FAULT


class IoRoute:
    """A terminal: BOOL entries onto DI/DO pins, integer entries onto AI/AO pins (normalised 0..1 over the type).

    Bits are routed with plain ints (a terminal has a handful): numpy's per-call cost would dominate.
    """

    def __init__(self, sub: SubDeviceConfig, dev: EsiDevice) -> None:
        self.sub = sub
        self.rx, self.tx = Layout(dev.rx_pdos), Layout(dev.tx_pdos)
        self.out = bytearray(self.rx.size)
        self.di = self._bits(self.tx, sub.di.pins if sub.di else range(0))
        self.do = self._bits(self.rx, sub.do.pins if sub.do else range(0))
        self.do_words = sorted({pin >> 6 for pin, _, _ in self.do})
        self.ai = list(zip(sub.ai.pins, self.tx.words())) if sub.ai else []
        self.ao = list(zip(sub.ao.pins, self.rx.words())) if sub.ao else []

    @staticmethod
    def _bits(layout: Layout, pins: range) -> list[tuple[int, int, int]]:
        """(pin, byte offset, bit mask) per routed channel, in PDO order."""
        return [(pin, b // 8, 1 << (b % 8)) for pin, (_, b) in zip(pins, layout.bits)]

    def pack(self, io: DriverIO, bus_ok: bool, now_ns: int) -> bytes:
        out = self.out
        for i in range(len(out)):
            out[i] = 0
        if bus_ok and self.do:
            words = {w: int(io.do_bank[w]) for w in self.do_words}
            for pin, byte, mask in self.do:
                if words[pin >> 6] >> (pin & 63) & 1:
                    out[byte] |= mask
        for pin, (off, s) in self.ao:
            lo, hi = _type_range(s)
            v = lo + float(min(1.0, max(0.0, io.ao[pin]))) * (hi - lo) if bus_ok else 0.0
            s.pack_into(out, off, int(round(v)))
        return bytes(out)

    def unpack(self, data: bytes, io: DriverIO) -> None:
        di = io.di
        for pin, byte, mask in self.di:
            di[pin] = data[byte] & mask != 0
        for pin, (off, s) in self.ai:
            lo, hi = _type_range(s)
            io.ai[pin] = (s.unpack_from(data, off)[0] - lo) / (hi - lo)

    def bus_lost(self, io: DriverIO) -> None:
        """Inputs of a lost terminal read 0 (de-energised): an NC E-stop or guard on it reads "open"."""
        for pin, _, _ in self.di:
            io.di[pin] = False
        for pin, _ in self.ai:
            io.ai[pin] = 0.0


def _clamp_i32(x: float) -> int:
    return int(max(-2147483648, min(2147483647, round(x))))
