"""The HTTP/JSON face of the operator API: `/api/v1/<service>/<method>` runs the gRPC method itself.

Same method table, auth verdict, validation, command path and error mapping as a gRPC call; refusals
are `{"code", "grpc_code", "message", "result"}` with the HTTP status of STATUS_TO_HTTP.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import Message

from ..auth import AUTH_HEADER, AuthInterceptor
from ..local_context import CallAborted, LocalContext
from ..methods import Method
from ..status_map import RESULT_METADATA_KEY, http_status_of
from .codec import from_json, to_json

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_BODY = 64 * 1024  # a command is a few hundred bytes


def error_body(code: grpc.StatusCode, message: str, result: str = "") -> dict[str, Any]:
    return {"code": code.name, "grpc_code": code.value[0], "message": message, "result": result}


def error_response(code: grpc.StatusCode, message: str, result: str = "", http: int | None = None) -> web.Response:
    return web.json_response(error_body(code, message, result), status=http or http_status_of(code))


def metadata_of(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The caller's Authorization header as gRPC metadata (what the interceptor reads)."""
    header = request.headers.get("Authorization")
    return ((AUTH_HEADER, header),) if header is not None else ()


def peer_of(request: web.Request) -> str:
    """`http:<ip>:<port>`, like grpc's `ipv4:<ip>:<port>` in the command log."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"http:{peer[0]}:{peer[1]}"
    return f"http:{request.remote}"


class JsonApi:
    """Serves every unary method of the table; the live streams are the WebSocket's (live.py)."""

    def __init__(self, methods: dict[str, Method], gate: AuthInterceptor) -> None:
        self.methods = methods
        self.gate = gate

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", API_PREFIX + "/{service}/{method}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        path = f"/{request.match_info['service']}/{request.match_info['method']}"
        m = self.methods.get(path)
        if m is None:
            return error_response(grpc.StatusCode.UNIMPLEMENTED, f"no method {path}; see {API_PREFIX}/openapi.json",
                                  http=404)
        if m.streaming:
            return error_response(grpc.StatusCode.UNIMPLEMENTED,
                                  f"{path} is a server stream: use the WebSocket {API_PREFIX}/live", http=404)
        allowed = ("POST",) if m.command else ("GET", "POST")
        if request.method not in allowed:
            return web.json_response(
                error_body(grpc.StatusCode.UNIMPLEMENTED, f"{path} takes {' or '.join(allowed)}, not {request.method}"),
                status=405, headers={"Allow": ", ".join(allowed)})
        try:
            msg = from_json(await self._body(request, m), m.request)
        except ValueError as e:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"{m.service}.{m.name}: {e}", "INVALID_ARGUMENT")
        reply = await self.call(m, msg, metadata_of(request), peer_of(request))
        if isinstance(reply, CallAborted):
            return error_response(reply.code, reply.message, reply.trailing.get(RESULT_METADATA_KEY, ""))
        return web.json_response(to_json(reply))

    @staticmethod
    async def _body(request: web.Request, m: Method) -> object:
        if request.method == "GET":
            return {k: (v if len(vs := request.query.getall(k)) == 1 and not _repeated(m.request, k) else vs)
                    for k, v in request.query.items()}
        if request.content_length and request.content_length > MAX_BODY:
            raise ValueError(f"request body larger than {MAX_BODY} bytes")
        text = await request.text()
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"request body is not JSON: {e}") from None
        except RecursionError:  # a hostile 10 000-deep array: the caller's error, not a server failure
            raise ValueError("request body nests arrays or objects too deeply") from None

    async def call(self, m: Method, msg: Message, metadata: tuple[tuple[str, str], ...],
                   peer: str) -> Message | CallAborted:
        """The gRPC path for one call: the interceptor's verdict (refusals logged), then the behavior
        with the caller's role set. Returns the reply or how the call was ended."""
        ctx = LocalContext(peer, metadata)
        verdict = self.gate.verdict(m.path, metadata)
        try:
            if not verdict.allowed:
                await self.gate.refuse(m.path, msg, ctx, verdict.code, verdict.message, verdict.role)
            return await self.gate.call_as(verdict.role, m.behavior, msg, ctx)
        except CallAborted as e:
            return e


def _repeated(cls: type[Message], field: str) -> bool:
    f = cls.DESCRIPTOR.fields_by_name.get(field)
    return f is not None and f.is_repeated
