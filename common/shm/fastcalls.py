"""flock, stat and a semaphore's timed wait for cycle loops: libc called directly, no Python exception, no result object.

`fcntl.flock` on a held lock raises BlockingIOError and `os.stat` builds a stat_result: ~10 us each after a sleep;
posix_ipc's timed acquire raises BusyError at every time-out and takes a relative CLOCK_REALTIME time-out.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import time

_libc = ctypes.CDLL(None, use_errno=True)
_flock = _libc.flock
_flock.argtypes = [ctypes.c_int, ctypes.c_int]
_flock.restype = ctypes.c_int
_SH_NB = fcntl.LOCK_SH | fcntl.LOCK_NB
_UN = fcntl.LOCK_UN
_INO_OFFSET = 8  # struct stat on x86-64 glibc: st_dev u64, then st_ino u64


def lock_free(fd: int) -> bool:
    """True when a shared lock on `fd` could be taken (and was released again): no process holds it
    exclusively. Any failure (EWOULDBLOCK: held; anything else) is False — never claim a writer dead
    on an error."""
    if _flock(fd, _SH_NB) != 0:
        return False
    _flock(fd, _UN)
    return True


class InodeOf:
    """`inode()` of one path: the inode number, or -1 when the path does not exist (or cannot be
    stat()ed). One libc stat() into a buffer this object keeps (not shared between threads)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._b = os.fsencode(path)
        self._buf = ctypes.create_string_buffer(256)  # struct stat is 144 bytes on x86-64
        self._ino = ctypes.c_uint64.from_buffer(self._buf, _INO_OFFSET)

    def inode(self) -> int:
        if _stat is None:
            try:
                return os.stat(self.path).st_ino
            except OSError:
                return -1
        return self._ino.value if _stat(self._b, self._buf) == 0 else -1


def _libc_stat():
    """libc's stat() when it is exported (glibc >= 2.33) and its layout is the one read above
    (checked against os.stat on "/"), else None (InodeOf falls back to os.stat)."""
    if platform.machine() != "x86_64" or not hasattr(_libc, "stat"):
        return None
    f = _libc.stat
    f.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    f.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(256)
    if f(b"/", buf) != 0 or ctypes.c_uint64.from_buffer(buf, _INO_OFFSET).value != os.stat("/").st_ino:
        return None
    return f


_stat = _libc_stat()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_CLOCK_MONOTONIC = 1  # the clock of time.perf_counter_ns / time.monotonic on Linux
_MAX_INTERRUPTS = 100
_clock_ns = time.perf_counter_ns


class SemaphoreWait:
    """A second handle (`sem_open`) on an existing named POSIX semaphore, for `wait_until`: block until
    it is posted or an absolute CLOCK_MONOTONIC deadline passes (`sem_clockwait`, glibc >= 2.30). No
    Python exception on the time-out, no conversion to the wall clock. `available` is False where libc
    lacks sem_clockwait or the name cannot be opened (the caller keeps posix_ipc's relative wait)."""

    def __init__(self, name: str) -> None:
        self._h: int | None = None
        self._ts = _Timespec()
        self._ref = ctypes.byref(self._ts)
        if _sem_clockwait is None:
            return
        h = _sem_open(os.fsencode(name), 0)
        self._h = h or None

    @property
    def available(self) -> bool:
        return self._h is not None

    def wait_until(self, deadline_ns: int) -> bool:
        """True when posted (every further pending count taken too: one wait, one wake-up); False at
        the deadline. A signal does not end the wait early (it is retried until the deadline). The
        time-out path is one libc call and one clock read: a 1 kHz loop takes it every cycle."""
        ts = self._ts
        ts.tv_sec, ts.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        for _ in range(_MAX_INTERRUPTS):  # a turn ends early only on a signal (EINTR): wait out the rest
            if _sem_clockwait(self._h, _CLOCK_MONOTONIC, self._ref) == 0:
                return self._posted()
            if _clock_ns() >= deadline_ns:
                return False
        return False

    def _posted(self) -> bool:
        h = self._h
        for _ in range(1_000_000):
            if _sem_trywait(h) != 0:
                break
        return True

    def close(self) -> None:
        if self._h is not None:
            _sem_close(self._h)
            self._h = None


def _sem_calls():
    if not hasattr(_libc, "sem_clockwait"):
        return None, None, None, None
    so = _libc.sem_open
    so.argtypes = [ctypes.c_char_p, ctypes.c_int]
    so.restype = ctypes.c_void_p
    cw = _libc.sem_clockwait
    cw.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)]
    cw.restype = ctypes.c_int
    tw = _libc.sem_trywait
    tw.argtypes = [ctypes.c_void_p]
    tw.restype = ctypes.c_int
    sc = _libc.sem_close
    sc.argtypes = [ctypes.c_void_p]
    sc.restype = ctypes.c_int
    return so, cw, tw, sc


_sem_open, _sem_clockwait, _sem_trywait, _sem_close = _sem_calls()
