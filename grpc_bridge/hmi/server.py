"""The HMI's HTTP server (aiohttp) on the bridge's event loop: page, JSON API, live WebSocket.

A port in use is logged once with the address and retried every BIND_RETRY_S; meanwhile the bridge's
health reports HMI_SERVICE NOT_SERVING and gRPC serves as usual.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from pathlib import Path

import grpc
from aiohttp import web

from common.config import EvoConfig

from ..auth import AuthInterceptor
from ..convert import StatusBuilder
from ..methods import Method
from ..watch import Broadcast, Streamer
from .json_api import API_PREFIX, JsonApi, error_response, metadata_of
from .live import READ_METHOD, LiveFeed
from .modules import ModuleFeed
from .openapi import openapi_document

log = logging.getLogger("grpc_bridge.hmi")

HMI_SERVICE = "evo.v1.Hmi"  # health service name of the web server
BIND_RETRY_S = 2.0
STATIC = Path(__file__).resolve().parent / "static"
_HEADERS = {
    # Everything is ours and local: no other origin may be loaded, framed or called.
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _unit(axis_type: str) -> str:
    return "deg" if axis_type == "rotary" else "mm"


class HmiServer:
    def __init__(self, cfg: EvoConfig, methods: dict[str, Method], gate: AuthInterceptor, broadcast: Broadcast,
                 builder: StatusBuilder) -> None:
        h = cfg.system.hmi
        self.cfg = cfg
        self.bind, self.port = h.bind, h.port
        self.gate = gate
        self.max_hz = min(h.max_live_hz, cfg.system.grpc.max_watch_hz)
        self.api = JsonApi(methods, gate)
        self.modules = ModuleFeed(methods)
        self.live = LiveFeed(Streamer(broadcast, self.max_hz), builder, gate, self.modules,
                             default_hz=min(h.default_live_hz, self.max_hz))
        self.openapi = openapi_document(methods, f"evo operator API — {cfg.machine.name}")
        self.serving = False
        self.error = ""
        self.app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        self.app.add_routes([
            web.get("/", self._index),
            web.get("/favicon.ico", self._favicon),
            web.static("/static", STATIC, show_index=False),
            web.get(API_PREFIX + "/info", self._info),
            web.get(API_PREFIX + "/session", self._session),
            web.get(API_PREFIX + "/openapi.json", self._openapi),
            web.get(API_PREFIX + "/live", self.live.handle),
            *self.api.routes(),
        ])
        self._runner: web.AppRunner | None = None
        self._bind_task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        if not await self._try_bind():
            self._bind_task = asyncio.ensure_future(self._retry_bind())

    async def _try_bind(self) -> bool:
        site = web.TCPSite(self._runner, self.bind, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            why = "in use by another program" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            error = f"cannot listen on {self.bind}:{self.port} ([hmi] bind/port): {why}"
            if error != self.error:
                log.error("%s; retrying every %.0f s (gRPC serves regardless)", error, BIND_RETRY_S)
            self.error = error
            return False
        self.serving, self.error = True, ""
        log.info("HMI on %s (%s)", self.url, "tokens" if self.gate.auth.enabled else "no tokens")
        if not self.gate.auth.enabled and self.bind not in ("127.0.0.1", "localhost", "::1"):
            log.warning("HMI listening on %s without tokens: every page is an operator", self.url)
        return True

    async def _retry_bind(self) -> None:
        while not await self._try_bind():
            await asyncio.sleep(BIND_RETRY_S)

    async def stop(self) -> None:
        if self._bind_task is not None:
            self._bind_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bind_task
        await self.live.close()
        await self.modules.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.serving = False

    # -- routes ---------------------------------------------------------------------------------------
    @web.middleware
    async def _headers(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            if not request.path.startswith(API_PREFIX):
                raise
            resp = error_response(grpc.StatusCode.NOT_FOUND if e.status == 404 else grpc.StatusCode.UNKNOWN,
                                  f"{request.method} {request.path}: {e.reason}", http=e.status)
        if not resp.prepared:
            resp.headers.update(_HEADERS)
        return resp

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _favicon(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    async def _info(self, request: web.Request) -> web.Response:
        """Public: what a page needs before it has a token (nothing about the machine's state)."""
        return web.json_response({"api": "evo.v1", "auth_required": self.gate.auth.enabled,
                                  "live_max_hz": self.max_hz, "live_default_hz": self.live.default_hz})

    async def _session(self, request: web.Request) -> web.Response:
        """The caller's role and the configured machine (axes with limits and units), for a viewer or
        operator token (same verdict as a read call)."""
        v = self.gate.verdict(READ_METHOD, metadata_of(request))
        if not v.allowed:
            return error_response(v.code, v.message)
        cfg = self.cfg
        return web.json_response({
            "role": v.role.label if v.role else "operator", "auth_required": self.gate.auth.enabled,
            "machine": cfg.machine.name,
            "axes": [{"id": a.id, "name": a.name, "type": str(a.type), "unit": _unit(str(a.type)),
                      "min_pos": a.kinematics.min_pos, "max_pos": a.kinematics.max_pos,
                      "max_velocity": a.kinematics.max_velocity,
                      "in_position_window": a.kinematics.in_position_window,
                      "lag_error_limit": a.control.lag_error_limit} for a in cfg.axes],
            "live": {"max_hz": self.max_hz, "default_hz": self.live.default_hz},
            "cycle_time_us": {"cu": cfg.system.cu.cycle_time_us, "hal": cfg.system.hal.cycle_time_us},
        })

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi)
