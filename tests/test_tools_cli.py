"""`evo config check` and `evo shm ls|dump` as a user runs them: real subprocesses, real segments."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from common.shm.p2p import TypedP2pWriter
from common.shm.segments import SEGMENTS
from tests.helpers import REPO, module_env, reference_config_dir

REFERENCE = reference_config_dir()


def evo(prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo", *args], env=module_env(prefix), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_config_check_default_machine(fresh_prefix):
    r = evo(fresh_prefix, "config", "check", str(REPO / "config"))
    assert r.returncode == 0, r.stderr
    assert "Evo Demo Gantry" in r.stdout and "axes: 4" in r.stdout
    assert "DI 17" in r.stdout


def test_config_check_reports_every_error_of_the_reference(fresh_prefix):
    r = evo(fresh_prefix, "config", "check", str(REFERENCE))
    assert r.returncode == 1
    assert "10 errors" in r.stderr
    for role in ("BrakeOut1", "BrakeIn4", "TailClosed3", "GuardClosed3"):
        assert role in r.stderr
    assert "axis_03_z.toml [guard] di_guard" in r.stderr


def test_config_check_names_file_and_field(fresh_prefix, tmp_path):
    d = tmp_path / "cfg"
    shutil.copytree(REPO / "config", d)
    (d / "machine.toml").write_text((d / "machine.toml").read_text() + "\n[[axes]]\nid = 1\n")
    r = evo(fresh_prefix, "config", "check", str(d))
    assert r.returncode == 1
    assert "UnknownField" in r.stderr and "machine.toml" in r.stderr and "axes" in r.stderr


def test_shm_ls_and_dump(fresh_prefix):
    s = SEGMENTS["hal_cu"]
    with TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype) as w:
        w.local["axes"]["position"][0] = 42.5
        w.local["axis_count"] = 1
        w.commit()
        r = evo(fresh_prefix, "shm", "ls", "--json")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["segments"]
        assert [(x["name"], x["writer"], x["reader"], x["writer_alive"], x["heartbeat"], x["size"]) for x in rows] == [
            (f"{fresh_prefix}_hal_cu", "hal", "cu", True, 1, 12288)
        ]
        r = evo(fresh_prefix, "shm", "ls")
        assert f"{fresh_prefix}_hal_cu" in r.stdout and "yes" in r.stdout
        r = evo(fresh_prefix, "shm", "dump", "hal_cu", "--json", "--full")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["header"]["heartbeat"] == 1 and data["header"]["writer_alive"] is True
        assert data["header"]["magic"] == "EVO_P2P"
        assert data["payload"]["axes"][0]["position"] == 42.5
        assert data["payload"]["axis_count"] == 1
        r = evo(fresh_prefix, "shm", "dump", "hal_cu")
        assert "position" in r.stdout and "heartbeat: 1" in r.stdout


def test_shm_dump_errors_are_one_clear_line(fresh_prefix):
    r = evo(fresh_prefix, "shm", "dump", "hal_cu")
    assert r.returncode == 1 and "SegmentNotFound" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = evo(fresh_prefix, "shm", "dump", "nope_nope")
    assert r.returncode == 1 and "unknown segment" in r.stderr
