"""The SII EEPROM image of an emulated SubDevice, generated from its ESI description (ETG.2010 layout).

Word addresses: 0x00-0x3F header (identity, mailbox), categories from 0x40 (strings, general, FMMU, SM, PDOs).
"""
from __future__ import annotations

import struct

from common.fieldbus.esi import FMMU_KINDS, EsiDevice, Pdo

CAT_STRINGS, CAT_GENERAL, CAT_FMMU, CAT_SM, CAT_TXPDO, CAT_RXPDO, CAT_END = 10, 30, 40, 41, 50, 51, 0xFFFF
MBX_COE = 0x0004
COE_DETAILS_SDO = 0x01  # SOEM then reads the PDO assignment (0x1C12/0x1C13, 0x16xx/0x1Axx) by SDO
EEPROM_BYTES = 2048


def _category(kind: int, data: bytes) -> bytes:
    if len(data) % 2:
        data += b"\0"
    return struct.pack("<HH", kind, len(data) // 2) + data


def _pdos(pdos: tuple[Pdo, ...]) -> bytes:
    out = b""
    for p in pdos:
        out += struct.pack("<HBBBBH", p.index, len(p.entries), p.sm, 0, 0, 0x0001 if p.fixed else 0)
        for e in p.entries:
            dtype = {1: 0x01, 8: 0x05, 16: 0x06, 32: 0x07, 64: 0x15}.get(e.bit_len, 0)
            if e.data_type in ("UINT", "WORD"):
                dtype = 0x06
            elif e.data_type == "INT":
                dtype = 0x03
            elif e.data_type == "DINT":
                dtype = 0x04
            elif e.data_type in ("UDINT", "DWORD"):
                dtype = 0x07
            elif e.data_type == "SINT":
                dtype = 0x02
            out += struct.pack("<HBBBBH", e.index, e.subindex, 0, 0 if e.is_padding else dtype, e.bit_len, 0)
    return out


def build_sii(dev: EsiDevice, *, alias: int = 0, serial: int = 0) -> bytes:
    """The whole EEPROM content (bytes, little-endian words), padded with 0xFF."""
    mbx_out, mbx_in = dev.sm("MBoxOut"), dev.sm("MBoxIn")
    head = bytearray(0x80)
    cfg = dev.config_data[:8].ljust(8, b"\0")
    head[0:8] = cfg
    struct.pack_into("<H", head, 0x04 * 2, alias)
    struct.pack_into("<IIII", head, 0x08 * 2, dev.vendor_id, dev.product_code, dev.revision, serial)
    if mbx_out is not None and mbx_in is not None:
        struct.pack_into("<HHHHH", head, 0x18 * 2, mbx_out.start, mbx_out.size, mbx_in.start, mbx_in.size,
                         MBX_COE if dev.coe else 0)
    struct.pack_into("<HH", head, 0x3E * 2, EEPROM_BYTES * 8 // 1024 - 1, 1)
    strings = [dev.type_name, dev.name, dev.group or "Devices"]
    sdata = bytes([len(strings)]) + b"".join(
        bytes([len(b)]) + b for b in (s.encode("latin-1", "replace")[:255] for s in strings))
    general = bytearray(32)
    general[0], general[1], general[2], general[3] = 3, 0, 1, 2  # group, image, order, name string indices
    general[5] = COE_DETAILS_SDO if dev.coe else 0
    general[9] = 1 if dev.profile == 402 else 0  # DS402 channels
    struct.pack_into("<h", general, 12, 0)  # current on E-bus (mA)
    struct.pack_into("<H", general, 16, 0x0011)  # physical ports: MII, MII (two ports)
    fmmu = bytes(FMMU_KINDS[f] for f in dev.fmmus)
    sm = b"".join(struct.pack("<HHBBBB", s.start, s.size if s.kind.startswith("MBox") else 0, s.control, 0,
                              1 if s.enable else 0, s.sii_type) for s in dev.sms)
    cats = (_category(CAT_STRINGS, sdata) + _category(CAT_GENERAL, bytes(general)) + _category(CAT_FMMU, fmmu)
            + _category(CAT_SM, sm))
    if dev.tx_pdos:
        cats += _category(CAT_TXPDO, _pdos(dev.tx_pdos))
    if dev.rx_pdos:
        cats += _category(CAT_RXPDO, _pdos(dev.rx_pdos))
    cats += struct.pack("<H", CAT_END)
    image = bytes(head) + cats
    if len(image) > EEPROM_BYTES:
        raise ValueError(f"{dev.file}: SII image of {dev.type_name} is {len(image)} bytes, more than {EEPROM_BYTES}")
    return image.ljust(EEPROM_BYTES, b"\xff")
