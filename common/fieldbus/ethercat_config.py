"""The EtherCAT network file (`ethercat.toml`, `[hal] driver = "ethercat"`): master settings, SubDevices in bus
order, their ESI device, identity, and which axis or DI/DO/AI/AO pins each one serves. Parsed strictly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

from common.config.errors import ValidationError
from common.config.io import IoConfig
from common.config.loader import read_toml_file
from common.config.parsing import (
    Collector,
    Ctx,
    check_keys,
    derived,
    parse_table,
    spec,
    type_name,
)
from common.config.schema import AxisConfig
from common.fieldbus.served import Unit, check_served

from .esi import DATA_TYPES, PACKAGED_ESI_DIR, EsiDevice, EsiError, parse_esi

__all__ = [
    "EthercatNetwork", "MasterSettings", "SubDeviceConfig", "SubDeviceKind", "DriveMode", "SdoWrite", "PinBlock",
    "DEFAULT_NETWORK_FILE", "DRIVER_ARGS", "check_ethercat", "load_ethercat", "parse_network", "resolve_esi",
    "DRIVE_RX", "DRIVE_TX",
]

DEFAULT_NETWORK_FILE = "ethercat.toml"
#: [hal.driver_args] of the ethercat driver
DRIVER_ARGS: dict[str, str] = {
    "network": "network file in the config directory (default ethercat.toml)",
    "interface": "overrides [master] interface of the network file",
}
U32 = (0, 0xFFFFFFFF)
#: CiA 402 objects a drive's PDOs must map (outputs, inputs); the mode's target object is checked too
DRIVE_RX = (0x6040,)
DRIVE_TX = (0x6041, 0x6064)


class SubDeviceKind(StrEnum):
    DRIVE = "drive"  # CiA 402 drive serving one axis
    IO = "io"  # terminal: bits onto DI/DO pins, words onto AI/AO


class DriveMode(StrEnum):
    """CiA 402 modes of operation (0x6060): the CU's set-point goes out in CSP, its torque in CST."""

    CSP = "csp"  # cyclic synchronous position (8): target_position -> 0x607A
    CST = "cst"  # cyclic synchronous torque (10): torque -> 0x6071

    @property
    def code(self) -> int:
        return {"csp": 8, "cst": 10}[self.value]

    @property
    def target_object(self) -> int:
        return {"csp": 0x607A, "cst": 0x6071}[self.value]


@dataclass(frozen=True, kw_only=True)
class MasterSettings:
    """[master]: the interface and the timing of the exchange and of recovery."""

    interface: str = spec("eth0")
    receive_timeout_us: int = spec(500, bounds=(50, 100_000))  # bound on one cycle's process-data receive
    state_timeout_ms: int = spec(5000, bounds=(100, 60_000))  # start-up: each state change (INIT..OP)
    state_check_ms: int = spec(100, bounds=(5, 10_000))  # AL status poll while running
    recovery_backoff_ms: int = spec(100, bounds=(10, 60_000))  # first retry after a SubDevice is lost
    recovery_backoff_max_ms: int = spec(2000, bounds=(10, 600_000))
    dc: bool = spec(False)  # distributed clocks (SYNC0 on DC-capable SubDevices)
    # one acyclic datagram's answer (state reads, recovery steps, start-up): real SubDevices answer in µs
    datagram_timeout_us: int = spec(2000, bounds=(100, 100_000))


@dataclass(frozen=True, kw_only=True)
class SdoWrite:
    """A start-up SDO download in PRE-OP -> SAFE-OP, after the ESI's InitCmds."""

    index: int = spec(bounds=(0x1000, 0xFFFF))
    subindex: int = spec(0, bounds=(0, 0xFF))
    value: int = spec(bounds=(-(2**31), 2**32 - 1))
    size: int = spec(4, bounds=(1, 4))  # bytes

    def data(self) -> bytes:
        return (self.value & ((1 << (8 * self.size)) - 1)).to_bytes(self.size, "little")


