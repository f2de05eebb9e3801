"""Issue 12: `evo ethercat scan` and the driver's start-up checks against the emulated SubDevices, real frames on a
veth pair in a private network namespace (one namespace for the module, one emulator at a time).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.ethercat_support import MASTER_IF, Emulator, VethNs, ethercat_config
from tests.helpers import module_env, shm_entries

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ns():  # noqa: ANN201
    n = VethNs().create()
    yield n
    n.delete()


@pytest.fixture
def emulator(ns: VethNs, tmp_path: Path):  # noqa: ANN201
    started: list[Emulator] = []

    def start(devices: str = "drive,drive,io8") -> Emulator:
        e = Emulator(ns, tmp_path, devices)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


def test_scan_finds_two_drives_and_a_terminal_with_their_esi_identities(ns: VethNs, emulator) -> None:  # noqa: ANN001
    """Must exist: scan finds 2 drives and 1 terminal with the identities from their ESI files."""
    from common.fieldbus.esi import PACKAGED_ESI_DIR, parse_esi

    emulator()
    drive = parse_esi(PACKAGED_ESI_DIR / "evo_drive.xml").device("EVO-D402")
    io8 = parse_esi(PACKAGED_ESI_DIR / "evo_io8.xml").device("EVO-IO8")
    # the emulator is a Python process on a loaded host: give each datagram 20 ms
    r = ns.run([sys.executable, "-m", "evo", "ethercat", "scan", "--interface", MASTER_IF, "--json",
                "--timeout-us", "20000"], env=module_env("unused"))
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)["subdevices"]
    assert [(d["position"], d["station_address"], d["vendor_id"], d["product_code"], d["revision"], d["name"])
            for d in found] == [
        (1, 0x1001, drive.vendor_id, drive.product_code, drive.revision, "EVO-D402"),
        (2, 0x1002, drive.vendor_id, drive.product_code, drive.revision, "EVO-D402"),
        (3, 0x1003, io8.vendor_id, io8.product_code, io8.revision, "EVO-IO8"),
    ]
    assert all(d["al_state"] == "PRE-OP" for d in found)
    table = ns.run([sys.executable, "-m", "evo", "ethercat", "scan", "--interface", MASTER_IF, "--timeout-us", "20000"],
                   env=module_env("unused"))
    assert table.returncode == 0 and "0x00010402" in table.stdout and "EVO-IO8" in table.stdout


def test_scan_without_raw_socket_rights_says_so_in_one_line(ns: VethNs) -> None:
    """Must exist: scan needs root or CAP_NET_RAW; without it, one clear line saying so."""
    r = ns.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                sys.executable, "-m", "evo", "ethercat", "scan", "--interface", MASTER_IF], env=module_env("unused"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs root or CAP_NET_RAW" in lines[0], r.stderr


def test_scan_of_a_missing_interface_or_a_silent_segment(ns: VethNs) -> None:
    r = ns.run([sys.executable, "-m", "evo", "ethercat", "scan", "--interface", "nope0"], env=module_env("unused"))
    assert r.returncode == 1 and "no network interface 'nope0'" in r.stderr
    r = ns.run([sys.executable, "-m", "evo", "ethercat", "scan", "--interface", MASTER_IF], env=module_env("unused"))
    assert r.returncode == 0 and f"no SubDevice answered on {MASTER_IF}" in r.stdout


def _hal(ns: VethNs, cfg: Path, prefix: str) -> tuple[int, str]:
    r = ns.run([sys.executable, "-m", "hal", "--config", str(cfg)], env=module_env(prefix, EVO_RUN_DIR=str(cfg / "run")))
    assert not shm_entries(prefix), "the HAL left segments behind"
    return r.returncode, r.stdout + r.stderr


def test_a_wrong_product_code_refuses_the_start_naming_position_and_both_identities(ns: VethNs, emulator,  # noqa: ANN001
                                                                                   tmp_path: Path) -> None:
    """Must exist: an expected SubDevice with the wrong product code: nothing starts, the message names the
    position and both identities."""
    emulator("drive,io8,io8")
    code, out = _hal(ns, ethercat_config(tmp_path / "cfg"), "ecatwrong")
    assert code == 2, out
    assert ("position 2 (Y drive): expected vendor 0x00000EE0 product 0x00010402 revision 0x00010000 "
            "(EVO-D402 from evo_drive.xml), found vendor 0x00000EE0 product 0x00020008 revision 0x00010000 "
            "(EVO-IO8)") in out
    assert "position 1" not in out and "position 3" not in out and "HAL up" not in out


def test_a_missing_subdevice_refuses_the_start_naming_it(ns: VethNs, emulator, tmp_path: Path) -> None:  # noqa: ANN001
    """Must exist: an expected SubDevice missing: nothing starts, the message names the position and identity."""
    emulator("drive,drive")
    code, out = _hal(ns, ethercat_config(tmp_path / "cfg"), "ecatmiss")
    assert code == 2, out
    assert ("position 3 (Cell I/O): expected vendor 0x00000EE0 product 0x00020008 revision 0x00010000 (EVO-IO8), "
            "found nothing (only 2 SubDevices answered)") in out


def test_nobody_answering_is_a_clear_error_not_a_hang(ns: VethNs, tmp_path: Path) -> None:
    """Must exist (driver): config_init <= 0 is "no SubDevice answered", a clear error."""
    code, out = _hal(ns, ethercat_config(tmp_path / "cfg"), "ecatnone")
    assert code == 2, out
    assert f"no SubDevice answered on {MASTER_IF}" in out


def test_an_interface_that_does_not_exist_is_named(ns: VethNs, tmp_path: Path) -> None:
    cfg = ethercat_config(tmp_path / "cfg", network_edit={r'^interface = "ecm"': 'interface = "nope0"'})
    code, out = _hal(ns, cfg, "ecatnoif")
    assert code == 2 and "cannot open interface 'nope0'" in out, out


def test_an_expected_station_alias_is_checked(ns: VethNs, emulator, tmp_path: Path) -> None:  # noqa: ANN001
    emulator()
    cfg = ethercat_config(tmp_path / "cfg", network_edit={r"^position = 1$": "position = 1\nalias = 7"})
    code, out = _hal(ns, cfg, "ecatalias")
    assert code == 2 and "position 1 (X drive): expected station alias 7, found 0" in out, out
