"""Issue 12: ESI parsing (the shipped files, an unmappable entry, ISO-8859-1 text), the strict EtherCAT network file
as `evo config check` sees it, the SII the emulator builds from an ESI, and the driver's CiA 402 / routing tables.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import ConfigError, load_config
from common.fieldbus.esi import PACKAGED_ESI_DIR, EsiError, parse_esi
from common.fieldbus.ethercat_config import load_ethercat
from hal.drivers.base import DriverIO
from hal.drivers.cia402 import (CW_ENABLE_OPERATION, CW_FAULT_RESET, CW_SHUTDOWN, CW_SWITCH_ON,
                                          DriveState, controlword, decode)
from hal.drivers.ethercat.routing import DriveRoute, IoRoute, Layout
from hal.drivers.ethercat_emulator.sii import build_sii
from tests.ethercat_support import EXAMPLE
from tests.helpers import REPO, module_env

ESI_HEAD = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<EtherCATInfo><Vendor><Id>#x00000EE0</Id>' \
           '<Name>Test</Name></Vendor><Descriptions><Devices><Device>' \
           '<Type ProductCode="#x1" RevisionNo="#x2">T1</Type><Name>Gerät</Name>' \
           '<Sm StartAddress="#x1000" ControlByte="#x64" Enable="1">Outputs</Sm>' \
           '<Sm StartAddress="#x1100" ControlByte="#x20" Enable="1">Inputs</Sm>'
ESI_TAIL = '</Device></Devices></Descriptions></EtherCATInfo>'


def _esi(tmp: Path, rx_entries: str, name: str = "t.xml") -> Path:
    p = tmp / name
    p.write_bytes((ESI_HEAD + f'<RxPdo Sm="0"><Index>#x1600</Index>{rx_entries}</RxPdo>' + ESI_TAIL)
                  .encode("iso-8859-1"))
    return p


def _entry(index: str, sub: int, bits: int, dtype: str, name: str = "e") -> str:
    return (f"<Entry><Index>{index}</Index><SubIndex>{sub}</SubIndex><BitLen>{bits}</BitLen><Name>{name}</Name>"
            f"<DataType>{dtype}</DataType></Entry>")


def test_the_shipped_esi_files_parse_with_identity_sms_pdos_and_startup_objects() -> None:
    """Must exist: ESI parsing of the shipped files (identity, sync managers, PDO entries, CoE start-up objects)."""
    drive = parse_esi(PACKAGED_ESI_DIR / "evo_drive.xml").device("EVO-D402")
    assert (drive.vendor_id, drive.product_code, drive.revision, drive.profile) == (0xEE0, 0x10402, 0x10000, 402)
    assert [s.kind for s in drive.sms] == ["MBoxOut", "MBoxIn", "Outputs", "Inputs"]
    assert (drive.sms[0].start, drive.sms[0].size, drive.sms[0].control) == (0x1000, 128, 0x26)
    rx = [(e.index, e.subindex, e.bit_len, e.data_type) for e in drive.rx_pdos[0].entries]
    assert rx[:2] == [(0x6040, 0, 16, "UINT"), (0x607A, 0, 32, "DINT")] and rx[-1] == (0, 0, 8, "")
    assert drive.rx_bits == 112 and drive.tx_bits == 128 and drive.coe
    assert [(c.index, c.data, c.transitions) for c in drive.init_cmds] == [(0x6060, b"\x08", ("PS",)),
                                                                          (0x6072, b"\xe8\x03", ("PS",))]
    io8 = parse_esi(PACKAGED_ESI_DIR / "evo_io8.xml").device("EVO-IO8")
    assert (io8.product_code, io8.coe, io8.rx_bits, io8.tx_bits) == (0x20008, False, 8, 8)
    assert [e.key for e in io8.tx_pdos[0].entries][:2] == ["0x6000:01", "0x6000:02"]


def test_iso_8859_1_text_is_decoded_declared_or_not(tmp_path: Path) -> None:
    """Must exist: ESI parsing of ISO-8859-1 text."""
    drive = parse_esi(PACKAGED_ESI_DIR / "evo_drive.xml").device("EVO-D402")
    assert drive.names["1031"] == "evo emulierter Servoregler für Tests (CiA 402)"
    assert (PACKAGED_ESI_DIR / "evo_drive.xml").read_bytes().count("für".encode("iso-8859-1")) == 1  # Latin-1 bytes
    p = _esi(tmp_path, _entry("#x7000", 1, 1, "BOOL", "Ausgang Ä"))
    assert parse_esi(p).devices[0].name == "Gerät"
    undeclared = tmp_path / "u.xml"  # no XML declaration, Latin-1 bytes (not UTF-8)
    undeclared.write_bytes(p.read_bytes().split(b"?>", 1)[1])
    dev = parse_esi(undeclared).devices[0]
    assert dev.name == "Gerät" and dev.rx_pdos[0].entries[0].name == "Ausgang Ä"


@pytest.mark.parametrize("entries, why", [
    (_entry("#x7000", 1, 16, "STRING(2)"), "data type 'STRING(2)' cannot be mapped"),
    (_entry("#x7000", 1, 8, "UINT"), "BitLen 8 does not match data type UINT"),
    (_entry("#x7000", 1, 4, "BIT4") + _entry("#x7010", 1, 16, "INT", "Speed"),
     "a 16-bit value starting at bit 4 of the PDO is not byte aligned"),
])
def test_an_unmappable_entry_is_an_error_naming_file_and_entry(tmp_path: Path, entries: str, why: str) -> None:
    """Must exist: an ESI entry the driver cannot map is an error naming the file and the entry."""
    with pytest.raises(EsiError) as e:
        parse_esi(_esi(tmp_path, entries, "bad.xml"))
    msg = str(e.value)
    assert msg.startswith("bad.xml: device T1 RxPdo #x1600 entry 0x70") and why in msg, msg


def test_the_example_network_loads_with_identities_from_the_esi() -> None:
    cfg = load_config(EXAMPLE)
    net = load_ethercat(cfg)
    assert [(s.position, s.kind.value, s.axis, s.identity) for s in net.subdevices] == [
        (1, "drive", 1, (0xEE0, 0x10402, 0x10000)), (2, "drive", 2, (0xEE0, 0x10402, 0x10000)),
        (3, "io", 0, (0xEE0, 0x20008, 0x10000))]
    assert net.subdevices[1].sdo[0].data() == struct.pack("<H", 800)


def _broken(tmp: Path, old: str, new: str, file: str = "ethercat.toml") -> Path:
    d = tmp / "cfg"
    shutil.copytree(EXAMPLE, d)
    p = d / file
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))
    return d


@pytest.mark.parametrize("old, new, expect", [
    ('device = "EVO-D402"', 'device = "EVO-D403"',
     "ethercat.toml [subdevice[0]] device: evo_drive.xml: no device of type 'EVO-D403'"),
    ("position = 2", "position = 1", "ethercat.toml [subdevice[1]] position: position 1 is also used by subdevice[0]"),
    ("axis = 2", "axis = 7", "ethercat.toml [subdevice[1]] axis: axis 7 has no axis_07_*.toml file"),
    ('esi = "evo_io8.xml"', 'esi = "missing.xml"', "ethercat.toml [subdevice[2]] esi: 'missing.xml' not found"),
    ("di = { first_pin = 0, count = 8 }", "di = { first_pin = 0, count = 9 }",
     "ethercat.toml [subdevice[2]] di: count 9 exceeds the 8 bit input entries of EVO-IO8"),
    ('mode = "csp"', 'mode = "pp"', "ethercat.toml [subdevice[0]] mode"),
    ("receive_timeout_us = 500", "receive_timeout_us = 5", "ethercat.toml [master] receive_timeout_us"),
    ("dc = false", "dc = false\nbogus = 1", "ethercat.toml [master]: unknown field 'bogus'"),
    ('device = "EVO-IO8"', 'device = "EVO-IO8"\naxis = 2',
     "ethercat.toml [subdevice[2]] axis: EVO-IO8 in evo_io8.xml is not a CiA 402 drive"),
])
def test_a_bad_network_file_is_refused_with_file_section_and_field(tmp_path: Path, old: str, new: str,
                                                                  expect: str) -> None:
    """Must exist (driver): options in a strict config file, refused with file and field like every config error."""
    with pytest.raises(ConfigError) as e:
        load_config(_broken(tmp_path, old, new))
    assert any(err.message.startswith(expect) for err in e.value.errors), [err.message for err in e.value.errors]


def test_an_unmappable_esi_in_the_config_dir_names_file_and_entry(tmp_path: Path) -> None:
    d = _broken(tmp_path, 'esi = "evo_io8.xml"', 'esi = "odd.xml"')
    src = (PACKAGED_ESI_DIR / "evo_io8.xml").read_text("iso-8859-1")
    (d / "odd.xml").write_text(src.replace("<DataType>BOOL</DataType></Entry>\n        </TxPdo>",
                                           "<DataType>FLOAT3</DataType></Entry>\n        </TxPdo>"), "iso-8859-1")
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert "odd.xml: device EVO-IO8 TxPdo #x1A00 entry 0x6000:08 (Input 8): data type 'FLOAT3' cannot be mapped" \
        in str(e.value)


def test_evo_config_check_and_evo_up_refuse_a_bad_network_file(tmp_path: Path) -> None:
    """Must exist (driver): `[hal] driver = "ethercat"` with a bad network file is refused by `evo config check`
    and `evo up` (file and field named, nothing started)."""
    d = _broken(tmp_path, "increments_per_unit = 10000.0", "increments_per_unit = -1.0")
    env = module_env("ecatcfg", EVO_RUN_DIR=str(tmp_path / "run"))
    r = subprocess.run([sys.executable, "-m", "evo", "--config", str(d), "config", "check"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ethercat.toml [subdevice[0]] increments_per_unit" in r.stdout + r.stderr
    up = subprocess.run([sys.executable, "-m", "evo", "up", "--config", str(d)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 2 and "nothing started" in up.stderr
    assert "ethercat.toml [subdevice[0]] increments_per_unit" in up.stderr
    (d / "ethercat.toml").unlink()
    r = subprocess.run([sys.executable, "-m", "evo", "--config", str(d), "config", "check"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ethercat.toml: missing EtherCAT network file" in r.stdout + r.stderr


def test_the_sii_image_carries_the_esi_identity_mailbox_and_pdos() -> None:
    """The emulator's SII comes from the same ESI the driver parses (words 0x08.., categories from 0x40)."""
    drive = parse_esi(PACKAGED_ESI_DIR / "evo_drive.xml").device("EVO-D402")
    sii = build_sii(drive, serial=7)
    assert struct.unpack_from("<IIII", sii, 0x08 * 2) == (0xEE0, 0x10402, 0x10000, 7)
    assert struct.unpack_from("<HHHHH", sii, 0x18 * 2) == (0x1000, 128, 0x1080, 128, 0x0004)  # CoE
    cats, a = {}, 0x40 * 2
    while (kind := struct.unpack_from("<H", sii, a)[0]) != 0xFFFF:
        n = struct.unpack_from("<H", sii, a + 2)[0] * 2
        cats[kind] = sii[a + 4:a + 4 + n]
        a += 4 + n
    assert set(cats) == {10, 30, 40, 41, 50, 51}
    assert cats[10][1:1 + cats[10][1] + 1][1:] == b"EVO-D402"  # string 1 = the name SOEM shows
    assert struct.unpack_from("<HHBBBB", cats[41], 16) == (0x1100, 0, 0x64, 0, 1, 3)  # SM2: outputs
    assert struct.unpack_from("<HBB", cats[51], 0) == (0x1600, 6, 2)  # RxPDO 0x1600: 6 entries on SM2


