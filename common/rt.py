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
from typing import Callable, Sequence

import numpy as np

from common.notify import notify_ready, notify_watchdog
from common.shm.segments import CYCLE_STATS, JITTER_BUCKET_US, JITTER_BUCKETS
from common.shm.wake import WakeWaiter

log = logging.getLogger(__name__)

_clock_ns = time.perf_counter_ns  # CLOCK_MONOTONIC; module-level names: the timer runs 1000 times a second
_sleep = time.sleep
_BUCKET_NS = JITTER_BUCKET_US * 1000

_MAX_BETWEEN_WAKES = 32  # posts served in one period by wake_between; more wait for the cycle
PING_NS = 500_000_000  # a cycle loop tells the watchdog it is alive this often (WATCHDOG=1)
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


ENV_RT = "EVO_RT"  # "off": normal scheduling whatever the config says (the test suite sets it)


def rt_disabled_by_env() -> bool:
    return os.environ.get(ENV_RT, "").strip().lower() in ("off", "0", "no", "false")


def setup_realtime(priority: int = 0, cpu: int = -1) -> bool:
    """Timer slack 1 ns always; SCHED_FIFO(priority) + mlockall when priority > 0 and the OS
    permits it (root, CAP_SYS_NICE or an rtprio limit; one warning and normal scheduling
    otherwise); CPU pinning when cpu >= 0. `EVO_RT=off` in the environment forces normal
    scheduling (tests: many machines share two cores). Returns whether SCHED_FIFO is active."""
    set_timer_slack_ns(1)
    if cpu >= 0:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as e:
            log.warning("cannot pin to CPU %d: %s", cpu, e)
    if priority <= 0:
        return False
    if rt_disabled_by_env():
        log.info("SCHED_FIFO %d not requested: %s=off in the environment; normal scheduling", priority, ENV_RT)
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as e:
        log.warning("SCHED_FIFO %d not permitted (%s; needs root, CAP_SYS_NICE or an rtprio limit); "
                    "running with normal scheduling", priority, e)
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
    are skipped and counted as overruns), `t.done()` at the end (records compute time),
    `t.publish(stats_view)` to write the figures (one byte copy of a record kept up to date).
    Never busy-waits unless `spin_ns` is set (a SCHED_FIFO spinner can starve a 2-core box).
    """

    def __init__(self, period_ns: int, spin_ns: int = 0, record: np.ndarray | None = None) -> None:
        self.period_ns = int(period_ns)
        self.spin_ns = spin_ns  # busy-wait the last part of the sleep (more CPU, less jitter)
        self.next_ns = time.perf_counter_ns() + self.period_ns
        self.cycle_count = 0
        self.overruns = 0
        self.last_cycle_ns = 0
        self.max_cycle_ns = 0
        self.last_jitter_ns = 0
        self.max_jitter_ns = 0
        self.ticks = 1  # periods since the previous wake (1 + skipped ticks)
        self.now_ns = 0  # wake time of this cycle (perf_counter_ns == CLOCK_MONOTONIC)
        # None: wait() sleeps on the clock; else it calls this with the absolute deadline (wake_between)
        self.sleep_until: Callable[[int], None] | None = None
        # the published record, kept current by wait() / done() (the scalars through one u64 memoryview, the
        # histogram in place): `publish_to` copies it; a compiled cycle may copy `record` itself (the HAL)
        if record is not None and (record.dtype != CYCLE_STATS or record.shape != () or not record.flags.writeable):
            raise TypeError("CycleTimer: record must be a writable 0-d CYCLE_STATS array")
        self._rec = record if record is not None else np.zeros((), dtype=CYCLE_STATS)
        self._rec[...] = np.zeros((), dtype=CYCLE_STATS)
        self.record = self._rec
        self._rec_u8 = self._rec.reshape(1).view(np.uint8)
        self.hist = self._rec["jitter_hist"]
        assert [CYCLE_STATS.fields[f][1] for f in _U64_FIELDS] == [8 * i for i in range(len(_U64_FIELDS))]
        self._u64 = memoryview(self._rec_u8[: 8 * len(_U64_FIELDS)]).cast("Q")
        hist_dt, off = CYCLE_STATS.fields["jitter_hist"][:2]
        assert hist_dt.base == np.uint32 and hist_dt.shape == (JITTER_BUCKETS,)
        self._hist_q = memoryview(self._rec_u8[off: off + 4 * JITTER_BUCKETS]).cast("I")  # hist, cheap to bump
        self._rt_off = CYCLE_STATS.fields["rt_active"][1]
        self._rec_mv = memoryview(self._rec_u8)
        self._start_ns = 0
        self._u64[1] = self.period_ns
        self.rt_active = False

    @property
    def rt_active(self) -> bool:
        return self._rt

    @rt_active.setter
    def rt_active(self, on: bool) -> None:
        self._rt = bool(on)
        self._rec_mv[self._rt_off] = 1 if on else 0

    def wait(self) -> int:
        """Sleep until the next deadline; returns the wake lateness in ns."""
        target = self.next_ns
        period = self.period_ns
        spin = self.spin_ns
        remaining = target - _clock_ns() - spin
        if remaining > 0:
            sleep_until = self.sleep_until
            if sleep_until is None:
                _sleep(remaining * 1e-9)
            else:
                sleep_until(target - spin)
        if spin:
            while _clock_ns() < target:
                pass
        now = _clock_ns()
        late = now - target
        ticks = 1
        u = self._u64
        if late >= period:
            missed = late // period
            self.overruns += missed
            u[6] = self.overruns
            ticks += missed
            target += missed * period  # skip, never queue
            late -= missed * period
        elif late < 0:  # a sleep that returned early (signal): not a lateness
            late = 0
        self.ticks = ticks
        self.next_ns = target + period
        self.last_jitter_ns = late
        u[4] = late
        if late > self.max_jitter_ns:
            self.max_jitter_ns = late
            u[5] = late
        b = late // _BUCKET_NS
        if b >= JITTER_BUCKETS:
            b = JITTER_BUCKETS - 1
        q = self._hist_q  # a memoryview (no numpy scalar); u32 wraps like the numpy field did (49 days)
        q[b] = (q[b] + 1) & 0xFFFFFFFF
        self._start_ns = now
        self.now_ns = now
        self.cycle_count += 1
        u[0] = self.cycle_count
        return late

    def resync(self) -> None:
        """Start a cycle now after an idle wait: the next deadline is one period from now; the
        idle time counts as neither lateness nor overrun."""
        now = time.perf_counter_ns()
        self.next_ns = now + self.period_ns
        self.ticks = 1
        self.last_jitter_ns = 0
        self._start_ns = now
        self.now_ns = now
        self.cycle_count += 1
        u = self._u64
        u[0] = self.cycle_count
        u[4] = 0

    def done(self) -> int:
        """Record this cycle's compute time (since wake). A cycle longer than a period is an overrun
        and is counted when the next `wait()` finds its deadline passed."""
        dt = _clock_ns() - self._start_ns
        self.last_cycle_ns = dt
        u = self._u64
        u[2] = dt
        if dt > self.max_cycle_ns:
            self.max_cycle_ns = dt
            u[3] = dt
        return dt

    def publish(self, stats: np.ndarray, rt_active: bool | None = None) -> None:
        """Write the figures into a CYCLE_STATS view (builds a byte view: use `publish_to` in a loop)."""
        if rt_active is not None:
            self.rt_active = rt_active
        self.publish_to((self.publisher(stats),))

    @staticmethod
    def publisher(stats: np.ndarray) -> np.ndarray:
        """A flat byte view of a CYCLE_STATS view, for `publish_to` (made once, outside the loop)."""
        if stats.dtype != CYCLE_STATS:
            raise TypeError("publisher: not a CYCLE_STATS view")
        return stats.reshape(1).view(np.uint8)

    def publish_to(self, targets: Sequence[np.ndarray]) -> None:
        """Copy the record (current since the last wait() / done()) into each `publisher()` byte view. No
        allocation."""
        for t in targets:
            np.copyto(t, self._rec_u8)


_U64_FIELDS = ("cycle_count", "cycle_time_ns", "last_cycle_ns", "max_cycle_ns", "last_wake_jitter_ns",
               "max_wake_jitter_ns", "overruns")


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


class CycleLoop:
    """The one cycle-loop skeleton of the HAL, CU and RE (like LinuxCNC's servo thread): a timer
    with absolute deadlines, the stop flag, RT set-up, gc.freeze after start-up, the cycle
    figures published every cycle, READY after the first cycle and the watchdog ping.

        loop = CycleLoop("cu", period_ns, stop, rt_priority=cfg.rt_priority, cpu=cfg.cpu)
        loop.start(stats_views)        # after start-up: RT, timer, gc.freeze
        loop.run(step, "ready text")   # step(now_ns, ticks) every period until stopped

    An idle-capable loop (the RE) passes `idle` and `waiter`: while `idle()` is true the loop
    blocks on the WakeWaiter (a command's post ends it) for at most `idle_timeout_s`, and then
    runs one step, so the module's heartbeat keeps moving inside its readers' stale budget.
    Idle time is neither jitter nor overrun.

    `wake_between(waiter, work, guard_ns)` (the HAL): the loop sleeps to each deadline on the
    WakeWaiter instead of the clock, and a post runs `work(now_ns)` at once — a command taken
    between cycles instead of at the next one. The deadlines do not move.

    `auto_publish=False`: the loop does not copy its figures into the stats views every cycle; the
    step calls `publish()` right before it commits the segments that carry them (a module that
    commits its status segments only on a change or every 10 ms saves the copies in between).
    `record`: a CYCLE_STATS array the timer keeps its figures in (current after every wait and done),
    for a step that copies them itself (the HAL's compiled publish)."""

    def __init__(self, name: str, period_ns: int, stop: StopFlag, *, rt_priority: int = 0, cpu: int = -1,
                 spin_ns: int = 0, auto_publish: bool = True, record: np.ndarray | None = None) -> None:
        self.name = name
        self.auto_publish = auto_publish
        self.record = record  # the timer's figures record, when the module's step copies it itself
        self.period_ns = int(period_ns)
        self.stop = stop
        self.rt_priority = rt_priority
        self.cpu = cpu
        self.spin_ns = spin_ns
        self.rt_active = False
        self.timer = CycleTimer(self.period_ns)
        self._stats: tuple[np.ndarray, ...] = ()
        self.idle_waits = 0
        self._between: tuple[WakeWaiter, Callable[[int], None], int] | None = None

    def start(self, stats: Sequence[np.ndarray] = ()) -> bool:
        """RT set-up (SCHED_FIFO + mlockall when asked and permitted), the timer, gc.freeze.
        Call when start-up is done (segments made, kernels loaded). Returns whether RT is on."""
        self.rt_active = setup_realtime(self.rt_priority, self.cpu)
        # busy-waiting only under SCHED_FIFO and only when asked: a FIFO spinner starves a small box
        self.timer = CycleTimer(self.period_ns, spin_ns=self.spin_ns if self.rt_active else 0, record=self.record)
        self.timer.rt_active = self.rt_active
        if self._between is not None:
            self.timer.sleep_until = self._sleep_on_waiter(*self._between)
        self._stats = tuple(CycleTimer.publisher(s) for s in stats)
        freeze_gc()
        return self.rt_active

    def wake_between(self, waiter: WakeWaiter, work: Callable[[int], None], guard_ns: int) -> None:
        """Sleep between cycles on `waiter`: a post runs `work(now_ns)` at once unless the next
        deadline is closer than `guard_ns` (the cycle comes first then). Call before `start()`."""
        self._between = (waiter, work, int(guard_ns))

    def _sleep_on_waiter(self, waiter: WakeWaiter, work: Callable[[int], None],
                         guard_ns: int) -> Callable[[int], None]:
        wait_until = waiter.deadline_wait()

        def sleep_until(end: int) -> None:
            if not wait_until(end):  # the common case: the deadline, one call
                return
            for _ in range(_MAX_BETWEEN_WAKES):  # posted: each turn ends with a post or the deadline
                now = _clock_ns()
                if end - now > guard_ns:
                    work(now)
                if not wait_until(end):
                    return
            rem = end - _clock_ns()  # a flood of posts: the rest of this period on the clock
            if rem > 0:
                _sleep(rem * 1e-9)

        return sleep_until

    def publish(self) -> None:
        """Copy the figures (up to the current cycle's wake) into the stats views now."""
        self.timer.publish_to(self._stats)

    def run(self, step: Callable[[int, int], None], ready: str = "", *,
            idle: Callable[[], bool] | None = None, waiter: WakeWaiter | None = None,
            idle_timeout_s: float = 0.05) -> None:
        """Cycle until the stop flag is set: wait (or idle), publish figures, step, account."""
        t = self.timer
        stopped = self.stop._event.is_set  # bound once: the loop's per-cycle work is kept to its steps
        stats = self._stats if self.auto_publish else ()
        can_idle = idle is not None and waiter is not None
        next_ping = 0
        first = True
        while not stopped():
            if can_idle and idle():  # type: ignore[misc]
                self.idle_waits += 1
                waiter.wait(idle_timeout_s)  # type: ignore[union-attr]
                t.resync()
            else:
                t.wait()
            if stats:
                t.publish_to(stats)
            now = t.now_ns
            step(now, t.ticks)
            t.done()
            if now >= next_ping:  # the watchdog's liveness ping, timed on the wake clock (no clock read)
                next_ping = now + PING_NS
                notify_watchdog()
                if first:
                    first = False
                    notify_ready(ready)


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
