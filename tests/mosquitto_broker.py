"""A real mosquitto broker for tests: started on a free loopback port, stoppable and restartable.

`start_broker(tmp_path)` is importable from any test module; it never leaves a process behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A mosquitto process and the files it was started from."""

    host: str
    port: int
    conf_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    _all_procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._all_procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto not listening on {self.port} within {timeout} s: {self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (SIGKILL after `timeout`) and wait."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing sessions cleanly."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self.proc = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        """Make sure no process of this broker survives."""
        self.stop()
        for p in self._all_procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made with `mosquitto_passwd -b`."""
    path.write_text("")
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return path


def start_broker(tmp_path: Path | str, port: int | None = None, config_extra: str = "") -> Broker:
    """Start mosquitto on 127.0.0.1:`port` (a free one if None); `config_extra` follows the listener.

    Anonymous access is allowed unless `config_extra` says otherwise.
    """
    tmp = Path(tmp_path)
    tmp.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    last_error: Exception | None = None
    for _ in range(attempts):
        p = port if port is not None else free_port()
        conf = tmp / f"mosquitto-{p}.conf"
        log = tmp / f"mosquitto-{p}.log"
        lines = [
            "per_listener_settings false",
            "user root",  # tests run as root; otherwise mosquitto drops to a user who cannot read tmp files
            "persistence false",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {p} 127.0.0.1",
        ]
        if "allow_anonymous" not in config_extra:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n" + config_extra + "\n")
        broker = Broker("127.0.0.1", p, conf, log)
        try:
            broker.start()
            return broker
        except RuntimeError as exc:  # the port was taken between probing and binding
            broker.close()
            last_error = exc
    raise RuntimeError(f"could not start mosquitto: {last_error}")
