"""One inbound-segment class (issue 15, fixed interface 4): ABSENT / STALE / LIVE with one meaning,
re-attach on a replaced segment, command inbox (each slot once, acked) and outbox (BackPressure).

Real /dev/shm segments; the writers are real subprocesses driven line by line over stdin.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from common.consts import CMD_RING_SLOTS
from common.shm.commands import HalCommand, ResultCode
from common.shm.inbound import BackPressure, CommandInbox, CommandOutbox, Inbound, InboundPolicy, LinkStatus
from common.shm.p2p import TypedP2pWriter, shm_path
from common.shm.segments import SEGMENTS
from tests.helpers import REPO, module_env, wait_for

WRITER_SCRIPT = r"""
import sys, time
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import SEGMENTS
from common.shm.inbound import Inbound, InboundPolicy, CommandOutbox
key = sys.argv[1]
spec = SEGMENTS[key]
w = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)
outbox = None
print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "commit":
        for _ in range(int(args[0])):
            w.commit()
        print("ok", w.heartbeat, flush=True)
    elif cmd == "outbox":  # become a command producer whose acks come back on args[0]
        acks = Inbound.for_key(args[0], InboundPolicy(stale_reads=10**6, retry_s=0.0))
        outbox = CommandOutbox(w.local["ring"], acks)
        w.commit()
        print("ok", outbox.epoch, flush=True)
    elif cmd == "submit":
        seqs = [outbox.submit(int(args[0]), rid, pin=rid, args=(1.0,)) for rid in range(1, int(args[1]) + 1)]
        w.commit()
        print("ok", *seqs, flush=True)
    elif cmd == "acks":
        deadline = time.monotonic() + 20
        got = []
        while len(got) < int(args[0]) and time.monotonic() < deadline:
            w.commit()
            acks.poll(time.monotonic())
            got += outbox.poll_acks()
            time.sleep(0.002)
        print("ok", *[f"{a.request_id}:{int(a.result)}" for a in got], flush=True)
    elif cmd == "hammer":  # commit uniform payloads (every byte the commit's number) for args[0] seconds
        from common.shm.views import flat_bytes
        u8 = flat_bytes(w.local)
        end = time.monotonic() + float(args[0])
        n = 0
        while time.monotonic() < end:
            n += 1
            u8[:] = n & 0xFF
            w.commit()
        print("ok", n, flush=True)
    elif cmd == "exit":
        w.close()
        print("ok", flush=True)
        break
"""


class Writer:
    """A real writer process of segment `key`."""

    def __init__(self, key: str, prefix: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, key], cwd=REPO, env=module_env(prefix),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._line() == ["ready"]

    def _line(self) -> list[str]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"writer died (exit {self.proc.poll()})"
        return line.split()

    def do(self, *cmd: object) -> list[str]:
        self.proc.stdin.write(" ".join(map(str, cmd)) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        out = self._line()
        assert out[0] == "ok", out
        return out[1:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.do("exit")
                self.proc.wait(10)
            except (AssertionError, BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()


@pytest.fixture
def writers(fresh_prefix):
    made: list[Writer] = []

    def make(key: str) -> Writer:
        w = Writer(key, fresh_prefix)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def _poll_until(inb: Inbound, status: LinkStatus, limit: int = 20000, commit=None) -> int:
    """Poll (bounded) until `status`; returns the number of polls it took."""
    for n in range(1, limit + 1):
        if commit is not None:
            commit()
        inb.poll(time.monotonic())
        if inb.status is status:
            return n
        time.sleep(0.0005)
    raise AssertionError(f"{inb.name} never {status.value}: {inb.status.value} ({inb.reason})")


def _make_live(inb: Inbound, w: Writer) -> None:
    """A commit, a poll (attached), a commit, a poll: LIVE (its heartbeat moved since the attach)."""
    w.do("commit", 1)
    inb.poll(time.monotonic())
    w.do("commit", 1)
    assert inb.poll(time.monotonic()) is not None and inb.status is LinkStatus.LIVE


def test_absent_then_live_only_after_the_heartbeat_moved(fresh_prefix, writers):
    """Interface 4: ABSENT while there is no segment; attaching alone is not LIVE; LIVE once the
    heartbeat has moved since attach."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=50, retry_s=0.0, probe_every=5))
    try:
        assert inb.poll(time.monotonic()) is None and inb.status is LinkStatus.ABSENT
        assert "does not exist" in inb.reason
        w = writers("cu_hal")
        w.do("commit", 3)  # history before we attach: not evidence of a live writer
        assert inb.poll(time.monotonic()) is None
        assert inb.attached and inb.status is LinkStatus.ABSENT and "waiting" in inb.reason
        for _ in range(10):
            assert inb.poll(time.monotonic()) is None  # no move: never live
        w.do("commit", 1)
        payload = inb.poll(time.monotonic())
        assert payload is inb.local and inb.status is LinkStatus.LIVE and inb.became_live and inb.changed
        assert inb.reason == ""
    finally:
        inb.close()


