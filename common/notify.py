"""Readiness and liveness notifications to the watchdog over an inherited pipe (like sd_notify),
and the start gate a preloaded module waits at.

A module calls `notify_ready()` once, `notify_watchdog()` periodically and `notify_status(...)`.
"""
from __future__ import annotations

import os
import threading
import time

from common.consts import ENV_NOTIFY_FD, ENV_START_GATE_FD

_lock = threading.Lock()
_fd: int | None = None
_checked = False


def _notify_fd() -> int | None:
    global _fd, _checked
    if not _checked:
        _checked = True
        raw = os.environ.get(ENV_NOTIFY_FD)
        if raw:
            try:
                fd = int(raw)
                os.fstat(fd)
                os.set_blocking(fd, False)
                _fd = fd
            except (ValueError, OSError):
                _fd = None
    return _fd


def notify(*assignments: str) -> bool:
    """Send `KEY=VALUE` lines as one message. False when not supervised (no pipe) or pipe full."""
    fd = _notify_fd()
    if fd is None:
        return False
    msg = ("\n".join(a.replace("\n", " ") for a in assignments) + "\n").encode()
    with _lock:
        try:
            os.write(fd, msg)  # < PIPE_BUF: atomic
            return True
        except (BlockingIOError, BrokenPipeError, OSError):
            return False


def notify_ready(status: str = "") -> bool:
    return notify("READY=1", *( [f"STATUS={status}"] if status else []))


def notify_watchdog() -> bool:
    return notify("WATCHDOG=1")


def notify_status(status: str) -> bool:
    return notify(f"STATUS={status}")


def notify_stopping() -> bool:
    return notify("STOPPING=1")


def notify_loaded() -> bool:
    """Imports and configuration done (the watchdog then preloads the modules after us)."""
    return notify("LOADED=1")


class WatchdogPinger:
    """Calls `notify_watchdog()` at most every `interval_s` when `tick()` is called from a loop,
    or from its own daemon thread with `start()` (for modules without a loop of their own)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._stop = threading.Event()

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            notify_watchdog()

    def start(self) -> "WatchdogPinger":
        def run() -> None:
            while not self._stop.wait(self.interval_s):
                notify_watchdog()

        threading.Thread(target=run, name="evo-watchdog-ping", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


def wait_start_gate() -> bool:
    """A preloaded module (imports and config done) waits here for its turn in the start order:
    the watchdog writes one byte when the modules before it are ready. True to go on (also when
    not preloaded); False when the watchdog closed the gate without opening it (gone, or not
    starting us after all) — the module then exits without touching any segment."""
    raw = os.environ.pop(ENV_START_GATE_FD, None)
    if not raw:
        return True
    try:
        fd = int(raw)
    except ValueError:
        return True
    try:
        data = os.read(fd, 1)  # blocks; EINTR is retried by Python, SIGTERM's default kills us
    except OSError:
        return True  # not a pipe we were given: behave as if not preloaded
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return data == b"1"
