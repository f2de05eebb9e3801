"""Inbound.poll in a compiled cycle: the poll state a `SharedStateInbound` (common/shm/inbound.py) keeps in
an int64 row, and the kernel functions that poll a segment through it with poll()'s decisions.

A cycle kernel polls a segment itself while the row's mode allows it: LIVE (poll()'s fast path: the seqlock
copy when a new commit is there, the counters), ABSENT (not attached: a poll changes nothing) or STALE
(attached, and the segment still holds the commit we saw: the counters only). Everything else is Python's —
attaching, becoming LIVE, the stale criterion reached, a probe's loss to report, a mapping the kernel's
source table does not list yet — and `poll_ready` says so before anything is touched, so that the caller
can poll in Python instead, once. Importing this module costs no numba (common/jit.py).
"""
from __future__ import annotations

from common.jit import kernel
from common.shm.seqlock_jit import OFF_WRITE_SEQ, load_u32_acquire, read_commit

# the row (int64[N_STATE]); times in CLOCK_MONOTONIC nanoseconds
(S_MODE, S_SEQ_SEEN, S_LAST_HB, S_POLLS, S_UNCHANGED, S_STALE_READS, S_STALE_NS, S_MOVED_NS, S_CONTENTIONS,
 S_CHANGED, S_LOST, S_BECAME_LIVE, S_GEN, S_TABLE_GEN) = range(14)
N_STATE = 16
# S_MODE: who may poll. S_GEN counts the mappings the Inbound has had; S_TABLE_GEN is the one the caller's
# source table lists (the kernel polls only while they agree: it would read a mapping that is not the segment)
MODE_PYTHON, MODE_LIVE, MODE_ABSENT, MODE_STALE = 0, 1, 2, 3
_jit = dict(cache=True, nogil=True, boundscheck=False)


@kernel(**_jit)
def poll_ready(st, seg, now):
    """May the kernel poll this segment now: is what poll() would do there known whatever it finds? LIVE
    with the stale criterion out of reach after one more unchanged poll; ABSENT; STALE while `seg` (its
    mapping) still holds the commit we saw. False: nothing is touched and the caller polls in Python."""
    if st[S_GEN] != st[S_TABLE_GEN]:
        return False
    m = st[S_MODE]
    if m == MODE_LIVE:
        return st[S_UNCHANGED] + 1 < st[S_STALE_READS] and (
            st[S_STALE_NS] == 0 or now - st[S_MOVED_NS] < st[S_STALE_NS])
    if m == MODE_STALE:
        return load_u32_acquire(seg, OFF_WRITE_SEQ) == st[S_SEQ_SEEN]
    return m == MODE_ABSENT


@kernel(**_jit)
def poll_segment(st, seg, local, scratch, now):
    """Inbound.poll(now) after `poll_ready` said yes, into `local` (the Inbound's payload, as bytes) through
    `scratch` (at least as long): returns True when the segment is LIVE (`local` holds its last consistent
    commit), the row updated as poll() updates the Inbound (changed, the counters, the commit seen)."""
    st[S_LOST] = 0
    st[S_BECAME_LIVE] = 0
    m = st[S_MODE]
    if m == MODE_ABSENT:
        st[S_CHANGED] = 0
        return False
    st[S_POLLS] += 1
    if m == MODE_STALE:  # poll_ready saw the commit we hold: an unchanged poll of a segment not LIVE
        st[S_CHANGED] = 0
        st[S_UNCHANGED] += 1
        return False
    got = read_commit(seg, local, scratch, st[S_SEQ_SEEN])
    if got >= 0:
        st[S_LAST_HB] = got >> 1
        st[S_SEQ_SEEN] = got
        st[S_MOVED_NS] = now
        st[S_UNCHANGED] = 0
        st[S_CHANGED] = 1
    else:  # unchanged, or a commit in progress through every retry (local keeps the last consistent copy)
        if got != -1:
            st[S_CONTENTIONS] += 1
        st[S_UNCHANGED] += 1
        st[S_CHANGED] = 0
    return True
