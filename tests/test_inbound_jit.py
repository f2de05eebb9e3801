"""Issue 15, the polls in the HAL's kernel: a SharedStateInbound polled by the compiled poll (common/shm/
inbound_jit.py) whenever its row allows, by Python otherwise, against a plain Inbound polled by Python, on
the same real segment written by a real writer process that commits, stalls mid-commit, goes stale, is
SIGKILLed, is restarted (a new segment under the name) and exits. After every step both readers must agree
on everything poll() reports — status, reason, the edges, every counter, the commit seen and the payload
copy — and the compiled poll must have done most of the polling.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from common.consts import P2P_HEADER_SIZE
from common.shm import inbound_jit as J
from common.shm.inbound import Inbound, InboundPolicy, LinkStatus, SharedStateInbound
from common.shm.p2p import shm_path
from common.shm.segments import SEGMENTS
from common.shm.views import flat_bytes
from tests.helpers import REPO, module_env

MS = 1_000_000
STALE_READS = 8

WRITER = r"""
import sys
import numpy as np
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import SEGMENTS
from common.shm.views import flat_bytes
s = SEGMENTS["cu_hal"]
w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
u8 = flat_bytes(w.local)
n = int(sys.argv[1])
u8[:] = n & 0xFF
w.commit()
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "c":  # a commit whose payload is its number
        n += 1
        u8[:] = n & 0xFF
        w.commit()
    elif cmd == "o":  # the sequence left odd: a commit in progress (a writer stopped inside one)
        seq = w.segment[32:36].view(np.uint32)
        seq[0] = seq[0] | 1
    elif cmd == "q":
        w.close()
        print("closed", flush=True)
        break
    print("ok", flush=True)
