"""One reader for "a segment I read that may be absent, stale or live", plus command inbox/outbox.

Every process reads its inbound segments through `Inbound`; command paths add the ring code.

The one liveness rule
---------------------
- ABSENT: no segment under the name (never created, or the writer exited cleanly and unlinked it);
  also the state right after attaching until the heartbeat has moved or the stale criterion is met.
- LIVE: attached, the heartbeat (commit number) has MOVED since we attached or since we last
  declared it not live, the writer's lock was held when it became live, the last `probe_every`-th
  writer-lock probe found the writer holding it, and the stale criterion is not met.
- STALE: the segment exists but its heartbeat has not moved for `stale_reads` consecutive polls
  or `stale_after_s` seconds (whichever the policy sets; both may), or the writer's lock is free
  (its process died: STALE at once, not after N reads, even if a successor takes the segment over
  and continues the heartbeat: a restart is a loss; the successor is LIVE once it moves again),
  or a new segment (new inode) is under our name. Both are found by the probe within
  `probe_every` polls while LIVE: a flock attempt on the writer's lock file (kept open since the
  writer became LIVE) every `probe_every` polls, and a stat of our name as often, on other polls
  (one system call in a poll at most: after a sleep each costs ~10 us on the test VMs). With
  `probe_apart` the same rotation runs in `probe(now)`, which the owner calls once per cycle after
  its commits (the HAL), and a dead writer is seen by the poll that follows it; so do the attach
  attempts and the re-attach checks below (poll() then makes no system call but on the edges:
  becoming LIVE, losing it).
- Re-attach: while not LIVE, at most every `retry_s` the name is stat()ed: a new inode (a writer
  that built a new segment) is mapped in place (`local` stays the same array); a vanished name
  is ABSENT (mapping dropped, attach retried every `retry_s`).

Where the six copies differed (issue 15): hal/links.py and control_unit/cycle.py required the
heartbeat to move and probed the writer lock every 5 cycles; mqtt_bridge/sources.py required the
move but never probed the lock and told ABSENT from STALE by the file; recipe_executor/links.py and
control_unit/commands.py (CommandPath) called a segment live on its first successful read (a dead
writer's leftover segment was live for N reads) and never probed the lock; grpc_bridge/shm_link.py
judged staleness by time, probed the lock every 50 ms and re-attached on a new inode every tick.
All now follow the rule above; a policy says only HOW MANY reads / seconds / polls.

API
---
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=100, retry_s=0.1, probe_every=5))
    payload = inb.poll(now)   # now: time.monotonic() seconds; the payload copy (inb.local) when
                              # LIVE, else None. On a torn read (ReadContention) the previous copy
                              # is returned while LIVE.
    inb.status                # LinkStatus.ABSENT / STALE / LIVE
    inb.reason                # text for status displays ("" when LIVE)
    inb.changed               # the heartbeat moved on this poll (wake-driven readers: new data)
    inb.lost / inb.became_live  # this poll left / entered LIVE
    inb.unchanged_polls       # polls since the heartbeat last moved (the CU's HAL feedback age)
    inb.heartbeat_age_s(now)  # seconds since the heartbeat last moved (-1: never seen move)
    inb.heartbeat             # the writer's heartbeat as last read (0 when not attached)
    inb.close()

    # a compiled cycle polling the segment itself (the HAL's hal_step; common/shm/inbound_jit.py):
    inb = SharedStateInbound(name, module, dtype, policy, state=row)   # row: int64[N_STATE] the kernel gets
    # in the kernel: if poll_ready(row, mapping, now): poll_segment(row, mapping, local_u8, scratch, now)
    # else (or on the Python side): inb.poll(now) — either keeps the same counters, in `row`

    inbox = CommandInbox(inb, my_local["acks"])      # consumer of a command ring
    inbox.poll(now) -> LinkStatus                    # reads the segment; a lost writer is forgotten
    for cmd in inbox.take(): inbox.ack(cmd, ResultCode.OK, "done")   # each slot once
    inbox.next_code()                                 # peek at the next command's code

    outbox = CommandOutbox(my_local["ring"], acks_inbound)   # producer of a command ring
    seq = outbox.submit(code, request_id, axis=.., args=..)  # RingFull (BackPressure) when full
    outbox.poll_acks() -> list[Ack]                          # from the consumer's segment, if LIVE
    outbox.ready                                             # consumer LIVE and following our epoch
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from common.shm.commands import ResultCode
from common.shm.conversions import decode_str
from common.shm import inbound_jit as J
from common.shm.fastcalls import InodeOf, lock_free
from common.shm.p2p import ModuleAbbrev, ShmError, TypedP2pReader, shm_path
from common.shm.rings import Ack, Command, CommandRingReader, CommandRingWriter, RingFull
from common.shm.segments import SEGMENTS

log = logging.getLogger(__name__)


_NEVER_STALE_BY_READS = 1 << 62  # the p2p reader's own count is unused: staleness is judged here
_NO_LOCK, _FOREIGN_LOCK = -1, -2  # _lock_fd when the lock file is missing / not ours to open
_LOCK, _INODE = 1, 2  # the probe's checks: the writer's lock held, our name still the segment we map

BackPressure = RingFull  # the outbox's "busy": nothing was written (RESOURCE_EXHAUSTED upstream)


class LinkStatus(enum.Enum):
    ABSENT = "absent"
    STALE = "stale"
    LIVE = "live"


@dataclass(frozen=True)
class InboundPolicy:
    """How many polls / seconds make a writer stale, how often to retry attaching, how often to
    probe the writer's lock while live. A zero disables that criterion (at least one of
    stale_reads / stale_after_s must be set)."""

    stale_reads: int = 0
    stale_after_s: float = 0.0
    retry_s: float = 1.0
    probe_every: int = 5
    # the probe runs in probe(), which the owner calls once per cycle after its commits, not in poll()
    # (the HAL: its syscalls off the cycle's path; a dead writer is then seen by the poll after it)
    probe_apart: bool = False

    def __post_init__(self) -> None:
        if self.stale_reads <= 0 and self.stale_after_s <= 0:
            raise ValueError("InboundPolicy: set stale_reads or stale_after_s (a writer must be able to go stale)")
        if self.retry_s < 0 or self.probe_every < 0:
            raise ValueError("InboundPolicy: retry_s and probe_every must be >= 0")


class Inbound:
    """One inbound segment under the one liveness rule (module docstring)."""

    def __init__(self, name: str, my_module: "ModuleAbbrev | str", dtype: np.dtype, policy: InboundPolicy,
                 *, exclusive: bool = True) -> None:
        self.name = name
        self.path = shm_path(name)
        self.my_module = ModuleAbbrev.parse(my_module)
        self.dtype = np.dtype(dtype)
        self.policy = policy
        self.exclusive = exclusive
        self.reader: TypedP2pReader | None = None
        self.segment: np.ndarray | None = None  # the reader's mapping (read-only uint8, header + payload)
        self.local: np.ndarray = np.zeros((), dtype=self.dtype)  # zeros until attached
        self.status = LinkStatus.ABSENT
        self.reason = f"{name} does not exist"
        self.changed = False
        self.lost = False
        self.became_live = False
        self.unchanged_polls = 0
        self.polls = 0
        self.contentions = 0
        self.reattaches = 0
        self.attach_attempted = False
        self._stale_reads = policy.stale_reads if policy.stale_reads > 0 else _NEVER_STALE_BY_READS
        self._stale_s = policy.stale_after_s
        # the probe's two checks, each every probe_every polls, on different polls (one syscall a
        # poll at most): _probe_slot[polls % probe_every] is 0 (none), _LOCK, _INODE or both
        every = policy.probe_every
        slots = [0] * (every or 1)
        if every:
            slots[0] |= _LOCK
            slots[every // 2] |= _INODE
        # poll() runs the rotation, or (probe_apart) probe() does, counted by its own calls
        self._probe_slot, self._apart_slot = ([0], slots) if policy.probe_apart else (slots, [0])
        self._probe_mod = len(self._probe_slot)
        self._apart_calls = 0
        self._lost_apart = False  # probe() lost a LIVE writer: the next poll reports `lost`
        self._apart = policy.probe_apart
        self._live = False  # status is LIVE (the fast path's one test)
        self._lock_fd = _NO_LOCK  # the writer's lock file, kept open for the probe
        self._inode = InodeOf(self.path)  # the probe's stat() of our name
        self._last_hb = -1
        self._seq_seen = -1  # write_seq of the commit in `local` (-1: none)
        self._moved_at = -1.0
        self._attached_at = -1.0
        self._next_try = 0.0
        self._last_error = ""

    @classmethod
    def for_key(cls, key: str, policy: InboundPolicy, prefix: str | None = None, *,
                exclusive: bool = True, **kw: Any) -> "Inbound":
        """The inbound segment `key` of the segment table (e.g. "cu_hal"), read by its reader module (`kw`:
        a subclass's own arguments)."""
        spec = SEGMENTS[key]
        return cls(spec.name(prefix), spec.reader, spec.dtype, policy, exclusive=exclusive, **kw)

    def set_stale_reads(self, n: int) -> None:
        """A new polls-unchanged threshold (> 0), e.g. once the loop knows the scheduling it got
        (common/stale.py); the count so far is kept."""
        if n <= 0:
            raise ValueError(f"{self.name}: stale_reads must be > 0, got {n}")
        self.policy = dataclasses.replace(self.policy, stale_reads=n)
        self._stale_reads = n

    # --- reading ----------------------------------------------------------------------------
    def poll(self, now: float) -> np.ndarray | None:
        """Read once; the payload copy when LIVE, else None (see the module docstring).

        The two cases of a LIVE segment in a cycle loop take a few Python operations: the segment
        still holds the commit we copied (one load of write_seq), or it holds a new, consistent one
        (the seqlock copy). Every other case — attaching, a torn read, staleness, the writer-lock
        probe every `probe_every` polls, not LIVE — goes through `_poll_slow`, which they match."""
        r = self.reader
        if r is None and (now < self._next_try or self._apart):  # absent: not yet time to look again, or
            # probe() looks (probe_apart)
            self.changed = self.became_live = False
            self.lost, self._lost_apart = self._lost_apart, False
            return None
        if r is not None and self._live:
            seq = r._seq
            s1 = seq[0]
            if s1 == self._seq_seen:  # unchanged since our copy
                n = self.unchanged_polls + 1
                p = self.polls + 1
                if n < self._stale_reads and not self._probe_slot[p % self._probe_mod] and (
                        not self._stale_s or now - self._moved_at < self._stale_s):
                    self.unchanged_polls = n
                    self.polls = p
                    self.changed = self.lost = self.became_live = False
                    return self.local
            elif not s1 & 1:  # a new commit: copy it; keep it only if the sequence held (seqlock)
                r._scratch_u8[...] = r._src  # flat byte copies (np.copyto costs twice this)
                if seq[0] != s1:  # torn: `local` still holds the last consistent copy
                    return self._poll_slow(now)
                r._local_u8[...] = r._scratch_u8
                p = self.polls + 1
                if self._probe_slot[p % self._probe_mod]:
                    return self._poll_slow(now, s1 >> 1)
                self.polls = p
                self._last_hb = s1 >> 1
                self._seq_seen = s1
                self._moved_at = now
                self.unchanged_polls = 0
                self.changed = True
                self.lost = self.became_live = False
                return self.local
        return self._poll_slow(now)

    def _poll_slow(self, now: float, copied: int = -1) -> np.ndarray | None:
        """`copied` >= 0: the fast path has just copied that commit into `local` (a probe is due)."""
        self.became_live = False
        self.lost, self._lost_apart = self._lost_apart, False  # a loss probe() found is this poll's
        r = self.reader
        if r is None:
            self.changed = False
            if self._apart or now < self._next_try or not self._attach(now):
                return None
            r = self.reader
        self.polls += 1
        hb = copied if copied >= 0 else r.copy_in_if_moved(self._last_hb)  # (no copy of a commit held)
        live = self._live
        if hb < 0:
            # a commit in progress through all our retries, or a writer that died inside one (its
            # sequence stays odd for good): no new commit — judged as an unchanged poll, so the
            # stale count and the writer-lock probe still run (returning the old copy as LIVE here
            # would follow a dead writer forever)
            self.contentions += 1
            hb = self._last_hb
        if hb != self._last_hb:
            self._saw(hb)
            self._moved_at = now
            self.unchanged_polls = 0
            self.changed = True
            if not live:
                return self._try_live()
        else:
            self.changed = False
            self.unchanged_polls += 1
            if live or self.status is LinkStatus.ABSENT:
                since = self._moved_at if self._moved_at >= 0 else self._attached_at
                if self.unchanged_polls >= self._stale_reads or (self._stale_s > 0 and now - since >= self._stale_s):
                    self._not_live(
                        LinkStatus.STALE,
                        f"{self.name} heartbeat unchanged for {self.unchanged_polls} reads / {now - since:.2f} s", now)
                    return None
            if not live:
                if not self._apart:
                    self._check_replaced(now)
                return None
        checks = self._probe_slot[self.polls % self._probe_mod]
        if checks:
            gone = self._writer_gone(r, checks)
            if gone:
                self._not_live(LinkStatus.STALE, gone, now)
                return None
        return self.local

    def probe(self, now: float) -> None:
        """The system calls apart from `poll` (policy.probe_apart), called once per cycle: while LIVE the
        writer probe due at this call (the writer's lock on one of every probe_every calls, our name's
        inode on another; a writer found gone is STALE from here, so the next poll returns None); while
        ABSENT the attach attempt and while STALE the re-attach check, each at most every retry_s (a
        segment attached here is LIVE once a poll sees its heartbeat move). Without probe_apart: nothing."""
        if not self._apart:
            return
        r = self.reader
        if r is None:  # absent: the attach attempt (a stat every retry_s; the mapping once it exists)
            if now >= self._next_try:
                self._attach(now)
            return
        if not self._live:  # stale: follow a replaced segment or drop a vanished one (every retry_s)
            self._check_replaced(now)
            return
        self._apart_calls = k = self._apart_calls + 1
        checks = self._apart_slot[k % len(self._apart_slot)]
        if not checks:
            return
        gone = self._writer_gone(r, checks)
        if gone:
            self._not_live(LinkStatus.STALE, gone, now)
            self._lost_apart = True  # (callers read `lost` after a poll: CommandInbox resets its ring)

    def _saw(self, hb: int) -> None:
        """`hb` (write_seq / 2 of the copy in `local`, -1: none) is the commit we hold."""
        self._last_hb = hb
        self._seq_seen = (hb << 1) & 0xFFFFFFFF if hb >= 0 else -1

    # --- the writer's lock, kept open ------------------------------------------------------------
    def _lock_held(self, reopen: bool) -> bool:
        """Does a live writer hold `<name>.lock`? One flock(LOCK_SH|LOCK_NB) on a descriptor kept
        open, straight to libc (a probe was open+flock+stat+close, ~38 us; fcntl.flock's exception
        on a held lock alone costs ~10 us after a sleep). `reopen` opens the lock file by name first:
        when the writer we follow becomes LIVE, so that the kept descriptor is the lock of THAT
        writer (a restarted writer may have created a new lock file; a SIGKILLed one leaves its file,
        which its successor reuses — the same inode, held again). While we follow a writer, a free
        lock on the kept descriptor means that writer is gone, whether or not a successor has since
        made another lock file: a restart is a loss (module docstring)."""
        fd = self._lock_fd
        if reopen or fd == _NO_LOCK:
            self._close_lock()
            try:
                fd = os.open(self.path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            except PermissionError:
                fd = _FOREIGN_LOCK  # someone else's live instance; never claim it is dead
            self._lock_fd = fd
        if fd == _FOREIGN_LOCK or not lock_free(fd):
            return True
        self._close_lock()  # that writer is gone: the next check opens the lock file by name again
        return False

    def _close_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
        self._lock_fd = _NO_LOCK

    def _writer_gone(self, r: TypedP2pReader, checks: int = _LOCK | _INODE) -> str:
        """The probe: why the writer we map is gone ("" while it is there). A free writer lock is a
        dead writer; a new segment under our name is a restarted one (a restart is a loss too)."""
        if checks & _LOCK and not self._lock_held(reopen=False):
            return f"{self.name} writer process gone (its lock is free)"
        if not checks & _INODE:
            return ""
        ino = self._inode.inode()
        if ino == r.inode:
            return ""
        if ino < 0:
            return f"{self.name} does not exist (writer exited)"
        return f"{self.name} replaced by a new segment (writer restarted)"

    def _try_live(self) -> np.ndarray | None:
        """The heartbeat moved while not live: live when the writer holds its lock."""
        if not self._lock_held(reopen=True):
            if self.status is not LinkStatus.STALE or "gone" not in self.reason:
                self._set(LinkStatus.STALE, f"{self.name} writer process gone (its lock is free)")
            return None
        self._set(LinkStatus.LIVE, "")
        self.became_live = True
        return self.local

    def _not_live(self, status: LinkStatus, why: str, now: float) -> None:
        if not os.path.exists(self.path):
            status, why = LinkStatus.ABSENT, f"{self.name} does not exist (writer exited)"
        if self.status is LinkStatus.LIVE:
            self.lost = True
        self._set(status, why)  # LIVE again only after the heartbeat moves from here
        self._check_replaced(now)

    def _check_replaced(self, now: float) -> None:
        """While not live: follow a replaced segment (new inode) or drop a vanished one."""
        if now < self._next_try:
            return
        self._next_try = now + self.policy.retry_s
        r = self.reader
        if r is None:
            return
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._drop()
            self._set(LinkStatus.ABSENT, f"{self.name} does not exist (writer exited)")
            return
        if ino != r.inode and r.reattach_if_replaced():
            self.segment = r.segment
            self.reattaches += 1
            self._saw(r.copy_in())  # live once it moves from here
            self._moved_at = -1.0
            self._attached_at = now
            self.unchanged_polls = 0
            log.info("%s: re-attached to a new segment (restarted writer)", self.name)

    def _attach(self, now: float) -> bool:
        self._next_try = now + self.policy.retry_s
        self.attach_attempted = True
        if not os.path.exists(self.path):
            if self.status is not LinkStatus.ABSENT:
                self._set(LinkStatus.ABSENT, f"{self.name} does not exist")
            return False
        try:
            r = TypedP2pReader.attach(self.name, self.my_module, self.dtype, exclusive=self.exclusive,
                                      stale_reads=_NEVER_STALE_BY_READS)
        except ShmError as e:
            if str(e) != self._last_error:  # once per distinct reason, not once per retry
                self._last_error = str(e)
                log.warning("cannot attach %s yet: %s", self.name, e)
            self.reason = f"cannot attach: {e}"
            return False
        self._last_error = ""
        r.use_buffer(self.local)  # one payload array for the life of this object: callers bind views once
        self.reader = r
        self.segment = r.segment
        self._saw(r.copy_in())  # LIVE only once it moves from here
        self._moved_at = -1.0
        self._attached_at = now
        self.unchanged_polls = 0
        if self.status is LinkStatus.ABSENT:
            self.reason = f"{self.name} attached, waiting for its heartbeat to move"
        log.info("attached %s", self.name)
        return True

    def _drop(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
            self.segment = None

    def _set(self, status: LinkStatus, reason: str) -> None:
        if status is not self.status:
            (log.info if status is LinkStatus.LIVE else log.warning)(
                "%s: %s -> %s%s", self.name, self.status.value, status.value, f" ({reason})" if reason else "")
        self.status = status
        self._live = status is LinkStatus.LIVE
        self.reason = reason

    # --- figures ----------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.status is LinkStatus.LIVE

    @property
    def attached(self) -> bool:
        return self.reader is not None

    @property
    def heartbeat(self) -> int:
        return int(self.reader.heartbeat) if self.reader is not None else 0

    def heartbeat_age_s(self, now: float) -> float:
        return -1.0 if self._moved_at < 0 else now - self._moved_at

    def close(self) -> None:
        self._drop()
        self._close_lock()
        self.status = LinkStatus.ABSENT
        self._live = False
        self.reason = f"{self.name} closed"


class SharedStateInbound(Inbound):
    """An Inbound whose poll state lives in `state`, an int64 row (common/shm/inbound_jit.py S_*) that a
    compiled cycle shares: the kernel polls the segment itself while the row's mode allows it (poll_ready,
    poll_segment) and leaves every other case to `poll()` here, which reads and writes the same row — one
    set of counters, whichever side polled. The mode follows the status, the mapping and a probe's loss;
    S_GEN counts mappings (the kernel's source table must list the current one: `mapping_gen`,
    `table_built_for`). Requires probe_apart (the kernel makes no system call)."""

    def __init__(self, name: str, my_module: "ModuleAbbrev | str", dtype: np.dtype, policy: InboundPolicy,
                 *, state: np.ndarray, exclusive: bool = True) -> None:
        if not policy.probe_apart:
            raise ValueError(f"{name}: a SharedStateInbound needs probe_apart (a compiled poll makes no system call)")
        if not (isinstance(state, np.ndarray) and state.dtype == np.int64 and state.shape == (J.N_STATE,)
                and state.flags.c_contiguous and state.flags.writeable):
            raise TypeError(f"{name}: state must be a writable C-contiguous int64[{J.N_STATE}] row")
        state[:] = 0
        self._st = state
        self._status, self._reader, self._segment, self._lost_apart_v = LinkStatus.ABSENT, None, None, False
        super().__init__(name, my_module, dtype, policy, exclusive=exclusive)

    @property
    def state(self) -> np.ndarray:
        return self._st

    @property
    def mapping_gen(self) -> int:
        """How many mappings the segment has had here (attach, re-attach, drop each count one)."""
        return int(self._st[J.S_GEN])

    def table_built_for(self, gen: int) -> None:
        """The caller's source table now lists the mapping of generation `gen` (`segment` then): the kernel
        may poll while no other mapping replaced it."""
        self._st[J.S_TABLE_GEN] = gen

    def _sync_mode(self) -> None:
        mode = J.MODE_PYTHON
        if not self._lost_apart_v:
            if self._reader is None:
                mode = J.MODE_ABSENT
            elif self._status is LinkStatus.LIVE:
                mode = J.MODE_LIVE
            elif self._status is LinkStatus.STALE:
                mode = J.MODE_STALE
        self._st[J.S_MODE] = mode

    @property  # type: ignore[override]
    def status(self) -> LinkStatus:
        return self._status

    @status.setter
    def status(self, v: LinkStatus) -> None:
        self._status = v
        self._sync_mode()

    @property  # type: ignore[override]
    def reader(self) -> TypedP2pReader | None:
        return self._reader

    @reader.setter
    def reader(self, v: TypedP2pReader | None) -> None:
        self._reader = v
        self._sync_mode()

    @property  # type: ignore[override]
    def segment(self) -> np.ndarray | None:
        return self._segment

    @segment.setter
    def segment(self, v: np.ndarray | None) -> None:
        if v is not self._segment:
            self._st[J.S_GEN] += 1
        self._segment = v

    @property  # type: ignore[override]
    def _lost_apart(self) -> bool:
        return self._lost_apart_v

    @_lost_apart.setter
    def _lost_apart(self, v: bool) -> None:
        self._lost_apart_v = v
        self._sync_mode()


def _state_field(k: int, cast: type) -> property:
    """Element k of the row, read as `cast` (int or bool)."""
    def get(self: SharedStateInbound) -> Any:
        return cast(self._st[k])

    def put(self: SharedStateInbound, v: Any) -> None:
        self._st[k] = v
    return property(get, put)


def _state_seconds(k: int, unset: float) -> property:
    """A time in seconds (Inbound's floats) kept as integer nanoseconds; `unset` (-1.0 / 0.0) as itself."""
    def get(self: SharedStateInbound) -> float:
        v = int(self._st[k])
        return unset if v == int(unset) else v * 1e-9

    def put(self: SharedStateInbound, v: float) -> None:
        self._st[k] = int(unset) if v == unset else round(v * 1e9)
    return property(get, put)


for _name, _prop in (("polls", _state_field(J.S_POLLS, int)), ("unchanged_polls", _state_field(J.S_UNCHANGED, int)),
                     ("contentions", _state_field(J.S_CONTENTIONS, int)), ("_seq_seen", _state_field(J.S_SEQ_SEEN, int)),
                     ("_last_hb", _state_field(J.S_LAST_HB, int)), ("_stale_reads", _state_field(J.S_STALE_READS, int)),
                     ("changed", _state_field(J.S_CHANGED, bool)), ("lost", _state_field(J.S_LOST, bool)),
                     ("became_live", _state_field(J.S_BECAME_LIVE, bool)), ("_moved_at", _state_seconds(J.S_MOVED_NS, -1.0)),
                     ("_stale_s", _state_seconds(J.S_STALE_NS, 0.0))):
    setattr(SharedStateInbound, _name, _prop)


class CommandInbox:
    """The consumer side of a command segment: an `Inbound` plus a `CommandRingReader` whose acks
    go into `acks` (the ACK_RING field of our own outbound payload; the caller commits it)."""

    def __init__(self, inbound: Inbound, acks: np.ndarray, ring_field: str = "ring") -> None:
        self.inbound = inbound
        self.acks = acks
        self.ring_reader = CommandRingReader(acks)
        ring = inbound.local[ring_field]  # inbound.local is the same array for the link's life
        self._ring = ring
        self._count = ring["count"]
        self._epoch = ring["epoch"]
        self._slots = ring["slots"]
        self._seen = acks["cmd_epoch_seen"]
        self._consumed = acks["consumed"]
        self._recheck = True  # look at the ring counts on the next poll even without a new commit

    @property
    def name(self) -> str:
        return self.inbound.name

    @property
    def status(self) -> LinkStatus:
        return self.inbound.status

    def poll(self, now: float) -> LinkStatus:
        """Read the command segment. A writer that went away is forgotten: its successor's commands
        are taken from its seq 1 (see rings.py)."""
        self.inbound.poll(now)
        if self.inbound.lost:
            self.ring_reader.reset_writer()
        return self.inbound.status

    def poll_pending(self, now: float) -> bool:
        """`poll(now)`, then `pending()` — but the ring counts are read only after a new commit or
        while commands were waiting: with no command in flight a cycle costs the segment's poll (one
        sequence compare while LIVE) and nothing else. Commands arrive only with a commit (the
        writer commits after placing them), and only our `take` consumes them."""
        inb = self.inbound
        inb.poll(now)
        if inb.lost:
            self.ring_reader.reset_writer()
        if not (inb.changed or self._recheck) or not inb._live:
            return False
        self._recheck = waiting = self._count[()] != self._consumed[()] or self._epoch[()] != self._seen[()]
        return bool(waiting)

    def pending(self) -> bool:
        """New commands wait (cheap: two integer compares, no allocation)."""
        return self.inbound.status is LinkStatus.LIVE and (
            self._count[()] != self._consumed[()] or self._epoch[()] != self._seen[()])

    def take(self) -> Iterator[Command]:
        """Each new command exactly once (only while the writer is LIVE); ack each with `ack`."""
        if self.pending():
            self._recheck = True  # poll_pending looks at the counts again (pending() found them by another way)
            yield from self.ring_reader.take(self._ring)

    def next_code(self) -> int | None:
        """Code of the next unconsumed command without taking it (None if none)."""
        if not self.pending() or int(self._epoch) != int(self._seen):
            return None
        consumed = int(self._consumed)
        if int(self._count) <= consumed:
            return None
        slot = self._slots[consumed % len(self._slots)]
        return int(slot["code"]) if int(slot["seq"]) == consumed + 1 else None

    def next_text(self) -> str:
        """Text argument of the next unconsumed command ("" if none)."""
        if self.next_code() is None:
            return ""
        return decode_str(self._slots[int(self._consumed) % len(self._slots)]["text"])

    def ack(self, cmd: Command, result: ResultCode, message: str = "", detail: int = 0) -> None:
        self.ring_reader.ack(cmd, result, message, detail)

    def close(self) -> None:
        self.inbound.close()


class CommandOutbox:
    """The producer side: a `CommandRingWriter` on `ring` (the CMD_RING field of our outbound
    payload; the caller commits it) and the consumer's segment (`acks_in`, whose `ack_field` holds
    its ACK_RING) for acks."""

    def __init__(self, ring: np.ndarray, acks_in: Inbound, ack_field: str = "acks") -> None:
        self.writer = CommandRingWriter(ring)
        self.acks_in = acks_in
        self._acks = acks_in.local[ack_field]
        self._seen = self._acks["cmd_epoch_seen"]

    @property
    def epoch(self) -> int:
        return self.writer.epoch

    @property
    def in_flight(self) -> int:
        return self.writer.in_flight

    @property
    def ready(self) -> bool:
        """The consumer is LIVE and follows this writer instance (has seen our epoch)."""
        return self.acks_in.status is LinkStatus.LIVE and int(self._seen) == self.writer.epoch

    def submit(self, code: int, request_id: int, *, axis: int = 0, pin: int = 0, flags: int = 0,
               args: Sequence[float] = (), text: str = "") -> int:
        """Place a command (the caller commits). RingFull (= BackPressure) when every slot is in
        flight: nothing was written, answer "busy"."""
        return self.writer.submit(code, request_id, axis=axis, pin=pin, flags=flags, args=args, text=text)

    def poll_acks(self) -> list[Ack]:
        """New acks from the consumer's last LIVE read (call after `acks_in.poll`)."""
        if self.acks_in.status is not LinkStatus.LIVE:
            return []
        return self.writer.poll_acks(self._acks)

    def fail_pending(self, reason: str) -> list[Ack]:
        return self.writer.fail_pending(reason)
