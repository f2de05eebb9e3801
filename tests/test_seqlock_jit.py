"""The compiled seqlock (common/shm/seqlock_jit.py) against p2p.py's protocol: the same header words, commits
whose heartbeats continue the Python writer's, a reader in another process that never sees a torn payload
while the compiled commit writes as fast as it can, and the compiled read that never returns (nor leaves in
its copy) a torn payload while a writer process commits as fast as it can.

Real /dev/shm segments, a real reader subprocess; the compiled code is the HAL kernel set's (numba's JIT
from the cache `make kernels` fills).
"""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from common.consts import P2P_HEADER_SIZE
from common.shm import p2p, seqlock_jit
from common.shm.p2p import TypedP2pReader, TypedP2pWriter
from common.shm.segments import SEGMENTS
from common.shm.views import flat_bytes
from tests.helpers import REPO, module_env

READER_SCRIPT = r"""
import sys, time
from common.shm.inbound import Inbound, InboundPolicy
from common.shm.views import flat_bytes
inb = Inbound.for_key("hal_cu", InboundPolicy(stale_reads=10**9, retry_s=0.0, probe_every=0))
u8 = flat_bytes(inb.local)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
polls = new = torn = 0
while time.monotonic() < end:
    if inb.poll(time.monotonic()) is not None:
        polls += 1
        if inb.changed:
            new += 1
            if not (u8 == u8[0]).all():
                torn += 1
print(polls, new, torn, inb.contentions, flush=True)
"""


WRITER_SCRIPT = r"""
import sys, time
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import SEGMENTS
from common.shm.views import flat_bytes
s = SEGMENTS["cu_hal"]
w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
u8 = flat_bytes(w.local)
w.commit()
print("ready", flush=True)
sys.stdin.readline()
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    n += 1
    u8[:] = n & 0xFF
    w.commit()
print(n, flush=True)
sys.stdin.readline()
w.close()
"""


@pytest.fixture(scope="module")
def commit_spans():
    """The compiled commit (the HAL set's JIT: binds numba to every @kernel / intrinsic of the set)."""
    from hal.kernels import KERNELS

    KERNELS.load("jit")
    return seqlock_jit.commit_spans


def test_the_header_words_are_p2ps():
    assert (seqlock_jit.OFF_HEARTBEAT, seqlock_jit.OFF_WRITE_SEQ) == (p2p.OFF_HEARTBEAT, p2p.OFF_WRITE_SEQ)


def test_compiled_commits_continue_the_python_writers_heartbeat_and_copy_only_their_spans(fresh_prefix, commit_spans):
    s = SEGMENTS["hal_cu"]
    w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
    r = TypedP2pReader.attach(s.name(), s.reader, s.dtype)
    try:
        local = flat_bytes(w.local)
        local[:] = 1
        w.commit()  # the first commit is Python's, whole
        assert w.whole_committed and r.copy_in() == 1
        local[:] = 2
        hb = commit_spans(w.segment, local, 8, 16, 100, 104)
        assert hb == 2 == w.heartbeat and r.copy_in() == 2
        got = flat_bytes(r.local)
        assert (got[8:16] == 2).all() and (got[100:104] == 2).all()
        assert (got[:8] == 1).all() and (got[16:100] == 1).all() and (got[104:] == 1).all()
        seq = int(w.segment[p2p.OFF_WRITE_SEQ:p2p.OFF_WRITE_SEQ + 4].view(np.uint32)[0])
        assert seq == 2 * hb  # even: no commit in progress
        w.commit()  # Python again: heartbeat 3, the whole payload
        assert w.heartbeat == 3 and r.copy_in() == 3 and (flat_bytes(r.local) == 2).all()
        assert commit_spans(w.segment, local, 0, 0, 0, 0) == 4 and r.copy_in() == 4  # a heartbeat alone
        assert bytes(w.segment[:P2P_HEADER_SIZE][:8]) == p2p.P2P_SHM_MAGIC  # the header's rest untouched
    finally:
        r.close()
        w.close()


def test_a_reader_in_another_process_never_sees_a_torn_compiled_commit(fresh_prefix, commit_spans):
    """The compiled commit writes uniform payloads (every byte the commit's number) back to back for 1.5 s
    while a reader process polls: every new payload it takes must be uniform (the sequence word's stores
    stay around the copy)."""
    s = SEGMENTS["hal_cu"]
    w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
    local = flat_bytes(w.local)
    w.commit()
    proc = subprocess.Popen([sys.executable, "-c", READER_SCRIPT, "1.5"], cwd=REPO, env=module_env(fresh_prefix),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["ready"]
        seg, n, commits = w.segment, len(local), 0
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            for _ in range(200):
                commits += 1
                local[:] = commits & 0xFF
                commit_spans(seg, local, 0, n, 0, 0)
        out = proc.stdout.read().split()
        assert proc.wait(10) == 0 and len(out) == 4, out
        _polls, new, torn, contentions = map(int, out)
        assert commits > 10_000 and new > 200, (commits, new)  # (a loaded box: the reader gets a few hundred)
        assert torn == 0, f"{torn} of {new} new payloads were torn ({contentions} contended reads)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        w.close()


def test_the_compiled_read_never_returns_or_keeps_a_torn_payload(fresh_prefix, commit_spans):
    """read_commit against a writer process committing uniform payloads back to back for 1.5 s: every
    commit it reports is uniform in `local`, and after a contended read (a commit in progress or torn
    through every retry) `local` still holds the last consistent copy, untouched."""
    s = SEGMENTS["cu_hal"]
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, "1.5"], cwd=REPO, env=module_env(fresh_prefix),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    r = None
    try:
        assert proc.stdout.readline().split() == ["ready"]
        r = TypedP2pReader.attach(s.name(), s.reader, s.dtype)
        read = seqlock_jit.read_commit
        local = np.zeros(s.dtype.itemsize, np.uint8)
        scratch = np.zeros_like(local)
        seg = r.segment
        assert not seg.flags.writeable
        seen = read(seg, local, scratch, -1)
        assert seen >= 0 and read(seg, local, scratch, seen) == seqlock_jit.READ_UNCHANGED
        proc.stdin.write("go\n")
        proc.stdin.flush()
        new = torn = contended = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = read(seg, local, scratch, seen)
            if got == seqlock_jit.READ_CONTENDED:
                contended += 1
            elif got >= 0:
                new += 1
                seen = got
            if got != seqlock_jit.READ_UNCHANGED and not (local == local[0]).all():
                torn += 1
            if new >= 20_000:
                break
        proc.stdin.write("done\n")
        proc.stdin.flush()
        commits = int(proc.stdout.readline())
        assert commits > 10_000 and new > 200, (commits, new)
        assert torn == 0, f"{torn} reads left a torn payload ({new} commits read, {contended} contended)"
        assert int(local[0]) == (seen >> 1) - 1 & 0xFF  # the payload of the commit reported (heartbeat - 1)
    finally:
        if r is not None:
            r.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