@dataclass(frozen=True, kw_only=True)
class PinBlock:
    """Consecutive io.toml pins fed by the SubDevice's mapped entries of that kind, in PDO order, from `first_pin`."""

    first_pin: int = spec(bounds=(0, 1023))
    count: int = spec(bounds=(1, 1024))

    @property
    def pins(self) -> range:
        return range(self.first_pin, self.first_pin + self.count)


@dataclass(frozen=True, kw_only=True)
class SubDeviceConfig:
    """[[subdevice]]: one SubDevice, by its position on the bus (1 = first after the MainDevice)."""

    position: int = spec(bounds=(1, 65535))
    esi: str = spec()  # ESI file: absolute, or in the config directory, or one evo ships
    device: str = spec()  # the device's <Type> in the ESI file
    name: str = spec("")
    vendor_id: int = spec(-1, bounds=(-1, 0xFFFFFFFF))  # -1: the ESI's
    product_code: int = spec(-1, bounds=(-1, 0xFFFFFFFF))
    revision: int = spec(-1, bounds=(-1, 0xFFFFFFFF))
    alias: int = spec(0, bounds=(0, 0xFFFF))  # expected station alias; 0 = not checked
    sdo: tuple[SdoWrite, ...] = spec(factory=tuple, custom=True)
    # drive
    axis: int = spec(0, bounds=(0, 64))
    mode: DriveMode = spec(DriveMode.CSP)
    increments_per_unit: float = spec(10000.0, bounds=(0.0, 1e12), open_lo=True)  # position, velocity
    # io
    di: PinBlock | None = spec(None, custom=True)
    do: PinBlock | None = spec(None, custom=True)
    ai: PinBlock | None = spec(None, custom=True)
    ao: PinBlock | None = spec(None, custom=True)
    esi_path: Path = derived(Path(), compare=False)
    esi_device: EsiDevice | None = derived(None, compare=False, repr=False)

    @property
    def kind(self) -> SubDeviceKind:
        return SubDeviceKind.DRIVE if self.axis else SubDeviceKind.IO

    @property
    def label(self) -> str:
        return f"position {self.position}" + (f" ({self.name})" if self.name else "")

    @property
    def identity(self) -> tuple[int, int, int]:
        """Expected (vendor id, product code, revision): the config's where given, else the ESI's."""
        d = self.esi_device
        assert d is not None
        return (d.vendor_id if self.vendor_id < 0 else self.vendor_id,
                d.product_code if self.product_code < 0 else self.product_code,
                d.revision if self.revision < 0 else self.revision)


@dataclass(frozen=True)
class EthercatNetwork:
    file: str
    master: MasterSettings
    subdevices: tuple[SubDeviceConfig, ...]  # sorted by position
    esi_files: tuple[Path, ...] = field(default=(), compare=False)

    def drives(self) -> tuple[SubDeviceConfig, ...]:
        return tuple(s for s in self.subdevices if s.kind is SubDeviceKind.DRIVE)


def resolve_esi(name: str, config_dir: Path) -> Path | None:
    """The ESI file `name`: absolute, else in the config directory (or its esi/), else one evo ships."""
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (config_dir, config_dir / "esi", PACKAGED_ESI_DIR):
        if (base / p).is_file():
            return base / p
    return None


def _entries(dev: EsiDevice, side: str, bits: bool) -> list[str]:
    """Entry keys of one direction that feed pins: BOOL/BIT entries (bits) or 8..32-bit integers (words)."""
    out = []
    for p in dev.rx_pdos if side == "rx" else dev.tx_pdos:
        for e in p.entries:
            if e.is_padding:
                continue
            if bits and e.bit_len == 1:
                out.append(e.key)
            elif not bits and e.bit_len in (8, 16, 32) and DATA_TYPES[e.data_type][1] in "bBhHiI":
                out.append(e.key)
    return out


