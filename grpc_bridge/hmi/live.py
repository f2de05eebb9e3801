"""The page's live feed: a WebSocket carrying the bridge's shared samples at the rate the page picks.

Protocol: the page sends `{"token": "...", "rate_hz": 10}` first; the server answers `hello` (role,
rate) or `error` and closes; then `sample` messages (machine, io, recipe: the gRPC messages in JSON,
built once per sample for every page) and `modules` whenever the watchdog's table changes. A later
`{"rate_hz": x}` changes the rate. Samples come from watch.Broadcast: no segment reads per page.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from ..auth import AUTH_HEADER, AuthInterceptor, Role
from ..convert import StatusBuilder
from ..shm_link import Snapshot
from ..status_map import CommandError
from ..watch import Streamer
from .codec import to_json
from .json_api import error_body, peer_of
from .modules import ModuleFeed

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
READ_METHOD = "/evo.v1.Machine/WatchStatus"  # what a live page is, for the auth verdict
CLOSE_UNAUTHENTICATED, CLOSE_DENIED, CLOSE_BAD_REQUEST = 4401, 4403, 4400


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class LiveFeed:
    """One WebSocket handler for every page; per-page state lives in the handler's coroutine."""

    def __init__(self, streamer: Streamer, builder: StatusBuilder, gate: AuthInterceptor, modules: ModuleFeed,
                 default_hz: float) -> None:
        self.streamer = streamer
        self.builder = builder
        self.gate = gate
        self.modules = modules
        self.default_hz = default_hz
        self.clients = 0
        self._sockets: set[web.WebSocketResponse] = set()

    def sample_text(self, snap: Snapshot) -> str:
        """The `sample` message of one snapshot, serialised once for every page."""
        # The protos first (shared with the Watch* streams): Snapshot.cached's lock is not re-entrant.
        machine = snap.cached("machine", self.builder.machine)
        io = snap.cached("io", self.builder.io)
        recipe = snap.cached("recipe", self.builder.recipe)
        return snap.cached("hmi_live", lambda s: _dumps({
            "type": "sample", "seq": s.seq, "sampled_at_unix_ns": s.unix_ns,
            "machine": to_json(machine), "io": to_json(io), "recipe": to_json(recipe),
        }))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096)
        await ws.prepare(request)
        hello = await self._hello(ws)
        if hello is None:
            return ws
        role, rate = hello
        peer = peer_of(request)
        log.info("live page %s connected (%s, %g Hz)", peer, role.label if role else "open", rate)
        self.clients += 1
        self._sockets.add(ws)
        self.modules.acquire()
        rate_box = [rate]
        sent_seq = [-1]  # the last sample sent: a sender restarted for a new rate never repeats it
        sender = asyncio.ensure_future(self._send(ws, rate_box, sent_seq))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    wanted = json.loads(msg.data).get("rate_hz")
                    new = self.streamer.rate(float(wanted))
                except (ValueError, TypeError, AttributeError, CommandError) as e:
                    text = e.message if isinstance(e, CommandError) else f"bad message: {e}"
                    await ws.send_str(_dumps({"type": "error", **error_body(grpc.StatusCode.INVALID_ARGUMENT, text)}))
                    continue
                if new != rate_box[0]:
                    rate_box[0] = new
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                    await ws.send_str(_dumps({"type": "rate", "rate_hz": new}))
                    sender = asyncio.ensure_future(self._send(ws, rate_box, sent_seq, modules_sent=-1))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            self.modules.release()
            self._sockets.discard(ws)
            self.clients -= 1
            log.info("live page %s gone", peer)
        return ws

    async def _hello(self, ws: web.WebSocketResponse) -> tuple[Role | None, float] | None:
        """Read the page's first message and judge it like a WatchStatus call; None = refused."""
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
            data = json.loads(msg.data) if msg.type == WSMsgType.TEXT else None
            if not isinstance(data, dict):
                raise ValueError("the first message must be a JSON object {token, rate_hz}")
            token = data.get("token")
            rate = self.streamer.rate(float(data.get("rate_hz", self.default_hz)))
        except asyncio.TimeoutError:
            await self._refuse(ws, grpc.StatusCode.INVALID_ARGUMENT, "no hello message", CLOSE_BAD_REQUEST)
            return None
        except CommandError as e:
            await self._refuse(ws, e.code, e.message, CLOSE_BAD_REQUEST)
            return None
        except (ValueError, TypeError) as e:
            await self._refuse(ws, grpc.StatusCode.INVALID_ARGUMENT, str(e), CLOSE_BAD_REQUEST)
            return None
        metadata = ((AUTH_HEADER, f"Bearer {token}"),) if token else ()
        verdict = self.gate.verdict(READ_METHOD, metadata)
        if not verdict.allowed:
            close = CLOSE_UNAUTHENTICATED if verdict.code == grpc.StatusCode.UNAUTHENTICATED else CLOSE_DENIED
            await self._refuse(ws, verdict.code, verdict.message, close)
            return None
        role = verdict.role
        await ws.send_str(_dumps({"type": "hello", "role": role.label if role else "operator",
                                  "auth": self.gate.auth.enabled, "rate_hz": rate, "max_hz": self.streamer.max_hz}))
        return role, rate

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, code: grpc.StatusCode, message: str, close: int) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(_dumps({"type": "error", **error_body(code, message)}))
            await ws.close(code=close, message=code.name.encode())

    async def _send(self, ws: web.WebSocketResponse, rate_box: list[float], sent_seq: list[int],
                    modules_sent: int = -1) -> None:
        # aclosing: a cancelled sender stops counting as a watcher at once (the link samples while watched)
        async with contextlib.aclosing(self.streamer.paced(1.0 / rate_box[0], after_seq=sent_seq[0])) as samples:
            async for snap in samples:
                if ws.closed:
                    return
                sent_seq[0] = snap.seq
                await ws.send_str(self.sample_text(snap))  # awaits the socket: a slow page gets the latest next
                if self.modules.version != modules_sent:
                    modules_sent = self.modules.version
                    await ws.send_str(_dumps({"type": "modules", **self.modules.state}))

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"bridge stopping")
