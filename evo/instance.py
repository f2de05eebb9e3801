"""The instance's run directory: the one-watchdog lock, the control socket path, modules.json.

An instance is identified by its run dir (`[watchdog] run_dir` / $EVO_RUN_DIR / common.rundir's default).
"""
from __future__ import annotations

import fcntl
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from common.files import write_atomic
from common.rundir import resolve_run_dir

LOCK_FILE = "watchdog.lock"
SOCKET_FILE = "supervisor.sock"
MODULES_FILE = "modules.json"


class AlreadyRunning(RuntimeError):
    """Another watchdog holds the instance lock."""

    def __init__(self, run_dir: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a watchdog is already running for this instance ({who}, run dir {run_dir})")


def socket_path(run_dir: Path) -> Path:
    return Path(run_dir) / SOCKET_FILE


def grpc_target(run_dir: Path) -> str:
    """The gRPC target of the Supervisor service of the instance at `run_dir`."""
    return f"unix:{socket_path(run_dir)}"


def _raw_watchdog_section(config_dir: Path | None) -> dict:
    if config_dir is None:
        return {}
    try:
        data = tomllib.loads((Path(config_dir) / "config.toml").read_text())
        wd = data.get("watchdog", {})
        return wd if isinstance(wd, dict) else {}
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return {}


def run_dir_for(config_dir: Path | None) -> Path:
    """The run dir a client should use, without requiring the whole config to load (same rule
    as WatchdogConfig.resolved_run_dir): config.toml `[watchdog] run_dir` if set, else
    $EVO_RUN_DIR, else the per-user default (common/rundir.py)."""
    rd = _raw_watchdog_section(config_dir).get("run_dir")
    return resolve_run_dir(rd if isinstance(rd, str) else "")


def log_dir_for(config_dir: Path | None) -> Path:
    """`[watchdog] log_dir` if set, else <run dir>/log."""
    ld = _raw_watchdog_section(config_dir).get("log_dir")
    return Path(ld) if isinstance(ld, str) and ld else run_dir_for(config_dir) / "log"


class InstanceLock:
    """flock on `<run_dir>/watchdog.lock`, held for the watchdog's whole life; holds its pid."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd = -1

    def acquire(self) -> "InstanceLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path.parent, lock_holder(self.path.parent)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1


def lock_holder(run_dir: Path) -> int | None:
    """Pid of the live watchdog of this instance, None when there is none."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write-then-rename, so readers never see a half-written file."""
    write_atomic(path, json.dumps(data, separators=(",", ":")) + "\n", sync=False)  # rewritten often
