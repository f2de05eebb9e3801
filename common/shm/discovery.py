"""Segment discovery: every segment of an instance in /dev/shm, with writer liveness.

Used by `evo shm ls`, the watchdog (stale-segment cleanup, heartbeat checks) and tests.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from common.consts import SHM_DIR
from common.shm.p2p import ModuleAbbrev, ShmError, read_header, shm_prefix, unlink_segment, writer_alive
from common.shm.segments import SEGMENTS
from common.shm.wake import unlink_wakes


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    key: str  # "<src>_<dst>"
    source_module: ModuleAbbrev
    dest_module: ModuleAbbrev
    size: int  # mapped size in bytes
    payload_size: int
    writer_alive: bool
    heartbeat: int
    last_write_age_s: float  # since the file was last modified (mtime moves with mmap writes)
    known: bool  # in the segment table


def _parse(name: str, prefix: str) -> tuple[str, ModuleAbbrev, ModuleAbbrev] | None:
    if not name.startswith(prefix + "_") or "." in name:
        return None
    rest = name[len(prefix) + 1 :]
    parts = rest.split("_")
    if len(parts) != 2:
        return None
    try:
        return rest, ModuleAbbrev.parse(parts[0]), ModuleAbbrev.parse(parts[1])
    except ValueError:
        return None


def list_segments(prefix: str | None = None) -> list[SegmentInfo]:
    """Every `<prefix>_<src>_<dst>` segment in /dev/shm, sorted by name."""
    prefix = prefix or shm_prefix()
    out: list[SegmentInfo] = []
    try:
        names = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return out
    now = time.time()
    for name in names:
        parsed = _parse(name, prefix)
        if parsed is None:
            continue
        key, src, dst = parsed
        path = os.path.join(SHM_DIR, name)
        try:
            st = os.stat(path)
            hdr = read_header(name)
            heartbeat, payload = hdr.heartbeat, hdr.payload_size
        except (ShmError, FileNotFoundError):
            continue
        out.append(
            SegmentInfo(
                name=name, key=key, source_module=src, dest_module=dst, size=st.st_size, payload_size=payload,
                writer_alive=writer_alive(name), heartbeat=heartbeat, last_write_age_s=max(0.0, now - st.st_mtime),
                known=key in SEGMENTS,
            )
        )
    return out


def list_for(module: "ModuleAbbrev | str", prefix: str | None = None) -> list[SegmentInfo]:
    """Segments addressed to `module`."""
    m = ModuleAbbrev.parse(module)
    return [s for s in list_segments(prefix) if s.dest_module == m]


def instance_files(prefix: str | None = None) -> list[str]:
    """Every /dev/shm entry of the instance: segments, their lock objects and temporaries."""
    prefix = prefix or shm_prefix()
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix + "_") and _parse(n.split(".")[0], prefix))
    except FileNotFoundError:
        return []


def _unlink_dead_temporaries(prefix: str, everyone_gone: bool) -> None:
    """A writer killed between creating `<segment>.new-<pid>` and renaming it leaves that file: remove
    it once its pid is gone (or every one, when the whole instance has stopped)."""
    for n in instance_files(prefix):
        base, _, pid = n.partition(".new-")
        if not pid.isdigit():
            continue
        if everyone_gone or not os.path.exists(f"/proc/{pid}"):
            try:
                os.unlink(os.path.join(SHM_DIR, n))
            except FileNotFoundError:
                pass


def cleanup_stale(prefix: str | None = None) -> list[str]:
    """Unlink the segments of the instance whose writer is dead (a killed run's leftovers)."""
    removed = []
    prefix = prefix or shm_prefix()
    _unlink_dead_temporaries(prefix, everyone_gone=False)
    for base in sorted({n.split(".")[0] for n in instance_files(prefix)}):
        if not writer_alive(base):
            unlink_segment(base)
            removed.append(base)
    return removed


def unlink_all(prefix: str | None = None) -> list[str]:
    """Unlink every segment of the instance (after every module has stopped)."""
    prefix = prefix or shm_prefix()
    _unlink_dead_temporaries(prefix, everyone_gone=True)
    bases = sorted({n.split(".")[0] for n in instance_files(prefix)})
    for base in bases:
        unlink_segment(base)
    unlink_wakes(prefix)  # the readers' wake semaphores
    return bases