def _parse_sub(raw: Any, i: int, col: Collector, file: str, config_dir: Path,
               cache: dict[Path, Any]) -> SubDeviceConfig | None:
    section = f"subdevice[{i}]"
    ctx = Ctx(col, file, section)
    n0 = len(col.errors)
    kw = parse_table(SubDeviceConfig, raw, ctx)
    if kw is None:
        return None
    kw.pop("esi_path", None)
    kw.pop("esi_device", None)
    writes = []
    sdo_raw = raw.get("sdo", [])
    if not isinstance(sdo_raw, list):
        ctx.parse_error("sdo", f"expected an array of tables, got {type_name(sdo_raw)}")
    else:
        for j, w in enumerate(sdo_raw):
            wk = parse_table(SdoWrite, w, Ctx(col, file, section, f"sdo[{j}]."))
            if wk is not None:
                writes.append(SdoWrite(**wk))
    kw["sdo"] = tuple(writes)
    for key in ("di", "do", "ai", "ao"):
        if key in raw:
            bk = parse_table(PinBlock, raw[key], Ctx(col, file, section, f"{key}."))
            kw[key] = PinBlock(**bk) if bk is not None else None
            if bk is not None and kw[key].first_pin + kw[key].count > 1024:
                ctx.invalid(key, f"pins {kw[key].first_pin}..{kw[key].first_pin + kw[key].count - 1} "
                                 "end beyond pin 1023")
        else:
            kw[key] = None
    if len(col.errors) != n0:
        return None
    path = resolve_esi(kw["esi"], config_dir)
    if path is None:
        ctx.invalid("esi", f"{kw['esi']!r} not found (looked in {config_dir}, {config_dir / 'esi'} and "
                           f"{PACKAGED_ESI_DIR})")
        return None
    if path not in cache:
        try:
            cache[path] = parse_esi(path)
        except EsiError as e:
            cache[path] = e
    esi = cache[path]
    if isinstance(esi, EsiError):
        ctx.invalid("esi", str(esi))
        return None
    try:
        dev = esi.device(kw["device"])
    except EsiError as e:
        ctx.invalid("device", str(e))
        return None
    sub = SubDeviceConfig(**kw, esi_path=path, esi_device=dev)
    _check_device(sub, dev, ctx)
    return sub if len(col.errors) == n0 else None


def _check_device(s: SubDeviceConfig, dev: EsiDevice, ctx: Ctx) -> None:
    if s.kind is SubDeviceKind.DRIVE:
        if dev.profile != 402:
            ctx.invalid("axis", f"{dev.type_name} in {dev.file} is not a CiA 402 drive (ProfileNo "
                                f"{dev.profile or 'none'}); only drives serve an axis")
        for key in ("di", "do", "ai", "ao"):
            if getattr(s, key) is not None:
                ctx.invalid(key, "pin blocks belong to I/O SubDevices (no axis)")
        need = [("rx", i) for i in (*DRIVE_RX, s.mode.target_object)] + [("tx", i) for i in DRIVE_TX]
        for side, index in need:
            hit = dev.entry(index)
            if hit is None or hit[0] != side:
                what = "RxPdo (outputs)" if side == "rx" else "TxPdo (inputs)"
                ctx.invalid("device", f"{dev.type_name} in {dev.file} maps no 0x{index:04X} in an {what}; "
                                      f"needed for mode {s.mode.value}")
        if not dev.coe and s.sdo:
            ctx.invalid("sdo", f"{dev.type_name} has no CoE mailbox: start-up SDOs cannot be written")
    else:
        if all(getattr(s, k) is None for k in ("di", "do", "ai", "ao")):
            ctx.invalid(None, "a SubDevice needs either axis (a CiA 402 drive) or at least one of di, do, ai, ao")
        for key, side, bits in (("di", "tx", True), ("do", "rx", True), ("ai", "tx", False), ("ao", "rx", False)):
            block = getattr(s, key)
            if block is None:
                continue
            have = _entries(dev, side, bits)
            if block.count > len(have):
                ctx.invalid(key, f"count {block.count} exceeds the {len(have)} "
                                 f"{'bit' if bits else 'integer'} {'input' if side == 'tx' else 'output'} "
                                 f"entries of {dev.type_name} in {dev.file}")
        if s.sdo and not dev.coe:
            ctx.invalid("sdo", f"{dev.type_name} has no CoE mailbox: start-up SDOs cannot be written")