def test_cia402_statusword_decoding_and_controlword_walk() -> None:
    assert decode(0x0250) is DriveState.SWITCH_ON_DISABLED
    assert decode(0x0231) is DriveState.READY_TO_SWITCH_ON
    assert decode(0x0233) is DriveState.SWITCHED_ON
    assert decode(0x1237) is DriveState.OPERATION_ENABLED
    assert decode(0x0217) is DriveState.QUICK_STOP_ACTIVE
    assert decode(0x0218) is DriveState.FAULT
    walk = [controlword(s, True, False) for s in (DriveState.SWITCH_ON_DISABLED, DriveState.READY_TO_SWITCH_ON,
                                                   DriveState.SWITCHED_ON, DriveState.OPERATION_ENABLED)]
    assert walk == [CW_SHUTDOWN, CW_SWITCH_ON, CW_ENABLE_OPERATION, CW_ENABLE_OPERATION]
    assert controlword(DriveState.OPERATION_ENABLED, False, True) == CW_SHUTDOWN
    assert controlword(DriveState.FAULT, True, True) == 0  # latched while the CU still enables
    assert controlword(DriveState.FAULT, False, True) == CW_FAULT_RESET
    assert controlword(DriveState.FAULT, False, False) == 0  # alternating: bit 7 sees a rising edge


