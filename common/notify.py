"""Readiness and liveness notifications to the watchdog over an inherited pipe (like sd_notify).

A module calls `notify_ready()` once, `notify_watchdog()` periodically and `notify_status(...)`.
"""
from __future__ import annotations

import os
import threading
import time

from common.consts import ENV_NOTIFY_FD

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
