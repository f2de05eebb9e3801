"""flock and stat for probes inside cycle loops: libc called directly, no Python exception, no result object.

`fcntl.flock` on a held lock raises BlockingIOError and `os.stat` builds a stat_result: ~10 us each after a sleep.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import platform

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
