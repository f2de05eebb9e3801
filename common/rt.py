"""Real-time loop helpers for CPython: absolute deadlines, skipped-not-queued ticks, cycle figures.

Also process setup (timer slack, SCHED_FIFO + mlockall when asked and permitted, gc.freeze).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import threading
import time

import numpy as np

from common.shm.segments import JITTER_BUCKET_US, JITTER_BUCKETS

log = logging.getLogger(__name__)

PR_SET_TIMERSLACK = 29
PR_SET_PDEATHSIG = 1
MCL_CURRENT, MCL_FUTURE = 1, 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def set_timer_slack_ns(ns: int = 1) -> bool:
    return prctl(PR_SET_TIMERSLACK, ns)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    return prctl(PR_SET_PDEATHSIG, sig)


def setup_realtime(priority: int = 0, cpu: int = -1) -> bool:
    """Timer slack 1 ns always; SCHED_FIFO(priority) + mlockall when priority > 0 and permitted
    (one warning otherwise); CPU pinning when cpu >= 0. Returns whether SCHED_FIFO is active."""
    set_timer_slack_ns(1)
    if cpu >= 0:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as e:
            log.warning("cannot pin to CPU %d: %s", cpu, e)
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as e:
        log.warning("SCHED_FIFO %d not permitted (%s); running with normal scheduling", priority, e)
        return False
    if _libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.warning("mlockall failed (errno %d); pages may fault in the loop", ctypes.get_errno())
    return True


def freeze_gc() -> None:
    """After start-up: move every object to the permanent generation so cycles don't scan them."""
    gc.collect()
    gc.freeze()


class CycleTimer:
    """Absolute-deadline periodic timer with the figures every cycle loop publishes.

    Usage: `t.wait()` at the top of each cycle (sleeps until the next deadline; missed deadlines
    are skipped and counted as overruns), `t.done()` at the end (records compute time).
    """

    def __init__(self, period_ns: int, spin_ns: int = 0) -> None:
        self.period_ns = int(period_ns)
        self.spin_ns = spin_ns  # busy-wait the last part of the sleep (more CPU, less jitter)
        self.next_ns = time.perf_counter_ns() + self.period_ns
        self.cycle_count = 0
        self.overruns = 0
        self.last_cycle_ns = 0
        self.max_cycle_ns = 0
        self.last_jitter_ns = 0
        self.max_jitter_ns = 0
        self.hist = np.zeros(JITTER_BUCKETS, dtype=np.uint32)
        self._start_ns = 0

    def wait(self) -> int:
        """Sleep until the next deadline; returns the wake lateness in ns."""
        target = self.next_ns
        now = time.perf_counter_ns()
        remaining = target - now - self.spin_ns
        if remaining > 0:
            time.sleep(remaining / 1e9)
        while time.perf_counter_ns() < target:
            pass
        now = time.perf_counter_ns()
        late = now - target
        if late >= self.period_ns:
            missed = late // self.period_ns
            self.overruns += int(missed)
            target += missed * self.period_ns  # skip, never queue
            late -= missed * self.period_ns
        self.next_ns = target + self.period_ns
        self.last_jitter_ns = late
        if late > self.max_jitter_ns:
            self.max_jitter_ns = late
        b = late // (JITTER_BUCKET_US * 1000)
        self.hist[b if b < JITTER_BUCKETS else JITTER_BUCKETS - 1] += 1
        self._start_ns = now
        self.cycle_count += 1
        return late

    def done(self) -> int:
        """Record this cycle's compute time (since wake). A cycle longer than a period is an overrun
        and is counted when the next `wait()` finds its deadline passed."""
        dt = time.perf_counter_ns() - self._start_ns
        self.last_cycle_ns = dt
        if dt > self.max_cycle_ns:
            self.max_cycle_ns = dt
        return dt

    def publish(self, stats: np.ndarray, rt_active: bool = False) -> None:
        """Write the figures into a CYCLE_STATS view."""
        stats["cycle_count"] = self.cycle_count
        stats["cycle_time_ns"] = self.period_ns
        stats["last_cycle_ns"] = self.last_cycle_ns
        stats["max_cycle_ns"] = self.max_cycle_ns
        stats["last_wake_jitter_ns"] = self.last_jitter_ns
        stats["max_wake_jitter_ns"] = self.max_jitter_ns
        stats["overruns"] = self.overruns
        stats["rt_active"] = int(rt_active)
        stats["jitter_hist"] = self.hist


class StopFlag:
    """Set by SIGTERM/SIGINT; loops poll `flag.is_set()` and exit cleanly (segments unlinked)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum = 0

    def install(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


def process_setup(title: str) -> None:
    """Common start-up of every supervised module: process title and die-with-parent."""
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover
        pass
    set_parent_death_signal(signal.SIGKILL)
    # The parent may have died before prctl took effect: then we were re-parented already.
    parent = os.environ.get("EVO_WATCHDOG_PID")
    if parent and os.getppid() != int(parent):
        raise SystemExit(f"{title}: watchdog {parent} is gone; exiting")
