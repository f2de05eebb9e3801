"""Segment discovery: list_segments / list_for with writer liveness, stale cleanup, unlink_all."""
from __future__ import annotations

import os
import subprocess
import sys

from common.shm.discovery import cleanup_stale, instance_files, list_for, list_segments, unlink_all
from common.shm.p2p import ModuleAbbrev, TypedP2pWriter, segment_name
from common.shm.segments import SEGMENTS
from tests.helpers import REPO, module_env, wait_for


def _writer(key: str) -> TypedP2pWriter:
    s = SEGMENTS[key]
    w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
    w.commit()
    return w


def test_list_segments_and_list_for(fresh_prefix):
    ws = [_writer(k) for k in ("hal_cu", "cu_hal", "re_cu", "rpc_cu")]
    try:
        segs = list_segments()
        assert [s.key for s in segs] == sorted(["hal_cu", "cu_hal", "re_cu", "rpc_cu"])
        assert all(s.writer_alive and s.known and s.heartbeat == 1 for s in segs)
        hal_cu = next(s for s in segs if s.key == "hal_cu")
        assert hal_cu.source_module == ModuleAbbrev.HAL and hal_cu.dest_module == ModuleAbbrev.CU
        assert hal_cu.size == 12288 and hal_cu.payload_size == 10432
        assert sorted(s.key for s in list_for("cu")) == ["hal_cu", "re_cu", "rpc_cu"]
        assert [s.key for s in list_for(ModuleAbbrev.HAL)] == ["cu_hal"]
        # another instance's segments are invisible
        assert list_segments(prefix=fresh_prefix + "x") == []
    finally:
        for w in ws:
            w.close()
    assert list_segments() == []


def test_dead_writer_is_reported_and_cleaned(fresh_prefix):
    name = segment_name("hal", "cu")
    code = (
        "import os\nfrom common.shm.p2p import TypedP2pWriter\nfrom common.shm.segments import HAL_TO_CU\n"
        f"w = TypedP2pWriter.create({name!r}, 'hal', 'cu', HAL_TO_CU)\nw.commit()\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=module_env(fresh_prefix), cwd=REPO, check=True)
    live = _writer("cu_hal")
    try:
        segs = {s.key: s for s in list_segments()}
        assert not segs["hal_cu"].writer_alive and segs["cu_hal"].writer_alive
        assert cleanup_stale() == [name]
        assert not os.path.exists("/dev/shm/" + name) and not os.path.exists(f"/dev/shm/{name}.lock")
        assert [s.key for s in list_segments()] == ["cu_hal"], "a live writer's segment is never removed"
    finally:
        live.close()


def test_unlink_all_removes_every_file_of_the_instance(fresh_prefix):
    w = _writer("hal_mqt")
    open(f"/dev/shm/{w.name}.rlock", "w").close()
    os.close(w._lock_fd)  # simulate the owner being gone without cleanup
    w._closed = True
    wait_for(lambda: instance_files(), what="files present")
    unlink_all()
    assert instance_files() == []


def test_a_creation_temporary_left_by_a_killed_writer_is_removed(fresh_prefix):
    """A writer SIGKILLed between creating `<segment>.new-<pid>` and renaming it leaves that file: the
    stale cleanup removes it once its pid is gone (a live writer's is kept), unlink_all removes every one."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    base = os.path.join("/dev/shm", segment_name("hal", "mqt"))
    left, mine = f"{base}.new-{dead}", f"{base}.new-{os.getpid()}"
    for path in (left, mine):
        open(path, "wb").close()
    try:
        cleanup_stale()
        assert not os.path.exists(left) and os.path.exists(mine)
        unlink_all()
        assert not os.path.exists(mine) and instance_files() == []
    finally:
        for path in (left, mine):
            if os.path.exists(path):
                os.unlink(path)