def test_stale_after_n_unchanged_reads_and_live_again_when_it_moves(fresh_prefix, writers):
    """Interface 4: STALE when the heartbeat has not moved for the configured reads; LIVE again on
    the next move (same writer, a hang that ended)."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=20, retry_s=0.0, probe_every=0))
    w = writers("cu_hal")
    try:
        _make_live(inb, w)
        for n in range(19):
            assert inb.poll(time.monotonic()) is not None, n  # 19 unchanged reads: still live
        assert inb.poll(time.monotonic()) is None
        assert inb.status is LinkStatus.STALE and inb.lost and "unchanged for 20 reads" in inb.reason
        assert inb.poll(time.monotonic()) is None and not inb.lost  # the transition is reported once
        w.do("commit", 1)
        assert inb.poll(time.monotonic()) is not None and inb.became_live
    finally:
        inb.close()


def test_stale_by_time(fresh_prefix, writers):
    """Interface 4: a time budget (bridges) instead of a read count."""
    inb = Inbound.for_key("cu_mqt", InboundPolicy(stale_after_s=0.2, retry_s=0.0, probe_every=0))
    w = writers("cu_mqt")
    try:
        w.do("commit", 1)
        inb.poll(100.0)
        w.do("commit", 1)
        assert inb.poll(100.0) is not None
        assert inb.poll(100.15) is not None
        assert inb.heartbeat_age_s(100.15) == pytest.approx(0.15)
        assert inb.poll(100.21) is None and inb.status is LinkStatus.STALE
    finally:
        inb.close()


def test_writer_killed_is_stale_at_once_not_after_n_reads(fresh_prefix, writers):
    """Interface 4: the writer-lock probe: a writer that died is STALE within probe_every polls even
    though the read count (10**6) is far away; a successor that takes the segment over is LIVE once
    its heartbeat moves."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5))
    w = writers("cu_hal")
    try:
        _make_live(inb, w)
        w.kill()
        polls = _poll_until(inb, LinkStatus.STALE, limit=10)
        assert polls <= 5 and inb.lost and "writer process gone" in inb.reason
        ino = os.stat(shm_path(inb.name)).st_ino
        w2 = writers("cu_hal")  # takes the dead writer's segment over (same inode)
        assert os.stat(shm_path(inb.name)).st_ino == ino
        for _ in range(5):
            assert inb.poll(time.monotonic()) is None
        w2.do("commit", 1)
        assert inb.poll(time.monotonic()) is not None and inb.status is LinkStatus.LIVE
        assert inb.reattaches == 0
    finally:
        inb.close()


