"""Wake-on-change beside the seqlock: one named POSIX semaphore per reader module.

Writers post after a commit the reader cares about; the reader blocks on it with a time-out.

Name and ownership
------------------
`/<EVO_SHM_PREFIX>_<dst>.wake` (glibc keeps it as `/dev/shm/sem.<prefix>_<dst>.wake`), mode 0o600,
dst one of cu, hal, re, mqt, rpc. The READER owns it: `WakeWaiter` creates it (a stale one left
by a dead reader is reused, so writers holding it carry on) and unlinks it on `close()`.
Writers use `WakePoster`, which never blocks and never raises in a loop:

- the semaphore is opened lazily; while it is absent the open is retried at most every 0.5 s;
- a post is skipped while the count is already > 0 (the reader has a wake pending), so the count
  never grows past 1 however fast the writer commits;
- a reader that restarted made a NEW semaphore (the old name was unlinked): the poster compares
  the inode of the name with the one it holds at most every 0.1 s and re-opens, so a restarted
  reader is still woken (its first wake at most 0.1 s late; readers keep a time-out anyway);
- with `apart=True` (the HAL) `post()` makes neither the open nor the inode check — the only system
  calls besides the post itself — and the owner calls `maintain(now)` once per cycle, after its
  commits (HalCycle.housekeeping), which does them on the same schedule.

One `wait()` is one wake-up: extra counts are drained, so a burst of commits wakes the reader
once. The reader still rate-limits itself (its publish/sample rate) and keeps its time-out as its
liveness period: a wake is a hint that something changed, never the only way to see it.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import posix_ipc

from common.consts import SHM_DIR, SHM_MODE
from common.shm.fastcalls import SemaphoreWait
from common.shm.p2p import ModuleAbbrev, shm_prefix

_REOPEN_INTERVAL_S = 0.5  # an absent reader's semaphore: open retried at most this often
_RECHECK_S = 0.1  # a held semaphore: is it still the one under the name (reader restarted)?
_monotonic = time.monotonic
_SEM_FILE_PREFIX = "sem."  # glibc's file name for a named semaphore in /dev/shm


def wake_name(dst: "ModuleAbbrev | str", prefix: str | None = None) -> str:
    """`/<prefix>_<dst>.wake`, the semaphore a reader module blocks on."""
    return f"/{prefix or shm_prefix()}_{ModuleAbbrev.parse(dst).abbrev}.wake"


def _sem_path(name: str) -> str:
    return os.path.join(SHM_DIR, _SEM_FILE_PREFIX + name.lstrip("/"))


def _inode(name: str) -> int:
    try:
        return os.stat(_sem_path(name)).st_ino
    except OSError:
        return 0


def unlink_wakes(prefix: str | None = None) -> list[str]:
    """Remove every wake semaphore of an instance (cleanup after all modules stopped)."""
    head = _SEM_FILE_PREFIX + (prefix or shm_prefix()) + "_"
    removed = []
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(head) and n.endswith(".wake")]
    except FileNotFoundError:
        return []
    for n in sorted(names):
        try:
            os.unlink(os.path.join(SHM_DIR, n))
            removed.append(n)
        except FileNotFoundError:
            pass
    return removed


class WakeWaiter:
    """The reader's end: owns `/<prefix>_<dst>.wake` and blocks on it."""

    def __init__(self, dst: "ModuleAbbrev | str", prefix: str | None = None) -> None:
        self.name = wake_name(dst, prefix)
        self._sem = posix_ipc.Semaphore(self.name, posix_ipc.O_CREAT, SHM_MODE, 0)
        try:
            os.chmod(_sem_path(self.name), SHM_MODE)  # umask must not change the mode
        except OSError:
            pass
        self._closed = False
        self.wakes = 0
        self._until = SemaphoreWait(self.name)  # wait_until's own handle (sem_clockwait)

    def wait(self, timeout_s: float) -> bool:
        """Block until posted or `timeout_s` passed; True when posted. Extra counts are drained
        (one wait == one wake-up). A signal (SIGTERM) ends the wait early with False."""
        try:
            self._sem.acquire(max(0.0, timeout_s))
        except posix_ipc.BusyError:
            return False
        except posix_ipc.SignalError:
            return False
        self.drain()
        self.wakes += 1
        return True

    def wait_until(self, deadline_ns: int) -> bool:
        """`wait` to an absolute `time.perf_counter_ns()` deadline (CLOCK_MONOTONIC, the cycle
        timer's clock): no exception at the time-out and no wall-clock conversion — what a 1 kHz loop
        sleeping on its semaphore pays every cycle. A signal does not end it early."""
        until = self._until
        if not until.available:
            return self.wait((deadline_ns - time.perf_counter_ns()) * 1e-9)
        if until.wait_until(deadline_ns):
            self.wakes += 1
            return True
        return False

    def deadline_wait(self) -> "Callable[[int], bool]":
        """The fastest `wait_until` for a loop to call every cycle: libc's directly when available
        (a post is not counted in `wakes` then)."""
        return self._until.wait_until if self._until.available else self.wait_until

    def drain(self) -> int:
        """Consume pending counts without blocking; returns how many."""
        n = 0
        while self._sem.value > 0 and n < 1_000_000:
            try:
                self._sem.acquire(0)
            except posix_ipc.BusyError:
                break
            n += 1
        return n

    @property
    def value(self) -> int:
        return self._sem.value

    def close(self) -> None:
        """Unlink the semaphore (writers re-open the next reader's) and close it."""
        if self._closed:
            return
        self._closed = True
        self._until.close()
        try:
            self._sem.unlink()
        except posix_ipc.ExistentialError:
            pass
        self._sem.close()

    def __enter__(self) -> "WakeWaiter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WakePoster:
    """A writer's end: `post()` wakes the reader of `dst` if it is there; never blocks or raises."""

    def __init__(self, dst: "ModuleAbbrev | str", prefix: str | None = None, *, apart: bool = False) -> None:
        self.name = wake_name(dst, prefix)
        self.apart = apart
        self._sem: posix_ipc.Semaphore | None = None
        self._ino = 0
        self._next_open = 0.0
        self._next_check = 0.0
        self.posts = 0
        self.skipped = 0

    def _open(self, now: float) -> bool:
        self._next_open = now + _REOPEN_INTERVAL_S
        try:
            sem = posix_ipc.Semaphore(self.name)
        except (posix_ipc.Error, OSError, ValueError):
            return False
        self._sem = sem
        self._ino = _inode(self.name)
        self._next_check = now + _RECHECK_S
        return True

    def _forget(self) -> None:
        sem, self._sem = self._sem, None
        self._ino = 0
        if sem is not None:
            try:
                sem.close()
            except (posix_ipc.Error, OSError):
                pass

    def post(self) -> None:
        """Wake the reader (at most one pending wake). ~1 us; no syscall while a wake is pending."""
        try:
            sem = self._sem
            if not self.apart:
                self.maintain(_monotonic())
                sem = self._sem
            if sem is None:
                return
            if sem.value > 0:
                self.skipped += 1
                return
            sem.release()
            self.posts += 1
        except Exception:  # noqa: BLE001 - a wake is a hint; the writer's loop must never fail on it
            self._forget()

    def maintain(self, now: float) -> None:
        """The open while the reader's semaphore is absent (at most every 0.5 s) and the check that the
        one held is still the one under the name (at most every 0.1 s; a restarted reader's new one is
        opened). `post()` calls it unless `apart`; then the owner does, once per cycle. Never raises."""
        try:
            if self._sem is None:
                if now >= self._next_open:
                    self._open(now)
            elif now >= self._next_check:
                # the reader may have restarted (a new semaphore under the same name) or gone
                self._next_check = now + _RECHECK_S
                if _inode(self.name) != self._ino:
                    self._forget()
                    self._open(now)
        except Exception:  # noqa: BLE001 - a wake is a hint; the writer's loop must never fail on it
            self._forget()

    def close(self) -> None:
        self._forget()


def post_bits(bits: int, posters: Sequence[WakePoster]) -> None:
    """Post `posters[k]` for every bit k set in `bits` — a compiled publish's answer to whose reader to
    wake (hal.kernels.hal_publish, control_unit.kernels.outputs.cu_publish's callers)."""
    k = 0
    while bits:
        if bits & 1:
            posters[k].post()
        bits >>= 1
        k += 1
