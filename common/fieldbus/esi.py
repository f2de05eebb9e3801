"""EtherCAT Slave Information (ESI) XML files: identity, sync managers, PDOs and CoE start-up objects.

The vendor's description of a SubDevice; the EtherCAT driver maps process data from it and the emulator builds its SII.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EsiError", "EsiFile", "EsiDevice", "Pdo", "PdoEntry", "SyncManager", "InitCmd", "DATA_TYPES",
    "SM_KINDS", "parse_esi", "PACKAGED_ESI_DIR",
]

#: the ESI files evo ships (its emulated drive and DI/DO terminal), beside the HAL's drivers
PACKAGED_ESI_DIR = Path(__file__).resolve().parents[2] / "hal" / "drivers" / "esi"

#: ESI data type -> (bit length, struct code or "" for bits, signed); BITn are bit fields
DATA_TYPES: dict[str, tuple[int, str]] = {
    "BOOL": (1, ""), "BIT": (1, ""), "BIT1": (1, ""), "BIT2": (2, ""), "BIT3": (3, ""), "BIT4": (4, ""),
    "BIT5": (5, ""), "BIT6": (6, ""), "BIT7": (7, ""), "BIT8": (8, ""),
    "SINT": (8, "b"), "USINT": (8, "B"), "BYTE": (8, "B"),
    "INT": (16, "h"), "UINT": (16, "H"), "WORD": (16, "H"),
    "DINT": (32, "i"), "UDINT": (32, "I"), "DWORD": (32, "I"), "REAL": (32, "f"),
    "LINT": (64, "q"), "ULINT": (64, "Q"), "LWORD": (64, "Q"), "LREAL": (64, "d"),
}
#: ESI <Sm> text -> SII sync manager type (1 mailbox out, 2 mailbox in, 3 outputs, 4 inputs)
SM_KINDS = {"MBoxOut": 1, "MBoxIn": 2, "Outputs": 3, "Inputs": 4}
FMMU_KINDS = {"Outputs": 1, "Inputs": 2, "MBoxState": 3}
TRANSITIONS = {"IP", "PS", "SO", "SP", "OP", "OS", "PI", "SI", "OI", "IB", "BI", "II", "PP", "SS"}


class EsiError(ValueError):
    """An ESI file that cannot be used; the message names the file and the element."""


@dataclass(frozen=True)
class PdoEntry:
    """One mapped object of a PDO; index 0 is padding (no object, `bit_len` gap)."""

    index: int
    subindex: int
    bit_len: int
    data_type: str  # "" for padding
    name: str = ""

    @property
    def is_padding(self) -> bool:
        return self.index == 0

    @property
    def key(self) -> str:
        return f"0x{self.index:04X}:{self.subindex:02X}"


@dataclass(frozen=True)
class Pdo:
    index: int
    name: str
    sm: int
    entries: tuple[PdoEntry, ...]
    fixed: bool = True

    @property
    def bit_len(self) -> int:
        return sum(e.bit_len for e in self.entries)


@dataclass(frozen=True)
class SyncManager:
    index: int
    kind: str  # MBoxOut / MBoxIn / Outputs / Inputs
    start: int
    size: int  # default size (mailboxes); process-data SMs are sized from the PDOs
    control: int
    enable: bool

    @property
    def sii_type(self) -> int:
        return SM_KINDS[self.kind]


@dataclass(frozen=True)
class InitCmd:
    """A CoE start-up SDO download (<Mailbox><CoE><InitCmd>)."""

    transitions: tuple[str, ...]
    index: int
    subindex: int
    data: bytes
    comment: str = ""


@dataclass(frozen=True)
class EsiDevice:
    file: str
    vendor_id: int
    vendor_name: str
    product_code: int
    revision: int
    type_name: str
    name: str
    group: str
    profile: int  # 402 for drives, 0 when not given
    fmmus: tuple[str, ...]
    sms: tuple[SyncManager, ...]
    rx_pdos: tuple[Pdo, ...]  # outputs (master -> SubDevice)
    tx_pdos: tuple[Pdo, ...]  # inputs
    coe: bool
    init_cmds: tuple[InitCmd, ...] = ()
    config_data: bytes = b""
    names: dict[str, str] = field(default_factory=dict, compare=False)  # LcId -> name

    @property
    def rx_bits(self) -> int:
        return sum(p.bit_len for p in self.rx_pdos)

    @property
    def tx_bits(self) -> int:
        return sum(p.bit_len for p in self.tx_pdos)

    def sm(self, kind: str) -> SyncManager | None:
        return next((s for s in self.sms if s.kind == kind), None)

    def entry(self, index: int, subindex: int = 0) -> tuple[str, PdoEntry] | None:
        """("rx" | "tx", entry) of the first PDO entry mapping index:subindex."""
        for side, pdos in (("rx", self.rx_pdos), ("tx", self.tx_pdos)):
            for p in pdos:
                for e in p.entries:
                    if e.index == index and e.subindex == subindex:
                        return side, e
        return None

    def describe(self) -> str:
        return (f"{self.type_name} (vendor 0x{self.vendor_id:08X}, product 0x{self.product_code:08X}, "
                f"revision 0x{self.revision:08X})")


@dataclass(frozen=True)
class EsiFile:
    path: Path
    vendor_id: int
    vendor_name: str
    devices: tuple[EsiDevice, ...]

    def device(self, type_name: str) -> EsiDevice:
        for d in self.devices:
            if d.type_name == type_name:
                return d
        raise EsiError(f"{self.path.name}: no device of type {type_name!r} "
                       f"(the file describes: {', '.join(d.type_name for d in self.devices) or 'none'})")


def _num(text: str | None, where: str) -> int:
    """ESI numbers: "#x1A00" hex, "4096" decimal."""
    if text is None or not text.strip():
        raise ValueError(f"{where}: missing number")
    t = text.strip()
    try:
        if t[:2] in ("#x", "#X"):
            return int(t[2:], 16)
        return int(t, 0) if t.lower().startswith("0x") else int(t)
    except ValueError:
        raise ValueError(f"{where}: {t!r} is not a number (decimal or #x hex)") from None


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _parse_bytes(raw: bytes, path: Path) -> ET.Element:
    """XML with its declared encoding (ESI files are usually ISO-8859-1); undeclared non-UTF-8 -> Latin-1."""
    try:
        return ET.fromstring(raw)
    except ET.ParseError as e:
        if b"encoding=" not in raw[:200]:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("iso-8859-1")
                return ET.fromstring(text)
        raise EsiError(f"{path.name}: not well-formed XML ({e})") from None


def _pdo(el: ET.Element, side: str, dev: str, path: Path) -> Pdo:
    idx_text = _text(el.find("Index"))
    where = f"{path.name}: device {dev} {side} {idx_text or '?'}"
    try:
        index = _num(idx_text, f"{where} Index")
        sm_attr = el.get("Sm")
        if sm_attr is None:
            raise ValueError(f"{where}: no Sm attribute (the PDO is not assigned to a sync manager, cannot map it)")
        sm = _num(sm_attr, f"{where} Sm")
    except ValueError as e:
        raise EsiError(str(e)) from None
    entries: list[PdoEntry] = []
    bit = 0
    for n, e in enumerate(el.findall("Entry")):
        try:
            ei = _num(_text(e.find("Index")), f"{where} entry #{n + 1} Index")
            sub = _num(_text(e.find("SubIndex")) or "0", f"{where} entry #{n + 1} SubIndex")
            bl = _num(_text(e.find("BitLen")), f"{where} entry #{n + 1} BitLen")
        except ValueError as err:
            raise EsiError(str(err)) from None
        dt = _text(e.find("DataType")).upper()
        name = _text(e.find("Name"))
        label = f"{where} entry 0x{ei:04X}:{sub:02X}" + (f" ({name})" if name else "")
        if ei == 0:
            dt = ""
            if bl <= 0:
                raise EsiError(f"{label}: padding with BitLen {bl}")
        elif dt not in DATA_TYPES:
            raise EsiError(f"{label}: data type {dt or '(none)'!r} cannot be mapped "
                           f"(known: {', '.join(sorted(DATA_TYPES))})")
        elif DATA_TYPES[dt][0] != bl:
            raise EsiError(f"{label}: BitLen {bl} does not match data type {dt} ({DATA_TYPES[dt][0]} bits)")
        elif bl >= 8 and bit % 8:
            raise EsiError(f"{label}: a {bl}-bit value starting at bit {bit} of the PDO is not byte aligned "
                           "and cannot be mapped")
        entries.append(PdoEntry(ei, sub, bl, dt, name))
        bit += bl
    return Pdo(index, _text(el.find("Name")), sm, tuple(entries), el.get("Fixed", "0") in ("1", "true"))


def _device(el: ET.Element, vendor_id: int, vendor_name: str, groups: dict[str, str], path: Path) -> EsiDevice:
    t = el.find("Type")
    if t is None:
        raise EsiError(f"{path.name}: a <Device> without <Type>")
    type_name = _text(t)
    where = f"{path.name}: device {type_name}"
    try:
        product = _num(t.get("ProductCode"), f"{where} ProductCode")
        revision = _num(t.get("RevisionNo") or "0", f"{where} RevisionNo")
    except ValueError as e:
        raise EsiError(str(e)) from None
    names = {n.get("LcId", "1033"): _text(n) for n in el.findall("Name")}
    name = names.get("1033") or next(iter(names.values()), type_name)
    fmmus = tuple(_text(f) for f in el.findall("Fmmu"))
    for f in fmmus:
        if f not in FMMU_KINDS:
            raise EsiError(f"{where} <Fmmu>{f}</Fmmu>: unknown FMMU use (known: {', '.join(FMMU_KINDS)})")
    sms = []
    for i, s in enumerate(el.findall("Sm")):
        kind = _text(s)
        if kind not in SM_KINDS:
            raise EsiError(f"{where} <Sm> #{i}: unknown sync manager kind {kind!r} (known: {', '.join(SM_KINDS)})")
        try:
            sms.append(SyncManager(i, kind, _num(s.get("StartAddress"), f"{where} Sm {i} StartAddress"),
                                   _num(s.get("DefaultSize") or "0", f"{where} Sm {i} DefaultSize"),
                                   _num(s.get("ControlByte") or "0", f"{where} Sm {i} ControlByte"),
                                   (s.get("Enable") or "0") not in ("0", "false")))
        except ValueError as e:
            raise EsiError(str(e)) from None
    rx = tuple(_pdo(p, "RxPdo", type_name, path) for p in el.findall("RxPdo"))
    tx = tuple(_pdo(p, "TxPdo", type_name, path) for p in el.findall("TxPdo"))
    for side, pdos, want in (("RxPdo", rx, "Outputs"), ("TxPdo", tx, "Inputs")):
        for p in pdos:
            if p.sm >= len(sms) or sms[p.sm].kind != want:
                raise EsiError(f"{where} {side} 0x{p.index:04X}: Sm {p.sm} is not an {want} sync manager "
                               "(cannot map it)")
    coe_el = el.find("Mailbox/CoE")
    init = []
    if coe_el is not None:
        for n, c in enumerate(coe_el.findall("InitCmd")):
            trans = tuple(_text(x) for x in c.findall("Transition"))
            label = f"{where} CoE InitCmd #{n + 1}"
            bad = [x for x in trans if x not in TRANSITIONS]
            if bad or not trans:
                raise EsiError(f"{label}: transition(s) {bad or '(none)'} unknown")
            try:
                idx = _num(_text(c.find("Index")), f"{label} Index")
                sub = _num(_text(c.find("SubIndex")) or "0", f"{label} SubIndex")
                data = bytes.fromhex(_text(c.find("Data")))
            except ValueError as e:
                raise EsiError(f"{label}: {e}") from None
            init.append(InitCmd(trans, idx, sub, data, _text(c.find("Comment"))))
    prof = _text(el.find("Profile/ChannelInfo/ProfileNo"))
    cfg = _text(el.find("Eeprom/ConfigData"))
    try:
        config_data = bytes.fromhex(cfg) if cfg else b""
    except ValueError:
        raise EsiError(f"{where} Eeprom/ConfigData: {cfg!r} is not hex") from None
    group = _text(el.find("GroupType"))
    return EsiDevice(
        file=path.name, vendor_id=vendor_id, vendor_name=vendor_name, product_code=product, revision=revision,
        type_name=type_name, name=name, group=groups.get(group, group), profile=int(prof) if prof.isdigit() else 0,
        fmmus=fmmus, sms=tuple(sms), rx_pdos=rx, tx_pdos=tx, coe=coe_el is not None, init_cmds=tuple(init),
        config_data=config_data, names=names,
    )


def parse_esi(path: str | Path) -> EsiFile:
    """Parse an ESI file; EsiError names the file and the element that cannot be used."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise EsiError(f"{p}: cannot read ({e.strerror or e})") from None
    root = _parse_bytes(raw, p)
    if re.sub(r"^\{.*\}", "", root.tag) != "EtherCATInfo":
        raise EsiError(f"{p.name}: root element is <{root.tag}>, not <EtherCATInfo>")
    v = root.find("Vendor")
    try:
        vendor_id = _num(_text(v.find("Id")) if v is not None else None, f"{p.name}: Vendor Id")
    except ValueError as e:
        raise EsiError(str(e)) from None
    vendor_name = _text(v.find("Name")) if v is not None else ""
    groups = {_text(g.find("Type")): _text(g.find("Name")) for g in root.findall("Descriptions/Groups/Group")}
    devices = tuple(_device(d, vendor_id, vendor_name, groups, p) for d in root.findall("Descriptions/Devices/Device"))
    if not devices:
        raise EsiError(f"{p.name}: no <Device> under Descriptions/Devices")
    return EsiFile(p, vendor_id, vendor_name, devices)
