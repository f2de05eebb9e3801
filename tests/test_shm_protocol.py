"""The seqlock P2P protocol across real processes and real /dev/shm: no torn reads, single writer,
attach validation, file mode, stale detection, take-over and re-attach after a writer dies."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from common.shm.p2p import (
    DestinationMismatch,
    HeartbeatStale,
    InvalidMagic,
    ReadContention,
    ReaderAlreadyConnected,
    SegmentNotFound,
    TypedP2pReader,
    TypedP2pWriter,
    VersionMismatch,
    WriterAlreadyExists,
    segment_name,
    shm_path,
    writer_alive,
)
from common.shm.segments import HAL_TO_CU, RE_TO_MQT, spec
from tests.helpers import REPO, module_env, wait_for

WRITER = str(REPO / "tests" / "fixtures" / "shm_writer.py")


def start_writer(prefix: str, key: str, mode: str, *extra: str) -> subprocess.Popen:
    sp = spec(key)
    name = segment_name(sp.writer, sp.reader, prefix)
    p = subprocess.Popen(
        [sys.executable, WRITER, name, sp.writer.abbrev, sp.reader.abbrev, key, mode, *extra],
        env=module_env(prefix), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    line = p.stdout.readline()
    assert line.strip() == b"READY", p.stderr.read().decode()
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_two_processes_hammering_never_tear(fresh_prefix):
    """Writer at full speed in another process; every read must be internally consistent."""
    p = start_writer(fresh_prefix, "hal_cu", "hammer", "0", "4")
    name = segment_name("hal", "cu")
    r = TypedP2pReader.attach(name, "cu", HAL_TO_CU, stale_reads=1 << 30)
    words = r.local.reshape(1).view(np.uint8)[: (HAL_TO_CU.itemsize // 8) * 8].view("<f8")
    good = contended = 0
    last = 0.0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                r.read()
            except ReadContention:
                contended += 1
                continue
            lo, hi = words.min(), words.max()
            assert lo == hi, f"torn payload: words range {lo}..{hi}"
            assert lo >= last, "counter went backwards"
            last = lo
            good += 1
    finally:
        r.close()
        stop(p)
    assert good > 1000 and last > 1000, (good, last)
    assert r.contention_count == contended  # counted, never fatal


def test_second_writer_refused_and_mode_0600(fresh_prefix):
    name = segment_name("re", "mqt")
    with TypedP2pWriter.create(name, "re", "mqt", RE_TO_MQT) as w:
        w.commit()
        mode = stat.S_IMODE(os.stat(shm_path(name)).st_mode)
        assert mode == 0o600, oct(mode)
        with pytest.raises(WriterAlreadyExists):
            TypedP2pWriter.create(name, "re", "mqt", RE_TO_MQT)
        assert writer_alive(name)
    assert not os.path.exists(shm_path(name)), "clean close unlinks the segment"
    assert not os.path.exists(shm_path(name) + ".lock")
    assert not writer_alive(name)


def test_second_writer_in_another_process_refused(fresh_prefix):
    p = start_writer(fresh_prefix, "hal_cu", "periodic", "0.01")
    try:
        code = (
            "import sys\nfrom common.shm.p2p import *\nfrom common.shm.segments import HAL_TO_CU\n"
            f"try:\n TypedP2pWriter.create({segment_name('hal', 'cu')!r}, 'hal', 'cu', HAL_TO_CU)\n"
            "except WriterAlreadyExists: sys.exit(7)\n"
        )
        rc = subprocess.run([sys.executable, "-c", code], env=module_env(fresh_prefix), cwd=REPO).returncode
        assert rc == 7
    finally:
        stop(p)


def test_attach_validation(fresh_prefix):
    name = segment_name("hal", "cu")
    with pytest.raises(SegmentNotFound):
        TypedP2pReader.attach(name, "cu", HAL_TO_CU)
    with TypedP2pWriter.create(name, "hal", "cu", HAL_TO_CU) as w:
        w.commit()
        with pytest.raises(DestinationMismatch):
            TypedP2pReader.attach(name, "mqt", HAL_TO_CU)
        with pytest.raises(VersionMismatch):
            TypedP2pReader.attach(name, "cu", RE_TO_MQT)
        r = TypedP2pReader.attach(name, "cu", HAL_TO_CU)
        with pytest.raises(ReaderAlreadyConnected):
            TypedP2pReader.attach(name, "cu", HAL_TO_CU)
        # tools may look without taking the reader lock
        TypedP2pReader.attach(name, "cu", HAL_TO_CU, exclusive=False).close()
        r.close()
    # bad magic: a file that merely has the name
    with open(shm_path(name), "wb") as f:
        f.write(b"NOT_EVO!" + bytes(8192))
    try:
        with pytest.raises(InvalidMagic):
            TypedP2pReader.attach(name, "cu", HAL_TO_CU)
    finally:
        os.unlink(shm_path(name))


def test_writer_killed_stale_then_taken_over(fresh_prefix):
    """SIGKILL the writer: the reader reports HeartbeatStale after N reads; a new writer takes the
    segment over and the same reader carries on without re-attaching."""
    name = segment_name("hal", "cu")
    p = start_writer(fresh_prefix, "hal_cu", "periodic", "0.002")
    r = TypedP2pReader.attach(name, "cu", HAL_TO_CU, stale_reads=3)
    try:
        wait_for(lambda: r.read()["axes"]["position"][0] > 5, what="writer running")
        p.kill()
        p.wait(5)
        assert not writer_alive(name)
        stale_after = None
        for i in range(1, 10):
            try:
                r.read()
            except HeartbeatStale:
                stale_after = i
                break
        # N=3 unchanged reads after the last change (one more if a write landed just before the kill)
        assert stale_after in (3, 4), stale_after
        hb_before = r.heartbeat
        p2 = start_writer(fresh_prefix, "hal_cu", "periodic", "0.002")
        try:
            assert writer_alive(name)
            wait_for(lambda: r.heartbeat > hb_before and r.read() is not None, what="reader sees new writer")
            assert r.reattach_count == 0, "same segment reused: no re-attach needed"
            wait_for(lambda: r.read()["axes"]["position"][0] > 3, what="new writer data")
        finally:
            stop(p2)
    finally:
        r.close()
        stop(p)


def test_reader_reattaches_to_replaced_segment(fresh_prefix):
    """The segment is replaced by a new inode (cleanup ran between writers): the reader re-attaches."""
    name = segment_name("hal", "cu")
    p = start_writer(fresh_prefix, "hal_cu", "periodic", "0.002")
    r = TypedP2pReader.attach(name, "cu", HAL_TO_CU, stale_reads=3)
    try:
        wait_for(lambda: r.read()["axes"]["position"][0] > 2, what="first writer")
        p.kill()
        p.wait(5)
        os.unlink(shm_path(name))  # e.g. `evo up` cleared the dead writer's leftovers
        p2 = start_writer(fresh_prefix, "hal_cu", "periodic", "0.002")
        try:
            def fresh() -> bool:
                try:
                    return r.read()["axes"]["position"][0] > 2 and r.reattach_count == 1
                except HeartbeatStale:
                    return False

            wait_for(fresh, what="re-attached reader sees the new writer")
        finally:
            stop(p2)
    finally:
        r.close()
        stop(p)


def test_write_and_read_allocate_no_numpy_arrays(fresh_prefix):
    """The hot path reuses its preallocated buffers: read() returns the same array every time."""
    name = segment_name("hal", "cu")
    with TypedP2pWriter.create(name, "hal", "cu", HAL_TO_CU) as w:
        w.commit()
        r = TypedP2pReader.attach(name, "cu", HAL_TO_CU)
        a = r.read()
        w.local["axis_count"] = 3
        w.commit()
        b = r.read()
        assert a is b and int(b["axis_count"]) == 3
        import tracemalloc

        tracemalloc.start()
        for _ in range(2000):
            w.commit()
            r.read()
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size for s in snap.statistics("filename") if "common/shm/p2p.py" in s.traceback[0].filename)
        assert grown < 4096, f"p2p hot path retained {grown} bytes over 2000 cycles"
        r.close()


def test_failed_attach_leaves_no_lock_files(fresh_prefix):
    name = segment_name("re", "cu")
    with pytest.raises(SegmentNotFound):
        TypedP2pReader.attach(name, "cu", HAL_TO_CU)
    assert not os.path.exists(shm_path(name) + ".rlock")
