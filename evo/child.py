"""One supervised child process: spawn with a notify pipe and an output pipe, pidfd for its exit.

The watchdog's selector watches `pidfd` (readable once the process exits), `notify_fd` and `out_fd`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from common.consts import ENV_NOTIFY_FD

MAX_LINE = 16384  # a longer line without newline is emitted in pieces
_READ_CHUNK = 65536


class LineSplitter:
    """Bytes in, complete decoded lines out (partial lines kept until their newline)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        buf = self._buf + data
        *lines, rest = buf.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._buf = rest
        return [ln.rstrip(b"\r").decode("utf-8", "replace") for ln in lines]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class Child:
    """A spawned process with its pidfd, notify pipe (read end) and merged stdout/stderr pipe."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        notify_r, notify_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        env = dict(env)
        env[ENV_NOTIFY_FD] = str(notify_w)
        try:
            # start_new_session: a Ctrl-C at the terminal reaches only the watchdog, which then
            # stops the modules in order. pass_fds clears CLOEXEC on the notify write end (and
            # the start gate's read end, when preloaded) only.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(notify_w, *pass_fds),
                env=env, cwd=cwd, start_new_session=True, close_fds=True,
            )
        except BaseException:
            for fd in (notify_r, out_r):
                os.close(fd)
            raise
        finally:
            os.close(notify_w)
            os.close(out_w)
        self.pid = self.proc.pid
        # A zombie still has a pidfd; it becomes readable at exit (no SIGCHLD, no polling).
        self.pidfd = os.pidfd_open(self.pid)
        os.set_blocking(notify_r, False)
        os.set_blocking(out_r, False)
        self.notify_fd = notify_r
        self.out_fd = out_r
        self.notify_lines = LineSplitter()
        self.out_lines = LineSplitter()
        self.returncode: int | None = None

    def read_notify(self) -> tuple[list[str], bool]:
        """Messages available on the notify pipe; second item True at EOF."""
        return _read_lines(self.notify_fd, self.notify_lines)

    def read_output(self) -> tuple[list[str], bool]:
        """Output lines available; second item True at EOF."""
        return _read_lines(self.out_fd, self.out_lines)

    def send_signal(self, sig: int) -> bool:
        """Signal through the pidfd (never a recycled pid). False when already gone."""
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
            return True
        except ProcessLookupError:
            return False

    def reap(self) -> int | None:
        """Collect the exit status once the pidfd is readable; None if still running."""
        if self.returncode is None:
            self.returncode = self.proc.poll()
        return self.returncode

    def close(self) -> None:
        for fd in (self.pidfd, self.notify_fd, self.out_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _read_lines(fd: int, splitter: LineSplitter) -> tuple[list[str], bool]:
    lines: list[str] = []
    while True:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return lines, False
        except OSError:
            return lines + splitter.flush(), True
        if not data:
            return lines + splitter.flush(), True
        lines.extend(splitter.feed(data))
        if len(data) < _READ_CHUNK:
            return lines, False


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a module: ours, unbuffered output, the repository on PYTHONPATH."""
    env = dict(base)
    env.pop(ENV_NOTIFY_FD, None)
    env["PYTHONUNBUFFERED"] = "1"
    repo = str(Path(__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if repo not in parts:
        env["PYTHONPATH"] = os.pathsep.join([repo, *parts])
    env.update(extra)
    return env


def launcher_argv(argv: list[str]) -> list[str]:
    """Wrap an external program so it dies with the watchdog (see evo.launch)."""
    return [sys.executable, "-m", "evo.launch", "--", *argv]
