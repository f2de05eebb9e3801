"""Crash-safe small files: write-then-rename with fsync, private to the owner (0600).

Used for every state file a process must find intact after a crash (HAL positions, the RE's run
record, the CU's safety latch, the watchdog's modules.json).
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, *, sync: bool = True) -> None:
    """Replace `path` with `text`: readers see the old or the new file, never a partial one.
    `sync`: the data (and the rename) reach the disk before this returns, so a crash or power loss
    right after cannot bring back the old content (write-ahead records need that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
