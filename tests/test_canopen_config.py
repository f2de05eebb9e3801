"""The CANopen network file (canopen.toml) is validated with the rest of the config: errors name file and field.

Issue 13: strict config (interface, channel, bitrate, SYNC period, nodes, EDS, identity, kind); bad config starts nothing.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from common.fieldbus.canopen_config import DriveMode, NodeKind, load_canopen
from tests.canopen_support import EXAMPLE, canopen_config
from tests.helpers import REPO


def errors(cfg_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(cfg_dir)
    return [err.message for err in e.value.errors]


def edited(tmp_path: Path, pattern: str, repl: str, file: str = "canopen.toml") -> Path:
    d = canopen_config(tmp_path / "cfg")
    p = d / file
    text, n = re.subn(pattern, repl, p.read_text(), count=1, flags=re.M)
    assert n == 1, pattern
    p.write_text(text)
    return d


def test_the_shipped_example_loads_with_its_network() -> None:
    """config/examples/canopen is complete: two drives (CSP) on axes 1-2, one I/O node serving every io.toml pin."""
    cfg = load_config(EXAMPLE)
    net = load_canopen(cfg)
    assert cfg.system.hal.driver == "canopen"
    assert [(n.id, n.kind, n.axis) for n in net.nodes] == [(2, NodeKind.DRIVE, 1), (3, NodeKind.DRIVE, 2),
                                                           (10, NodeKind.IO, 0)]
    assert net.node(2).mode is DriveMode.CSP and net.node(2).eds_path.name == "evo_drive.eds"
    assert net.node(2).identity.product_code == 0x402 and net.node(2).sdo[0].index == 0x6081
    assert net.bus.sync_every == 2 and net.bus.interface == "udp_multicast"


@pytest.mark.parametrize("pattern, repl, expected", [
    (r"^sync_every = 2$", "sync_every = 2\nsync_evrey = 3",
     "canopen.toml [bus]: unknown field 'sync_evrey' (did you mean 'sync_every'?)"),
    (r"^bitrate = 500000$", "bitrate = 5", "canopen.toml [bus] bitrate: 5 out of range [10000, 8000000]"),
    (r"^id = 3$", "id = 2", "canopen.toml [node[1]] id: node id 2 is also used by node[0]"),
    (r"^kind = \"drive\"$", 'kind = "servo"', "canopen.toml [node[0]] kind: 'servo' is not one of \"drive\", \"io\""),
    (r"^mode = \"csp\"$", 'mode = "pp"', "canopen.toml [node[0]] mode: 'pp' is not one of \"csp\", \"pv\", \"cst\""),
    (r"^eds = \"evo_drive.eds\"$", 'eds = "nope.eds"', "canopen.toml [node[0]] eds: 'nope.eds' not found"),
    (r"^eds = \"evo_drive.eds\"$", 'eds = "evo_io.eds"',
     "canopen.toml [node[0]] eds: evo_io.eds lacks object(s) 0x603F, 0x6040"),
    (r"^axis = 2$", "axis = 7", "canopen.toml [node[1]] axis: axis 7 has no axis_07_*.toml file"),
    (r"^axis = 2$", "axis = 1", "canopen.toml [node[1]] axis: axis 1 is also served by node 2"),
    (r"^identity = \{ vendor_id = 0x45564F00, product_code = 0x00000402, revision = 0x00010000 \}$",
     "identity = { vendor_id = 0x45564F00, product_code = 0x00000402 }",
     "canopen.toml [node[0]] identity.revision: missing mandatory field"),
    (r"^    \{ index = 0x6081, subindex = 0, value = 400000 \},   # profile", "    { index = 0x6999, value = 1 },  #",
     "canopen.toml [node[0]] sdo[0].index: 0x6999:00 is not in evo_drive.eds"),
    (r"^di = \{ first_pin = 0, count = 8 \}$", "di = { first_pin = 0, count = 12 }",
     "canopen.toml [node[2]] di: count 12 must be a multiple of 8"),
    (r"^ai = \{ first_pin = 0, count = 2 \}$", "ai = { first_pin = 0, count = 1 }",
     "canopen.toml [node]: io.toml ai pin 1 is not served by any io node"),
])
def test_a_bad_network_file_is_refused_naming_file_section_and_field(tmp_path, pattern, repl, expected) -> None:
    """Strict parsing: unknown fields, bounds, enums, EDS objects, cross-file references; file and field named."""
    msgs = errors(edited(tmp_path, pattern, repl))
    assert any(m.startswith(expected) for m in msgs), msgs


def test_an_axis_without_a_drive_and_bad_driver_args_are_refused(tmp_path) -> None:
    """Every axis needs its drive node; [hal.driver_args] of the canopen driver are checked too."""
    d = edited(tmp_path, r'^network = "canopen.toml".*$', 'network = "canopen.toml"\nnetwrk = 1', "config.toml")
    text = (d / "canopen.toml").read_text()
    (d / "canopen.toml").write_text(text.replace("axis = 2\n", "axis = 1\n", 1))
    msgs = errors(d)
    assert any(m.startswith("config.toml [hal.driver_args]: unknown field 'netwrk'") for m in msgs), msgs
    assert any("axis 2 (Y) has no drive node" in m for m in msgs), msgs


def test_a_missing_network_file_is_refused_and_evo_config_check_says_so(tmp_path) -> None:
    """`evo config check` reports the network file's errors (exit 1); nothing else may start on it."""
    d = canopen_config(tmp_path / "cfg")
    (d / "canopen.toml").unlink()
    msgs = errors(d)
    assert any(m.startswith("canopen.toml: missing CANopen network file") for m in msgs), msgs
    r = subprocess.run([sys.executable, "-m", "evo", "--config", str(d), "config", "check"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "canopen.toml: missing CANopen network file" in r.stdout + r.stderr