def parse_network(data: dict[str, Any], col: Collector, file: str, config_dir: Path,
                  axes: tuple[AxisConfig, ...] | list[AxisConfig], io: IoConfig | None) -> EthercatNetwork | None:
    """Validate a parsed network file against the axes and io.toml; errors go to `col`."""
    n0 = len(col.errors)
    check_keys(data, ["master", "subdevice"], Ctx(col, file, ""))
    mk = parse_table(MasterSettings, data.get("master", {}), Ctx(col, file, "master"))
    subs_raw = data.get("subdevice", [])
    subs: list[SubDeviceConfig] = []
    cache: dict[Path, Any] = {}
    if not isinstance(subs_raw, list) or not subs_raw:
        Ctx(col, file, "").parse_error("subdevice", "expected one or more [[subdevice]] tables")
    else:
        for i, raw in enumerate(subs_raw):
            s = _parse_sub(raw, i, col, file, config_dir, cache)
            if s is not None:
                subs.append(s)
    if len(col.errors) != n0 or mk is None:
        return None
    master = MasterSettings(**mk)
    if not master.interface:
        Ctx(col, file, "master").invalid("interface", "must not be empty")
    if master.recovery_backoff_max_ms < master.recovery_backoff_ms:
        Ctx(col, file, "master").invalid("recovery_backoff_max_ms", f"{master.recovery_backoff_max_ms} ms is below "
                                         f"recovery_backoff_ms = {master.recovery_backoff_ms} ms")
    _check_cross(subs, file, col, axes, io)
    if len(col.errors) != n0:
        return None
    subs.sort(key=lambda s: s.position)
    return EthercatNetwork(file, master, tuple(subs), tuple(sorted(cache)))


def _check_cross(subs: list[SubDeviceConfig], file: str, col: Collector, axes: Any, io: IoConfig | None) -> None:
    units = [Unit(f"subdevice[{i}]", s.position, s.axis if s.kind is SubDeviceKind.DRIVE else None,
                  {k: getattr(s, k) for k in ("di", "do", "ai", "ao")}) for i, s in enumerate(subs)]
    seen = check_served(units, file, col, axes, io, address_key="position", address_word="position",
                        table="subdevice", unit_word="position", io_word="SubDevice")
    if seen and sorted(seen) != list(range(1, len(seen) + 1)):
        col.add(ValidationError(f"positions {sorted(seen)} must be 1..{len(seen)} without gaps (every SubDevice "
                                "on the line is described, in bus order)", file=file, section="subdevice"))


def check_ethercat(config_dir: Path, driver_args: Mapping[str, Any], axes: Any, io: IoConfig | None,
                   col: Collector) -> EthercatNetwork | None:
    """The loader's hook for `[hal] driver = "ethercat"`: driver_args and the network file, errors into `col`."""
    dctx = Ctx(col, "config.toml", "hal.driver_args")
    for key in driver_args:
        if key not in DRIVER_ARGS:
            dctx.unknown(key, list(DRIVER_ARGS), f"the ethercat driver knows: {', '.join(DRIVER_ARGS)}")
    iface = driver_args.get("interface", "")
    if not isinstance(iface, str):
        dctx.parse_error("interface", f"expected a string, got {type_name(iface)}")
    name = driver_args.get("network", DEFAULT_NETWORK_FILE)
    if not isinstance(name, str) or not name:
        dctx.parse_error("network", f"expected a file name, got {type_name(name)} {name!r}")
        return None
    path = Path(name) if os.path.isabs(name) else Path(config_dir) / name
    data = read_toml_file(path, col, missing="missing EtherCAT network file (config.toml [hal] driver = \"ethercat\")")
    if data is None:
        return None
    return parse_network(data, col, path.name, Path(config_dir), axes, io)


def load_ethercat(config: Any) -> EthercatNetwork:
    """The network of a loaded EvoConfig; ConfigError if it is not valid."""
    col = Collector()
    net = check_ethercat(Path(config.dir), config.system.hal.driver_args, config.axes, config.io, col)
    col.raise_if_any()
    assert net is not None
    return net
