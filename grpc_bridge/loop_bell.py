"""Hands acks from the link thread to the event loop: an eventfd the loop watches (`add_reader`).

A command's handler awaits an `AckFuture` on the loop; the link thread resolves it through here.
Chosen by benchmarks/bench_grpc_wait.py: cheaper than `call_soon_threadsafe` or `wrap_future`.
"""
from __future__ import annotations

import asyncio
import collections
import os
from typing import Any, Iterable


class AckFuture(asyncio.Future):
    """A command's future on the loop; `noticed_ns` is when the link thread read its ack (the trace)."""

    noticed_ns = 0


class LoopBell:
    """Thread-safe `deliver()` of (future, result) pairs, resolved on `loop` at its next turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._queue: collections.deque[tuple[asyncio.Future, Any]] = collections.deque()
        self.rings = 0  # figures: eventfd writes
        loop.add_reader(self._fd, self._drain)

    def deliver(self, items: Iterable[tuple[asyncio.Future, Any]]) -> None:
        """From any thread: queue the results, then ring once (queued first: the loop never misses one)."""
        items = list(items)
        if not items:
            return
        self._queue.extend(items)
        if self._fd >= 0:
            self.rings += 1
            try:
                os.eventfd_write(self._fd, 1)
            except OSError:  # closed under us at shutdown: close() resolves what is left
                pass

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            pass
        self._resolve()

    def _resolve(self) -> None:
        q = self._queue
        while q:
            fut, result = q.popleft()
            if not fut.done():
                fut.set_result(result)

    def close(self) -> None:
        """On the loop's thread: stop watching, resolve what is queued, close the eventfd."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            self.loop.remove_reader(fd)
        except (RuntimeError, ValueError):  # the loop is already closed
            pass
        os.close(fd)
        self._resolve()
