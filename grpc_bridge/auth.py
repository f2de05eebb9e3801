"""Bearer-token roles checked in a server interceptor: viewer (read and watch) and operator (commands).

With no tokens configured every caller is an operator (the default bind is 127.0.0.1 only).
"""
from __future__ import annotations

import contextvars
import enum
import hmac
import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import grpc

log = logging.getLogger(__name__)

AUTH_HEADER = "authorization"
# Open to every caller, token or not: health probes and the schema (reflection) carry no machine data.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")


class Role(enum.IntEnum):
    VIEWER = 1  # read and watch
    OPERATOR = 2  # also commands

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Verdict:
    """The caller's role (None: unauthenticated or public) and, when refused, the status and why."""

    role: Role | None
    code: grpc.StatusCode | None = None
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.code is None


#: The role of the call being served (set by the interceptor around each handler call).
CALLER_ROLE: contextvars.ContextVar[Role | None] = contextvars.ContextVar("evo_grpc_role", default=None)


class TokenAuth:
    """Token -> role. Tokens are compared in constant time."""

    def __init__(self, viewer_tokens: Iterable[str] = (), operator_tokens: Iterable[str] = ()) -> None:
        self._tokens: list[tuple[bytes, Role]] = [(t.encode(), Role.OPERATOR) for t in operator_tokens if t]
        self._tokens += [(t.encode(), Role.VIEWER) for t in viewer_tokens if t]
        self.enabled = bool(self._tokens)

    def role_of(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[Role | None, str]:
        """(role, "") or (None, reason for UNAUTHENTICATED)."""
        if not self.enabled:
            return Role.OPERATOR, ""
        header = None
        for key, value in metadata or ():
            if key.lower() == AUTH_HEADER:
                header = value.decode() if isinstance(value, bytes) else value
                break
        if header is None:
            return None, "missing 'authorization: Bearer <token>' metadata"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "authorization metadata must be 'Bearer <token>'"
        given = token.strip().encode()
        role = None
        for known, r in self._tokens:
            if hmac.compare_digest(given, known) and (role is None or r > role):
                role = r
        if role is None:
            return None, "unknown bearer token"
        return role, ""


def _wrap(handler: grpc.RpcMethodHandler, behavior_for: Callable[[Callable], Callable]) -> grpc.RpcMethodHandler:
    """The same handler with its behavior function replaced by `behavior_for(original)`."""
    for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        fn = getattr(handler, attr)
        if fn is not None:
            return handler._replace(**{attr: behavior_for(fn)})
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a valid token (when tokens are configured); PERMISSION_DENIED for a
    viewer calling a command. The HTTP API of the HMI asks the same `verdict()` and `refuse()`. `is_command(method)` classifies full method names; `on_denied(method,
    request, context, code, message, role)` logs refusals of commands. Unary calls run with
    CALLER_ROLE set (the command log names the role)."""

    def __init__(self, auth: TokenAuth, is_command: Callable[[str], bool],
                 on_denied: Callable[[str, object, grpc.aio.ServicerContext, grpc.StatusCode, str, Role | None], None]) -> None:
        self.auth = auth
        self.is_command = is_command
        self.on_denied = on_denied

    def verdict(self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Verdict:
        """Who calls and whether they may: the one decision for gRPC calls and the HTTP API."""
        if method.startswith(PUBLIC_PREFIXES):
            return Verdict(None)
        role, reason = self.auth.role_of(metadata)
        if role is None:
            return Verdict(None, grpc.StatusCode.UNAUTHENTICATED, reason)
        if role < Role.OPERATOR and self.is_command(method):
            return Verdict(role, grpc.StatusCode.PERMISSION_DENIED,
                           f"role {role.label} may not call {method}; an operator token is required")
        return Verdict(role)

    @staticmethod
    async def call_as(role: Role | None, fn: Callable, request: object, context: grpc.aio.ServicerContext) -> object:
        """Run a unary behavior with CALLER_ROLE set (the command log names the role)."""
        token = CALLER_ROLE.set(role)
        try:
            return await fn(request, context)
        finally:
            CALLER_ROLE.reset(token)

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201 - grpc API
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        v = self.verdict(method, handler_call_details.invocation_metadata)
        if not v.allowed:
            return self._deny(handler, method, v.code, v.message, v.role)
        if handler.unary_unary is None:
            return handler  # streams: reads, the role is not needed below

        def with_role(fn: Callable) -> Callable:
            async def behavior(request, context):  # noqa: ANN001, ANN202
                return await self.call_as(v.role, fn, request, context)
            return behavior

        return _wrap(handler, with_role)

    def _deny(self, handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str,
              role: Role | None) -> grpc.RpcMethodHandler:
        def refuse(_fn: Callable) -> Callable:
            if handler.response_streaming:
                async def stream_behavior(request_or_iterator, context):  # noqa: ANN001, ANN202
                    await self.refuse(method, request_or_iterator, context, code, message, role)
                    yield  # never reached: makes this an async generator like the handler it replaces
                return stream_behavior

            async def behavior(request_or_iterator, context):  # noqa: ANN001, ANN202
                await self.refuse(method, request_or_iterator, context, code, message, role)
            return behavior

        return _wrap(handler, refuse)

    async def refuse(self, method: str, request: object, context: grpc.aio.ServicerContext,
                     code: grpc.StatusCode, message: str, role: Role | None) -> None:
        """Log a refused command and end the call with `code` (raises inside grpc)."""
        if self.is_command(method):
            self.on_denied(method, request, context, code, message, role)
        await context.abort(code, message)
