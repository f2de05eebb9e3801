"""The CANopen network file (`canopen.toml`, `[hal] driver = "canopen"`): bus, nodes, identities, PDO pin blocks.

Parsed strictly like the rest of the config directory (errors name file, section and field); EDS files are read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

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

__all__ = [
    "CanopenNetwork", "BusSettings", "NodeConfig", "NodeKind", "DriveMode", "StopMode", "Identity", "SdoWrite", "PinBlock",
    "DEFAULT_NETWORK_FILE", "PACKAGED_EDS_DIR", "DRIVER_ARGS", "check_canopen", "load_canopen", "parse_network",
    "resolve_eds", "DRIVE_OBJECTS", "IO_OBJECTS",
]

DEFAULT_NETWORK_FILE = "canopen.toml"
#: the EDS files evo ships (our emulated drive and I/O node); a relative `eds` is looked up in the
#: config directory first, then here
PACKAGED_EDS_DIR = Path(__file__).resolve().parents[2] / "hal" / "drivers" / "eds"
#: [hal.driver_args] of the canopen driver
DRIVER_ARGS: dict[str, str] = {"network": "network file in the config directory (default canopen.toml)"}
U32 = (0, 0xFFFFFFFF)
MAX_DIGITAL_PINS = 64  # one 8-byte PDO of 8-bit 0x6000 / 0x6200 sub-entries
MAX_ANALOG_CHANNELS = 4  # one 8-byte PDO of 16-bit 0x6401 / 0x6411 sub-entries


class NodeKind(StrEnum):
    DRIVE = "drive"  # CiA 402 drive serving one axis
    IO = "io"  # CiA 401 generic I/O module


class DriveMode(StrEnum):
    """CiA 402 modes of operation (0x6060) evo drives; the CU's set-point goes out in CSP, its torque in CST."""

    CSP = "csp"  # cyclic synchronous position (8): target_position -> 0x607A
    PV = "pv"  # profile velocity (3): target_velocity -> 0x60FF
    CST = "cst"  # cyclic synchronous torque (10): torque -> 0x6071

    @property
    def code(self) -> int:
        return {"csp": 8, "pv": 3, "cst": 10}[self.value]

    @property
    def target_object(self) -> int:
        return {"csp": 0x607A, "pv": 0x60FF, "cst": 0x6071}[self.value]


class StopMode(StrEnum):
    """What enable low does to a drive in OPERATION ENABLED."""

    SHUTDOWN = "shutdown"  # controlword 0x06: READY TO SWITCH ON (the drive's disable-operation reaction)
    QUICK_STOP = "quick_stop"  # controlword 0x02: QUICK STOP ACTIVE, the drive's quick-stop ramp (0x605A, 0x6085)


#: objects a drive's EDS must have (beyond the communication profile), by mode
DRIVE_OBJECTS = (0x603F, 0x6040, 0x6041, 0x6060, 0x6061, 0x6064, 0x606C, 0x6077)
#: objects an I/O node's EDS must have for each pin block it serves
IO_OBJECTS = {"di": 0x6000, "do": 0x6200, "ai": 0x6401, "ao": 0x6411}
COMM_OBJECTS = (0x1000, 0x1017, 0x1018, 0x1400, 0x1401, 0x1600, 0x1601, 0x1800, 0x1801, 0x1A00, 0x1A01)


