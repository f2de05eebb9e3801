"""The watchdog's module table for the page: one shared Supervisor subscription while pages watch.

ListModules (uptime, restarts, cpu) every POLL_S and at once on each WatchEvents event, through the
bridge's own Supervisor forwarder; nothing runs while no page is connected.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from ..local_context import CallAborted, LocalContext
from ..methods import Method
from .codec import to_json

log = logging.getLogger(__name__)

POLL_S = 1.0
RETRY_S = 1.0
KEEP_EVENTS = 30
PEER = "hmi:module-feed"
EVENT_KIND_SNAPSHOT = 1  # evo.v1.EventKind: the first event per module, its current state


class ModuleFeed:
    """`state` is the latest JSON-ready table; `version` increases on every change."""

    def __init__(self, methods: dict[str, Method]) -> None:
        self.list = methods.get("/evo.v1.Supervisor/ListModules")
        self.watch = methods.get("/evo.v1.Supervisor/WatchEvents")
        self.events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.state: dict[str, Any] = {"available": False, "reason": "not watched yet", "modules": [], "events": []}
        self.version = 0
        self._users = 0
        self._task: asyncio.Task | None = None
        self._kick = asyncio.Event()

    # -- page connections -------------------------------------------------------------------------
    def acquire(self) -> None:
        self._users += 1
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the subscription -------------------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        new = {**self.state, **changes, "events": list(self.events)}
        if new != self.state:
            self.state = new
            self.version += 1

    async def _run(self) -> None:
        if self.list is None:
            self._set(available=False, reason="evo.v1.Supervisor is not served by this bridge")
            return
        while True:
            watcher = asyncio.ensure_future(self._watch_events()) if self.watch is not None else None
            try:
                while True:
                    await self._poll()
                    self._kick.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), POLL_S)
                    if watcher is not None and watcher.done():
                        break  # the event stream ended (watchdog gone or restarted): resubscribe
            except CallAborted as e:
                self._set(available=False, reason=e.message, modules=[])
            except Exception as e:  # noqa: BLE001 - the feed must outlive a bad reply; reported
                log.exception("module feed failed")
                self._set(available=False, reason=f"module feed failed: {e}", modules=[])
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, CallAborted):
                        await watcher
            await asyncio.sleep(RETRY_S)

    async def _poll(self) -> None:
        reply = await self.list.behavior(self.list.request(), LocalContext(PEER, timeout_s=5.0))
        self._set(available=True, reason="", modules=to_json(reply).get("modules", []),
                  degraded=reply.degraded, watchdog_uptime_s=reply.watchdog_uptime_s)

    async def _watch_events(self) -> None:
        async for ev in self.watch.behavior(self.watch.request(), LocalContext(PEER)):
            if ev.kind == EVENT_KIND_SNAPSHOT:
                continue  # the current states: ListModules has them
            self.events.appendleft({**to_json(ev), "received_unix": time.time()})
            self._kick.set()