def test_the_probe_apart_from_poll_finds_a_dead_writer_within_probe_every_calls(fresh_prefix, writers):
    """probe_apart (the HAL's policy): poll() makes no probe — a killed writer whose heartbeat merely
    stops stays LIVE to polls alone while the read count is far — and probe(), called once per cycle,
    finds it gone within probe_every calls; the poll after that returns None and reports the loss."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5, probe_apart=True))
    w = writers("cu_hal")
    try:
        w.do("commit", 1)
        for _ in range(3):  # poll() never attaches: probe() does (its stat off the cycle's path)
            assert inb.poll(time.monotonic()) is None and not inb.attached
        inb.probe(time.monotonic())
        assert inb.attached and inb.status is LinkStatus.ABSENT
        inb.poll(time.monotonic())
        w.do("commit", 1)
        assert inb.poll(time.monotonic()) is not None and inb.status is LinkStatus.LIVE
        w.kill()
        for _ in range(20):
            assert inb.poll(time.monotonic()) is not None  # no probe inside poll
        assert inb.status is LinkStatus.LIVE
        calls = 0
        while inb.status is LinkStatus.LIVE and calls < 20:
            inb.probe(time.monotonic())
            calls += 1
        assert calls <= 5 and inb.status is LinkStatus.STALE and "writer process gone" in inb.reason
        assert inb.poll(time.monotonic()) is None
        assert inb.lost  # the loss probe() found is reported by the poll after it (CommandInbox resets its ring)
        assert inb.poll(time.monotonic()) is None and not inb.lost  # once
        plain = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5))
        try:
            plain.probe(time.monotonic())  # without probe_apart, probe() does nothing (poll probes)
            assert plain.status is LinkStatus.ABSENT
        finally:
            plain.close()
    finally:
        inb.close()


def test_a_writer_killed_inside_its_copy_never_shows_the_torn_payload(fresh_prefix):
    """Issue 16 (found in review): a writer killed between "seq odd" and "seq even" leaves a torn
    payload. The successor that takes the segment over must not make that a commit: readers see
    nothing until its first commit, and then only its bytes (a partial commit included)."""
    spec = SEGMENTS["cu_hal"]
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=1))
    w = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)
    w2 = None
    try:
        w.local["axes"]["calculated_torque"][:] = 1.0
        w.commit()
        inb.poll(time.monotonic())
        w.commit()
        assert inb.poll(time.monotonic()) is not None and inb.status is LinkStatus.LIVE
        # die inside the next commit exactly as _publish would: heartbeat+1, seq odd, half the copy
        hb = w.heartbeat + 1
        w._hbv[0] = hb
        w._seqv[0] = (2 * hb - 1) & 0xFFFFFFFF
        w._dst[: w._dst.size // 2] = 0xAB
        w.close(unlink=False)  # the lock goes with the process, the segment stays
        _poll_until(inb, LinkStatus.STALE, limit=10)
        w2 = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)  # takes it over
        for _ in range(20):
            assert inb.poll(time.monotonic()) is None, "the torn payload was shown as a commit"
        assert inb.status is not LinkStatus.LIVE
        w2.local["axes"]["calculated_torque"][:] = 2.0
        w2.commit_part(0, 0)  # a heartbeat-only commit from a successor: still copies everything once
        got = inb.poll(time.monotonic())
        assert got is not None and inb.status is LinkStatus.LIVE
        assert (got["axes"]["calculated_torque"] == 2.0).all()
        assert bytes(memoryview(got).cast("B")) == bytes(memoryview(w2.local).cast("B"))
    finally:
        inb.close()
        if w2 is not None:
            w2.close()
        else:
            for suffix in ("", ".lock"):
                try:
                    os.unlink(shm_path(spec.name()) + suffix)
                except FileNotFoundError:
                    pass


def test_a_torn_read_never_replaces_the_last_consistent_copy(fresh_prefix, writers):
    """The seqlock's contract: a poll returns a payload the writer committed, never a mix of two
    commits. A real writer process commits uniform payloads (every byte the commit's number) as fast
    as it can while this reader polls; every payload a poll returns must be uniform — also after a
    copy that tore and retries that found the writer inside its next commit (the previous copy is
    then returned, intact)."""
    from common.shm.views import flat_bytes

    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5))
    w = writers("cu_hal")
    try:
        _make_live(inb, w)
        u8 = flat_bytes(inb.local)
        result: list[str] = []
        t = threading.Thread(target=lambda: result.extend(w.do("hammer", 1.5)))
        t.start()
        polls = torn = new = 0
        deadline = time.monotonic() + 10
        while t.is_alive() and time.monotonic() < deadline:
            if inb.poll(time.monotonic()) is not None:
                polls += 1
                new += inb.changed
                if not (u8 == u8[0]).all():
                    torn += 1
        t.join(10)
        assert result and int(result[0]) > 1000, f"the writer committed too little to test anything: {result}"
        assert polls > 200 and new > 100, (polls, new)
        assert torn == 0, f"{torn} of {polls} polls returned a payload mixed from two commits ({inb.contentions} contentions)"
    finally:
        inb.close()


def test_reattach_when_a_new_writer_replaces_the_segment(fresh_prefix, writers):
    """Interface 4: a segment replaced under the same name (new inode) is re-attached by name, the
    payload array stays the same object, and it is LIVE once the new writer's heartbeat moves."""
    inb = Inbound.for_key("hal_mqt", InboundPolicy(stale_reads=30, retry_s=0.0, probe_every=5))
    w = writers("hal_mqt")
    try:
        w.do("commit", 1)
        inb.poll(time.monotonic())
        w.do("commit", 1)
        local = inb.poll(time.monotonic())
        assert local is not None
        old_ino = os.stat(shm_path(inb.name)).st_ino
        w.kill()
        os.unlink(shm_path(inb.name))  # what a writer with a new layout / a cleaned instance leaves
        w2 = writers("hal_mqt")
        assert os.stat(shm_path(inb.name)).st_ino != old_ino
        assert _poll_until(inb, LinkStatus.STALE, limit=10) <= 5  # the probe sees the new inode
        assert "replaced" in inb.reason
        _poll_until(inb, LinkStatus.LIVE, commit=lambda: w2.do("commit", 1))
        assert inb.reattaches == 1 and inb.local is local
        assert int(inb.heartbeat) >= 1
    finally:
        inb.close()


def test_probe_apart_attaches_and_reattaches_in_probe_never_in_poll(fresh_prefix, writers):
    """probe_apart (the HAL's policy): the attach attempts and the re-attach checks (each at most every
    retry_s) are probe()'s too, so that a cycle's poll makes no system call. A writer replaced by a new
    segment (new inode) and one that exited cleanly (the name gone) are followed by probe(); polls alone
    stay where they were."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=30, retry_s=10.0, probe_every=5, probe_apart=True))
    w = writers("cu_hal")

    def cycle(t: float, commit=None) -> None:  # one HAL cycle: the poll, then the probe after the commits
        if commit is not None:
            commit()
        inb.poll(t)
        inb.probe(t)

    try:
        w.do("commit", 1)
        for _ in range(3):
            cycle(1000.0, lambda: w.do("commit", 1))
        assert inb.status is LinkStatus.LIVE
        local = inb.local
        w.kill()
        os.unlink(shm_path(inb.name))
        w2 = writers("cu_hal")  # a new segment under the name
        for _ in range(6):
            cycle(1000.0)
        assert inb.status is LinkStatus.STALE and "replaced" in inb.reason and inb.reattaches == 0
        for _ in range(5):  # retry_s has passed: polls alone still do not follow the new segment
            assert inb.poll(1020.0) is None
        assert inb.reattaches == 0
        inb.probe(1020.0)
        assert inb.reattaches == 1 and inb.local is local
        assert inb.segment is inb.reader.segment  # (the compiled read's source follows the new mapping)
        for _ in range(3):
            cycle(1020.0, lambda: w2.do("commit", 1))
        assert inb.status is LinkStatus.LIVE
        w2.close()  # a clean exit: the name is gone
        for _ in range(6):
            cycle(1020.0)
        assert inb.status is LinkStatus.ABSENT
        inb.probe(1040.0)  # the re-attach check drops the vanished segment
        assert not inb.attached
        w3 = writers("cu_hal")
        for _ in range(5):
            assert inb.poll(1060.0) is None and not inb.attached
        inb.probe(1060.0)
        assert inb.attached
        for _ in range(3):
            cycle(1060.0, lambda: w3.do("commit", 1))
        assert inb.status is LinkStatus.LIVE
    finally:
        inb.close()


def test_clean_exit_is_absent_and_a_restart_is_attached_again(fresh_prefix, writers):
    """Interface 4: a writer that exits cleanly (unlinks) makes the segment ABSENT, not STALE; its
    successor is attached by name and LIVE after its heartbeat moved."""
    inb = Inbound.for_key("re_mqt", InboundPolicy(stale_reads=30, retry_s=0.0, probe_every=5))
    w = writers("re_mqt")
    try:
        _make_live(inb, w)
        w.close()
        _poll_until(inb, LinkStatus.ABSENT, limit=100)
        assert "does not exist" in inb.reason and inb.lost is not None
        w2 = writers("re_mqt")
        _poll_until(inb, LinkStatus.LIVE, commit=lambda: w2.do("commit", 1))
    finally:
        inb.close()


def test_leftover_of_a_dead_writer_never_becomes_live(fresh_prefix, writers):
    """Interface 4 (the drift of the RE and CU command copies): a segment whose writer is dead is
    never LIVE, however often it is read; it turns STALE after the read budget."""
    w = writers("rpc_re")
    w.do("commit", 5)
    w.kill()
    inb = Inbound.for_key("rpc_re", InboundPolicy(stale_reads=10, retry_s=0.0, probe_every=5))
    try:
        for _ in range(30):
            assert inb.poll(time.monotonic()) is None
        assert inb.status is LinkStatus.STALE
    finally:
        inb.close()


def test_command_inbox_consumes_each_slot_once_and_acks(fresh_prefix, writers):
    """Interface 4: a command inbox on the ring code — each command taken exactly once, every
    command acked back to the (real, separate) producer process through a CommandOutbox."""
    spec = SEGMENTS["hal_rpc"]
    ours = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)
    inbox = CommandInbox(Inbound.for_key("rpc_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5)),
                         ours.local["acks"])
    producer = writers("rpc_hal")
    try:
        ours.commit()
        producer.do("outbox", "hal_rpc")
        wait_for(lambda: inbox.poll(time.monotonic()) is LinkStatus.LIVE or producer.do("commit", 1) and False,
                 what="rpc_hal live")
        ours.commit()
        assert list(inbox.take()) == []  # first sight: the epoch is followed, no history
        ours.commit()
        seqs = producer.do("submit", int(HalCommand.SET_DO), 3)
        assert seqs == ["1", "2", "3"]
        got = []
        wait_for(lambda: inbox.poll(time.monotonic()) and inbox.pending(), what="commands pending")
        assert inbox.next_code() == int(HalCommand.SET_DO)
        for cmd in inbox.take():
            got.append(cmd)
            inbox.ack(cmd, ResultCode.OK if cmd.request_id != 2 else ResultCode.INVALID_ARGUMENT, "done")
        ours.commit()
        assert [c.request_id for c in got] == [1, 2, 3] and [c.pin for c in got] == [1, 2, 3]
        inbox.poll(time.monotonic())
        assert list(inbox.take()) == [] and not inbox.pending()  # never twice
        stop = threading.Event()
        beat = threading.Thread(target=lambda: [ours.commit() for _ in iter(lambda: stop.wait(0.002), True)])
        beat.start()  # our segment keeps beating while the producer waits for it to be live
        try:
            acks = producer.do("acks", 3)
        finally:
            stop.set()
            beat.join(10)
        assert sorted(acks) == ["1:0", f"2:{int(ResultCode.INVALID_ARGUMENT)}", "3:0"]
    finally:
        inbox.close()
        ours.close()


def test_command_outbox_says_busy_when_the_ring_is_full(fresh_prefix):
    """Interface 4: the outbox never overwrites an unconsumed slot: with every slot in flight it
    raises BackPressure (RingFull) and writes nothing."""
    spec = SEGMENTS["rpc_re"]
    w = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)
    outbox = CommandOutbox(w.local["ring"], Inbound.for_key("re_rpc", InboundPolicy(stale_reads=100)))
    try:
        for rid in range(1, CMD_RING_SLOTS + 1):
            outbox.submit(1, rid)
        before = w.local["ring"].copy()
        with pytest.raises(BackPressure, match="in flight"):
            outbox.submit(1, 999)
        assert (w.local["ring"] == before).all()
        assert outbox.in_flight == CMD_RING_SLOTS and not outbox.ready
        assert outbox.poll_acks() == []  # consumer absent: nothing to read
    finally:
        outbox.acks_in.close()
        w.close()


def test_policy_without_a_stale_criterion_is_refused():
    """A reader that can never go stale is a configuration error, said at construction."""
    with pytest.raises(ValueError, match="stale_reads or stale_after_s"):
        InboundPolicy()


def test_an_unchanged_segment_is_not_copied_again(fresh_prefix, writers):
    """Issue 15 (cheap polling of slow writers): while the segment still holds the commit already
    copied, poll() copies nothing; the next commit is copied in full."""
    inb = Inbound.for_key("rpc_cu", InboundPolicy(stale_reads=1000, retry_s=0.0, probe_every=0))
    w = writers("rpc_cu")
    try:
        _make_live(inb, w)
        raw = inb.local.reshape(1).view("u1")
        raw[:8] = 0xAB  # a marker no writer wrote
        assert inb.poll(time.monotonic()) is not None and (raw[:8] == 0xAB).all()  # not copied again
        w.do("commit", 1)
        assert inb.poll(time.monotonic()) is not None and inb.changed
        assert not (raw[:8] == 0xAB).all()  # the new commit overwrote the marker
    finally:
        inb.close()


def test_probe_follows_the_lock_file_of_a_writer_restarted_cleanly(fresh_prefix, writers):
    """Issue 15 (the writer-lock probe on a descriptor kept open): a writer that exits cleanly and is
    restarted at once (a new segment and a NEW lock file) is still seen as a restart within
    probe_every polls; its successor is LIVE once it moves and STAYS live (the kept descriptor is now
    the successor's lock, not the free old one); the successor killed is STALE within probe_every."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5))
    w = writers("cu_hal")
    lock = shm_path(inb.name) + ".lock"
    try:
        w.do("commit", 1)
        inb.poll(time.monotonic())
        w.do("commit", 1)
        assert inb.poll(time.monotonic()) is not None and inb.status is LinkStatus.LIVE
        old_lock = os.stat(lock).st_ino
        w.close()  # clean exit: segment and lock file unlinked ...
        w2 = writers("cu_hal")  # ... and a new writer makes new ones before we look again
        w2.do("commit", 3)
        assert os.stat(lock).st_ino != old_lock
        polls = _poll_until(inb, LinkStatus.STALE, limit=10)
        assert polls <= 5 and inb.lost and ("gone" in inb.reason or "replaced" in inb.reason), inb.reason
        _poll_until(inb, LinkStatus.LIVE, commit=lambda: w2.do("commit", 1))
        for _ in range(25):  # five probes against the successor's lock: all find it held
            w2.do("commit", 1)
            assert inb.poll(time.monotonic()) is not None, inb.reason
        w2.kill()
        polls = _poll_until(inb, LinkStatus.STALE, limit=10)
        assert polls <= 5 and "writer process gone" in inb.reason
    finally:
        inb.close()


def test_probe_sees_a_writer_killed_and_replaced_on_the_same_lock_file(fresh_prefix, writers):
    """Issue 15: a SIGKILLed writer leaves its lock file; the successor reuses it (same inode) and
    takes the segment over. While the successor is not yet there the kept descriptor finds the lock
    free (STALE); once it holds the same file again, the reader is LIVE after its heartbeat moves."""
    inb = Inbound.for_key("cu_hal", InboundPolicy(stale_reads=10**6, retry_s=0.0, probe_every=5))
    w = writers("cu_hal")
    lock = shm_path(inb.name) + ".lock"
    try:
        _make_live(inb, w)
        ino = os.stat(lock).st_ino
        w.kill()
        assert _poll_until(inb, LinkStatus.STALE, limit=10) <= 5
        w2 = writers("cu_hal")
        assert os.stat(lock).st_ino == ino
        _poll_until(inb, LinkStatus.LIVE, commit=lambda: w2.do("commit", 1))
        for _ in range(10):
            w2.do("commit", 1)
            assert inb.poll(time.monotonic()) is not None, inb.reason
    finally:
        inb.close()