@dataclass(frozen=True, kw_only=True)
class BusSettings:
    """[bus]: the python-can bus and the timing of the exchange."""

    interface: str = spec("socketcan")  # python-can interface: socketcan, virtual, udp_multicast, ...
    channel: str = spec("can0")
    bitrate: int = spec(500_000, bounds=(10_000, 8_000_000))
    sync_every: int = spec(1, bounds=(1, 1000))  # SYNC + RPDOs every N HAL cycles
    boot_timeout_ms: int = spec(3000, bounds=(10, 60_000))  # boot-up after NMT reset communication
    sdo_timeout_ms: int = spec(500, bounds=(10, 10_000))
    pdo_timeout_ms: int = spec(100, bounds=(1, 60_000))  # a node's last TPDO older than this: stale
    heartbeat_ms: int = spec(100, bounds=(10, 60_000))  # producer time written to every node's 0x1017
    heartbeat_timeout_ms: int = spec(350, bounds=(10, 60_000))  # consumer: no heartbeat this long = lost
    reconnect_ms: int = spec(500, bounds=(10, 60_000))  # retry period for a lost node / a failed bus
    fault_reset_ms: int = spec(1000, bounds=(0, 60_000))  # a drive FAULT is held this long before a reset


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Expected 0x1018 values; checked by SDO at start-up and after a node boots again."""

    vendor_id: int = spec(bounds=U32)
    product_code: int = spec(bounds=U32)
    revision: int = spec(bounds=U32)


@dataclass(frozen=True, kw_only=True)
class SdoWrite:
    """One start-up SDO download (after the identity check, before PDO mapping)."""

    index: int = spec(bounds=(0x1000, 0xFFFF))
    subindex: int = spec(0, bounds=(0, 0xFF))
    value: int = spec(bounds=(-(2**31), 2**32 - 1))


@dataclass(frozen=True, kw_only=True)
class PinBlock:
    """Consecutive io.toml pins served by one I/O node's PDO entries, from `first_pin`."""

    first_pin: int = spec(bounds=(0, 1023))
    count: int = spec(bounds=(1, MAX_DIGITAL_PINS))

    @property
    def pins(self) -> range:
        return range(self.first_pin, self.first_pin + self.count)


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """[[node]]: one CANopen node, a CiA 402 drive (axis) or a CiA 401 I/O node (pin blocks)."""

    id: int = spec(bounds=(1, 127))
    kind: NodeKind = spec()
    eds: str = spec()
    name: str = spec("")
    identity: Identity = spec(custom=True)
    sdo: tuple[SdoWrite, ...] = spec(factory=tuple, custom=True)
    # drive
    axis: int = spec(0, bounds=(0, 64))
    mode: DriveMode = spec(DriveMode.CSP)
    counts_per_unit: float = spec(1000.0, bounds=(0.0, 1e12), open_lo=True)  # position/velocity scaling
    stop: StopMode = spec(StopMode.SHUTDOWN)
    # io
    di: PinBlock | None = spec(None, custom=True)
    do: PinBlock | None = spec(None, custom=True)
    ai: PinBlock | None = spec(None, custom=True)
    ao: PinBlock | None = spec(None, custom=True)
    eds_path: Path = derived(Path(), compare=False)  # the resolved file

    @property
    def label(self) -> str:
        return f"node {self.id}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class CanopenNetwork:
    """The whole validated network file."""

    file: str
    bus: BusSettings
    nodes: tuple[NodeConfig, ...]

    def drives(self) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.kind is NodeKind.DRIVE)

    def io_nodes(self) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.kind is NodeKind.IO)

    def node(self, node_id: int) -> NodeConfig:
        return next(n for n in self.nodes if n.id == node_id)


def resolve_eds(name: str, config_dir: Path) -> Path | None:
    """The EDS file `name`: absolute, else in the config directory, else one evo ships; None if absent."""
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (config_dir, PACKAGED_EDS_DIR):
        if (base / p).is_file():
            return base / p
    return None


