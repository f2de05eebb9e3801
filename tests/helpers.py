"""Test helpers shared by every suite: waiting on conditions, module subprocesses, free ports.

Never sleep where a condition can be waited for; every process started here is cleaned up.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.005, what: str = "condition") -> T:
    """Poll `pred` until it returns a truthy value; raise AssertionError naming `what` on timeout.
    Exceptions raised by `pred` count as 'not yet' (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def unique_prefix(tag: str = "t") -> str:
    """An EVO_SHM_PREFIX no other test or running machine uses."""
    return f"{tag}{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ZENOH_DEFAULT_LISTEN = '"tcp/127.0.0.1:7447"'


def zenoh_isolated(config_toml: str, port: int | None = None) -> str:
    """config.toml text whose [zenoh] listens on its own free loopback port instead of the
    default 7447 (another machine or test may hold it); a text without [zenoh] gets a section."""
    port = port or free_port()
    if "[zenoh]" not in config_toml:
        return config_toml.rstrip("\n") + f'\n\n[zenoh]\nlisten = ["tcp/127.0.0.1:{port}"]\n'
    return config_toml.replace(ZENOH_DEFAULT_LISTEN, f'"tcp/127.0.0.1:{port}"')


def module_env(prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["EVO_SHM_PREFIX"] = prefix
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("EVO_NOTIFY_FD", None)
    env.update(extra)
    return env


class ModuleProcess:
    """A real `python -m <package>` subprocess with its own shm prefix; output to a log file."""

    def __init__(self, package: str, prefix: str, args: list[str] | None = None, log_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.package = package
        self.prefix = prefix
        self.args = args or []
        self.log_path = (log_dir or Path("/tmp")) / f"{package}-{prefix}-{uuid.uuid4().hex[:6]}.log"
        self.env = module_env(prefix, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ModuleProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.package, *self.args], cwd=REPO, env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            self.proc.wait(10)  # type: ignore[union-attr]

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "ModuleProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def shm_entries(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix + "_"))


def remove_shm(prefix: str) -> None:
    for n in shm_entries(prefix) + wake_entries(prefix):
        try:
            os.unlink(os.path.join("/dev/shm", n))
        except FileNotFoundError:
            pass


def wake_entries(prefix: str) -> list[str]:
    """The instance's wake semaphores (glibc names them sem.<prefix>_<dst>.wake)."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"sem.{prefix}_") and n.endswith(".wake"))


def reference_config_dir() -> Path:
    """The upstream evo-core-config: `shared/` beside the checkout (CI), or $EVO_REFERENCE_CONFIG."""
    env = os.environ.get("EVO_REFERENCE_CONFIG")
    candidates = ([Path(env)] if env else []) + [
        REPO.parent / "shared" / "reference" / "evo-core-config",
        Path("/work/shared/reference/evo-core-config"),
    ]
    for c in candidates:
        if (c / "config.toml").exists():
            return c
    raise FileNotFoundError("upstream reference config not found; set EVO_REFERENCE_CONFIG")
