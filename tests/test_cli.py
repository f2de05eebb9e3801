"""The `evo` command line without a running machine: help, usage errors, bad config, `evo logs`.

Every error is one line on stderr with a non-zero exit.
"""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO, module_env, unique_prefix


def evo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env or module_env(unique_prefix("cli")))


def test_help_lists_every_command():
    r = evo("--help")
    assert r.returncode == 0
    for cmd in ("up", "status", "start", "stop", "restart", "down", "logs", "shm", "config"):
        assert f"    {cmd} " in r.stdout or f"    {cmd}\n" in r.stdout, cmd


def test_usage_errors_exit_2():
    assert evo().returncode == 2
    r = evo("restart")
    assert r.returncode == 2 and "MODULE" in r.stderr


def test_up_with_missing_config_dir_starts_nothing(tmp_path):
    env = module_env(unique_prefix("cli"), EVO_RUN_DIR=str(tmp_path / "run"))
    r = evo("up", "--config", str(tmp_path / "nope"), env=env)
    assert r.returncode == 2 and "nothing started" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "run").exists()


def test_status_without_watchdog(tmp_path):
    env = module_env(unique_prefix("cli"), EVO_RUN_DIR=str(tmp_path))
    r = evo("status", "--json", env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no watchdog running" in r.stderr and str(tmp_path) in r.stderr


def test_logs_reads_files_without_a_watchdog(tmp_path):
    env = module_env(unique_prefix("cli"), EVO_RUN_DIR=str(tmp_path))
    r = evo("logs", env=env)
    assert r.returncode == 1 and "no log files" in r.stderr
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "hal.log").write_text("2024-01-01 00:00:01.000 h1\n2024-01-01 00:00:03.000 h3\n")
    (tmp_path / "log" / "cu.log").write_text("2024-01-01 00:00:02.000 c2\n")
    r = evo("logs", "-n", "2", env=env)
    assert r.returncode == 0
    assert [ln.split("|")[0].strip() for ln in r.stdout.splitlines()] == ["cu", "hal"]
    r = evo("logs", "hal", "-n", "1", env=env)
    assert r.stdout == "2024-01-01 00:00:03.000 h3\n"
    r = evo("logs", "re", env=env)
    assert r.returncode == 1 and "cu, hal" in r.stderr