def test_routing_scales_drive_values_and_maps_terminal_bits_onto_pins() -> None:
    """Must exist (driver): bit-slice routing of the process image; CSP/CST targets and scaled actual values."""
    cfg = load_config(EXAMPLE)
    net = load_ethercat(cfg)
    x = net.subdevices[0]
    r = DriveRoute(x, x.esi_device, cfg)
    io = DriverIO()
    tx = Layout(x.esi_device.tx_pdos)
    data = bytearray(tx.size)
    struct.pack_into("<HiihbxH", data, 0, 0x1237, 123_456, -20_000, 155, 8, 0)
    r.unpack(bytes(data), io)
    assert io.position[0] == pytest.approx(12.3456) and io.velocity[0] == pytest.approx(-2.0)
    assert io.torque_estimate[0] == pytest.approx(15.5) and io.drive_ready[0] and not io.drive_fault[0]
    assert io.referenced[0]  # homing method Absolute
    io.enable[0] = True
    io.target_position[0] = 12.5
    out = r.pack(io, True, 0)
    cw, tpos, tvel, ttrq, mode = struct.unpack_from("<HiihB", out, 0)
    assert (cw, tpos, ttrq, mode) == (CW_ENABLE_OPERATION, 125_000, 0, 8)
    struct.pack_into("<HiihbxH", data, 0, 0x0218, 0, 0, 0, 8, 0x7305)
    r.unpack(bytes(data), io)
    assert io.drive_fault[0] and io.drive_error_code[0] == 0x7305 and not io.drive_ready[0]
    t = net.subdevices[2]
    ior = IoRoute(t, t.esi_device)
    io.do_bank[0] = np.uint64(0b1000_0101)
    assert ior.pack(io, True, 0) == bytes([0b1000_0101])
    assert ior.pack(io, False, 0) == b"\0"  # a terminal out of OP gets its outputs off
    ior.unpack(bytes([0b0100_0010]), io)
    assert list(np.flatnonzero(io.di[:8])) == [1, 6]
    ior.bus_lost(io)
    assert not io.di[:8].any()  # a lost terminal's inputs read 0: an NC E-stop on it reads "pressed"


