"""Fan-out of the link's samples to the server streams: one latest-value slot, woken once per tick.

Each watcher takes the latest shared sample at its own rate; a slow client drops to the latest.
The link samples only while someone watches: `Broadcast.watchers` counts the streams and pages.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator, Callable

import grpc

from .shm_link import MAX_SAMPLE_PERIOD_S, Snapshot
from .status_map import CommandError, invalid

RATE_METADATA_KEY = "evo-rate-hz"  # initial metadata: the rate the server applies


class Broadcast:
    """The latest Snapshot on the event loop, plus an asyncio.Event per generation that every
    waiting stream shares (publishing costs one call_soon_threadsafe, whatever the watchers)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.latest: Snapshot | None = None
        self.closed = False
        self._event = asyncio.Event()
        self.listeners: list[Callable[[Snapshot], None]] = []  # called in the loop per sample
        self.watchers = 0  # Watch* streams and HMI live pages being served
        self.on_watchers: Callable[[int], None] | None = None  # the link: sample only while watched
        self.fresh: Callable[[], Snapshot] | None = None  # the link: a snapshot no older than a period

    def watch(self, delta: int) -> None:
        """A stream or page starts (+1) or ends (-1)."""
        self.watchers += delta
        if self.on_watchers is not None:
            self.on_watchers(self.watchers)

    def current(self) -> Snapshot | None:
        """For a unary read: a fresh snapshot (sampled now if the sampler is idle), else the latest."""
        return self.fresh() if self.fresh is not None else self.latest

    def publish_threadsafe(self, snap: Snapshot) -> None:
        """From the link thread."""
        try:
            self.loop.call_soon_threadsafe(self._publish, snap)
        except RuntimeError:
            pass  # loop closed: shutting down

    def _publish(self, snap: Snapshot) -> None:
        self.latest = snap
        event, self._event = self._event, asyncio.Event()
        event.set()
        for cb in self.listeners:
            cb(snap)

    async def wait_newer(self, seq: int) -> Snapshot | None:
        """The latest snapshot once it is newer than `seq`; None when the broadcast is closed."""
        while not self.closed and (self.latest is None or self.latest.seq <= seq):
            await self._event.wait()  # every waiter shares this one event: one wake-up per tick
        return None if self.closed else self.latest

    def close(self) -> None:
        self.closed = True
        self._event.set()


class Streamer:
    """Builds Watch* streams over one Broadcast, bounded by `max_hz`."""

    def __init__(self, broadcast: Broadcast, max_hz: float) -> None:
        self.broadcast = broadcast
        self.max_hz = max_hz

    def rate(self, rate_hz: float) -> float:
        """0 -> max_hz; above max_hz -> max_hz; negative / NaN / inf -> INVALID_ARGUMENT."""
        if not math.isfinite(rate_hz) or rate_hz < 0:
            raise invalid(f"rate_hz must be a finite number >= 0, got {rate_hz!r}")
        return self.max_hz if rate_hz == 0 else min(rate_hz, self.max_hz)

    async def stream(self, rate_hz: float, context: grpc.aio.ServicerContext, kind: str,
                     build: Callable[[Snapshot], object]) -> AsyncIterator[object]:
        """`build(snapshot)` (cached per snapshot under `kind`) at the client's rate until it cancels."""
        try:
            period = 1.0 / self.rate(rate_hz)
        except CommandError as e:
            await e.abort(context)
            return
        await context.send_initial_metadata(((RATE_METADATA_KEY, f"{1.0 / period:g}"),))
        async with contextlib.aclosing(self.paced(period)) as samples:  # a cancelled stream stops counting at once
            async for snap in samples:
                yield snap.cached(kind, build)  # awaits the send: a full HTTP/2 window holds us here

    async def paced(self, period: float, after_seq: int = -1) -> AsyncIterator[Snapshot]:
        """The shared snapshots newer than `after_seq`, one per `period` at most, until the broadcast
        closes (every Watch* stream and the HMI's live feed). The consumer's await on each item paces
        it: never a backlog."""
        bc = self.broadcast
        last = after_seq
        if bc.latest is not None and bc.latest.taken_at and time.monotonic() - bc.latest.taken_at > MAX_SAMPLE_PERIOD_S:
            last = max(last, bc.latest.seq)  # sampled before anyone watched: wait for a fresh one
        due = time.monotonic()
        early = 0.5 * period  # a sample this close before the due time is taken (tick jitter)
        bc.watch(+1)  # the link samples while this runs
        try:
            while True:
                snap = await bc.wait_newer(last)
                if snap is None:
                    return  # shutting down
                now = time.monotonic()
                if now < due - early:  # this client wants fewer samples than the sampler makes
                    await asyncio.sleep(due - now)
                    snap = bc.latest
                    if snap is None or bc.closed:
                        return
                last = snap.seq
                yield snap
                due += period
                now = time.monotonic()
                if due < now - period:
                    due = now  # fell behind (slow client): restart the schedule, never burst
        finally:
            bc.watch(-1)
