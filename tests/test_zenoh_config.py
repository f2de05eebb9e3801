"""Issue 14: the `[zenoh]` section — on by default on loopback, scouting off, strict checks that
name the field, and the router module only when asked for."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from evo.modules import default_modules
from tests.helpers import REPO


def _cfg(tmp_path: Path, zenoh: str) -> Path:
    d = tmp_path / "cfg"
    shutil.copytree(REPO / "config", d)
    text = (d / "config.toml").read_text()
    head = text[: text.index("\n[zenoh]\n")]
    (d / "config.toml").write_text(head + "\n[zenoh]\n" + zenoh)
    return d


def _errors(tmp_path: Path, zenoh: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as ei:
        load_config(_cfg(tmp_path, zenoh))
    errs = getattr(ei.value, "errors", None) or [ei.value]
    return [(e.file, e.field, str(e)) for e in errs]


def test_default_is_on_peer_loopback_7447_scouting_off() -> None:
    """On by default, loopback only: peer listening on tcp/127.0.0.1:7447, no scouting, no router."""
    z = load_config(REPO / "config").system.zenoh
    assert (z.enabled, z.mode, z.listen, z.connect) == (True, "peer", ("tcp/127.0.0.1:7447",), ())
    assert not z.multicast_scouting and not z.gossip_scouting and not z.router and z.key_prefix == "evo"
    assert "zenoh_router" not in [m.name for m in default_modules(load_config(REPO / "config"))]


def test_bad_values_name_file_and_field(tmp_path: Path) -> None:
    """Bad config starts nothing: every problem with file and field."""
    errs = _errors(tmp_path, 'mode = "mesh"\nlisten = ["tcp/127.0.0.1"]\nconnect = ["udp/x:99999"]\n'
                             'key_prefix = "evo/*"\nrouter = true\nrouter_listen = ["carrier-pigeon/1"]\n')
    fields = {f: msg for _, f, msg in errs}
    assert all(file == "config.toml" for file, _, _ in errs)
    assert "mesh" in fields["mode"] and "host:port" in fields["listen[0]"] and "99999" in fields["connect[0]"]
    assert "key_prefix" in fields and "unknown protocol" in fields["router_listen[0]"]


def test_client_needs_connect_and_router_needs_its_own_endpoint(tmp_path: Path) -> None:
    errs = _errors(tmp_path, 'mode = "client"\n')
    assert [f for _, f, _ in errs] == ["connect"]
    errs = _errors(tmp_path / "b", 'router = true\nrouter_listen = ["tcp/127.0.0.1:7447"]\n')
    assert [f for _, f, _ in errs] == ["router_listen"] and "also in listen" in errs[0][2]
    errs = _errors(tmp_path / "c", 'listen = []\n')
    assert [f for _, f, _ in errs] == ["listen"]


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    errs = _errors(tmp_path, 'listn = ["tcp/127.0.0.1:7447"]\n')
    assert errs[0][1] == "listn" and "listen" in errs[0][2]


def test_router_module_runs_before_the_bridge_when_enabled(tmp_path: Path) -> None:
    """The router is a watchdog module like the embedded mosquitto: off by default, on when asked."""
    cfg = load_config(_cfg(tmp_path, 'connect = ["tcp/127.0.0.1:7448"]\nrouter = true\n'))
    names = [m.name for m in default_modules(cfg)]
    assert names.index("zenoh_router") == names.index("mqtt") - 1
    spec = default_modules(cfg)[names.index("zenoh_router")]
    assert spec.argv[1:3] == ("-m", "evo.zenoh_router") and spec.notify and spec.preload


def test_fleet_example_runs_the_router_and_joins_it() -> None:
    """The fleet example: router on (module zenoh_router), the machine connected to it, scouting off."""
    cfg = load_config(REPO / "config" / "examples" / "fleet")
    z = cfg.system.zenoh
    assert z.router and z.connect and not z.multicast_scouting and not z.gossip_scouting
    assert cfg.machine_id == "cell-1" and "zenoh_router" in [m.name for m in default_modules(cfg)]
