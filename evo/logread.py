"""`evo logs`: the last lines of the per-module log files, merged by time, optionally followed.

Reads `<log_dir>/<name>.log` as written by evo.logcapture; follows through rotation.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

TS_LEN = len("2024-01-01 00:00:00.000")


def log_files(log_dir: Path) -> dict[str, Path]:
    """Module name -> current log file (rotated backups `name.log.N` excluded)."""
    try:
        return {p.stem: p for p in sorted(Path(log_dir).glob("*.log")) if p.is_file()}
    except OSError:
        return {}


def tail(path: Path, n: int, block: int = 65536) -> list[str]:
    """The last `n` lines of a file, reading backwards in blocks."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            data = b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def merged_tail(files: dict[str, Path], n: int) -> list[tuple[str, str]]:
    """The last `n` lines over several files, ordered by their timestamp prefix: (name, line)."""
    rows: list[tuple[str, int, str, str]] = []
    for name, path in files.items():
        for i, line in enumerate(tail(path, n)):
            rows.append((line[:TS_LEN], i, name, line))
    rows.sort(key=lambda r: (r[0], r[2], r[1]))
    return [(name, line) for _, _, name, line in rows[-n:]] if n > 0 else []


def follow(files: dict[str, Path], emit: Callable[[str, str], None], stop: Callable[[], bool],
           interval_s: float = 0.2) -> None:
    """Print lines appended to `files` from now on until `stop()`; reopens a rotated file."""
    state: dict[str, tuple[int, int, bytes]] = {}  # name -> (inode, offset, partial line)
    for name, path in files.items():
        try:
            st = os.stat(path)
            state[name] = (st.st_ino, st.st_size, b"")
        except FileNotFoundError:
            state[name] = (0, 0, b"")
    while not stop():
        for name, path in files.items():
            ino, off, part = state[name]
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if st.st_ino != ino or st.st_size < off:  # rotated or truncated: start at the top
                ino, off, part = st.st_ino, 0, b""
            if st.st_size > off:
                with open(path, "rb") as f:
                    f.seek(off)
                    data = f.read(st.st_size - off)
                off += len(data)
                *lines, part = (part + data).split(b"\n")
                for ln in lines:
                    emit(name, ln.decode("utf-8", "replace"))
            state[name] = (ino, off, part)
        time.sleep(interval_s)

