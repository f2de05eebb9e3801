"""The bridge's shared-memory side: the rpc_cu/rpc_hal/rpc_re command rings, their acks, the sampler.

One link thread owns the periodic work and sleeps on the rpc wake semaphore (common/shm/wake.py):
- a command waiting for its ack: woken by the consumer's post after it commits the ack (a fallback
  poll every PENDING_POLL_S covers a writer that does not post); the ack goes to the handler's
  asyncio future through an eventfd its event loop watches (`submit_async`, loop_bell.py);
- liveness: every LIVENESS_PERIOD_S it reads the three ack segments (common/shm/inbound.py: ABSENT /
  STALE / LIVE), commits our command segments (their heartbeat) and publishes a Snapshot when a
  source's verdict changed (health, the HMI);
- sampling: a Snapshot every sample period only while someone watches (a Watch* stream, an HMI
  page) or a client read in the last DEMAND_HOLD_S; a read with nobody watching samples on demand
  in the caller's thread (`fresh_snapshot`), so what it serves is never older than a sample period
  and never older than the last ack (read-your-writes: GetIo after an acked SetDigitalOutput).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Sequence

import grpc
import numpy as np

from common.shm.commands import ResultCode
from common.shm.inbound import CommandOutbox, Inbound, InboundPolicy, LinkStatus
from common.shm.p2p import TypedP2pWriter, writer_alive
from common.shm.rings import Ack, RingFull
from common.shm.segments import SEGMENTS
from common.shm.views import flat_bytes
from common.shm.wake import WakePoster, WakeWaiter

from .loop_bell import AckFuture, LoopBell
from .status_map import CommandError, unavailable

log = logging.getLogger(__name__)

LIVENESS_PERIOD_S = 0.05  # ack segments read, our heartbeat committed (consumers: stale after 0.5 s)
PENDING_POLL_S = 0.002  # ack poll while a command waits, in case its consumer does not post a wake
MAX_SAMPLE_PERIOD_S = 0.02  # while watched, sample at least at 50 Hz
DEMAND_HOLD_S = 2.0  # the sampler keeps running this long after a client read (a polling client)
SAMPLER_SLACK = 1.5  # while it runs, its latest tick serves reads up to 1.5 periods old (its jitter)
STALE_AFTER_S = 0.2  # a source whose heartbeat has not moved for this long is unavailable ...
STALE_PERIODS = 5  # ... or for this many of its cycle periods, if that is longer
ATTACH_RETRY_S = 0.05  # stat() of an absent / replaced ack segment at most this often
PROBE_EVERY = 2  # writer-lock probe every this many polls of a live source (~10 us each)


@dataclass(frozen=True)
class Target:
    """One consumer of our commands: `cu`, `hal` or `re` (command key rpc_<x>, ack key <x>_rpc)."""

    key: str
    label: str  # for messages: "control unit", "HAL", "recipe executor"

    @property
    def cmd_key(self) -> str:
        return f"rpc_{self.key}"

    @property
    def ack_key(self) -> str:
        return f"{self.key}_rpc"


CU = Target("cu", "control unit")
HAL = Target("hal", "HAL")
RE = Target("re", "recipe executor")
TARGETS: tuple[Target, ...] = (CU, HAL, RE)


@dataclass(frozen=True)
class SourceSample:
    """What the bridge saw of one source at a sample tick."""

    payload: np.ndarray | None  # copy of the <x>_rpc payload; None = never attached
    heartbeat_age_s: float  # since the heartbeat last moved; -1 = never seen
    ok: bool  # writer alive, heartbeat fresh, and it follows our command ring
    reason: str  # why not ok ("" when ok)


class Snapshot:
    """One sample of all three sources; protos built from it are cached per kind (shared by every
    watcher of this tick). `taken_at` is the monotonic time of the sample."""

    __slots__ = ("seq", "unix_ns", "sources", "taken_at", "_cache", "_lock")

    def __init__(self, seq: int, unix_ns: int, sources: dict[str, SourceSample], taken_at: float = 0.0) -> None:
        self.seq = seq
        self.unix_ns = unix_ns
        self.sources = sources
        self.taken_at = taken_at
        self._cache: dict[str, object] = {}
        self._lock = threading.Lock()

    def cached(self, kind: str, build: Callable[["Snapshot"], object]) -> object:
        value = self._cache.get(kind)
        if value is None:
            with self._lock:
                value = self._cache.get(kind)
                if value is None:
                    value = build(self)
                    self._cache[kind] = value
        return value


class _Source:
    """One target: our command segment (writer + ring) and its ack segment (an Inbound)."""

    def __init__(self, target: Target, prefix: str | None, stale_after_s: float) -> None:
        self.target = target
        cmd = SEGMENTS[target.cmd_key]
        self.writer = TypedP2pWriter.create(cmd.name(prefix), cmd.writer, cmd.reader, cmd.dtype)
        self.inbound = Inbound.for_key(
            target.ack_key, InboundPolicy(stale_after_s=stale_after_s, retry_s=ATTACH_RETRY_S, probe_every=PROBE_EVERY),
            prefix)
        self.outbox = CommandOutbox(self.writer.local["ring"], self.inbound)
        self.writer.commit()
        self.ack_name = self.inbound.name
        self.alive = True  # the last exact writer-lock probe of submit() (False: refuse at once)
        self.futures: dict[int, Future[Ack] | AckFuture] = {}  # seq -> caller's future

    def verdict(self) -> str:
        """Why this source cannot take commands or serve values ("" when it can)."""
        t, inb = self.target, self.inbound
        if not self.alive:
            return f"{t.label} is not running (no live writer of {self.ack_name})"
        if inb.status is LinkStatus.STALE:
            if "gone" in inb.reason or "exist" in inb.reason:
                return f"{t.label} is not running ({inb.reason})"
            return f"{t.label} is stale ({inb.reason})"
        if inb.status is LinkStatus.ABSENT:
            if not inb.attached:
                return f"{t.label} is not running ({self.ack_name} does not exist)"
            return f"{t.label} is not live yet ({inb.reason})"
        if not self.outbox.ready:
            return f"{t.label} has not attached {self.writer.name} yet"
        return ""

    def sample(self, now: float) -> SourceSample:
        """The source as last polled; the payload is a private copy (flat byte copy)."""
        payload = None
        if self.inbound.polls:  # read at least once: its last values (flagged by `ok`) are served
            payload = np.empty((), dtype=self.inbound.dtype)  # each snapshot owns its copy
            np.copyto(flat_bytes(payload), flat_bytes(self.inbound.local))
        reason = self.verdict()
        return SourceSample(payload, self.inbound.heartbeat_age_s(now), not reason, reason)


Done = list[tuple["Future[Ack] | AckFuture", Ack]]


class ShmLink:
    """Thread-safe command submission, on-demand reads and the link thread (module docstring)."""

    def __init__(self, sample_hz: float, prefix: str | None = None,
                 cycle_periods_s: dict[str, float] | None = None) -> None:
        """`cycle_periods_s`: each source's cycle period by key (cu, hal, re); a source is stale after
        max(STALE_AFTER_S, STALE_PERIODS periods) without a heartbeat."""
        self.sample_period = min(1.0 / sample_hz, MAX_SAMPLE_PERIOD_S)
        self.latest: Snapshot | None = None
        self._lock = threading.Lock()  # guards the sources (segments, rings, futures) and the sample seq
        self._kick = threading.Event()  # in-process: a submit, a new watcher, stop
        self._stop = threading.Event()
        self._sources: dict[str, _Source] = {}
        self._waiter: WakeWaiter | None = None
        self._self_post = WakePoster("rpc", prefix)  # a submit ends the thread's wait on the semaphore
        # The RE idles on its semaphore between 50 ms ticks: a command wakes it. The HAL: one that
        # blocks on its wake semaphore between cycles takes a command at once instead of at its next
        # tick (-0.85 ms p50 in an experiment, BENCHMARKS.md); while none waits, a post finds no
        # semaphore and costs one failed open every 0.5 s at most (common/shm/wake.py).
        self._consumer_wake = {RE.key: WakePoster(RE.key, prefix), HAL.key: WakePoster(HAL.key, prefix)}
        try:
            for t in TARGETS:
                period = (cycle_periods_s or {}).get(t.key, 0.0)
                self._sources[t.key] = _Source(t, prefix, max(STALE_AFTER_S, STALE_PERIODS * period))
            self._waiter = WakeWaiter("rpc", prefix)
        except BaseException:
            self._close_sources()
            raise
        self._sample_seq = 0
        self._verdicts: tuple[str, ...] = ()
        self.watchers = 0  # Watch* streams and HMI pages (set by the server's Broadcast)
        self._demand_until = 0.0
        self._acked_at = 0.0  # monotonic time just after the last ack was read (read-your-writes)
        self._on_semaphore = False  # the thread waits on the semaphore (else on _kick)
        self.samples = 0  # figures: snapshots made, of them by the sampler / on demand; semaphore wakes
        self.sampler_ticks = 0
        self.demand_samples = 0
        self.wakes = 0
        self._thread = threading.Thread(target=self._run, name="evo-grpc-link", daemon=True)
        self.on_sample: list[Callable[[Snapshot], None]] = []
        self._bell: LoopBell | None = None  # bind_loop(): acks for submit_async() futures

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve `submit_async()` on `loop` (call on its thread): acks reach it through an eventfd."""
        self._bell = LoopBell(loop)

    def start(self) -> "ShmLink":
        now = time.monotonic()
        with self._lock:
            for src in self._sources.values():
                src.inbound.poll(now)
        self._publish(now)
        self._thread.start()
        return self

    # -- callers (gRPC worker threads / the event loop) -------------------------------------------
    def submit(
        self, target: Target, code: int, request_id: int, *, axis: int = 0, pin: int = 0,
        args: Sequence[float] = (), text: str = "",
    ) -> "Future[Ack]":
        """Check the target is there, place the command in its ring and commit at once; the returned
        future gets the ack (any thread). Raises CommandError (UNAVAILABLE, RESOURCE_EXHAUSTED) on
        refusal; a command it refused is never executed (see `_submit`)."""
        fut: Future[Ack] = Future()
        self._submit(target, code, request_id, fut, axis, pin, args, text)
        return fut

    def submit_async(
        self, target: Target, code: int, request_id: int, *, axis: int = 0, pin: int = 0,
        args: Sequence[float] = (), text: str = "",
    ) -> AckFuture:
        """`submit` for the event loop bound by `bind_loop` (call on its thread): the ack resolves an
        asyncio future without a thread-pool future in between."""
        bell = self._bell
        if bell is None:
            raise RuntimeError("submit_async needs bind_loop() first")
        fut = AckFuture(loop=bell.loop)
        self._submit(target, code, request_id, fut, axis, pin, args, text)
        return fut

    def _submit(self, target: Target, code: int, request_id: int, fut: "Future[Ack] | AckFuture", axis: int,
                pin: int, args: Sequence[float], text: str) -> None:
        src = self._sources[target.key]
        if not src.alive:  # the last probe found no writer: probe again now (a restarted consumer)
            src.alive = writer_alive(src.ack_name)
        done: Done = []
        try:
            with self._lock:
                reason = src.verdict()
                if reason:
                    raise unavailable(reason)
                try:
                    seq = src.outbox.submit(code, request_id, axis=axis, pin=pin, args=args, text=text)
                except RingFull:
                    # Our view of what the consumer took may be a tick old: refresh it, retry once.
                    done = self._poll(src, time.monotonic())
                    try:
                        seq = src.outbox.submit(code, request_id, axis=axis, pin=pin, args=args, text=text)
                    except RingFull as e:
                        raise CommandError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                           f"{target.label} command ring full: {e}", ResultCode.BUSY) from None
                src.futures[seq] = fut
                src.writer.commit()
        finally:
            self._deliver(done)
        wake = self._consumer_wake.get(target.key)
        if wake is not None:
            wake.post()
        if self._on_semaphore:
            self._self_post.post()  # the thread waits for another command's ack: end that wait
        else:
            self._kick.set()
        # The exact writer-lock probe (a crash shows at once) runs after the commit, while the
        # consumer's cycle comes round: its ~40 us are off the round trip. A consumer found dead gets
        # every command still pending for it failed here, at once (NOT_EXECUTED -> UNAVAILABLE, the
        # verdict as the message): its successor never executes them, it skips what was in the ring
        # before it started (rings.py). An ack it committed before dying is still delivered as such.
        if not writer_alive(src.ack_name):
            with self._lock:
                src.alive = False
                done = self._poll(src, time.monotonic()) + self._fail(src)
            self._deliver(done)

    def forget(self, target: Target, fut: "Future[Ack] | AckFuture") -> None:
        """Drop a future whose caller gave up (deadline); its ack, if any, is then discarded."""
        src = self._sources[target.key]
        with self._lock:
            for seq, f in list(src.futures.items()):
                if f is fut:
                    del src.futures[seq]

    def source_ok(self, target: Target) -> tuple[bool, str]:
        src = self._sources[target.key]
        reason = src.verdict()
        return (not reason, reason)

    def fresh_snapshot(self) -> Snapshot:
        """A snapshot no older than one sample period (while the sampler runs: its latest tick, late by
        at most its own jitter), or one read now in the caller's thread; never one read before the
        last ack (read-your-writes). Keeps the sampler on for DEMAND_HOLD_S."""
        now = time.monotonic()
        was_idle = now >= self._demand_until and self.watchers == 0
        self._demand_until = now + DEMAND_HOLD_S
        snap = self.latest
        max_age = self.sample_period * (1.0 if was_idle else SAMPLER_SLACK)
        if snap is not None and now - snap.taken_at <= max_age and snap.taken_at >= self._acked_at:
            return snap
        with self._lock:
            for src in self._sources.values():
                src.inbound.poll(now)
        self.demand_samples += 1
        snap = self._publish(now, notify=False)
        if was_idle:
            self._kick.set()  # the sampler starts now: the next read is served from it
        return snap

    def set_watchers(self, n: int) -> None:
        """The number of live watchers (streams, pages); the first one starts the sampler at once."""
        start = n > 0 and self.watchers == 0
        self.watchers = n
        if start:
            self._kick.set()

    @property
    def sampling(self) -> bool:
        return self.watchers > 0 or time.monotonic() < self._demand_until

    # -- link thread ----------------------------------------------------------------------------
    def _poll(self, src: _Source, now: float) -> Done:
        """Read the source's ack segment and match new acks to futures (caller holds the lock)."""
        src.inbound.poll(now)
        done: Done = []
        for ack in src.outbox.poll_acks():
            fut = src.futures.pop(ack.seq, None)
            if fut is not None:
                fut.noticed_ns = time.monotonic_ns()  # type: ignore[union-attr] - the gateway's trace
                done.append((fut, ack))
        return done

    def _pending(self) -> bool:
        return any(s.futures for s in self._sources.values())

    def _run(self) -> None:
        assert self._waiter is not None
        now = time.monotonic()
        next_live = now + LIVENESS_PERIOD_S
        next_sample = now
        while not self._stop.is_set():
            now = time.monotonic()
            pending = self._pending()
            sampling = self.sampling
            due = min(next_live, next_sample) if sampling else next_live
            if pending:
                # a consumer's ack post (or our own submit's) ends this wait
                self._on_semaphore = True
                if self._waiter.wait(max(0.0, min(due - now, PENDING_POLL_S))):
                    self.wakes += 1
                self._on_semaphore = False
            else:
                # Nothing waits for an ack: a consumer's change post means nothing to us, so the
                # semaphore is left alone (no wake-up per HAL commit); only our own kicks end this.
                self._kick.wait(max(0.0, due - now))
            self._kick.clear()
            now = time.monotonic()
            sample = self.sampling and now >= next_sample
            if sample:
                next_sample = max(next_sample + self.sample_period, now)
            elif not self.sampling:
                next_sample = now  # the first watcher gets a sample at once
            try:
                if sample or now >= next_live:
                    self._tick(now, sample)
                elif self._pending():
                    self._deliver_acks(now)  # an ack wake: nothing else, the caller waits
            except Exception:  # noqa: BLE001 - the link must survive a bug in one tick; reported
                log.exception("link tick failed")
            if now >= next_live:
                next_live = now + LIVENESS_PERIOD_S

    def _fail(self, src: _Source) -> Done:
        """Everything pending for a source that is gone, as NOT_EXECUTED acks (caller holds the lock)."""
        done: Done = []
        for ack in src.outbox.fail_pending(src.verdict() or f"{src.target.label} gone"):
            fut = src.futures.pop(ack.seq, None)
            if fut is not None:
                done.append((fut, ack))
        return done

    def _deliver(self, done: Done) -> None:
        """Complete callers' futures (outside the lock): loop futures through the bell (one eventfd
        write for all), thread-pool futures directly (their waiters wake at once)."""
        if not done:
            return
        on_loop = []
        for fut, ack in done:
            if isinstance(fut, asyncio.Future):
                on_loop.append((fut, ack))
            elif not fut.done():
                fut.set_result(ack)
        if on_loop:
            bell = self._bell
            if bell is not None:
                bell.deliver(on_loop)

    def _check(self, src: _Source, now: float) -> Done:
        """Poll one source, match its acks, fail what is pending when it is gone (caller holds the lock)."""
        done = self._poll(src, now)
        if not src.alive:  # submit() found no writer: alive again once a new one holds the lock
            src.alive = writer_alive(src.ack_name)
        if src.futures and (src.inbound.status is not LinkStatus.LIVE or not src.alive):
            done += self._fail(src)
        if done:
            # Read-your-writes: the consumer commits an ack with the state it left (one commit); a
            # unary read after this ack is served from a read made after it.
            self._acked_at = time.monotonic()
        return done

    def _deliver_acks(self, now: float) -> None:
        """Only the sources a caller waits on: the ack goes to the event loop, and this thread goes
        back to sleep at once (it would hold the GIL the loop needs to answer)."""
        done: Done = []
        for src in self._sources.values():
            if src.futures:
                with self._lock:
                    done += self._check(src, now)
        self._deliver(done)

    def _tick(self, now: float, sample: bool) -> None:
        """Liveness (every source read, our heartbeat committed) and sampling; acks handed over last,
        right before the thread sleeps again."""
        done: Done = []
        for src in self._sources.values():
            with self._lock:
                done += self._check(src, now)
                src.writer.commit()  # our heartbeat (cheap; consumers judge us stale after 0.5 s)
        if sample or self._verdicts_changed():
            self.sampler_ticks += sample
            self._publish(now)
        self._deliver(done)

    def _verdicts_changed(self) -> bool:
        return tuple(s.verdict() for s in self._sources.values()) != self._verdicts

    def _publish(self, now: float, notify: bool = True) -> Snapshot:
        """A snapshot of what was last read; `notify`: hand it to the watchers and health (the sampler,
        a verdict change) — an on-demand read only answers its caller and the reads after it."""
        with self._lock:
            samples = {key: src.sample(now) for key, src in self._sources.items()}
            if notify:  # else the link's own tick still sees a verdict change and publishes it
                self._verdicts = tuple(s.reason for s in samples.values())
            self._sample_seq += 1
            snap = Snapshot(self._sample_seq, time.time_ns(), samples, now)
            self.latest = snap
            self.samples += 1
        if not notify:
            return snap
        for cb in self.on_sample:  # the broadcast queues it on the event loop ahead of the acks
            try:
                cb(snap)
            except Exception:  # noqa: BLE001
                log.exception("sample callback failed")
        return snap

    # -- shutdown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the link thread, fail what is pending, unlink our segments and our wake semaphore."""
        self._stop.set()
        self._kick.set()
        self._self_post.post()
        if self._thread.is_alive():
            self._thread.join(2.0)
        done: Done = []
        with self._lock:
            for src in self._sources.values():
                for ack in src.outbox.fail_pending("gRPC bridge shutting down"):
                    fut = src.futures.pop(ack.seq, None)
                    if fut is not None:
                        done.append((fut, ack))
        self._deliver(done)
        if self._bell is not None:
            self._bell.close()  # on the loop's thread (Bridge.stop): resolves what it still queues
        self._close_sources()

    def _close_sources(self) -> None:
        for src in self._sources.values():
            src.inbound.close()
            src.writer.close()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        self._self_post.close()
        for wake in self._consumer_wake.values():
            wake.close()
