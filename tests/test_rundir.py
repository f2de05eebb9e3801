"""The run directory is private (issue 16; DESIGN.md "The run directory is private (0700, owned by us,
never world-writable)"): a per-user default no other user can pre-create, created 0700, an existing
world- or group-writable one or one owned by another user refused by `evo up` with nothing started."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.rundir import UnsafeRunDir, default_run_dir, ensure_private_dir, resolve_run_dir
from tests.helpers import REPO, module_env, unique_prefix


def test_default_is_per_user():
    env = {"EVO_SHM_PREFIX": "p1"}
    assert default_run_dir(env, uid=0) == Path("/run/evo-p1")
    assert default_run_dir({**env, "XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000) == Path("/run/user/1000/evo-p1")
    assert default_run_dir(env, uid=1000) == Path("/tmp/evo-p1-1000")
    assert resolve_run_dir("/x", {"EVO_RUN_DIR": "/y"}) == Path("/x")
    assert resolve_run_dir("", {"EVO_RUN_DIR": "/y"}) == Path("/y")


def test_created_0700_and_unsafe_ones_refused(tmp_path):
    d = ensure_private_dir(tmp_path / "a" / "run")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    ensure_private_dir(d)  # ours and private: accepted again
    os.chmod(d, 0o777)
    with pytest.raises(UnsafeRunDir, match="writable by group or others.*chmod 700"):
        ensure_private_dir(d)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    with pytest.raises(UnsafeRunDir, match="symlink"):
        ensure_private_dir(link)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 4242, 4242) if os.geteuid() == 0 else pytest.skip("chown needs root")
    with pytest.raises(UnsafeRunDir, match="owned by uid 4242"):
        ensure_private_dir(other)


def test_evo_up_refuses_a_world_writable_run_dir_nothing_started(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o777)
    prefix = unique_prefix("rd")
    env = module_env(prefix, EVO_RUN_DIR=str(run))
    r = subprocess.run([sys.executable, "-m", "evo", "--config", str(REPO / "config"), "up"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "writable by group or others" in r.stderr and "nothing started" in r.stderr
    assert list(run.iterdir()) == []  # no lock, no socket, no log
