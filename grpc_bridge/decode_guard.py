"""Requests whose bytes do not decode are the caller's error: INVALID_ARGUMENT, never UNKNOWN/INTERNAL.

grpcio answers a request_deserializer exception with UNKNOWN ("Exception deserializing request!"), as
if the server had failed. This interceptor decodes first and refuses garbage, truncated messages and
invalid UTF-8 in string fields with the protobuf DecodeError text; nothing reaches a servicer.
"""
from __future__ import annotations

from typing import Any, Callable

import grpc
from google.protobuf.message import DecodeError

MAX_ERROR_TEXT = 200


class _Undecodable:
    """Stands in for the request a deserializer could not build."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError, TypeError) as e:
            return _Undecodable(f"{type(e).__name__}: {e}"[:MAX_ERROR_TEXT])
    return decode


async def _refuse(context: grpc.aio.ServicerContext, bad: _Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {bad.why}")


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler (unary-unary and unary-stream: all of evo.v1's methods)."""

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201 - grpc API
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        safe = _safe(handler.request_deserializer)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):  # noqa: ANN001, ANN202
                if isinstance(request, _Undecodable):
                    await _refuse(context, request)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=safe,
                                                       response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_s = handler.unary_stream

            async def stream(request, context):  # noqa: ANN001, ANN202
                if isinstance(request, _Undecodable):
                    await _refuse(context, request)
                    return
                async for item in inner_s(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=safe,
                                                        response_serializer=handler.response_serializer)
        return handler