def _eds_objects(path: Path) -> dict[int, set[int]] | str:
    """index -> subindices of an EDS file, or the parse error text."""
    try:
        from canopen.objectdictionary import ODArray, ODRecord, import_od
    except ImportError as e:  # pragma: no cover - canopen is a dependency
        return f"cannot read EDS files: {e}"
    try:
        od = import_od(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is reported with the file
        return f"{type(e).__name__}: {e}"
    out: dict[int, set[int]] = {}
    for index in od.indices:
        obj = od[index]
        out[index] = set(obj.subindices) if isinstance(obj, (ODRecord, ODArray)) else {0}
    return out


def _pin_block(raw: Any, ctx: Ctx, key: str, limit: int) -> PinBlock | None:
    kw = parse_table(PinBlock, raw, Ctx(ctx.col, ctx.file, ctx.section, f"{key}."))
    if kw is None:
        return None
    block = PinBlock(**kw)
    if block.count > limit:
        ctx.invalid(key, f"count {block.count} exceeds {limit} (one 8-byte PDO)")
        return None
    if key in ("di", "do") and block.count % 8:
        ctx.invalid(key, f"count {block.count} must be a multiple of 8 (whole 8-bit PDO entries)")
        return None
    if block.first_pin + block.count > 1024:
        ctx.invalid(key, f"pins {block.first_pin}..{block.first_pin + block.count - 1} end beyond pin 1023")
        return None
    return block


def _parse_node(raw: Any, i: int, col: Collector, file: str, config_dir: Path) -> NodeConfig | None:
    section = f"node[{i}]"
    ctx = Ctx(col, file, section)
    n0 = len(col.errors)
    kw = parse_table(NodeConfig, raw, ctx)
    if kw is None:
        return None
    kw.pop("eds_path", None)
    if "identity" not in raw:
        ctx.parse_error("identity", "missing mandatory table {vendor_id, product_code, revision}")
    else:
        ik = parse_table(Identity, raw["identity"], Ctx(col, file, section, "identity."))
        if ik is not None:
            kw["identity"] = Identity(**ik)
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
    for key, limit in (("di", MAX_DIGITAL_PINS), ("do", MAX_DIGITAL_PINS), ("ai", MAX_ANALOG_CHANNELS),
                       ("ao", MAX_ANALOG_CHANNELS)):
        kw[key] = _pin_block(raw[key], ctx, key, limit) if key in raw else None
    if len(col.errors) != n0:
        return None
    kind = kw["kind"]
    if kind is NodeKind.DRIVE:
        if kw["axis"] == 0:
            ctx.parse_error("axis", "missing mandatory field (the axis id this drive serves)")
        for key in ("di", "do", "ai", "ao"):
            if kw[key] is not None:
                ctx.invalid(key, "pin blocks belong to kind = \"io\" nodes")
    else:
        if kw["axis"]:
            ctx.invalid("axis", "only kind = \"drive\" nodes serve an axis")
        if all(kw[k] is None for k in ("di", "do", "ai", "ao")):
            ctx.invalid(None, "an io node needs at least one of di, do, ai, ao")
    eds = resolve_eds(kw["eds"], config_dir)
    if eds is None:
        ctx.invalid("eds", f"{kw['eds']!r} not found (looked in {config_dir} and {PACKAGED_EDS_DIR})")
    if len(col.errors) != n0:
        return None
    node = NodeConfig(**kw, eds_path=eds)
    _check_eds(node, ctx)
    return node if len(col.errors) == n0 else None


def _check_eds(node: NodeConfig, ctx: Ctx) -> None:
    objects = _eds_objects(node.eds_path)
    if isinstance(objects, str):
        ctx.invalid("eds", f"{node.eds_path}: {objects}")
        return
    need = list(COMM_OBJECTS)
    if node.kind is NodeKind.DRIVE:
        need += [*DRIVE_OBJECTS, node.mode.target_object]
    missing = [i for i in need if i not in objects]
    if missing:
        ctx.invalid("eds", f"{node.eds_path.name} lacks object(s) {', '.join(f'0x{i:04X}' for i in missing)}"
                           + (f" needed for mode {node.mode.value}" if node.kind is NodeKind.DRIVE else ""))
    for key, index in IO_OBJECTS.items():
        block = getattr(node, key)
        if block is None:
            continue
        width = 8 if key in ("di", "do") else 1
        entries = -(-block.count // width)
        have = objects.get(index, set())
        lacking = [s for s in range(1, entries + 1) if s not in have]
        if lacking:
            ctx.invalid(key, f"{node.eds_path.name} has no 0x{index:04X} sub-index {lacking[0]} "
                             f"({block.count} {key} need {entries} entries)")
    for j, w in enumerate(node.sdo):
        if w.subindex not in objects.get(w.index, set()):
            ctx.invalid(f"sdo[{j}].index", f"0x{w.index:04X}:{w.subindex:02X} is not in {node.eds_path.name}")


def parse_network(data: dict[str, Any], col: Collector, file: str, config_dir: Path,
                  axes: tuple[AxisConfig, ...] | list[AxisConfig], io: IoConfig | None) -> CanopenNetwork | None:
    """Validate a parsed network file against the axes and io.toml; errors go to `col`."""
    n0 = len(col.errors)
    check_keys(data, ["bus", "node"], Ctx(col, file, ""))
    bus_kw = parse_table(BusSettings, data.get("bus", {}), Ctx(col, file, "bus"))
    nodes_raw = data.get("node", [])
    nodes: list[NodeConfig] = []
    if not isinstance(nodes_raw, list) or not nodes_raw:
        Ctx(col, file, "").parse_error("node", "expected one or more [[node]] tables")
    else:
        for i, raw in enumerate(nodes_raw):
            n = _parse_node(raw, i, col, file, config_dir)
            if n is not None:
                nodes.append(n)
    if len(col.errors) != n0 or bus_kw is None:
        return None
    bus = BusSettings(**bus_kw)
    if bus.heartbeat_timeout_ms <= bus.heartbeat_ms:
        Ctx(col, file, "bus").invalid("heartbeat_timeout_ms", f"{bus.heartbeat_timeout_ms} ms must exceed "
                                                              f"heartbeat_ms = {bus.heartbeat_ms} ms")
    _check_cross(nodes, file, col, axes, io)
    if len(col.errors) != n0:
        return None
    return CanopenNetwork(file, bus, tuple(nodes))


def _check_cross(nodes: list[NodeConfig], file: str, col: Collector, axes: Any, io: IoConfig | None) -> None:
    units = [Unit(f"node[{i}]", n.id, n.axis if n.kind is NodeKind.DRIVE else None,
                  {k: getattr(n, k) for k in ("di", "do", "ai", "ao")}) for i, n in enumerate(nodes)]
    check_served(units, file, col, axes, io, address_key="id", address_word="node id", table="node",
                 unit_word="node", drive_word="drive node", io_word="io node")


def check_canopen(config_dir: Path, driver_args: Mapping[str, Any], axes: Any, io: IoConfig | None,
                  col: Collector) -> CanopenNetwork | None:
    """The loader's hook for `[hal] driver = "canopen"`: driver_args and the network file, errors into `col`."""
    dctx = Ctx(col, "config.toml", "hal.driver_args")
    for key in driver_args:
        if key not in DRIVER_ARGS:
            dctx.unknown(key, list(DRIVER_ARGS), f"the canopen driver knows: {', '.join(DRIVER_ARGS)}")
    name = driver_args.get("network", DEFAULT_NETWORK_FILE)
    if not isinstance(name, str) or not name:
        dctx.parse_error("network", f"expected a file name, got {type_name(name)} {name!r}")
        return None
    path = Path(name) if os.path.isabs(name) else Path(config_dir) / name
    data = read_toml_file(path, col, missing="missing CANopen network file (config.toml [hal] driver = \"canopen\")")
    if data is None:
        return None
    return parse_network(data, col, path.name, Path(config_dir), axes, io)


def load_canopen(config: Any) -> CanopenNetwork:
    """The network of a loaded EvoConfig (the loader already validated it); ConfigError if it is not valid."""
    col = Collector()
    net = check_canopen(Path(config.dir), config.system.hal.driver_args, config.axes, config.io, col)
    col.raise_if_any()
    assert net is not None
    return net