def test_cst_axis_sends_the_cu_torque_to_0x6071_and_the_emulated_drive_integrates_it(tmp_path: Path) -> None:
    """Must exist (driver): cyclic synchronous torque per axis from config — the CU's torque goes to 0x6071
    (per mille), and the emulated drive's position integrates it (its dynamics model)."""
    from hal.drivers.ethercat_emulator.devices import Cia402Drive

    d = _broken(tmp_path, 'axis = 2\nmode = "csp"', 'axis = 2\nmode = "cst"')
    cfg = load_config(d)
    y = load_ethercat(cfg).subdevices[1]
    assert y.mode.value == "cst" and y.mode.code == 10
    r = DriveRoute(y, y.esi_device, cfg)
    drive = Cia402Drive(y.esi_device)
    drive.al_changed(8)
    io = DriverIO()
    io.enable[1] = True
    io.torque[1] = 25.0  # % of rated
    io.target_position[1] = 99.0  # ignored in CST
    t = 100.0
    for _ in range(6):  # shutdown -> switch on -> enable operation, then torque flows
        drive.outputs(r.pack(io, True, 0), t)
        t += 0.001
        r.unpack(drive.inputs(t), io)
    assert io.drive_ready[1] and drive.mode == 10
    out = r.pack(io, True, 0)
    cw, tpos, _tvel, ttrq, mode = struct.unpack_from("<HiihB", out, 0)
    assert (cw, ttrq, mode) == (CW_ENABLE_OPERATION, 250, 10)
    assert tpos == r.actual_inc  # CST: the position target stays where the drive stands
    p0 = io.position[1]
    for _ in range(50):
        drive.outputs(r.pack(io, True, 0), t)
        t += 0.001
        r.unpack(drive.inputs(t), io)
    assert io.position[1] > p0 and io.velocity[1] > 0 and io.torque_estimate[1] == pytest.approx(25.0)


def test_analog_terminal_words_map_onto_ai_and_ao_pins_normalised_over_their_type(tmp_path: Path) -> None:
    """Must exist (driver): words of the process image onto AI/AO (0..1 over the data type's range)."""
    from common.fieldbus.ethercat_config import SubDeviceConfig, PinBlock

    p = tmp_path / "ana.xml"
    p.write_bytes((ESI_HEAD + '<RxPdo Sm="0"><Index>#x1600</Index>' + _entry("#x7010", 1, 16, "INT", "AO 1")
                   + _entry("#x7010", 2, 16, "UINT", "AO 2") + '</RxPdo><TxPdo Sm="1"><Index>#x1A00</Index>'
                   + _entry("#x6010", 1, 16, "INT", "AI 1") + _entry("#x6000", 1, 1, "BOOL", "DI")
                   + _entry("#x0", 0, 7, "") + _entry("#x6010", 2, 8, "USINT", "AI 2") + "</TxPdo>"
                   + ESI_TAIL).encode("iso-8859-1"))
    dev = parse_esi(p).devices[0]
    sub = SubDeviceConfig(position=1, esi=str(p), device="T1", ai=PinBlock(first_pin=4, count=2),
                          ao=PinBlock(first_pin=2, count=2), di=PinBlock(first_pin=9, count=1), esi_device=dev)
    r = IoRoute(sub, dev)
    io = DriverIO()
    io.ao[2], io.ao[3] = 1.0, 0.5
    out = r.pack(io, True, 0)
    assert struct.unpack("<hH", out) == (32767, 32768)  # INT full scale; UINT mid-range
    assert struct.unpack("<hH", r.pack(io, False, 0)) == (0, 0)  # not in OP: raw 0 (0 V on a +-10 V output)
    r.unpack(struct.pack("<hBB", 0, 0b1, 255), io)
    assert io.ai[4] == pytest.approx(32768 / 65535) and io.ai[5] == pytest.approx(1.0) and io.di[9]
