"""CoE (CANopen over EtherCAT) mailbox server of an emulated SubDevice: SDO upload/download, expedited and normal.

The object dictionary holds identity, sync manager types and PDO assignment/mapping (from the ESI) plus the application's objects.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

from common.fieldbus.esi import EsiDevice

MBX_TYPE_COE = 0x03
COE_SDO_REQ, COE_SDO_RES = 2, 3
ABORT_NO_OBJECT = 0x06020000
ABORT_NO_SUBINDEX = 0x06090011
ABORT_READ_ONLY = 0x06010002
ABORT_LENGTH = 0x06070010
ABORT_RANGE = 0x06090030
ABORT_COMMAND = 0x05040001
ABORT_STATE = 0x08000022  # not possible in the present device state


@dataclass
class Obj:
    """One object entry: struct format (or "s" for a string), value getter, setter (None = read-only)."""

    fmt: str
    get: Callable[[], Any]
    set: Callable[[Any], None] | None = None

    def encode(self) -> bytes:
        v = self.get()
        return v.encode("latin-1") if self.fmt == "s" else struct.pack("<" + self.fmt, v)


def const(fmt: str, value: Any) -> Obj:
    return Obj(fmt, lambda: value)


class CoeServer:
    """Answers one mailbox request (bytes of the SM0 buffer) with the reply for SM1, or None."""

    def __init__(self, esi: EsiDevice, app: Any, serial: int) -> None:
        od: dict[tuple[int, int], Obj] = {
            (0x1000, 0): const("I", 0x00020192 if esi.profile == 402 else 0x00001389),
            (0x1008, 0): const("s", esi.type_name),
            (0x1018, 0): const("B", 4),
            (0x1018, 1): const("I", esi.vendor_id),
            (0x1018, 2): const("I", esi.product_code),
            (0x1018, 3): const("I", esi.revision),
            (0x1018, 4): const("I", serial),
            (0x1C00, 0): const("B", len(esi.sms)),
        }
        for sm in esi.sms:
            od[(0x1C00, sm.index + 1)] = const("B", sm.sii_type)
        for sm in esi.sms:
            if sm.kind not in ("Outputs", "Inputs"):
                continue
            pdos = [p for p in (esi.rx_pdos if sm.kind == "Outputs" else esi.tx_pdos) if p.sm == sm.index]
            od[(0x1C10 + sm.index, 0)] = const("B", len(pdos))
            for k, p in enumerate(pdos, 1):
                od[(0x1C10 + sm.index, k)] = const("H", p.index)
                od[(p.index, 0)] = const("B", len(p.entries))
                for j, e in enumerate(p.entries, 1):
                    od[(p.index, j)] = const("I", e.index << 16 | e.subindex << 8 | e.bit_len)
        od.update(getattr(app, "objects", lambda: {})())
        self.od = od
        self.counter = 0

    def handle(self, raw: bytes, al_state: int) -> bytes | None:
        if len(raw) < 16:
            return None
        length, _addr, _chan, mtype = struct.unpack_from("<HHBB", raw, 0)
        if mtype & 0x0F != MBX_TYPE_COE:
            return self._mbx_error(0x0002)  # unsupported protocol
        coe = struct.unpack_from("<H", raw, 6)[0]
        if coe >> 12 != COE_SDO_REQ:
            return self._mbx_error(0x0002)
        cmd, index, sub = struct.unpack_from("<BHB", raw, 8)
        ccs = cmd >> 5
        if cmd & 0x10:  # complete access
            return self._abort(index, sub, ABORT_COMMAND)
        if ccs == 2:  # upload
            return self._upload(index, sub)
        if ccs == 1:  # download
            if cmd & 0x02:  # expedited
                n = 4 - ((cmd >> 2) & 0x03) if cmd & 0x01 else 4
                data = raw[12:12 + n]
            else:
                size = struct.unpack_from("<I", raw, 12)[0]
                data = raw[16:16 + size]
                if 6 + length < 16 + size:
                    return self._abort(index, sub, ABORT_COMMAND)  # segmented download: not supported
            return self._download(index, sub, data)
        return self._abort(index, sub, ABORT_COMMAND)

    def _header(self, n: int, service: int) -> bytes:
        self.counter = self.counter % 7 + 1
        return struct.pack("<HHBBH", n, 0, 0, MBX_TYPE_COE | self.counter << 4, service << 12)

    def _abort(self, index: int, sub: int, code: int) -> bytes:
        return self._header(10, COE_SDO_REQ) + struct.pack("<BHBI", 0x80, index, sub, code)

    def _mbx_error(self, code: int) -> bytes:
        self.counter = self.counter % 7 + 1
        return struct.pack("<HHBBHH", 4, 0, 0, self.counter << 4, 0x0001, code)

    def _lookup(self, index: int, sub: int) -> Obj | int:
        obj = self.od.get((index, sub))
        if obj is None:
            return ABORT_NO_SUBINDEX if any(k[0] == index for k in self.od) else ABORT_NO_OBJECT
        return obj

    def _upload(self, index: int, sub: int) -> bytes:
        obj = self._lookup(index, sub)
        if isinstance(obj, int):
            return self._abort(index, sub, obj)
        data = obj.encode()
        if len(data) <= 4:
            cmd = 0x43 | ((4 - len(data)) << 2)
            return self._header(10, COE_SDO_RES) + struct.pack("<BHB", cmd, index, sub) + data.ljust(4, b"\0")
        return (self._header(10 + len(data), COE_SDO_RES) + struct.pack("<BHBI", 0x41, index, sub, len(data))
                + data)

    def _download(self, index: int, sub: int, data: bytes) -> bytes:
        obj = self._lookup(index, sub)
        if isinstance(obj, int):
            return self._abort(index, sub, obj)
        if obj.set is None:
            return self._abort(index, sub, ABORT_READ_ONLY)
        if obj.fmt == "s":
            value: Any = data.decode("latin-1")
        else:
            need = struct.calcsize("<" + obj.fmt)
            if len(data) != need:
                return self._abort(index, sub, ABORT_LENGTH)
            value = struct.unpack("<" + obj.fmt, data)[0]
        try:
            obj.set(value)
        except ValueError:
            return self._abort(index, sub, ABORT_RANGE)
        return self._header(10, COE_SDO_RES) + struct.pack("<BHBI", 0x60, index, sub, 0)