"""


@pytest.fixture(scope="module")
def compiled():
    """The compiled polls (the HAL kernel set's JIT binds numba to every @kernel of the set)."""
    from hal.kernels import KERNELS

    KERNELS.load("jit")
    return J.poll_ready, J.poll_segment


class Writer:
    def __init__(self, prefix: str, first: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(first)], cwd=REPO, env=module_env(prefix),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().split() == ["ready"]

    def send(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().split() in (["ok"], ["closed"])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _agree(py: Inbound, sh: SharedStateInbound, now: float, step: int) -> None:
    for f in ("status", "reason", "changed", "lost", "became_live", "polls", "unchanged_polls", "contentions",
              "reattaches", "heartbeat", "_seq_seen", "_last_hb", "attached"):
        assert getattr(sh, f) == getattr(py, f), f"step {step}: {f} {getattr(sh, f)!r} != {getattr(py, f)!r}"
    assert sh.heartbeat_age_s(now) == pytest.approx(py.heartbeat_age_s(now), abs=1e-9), f"step {step}"
    assert sh.local.tobytes() == py.local.tobytes(), f"step {step}: payload copies differ"


def test_the_compiled_poll_keeps_what_python_would_through_every_liveness_case(fresh_prefix, compiled):
    poll_ready, poll_segment = compiled
    policy = InboundPolicy(stale_reads=STALE_READS, retry_s=0.0, probe_every=5, probe_apart=True)
    py = Inbound.for_key("cu_hal", policy, exclusive=False)
    row = np.zeros((2, J.N_STATE), np.int64)[1]  # a row of a larger array, as the HAL's are
    sh = SharedStateInbound.for_key("cu_hal", policy, exclusive=False, state=row)
    local = flat_bytes(sh.local)
    scratch = np.zeros(SEGMENTS["cu_hal"].dtype.itemsize, np.uint8)
    absent = np.zeros(P2P_HEADER_SIZE + scratch.size, np.uint8)
    by = {"kernel": 0, "python": 0}
    modes = set()
    now_ns = 10**12
    writers: list[Writer] = []

    def step(k: int) -> None:
        nonlocal now_ns
        now_ns += MS
        now = now_ns * 1e-9
        py.poll(now)
        if sh.mapping_gen != sh.state[J.S_TABLE_GEN]:  # the caller's source table follows the mapping
            sh.table_built_for(sh.mapping_gen)
        seg = sh.segment if sh.segment is not None else absent
        modes.add(int(row[J.S_MODE]))
        if poll_ready(row, seg, now_ns):
            live = poll_segment(row, seg, local, scratch, now_ns)
            assert live == (sh.status is LinkStatus.LIVE), f"step {k}"
            by["kernel"] += 1
        else:
            sh.poll(now)
            by["python"] += 1
        _agree(py, sh, now, k)
        py.probe(now)  # housekeeping, after the cycle
        sh.probe(now)
        _agree(py, sh, now, k)

    try:
        k = 0
        for _ in range(3):  # nothing under the name: ABSENT, the kernel's
            step(k := k + 1)
        w = Writer(fresh_prefix, 1)
        writers.append(w)
        step(k := k + 1)  # the probe attaches
        for _ in range(8):  # commits: LIVE (Python: the edge), then the kernel's copies
            w.send("c")
            step(k := k + 1)
        assert sh.status is LinkStatus.LIVE and int(local[0]) == 9
        for _ in range(3):  # unchanged polls
            step(k := k + 1)
        w.send("o")  # a commit in progress through every retry: contended, the last copy kept
        for _ in range(2):
            step(k := k + 1)
        assert sh.contentions == 2 and sh.status is LinkStatus.LIVE and int(local[0]) == 9
        w.send("c")
        step(k := k + 1)
        for _ in range(STALE_READS + 2):  # silent: STALE once the count reaches STALE_READS (Python's poll)
            step(k := k + 1)
        assert sh.status is LinkStatus.STALE and "unchanged for" in sh.reason
        for _ in range(3):  # STALE, the commit we hold: the kernel's
            step(k := k + 1)
        w.send("c")  # it moves: LIVE again (Python's)
        step(k := k + 1)
        assert sh.status is LinkStatus.LIVE
        for _ in range(3):
            w.send("c")
            step(k := k + 1)
        w.kill()  # the probe finds its lock free: a loss the next poll reports (Python's)
        lost = False
        for _ in range(8):
            step(k := k + 1)
            lost |= sh.lost
        assert lost and sh.status is LinkStatus.STALE and "gone" in sh.reason
        for _ in range(3):  # the dead writer's segment, still mapped: STALE, the kernel's
            step(k := k + 1)
        # restarted after its segment was removed (a clean-up): a new segment under the name, re-attached by
        # the probe in place (a successor that finds the old segment takes it over: the same mapping)
        os.unlink(shm_path(SEGMENTS["cu_hal"].name()))
        w = Writer(fresh_prefix, 100)
        writers.append(w)
        for _ in range(6):
            w.send("c")
            step(k := k + 1)
        assert sh.status is LinkStatus.LIVE and sh.reattaches == 1 and int(local[0]) == 106
        w.send("q")  # a clean exit unlinks the segment: ABSENT
        for _ in range(8):
            step(k := k + 1)
        assert sh.status is LinkStatus.ABSENT and not sh.attached
        assert {J.MODE_LIVE, J.MODE_ABSENT, J.MODE_STALE, J.MODE_PYTHON} <= modes, modes
        assert by["kernel"] > 2 * by["python"], by
    finally:
        for w in writers:
            w.stop()
        py.close()
        sh.close()


def test_the_kernel_polls_only_the_mapping_its_table_lists(fresh_prefix, compiled):
    """Every mapping the Inbound takes moves `mapping_gen`; until the caller's table says it lists that one,
    poll_ready refuses (the kernel would read the old mapping) and Python polls."""
    poll_ready, _ = compiled
    policy = InboundPolicy(stale_reads=STALE_READS, retry_s=0.0, probe_every=5, probe_apart=True)
    sh = SharedStateInbound.for_key("cu_hal", policy, exclusive=False, state=np.zeros(J.N_STATE, np.int64))
    w = Writer(fresh_prefix, 1)
    try:
        gen = sh.mapping_gen
        sh.probe(1.0)  # attaches
        assert sh.attached and sh.mapping_gen == gen + 1
        w.send("c")
        sh.poll(1.001)
        assert sh.status is LinkStatus.LIVE and sh.state[J.S_MODE] == J.MODE_LIVE
        assert not poll_ready(sh.state, sh.segment, 1_001_000_000)
        sh.table_built_for(sh.mapping_gen)
        assert poll_ready(sh.state, sh.segment, 1_001_000_000)
    finally:
        w.stop()
        sh.close()


def test_a_shared_state_inbound_refuses_what_the_kernel_cannot_do():
    with pytest.raises(ValueError, match="probe_apart"):
        SharedStateInbound.for_key("cu_hal", InboundPolicy(stale_reads=5), state=np.zeros(J.N_STATE, np.int64))
    policy = InboundPolicy(stale_reads=5, probe_apart=True)
    for bad in (np.zeros(J.N_STATE, np.int32), np.zeros(J.N_STATE + 1, np.int64), np.zeros((2, J.N_STATE), np.int64)[:, 0]):
        with pytest.raises(TypeError, match="int64"):
            SharedStateInbound.for_key("cu_hal", policy, state=bad)
