"""Crash-safe small files: write-then-rename with fsync, private to the owner (0600).

Used for every state file a process must find intact after a crash (HAL positions, the RE's run
record, the CU's safety latch, the watchdog's modules.json).
"""
from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG, S_ISSOCK


def write_atomic(path: Path, text: str | bytes, *, sync: bool = True, mode: int = 0o600) -> None:
    """Replace `path` with `text` (UTF-8) or bytes: readers see the old or the new file, never a
    partial one; a process that has the old one open or mapped keeps it. `sync`: the data (and the
    rename) reach the disk before this returns, so a crash or power loss right after cannot bring back
    the old content (write-ahead records need that). `mode`: the new file's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # (the umask narrowed the open's mode)
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class FileRefused(OSError):
    """A file we will not read: not a regular file (a device, a FIFO) or larger than the limit."""


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A symlink to /dev/zero, a FIFO or a
    huge file is refused with FileRefused (never read without a bound)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise FileRefused(f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise FileRefused(f"{st.st_size} bytes, at most {limit} allowed")
        chunks, size = [], 0
        while size <= limit:  # the size may grow while we read: still bounded
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"more than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((S_ISDIR, "a directory"), (S_ISCHR, "a character device"), (S_ISBLK, "a block device"),
                       (S_ISFIFO, "a FIFO"), (S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"
