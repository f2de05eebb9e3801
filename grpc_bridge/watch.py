"""Fan-out of the link's samples to the server streams: one latest-value slot, woken once per tick.

Each watcher takes the latest shared sample at its own rate; a slow client drops to the latest.
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import AsyncIterator, Callable

import grpc

from .shm_link import Snapshot
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
        async for snap in self.paced(period):
            yield snap.cached(kind, build)  # awaits the send: a full HTTP/2 window holds us here

    async def paced(self, period: float, after_seq: int = -1) -> AsyncIterator[Snapshot]:
        """The shared snapshots newer than `after_seq`, one per `period` at most, until the broadcast
        closes (every Watch* stream and the HMI's live feed). The consumer's await on each item paces
        it: never a backlog."""
        last = after_seq
        due = time.monotonic()
        early = 0.5 * period  # a sample this close before the due time is taken (tick jitter)
        while True:
            snap = await self.broadcast.wait_newer(last)
            if snap is None:
                return  # shutting down
            now = time.monotonic()
            if now < due - early:  # this client wants fewer samples than the sampler makes
                await asyncio.sleep(due - now)
                snap = self.broadcast.latest
                if snap is None or self.broadcast.closed:
                    return
            last = snap.seq
            yield snap
            due += period
            now = time.monotonic()
            if due < now - period:
                due = now  # fell behind (slow client): restart the schedule, never burst
