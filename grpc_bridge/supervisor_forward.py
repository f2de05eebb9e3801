"""evo.v1.Supervisor re-exposed on the bridge's port: each call is forwarded to the watchdog's socket.

Methods come from the watchdog's generated descriptor, so a new Supervisor method is forwarded as is.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import grpc
from google.protobuf.message import Message

from .auth import CALLER_ROLE
from .commands import caller, describe

log = logging.getLogger(__name__)

SERVICE = "evo.v1.Supervisor"
READ_PREFIXES = ("List", "Get", "Watch")  # everything else (Start, Stop, Restart, Shutdown) is a command
DEFAULT_TIMEOUT_S = 10.0  # a unary forward without a caller deadline


def load_descriptor():  # noqa: ANN201 - (module, ServiceDescriptor) or (None, None)
    """The watchdog's generated module and its Supervisor service descriptor, if present."""
    try:
        from common.protos.evo.v1 import supervisor_pb2
    except ImportError as e:
        log.warning("evo.v1.Supervisor not served: %s", e)
        return None, None
    return supervisor_pb2, supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"]


def is_command(method_name: str) -> bool:
    return not method_name.startswith(READ_PREFIXES)


class SupervisorForwarder:
    """A generic handler for evo.v1.Supervisor that forwards to `unix:<socket>` (grpc.aio)."""

    def __init__(self, socket_path: Path, pb2_module, service) -> None:  # noqa: ANN001
        self.socket_path = Path(socket_path)
        self.pb2 = pb2_module
        self.service = service
        self._channel: grpc.aio.Channel | None = None

    def available(self) -> bool:
        return self.socket_path.exists()

    async def _upstream(self, context: grpc.aio.ServicerContext) -> grpc.aio.Channel:
        if not self.socket_path.exists():
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"no watchdog running: {self.socket_path} does not exist (start the machine with `evo up`)")
        if self._channel is None:  # one event loop: no lock needed
            self._channel = grpc.aio.insecure_channel(f"unix:{self.socket_path}")
        return self._channel

    async def _fail(self, context: grpc.aio.ServicerContext, e: grpc.RpcError) -> None:
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = e.details() if hasattr(e, "details") else str(e)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"watchdog not reachable at unix:{self.socket_path}: {details}"
        await context.abort(code, details)

    def behaviors(self) -> dict[str, tuple[type, type, bool, Callable]]:
        """Method name -> (request class, response class, server streaming, behavior(request, context)):
        what the gRPC handler serves and the HMI's HTTP API calls."""
        out = {}
        for m in self.service.methods:
            if m.client_streaming:
                continue  # the watchdog has none; forwarding them would need a different shape
            req_cls = getattr(self.pb2, m.input_type.name)
            resp_cls = getattr(self.pb2, m.output_type.name)
            path = f"/{SERVICE}/{m.name}"
            fn = self._stream(path, req_cls, resp_cls) if m.server_streaming else self._unary(path, m.name, req_cls, resp_cls)
            out[m.name] = (req_cls, resp_cls, m.server_streaming, fn)
        return out

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for name, (req_cls, resp_cls, streaming, fn) in self.behaviors().items():
            make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
            handlers[name] = make(fn, request_deserializer=req_cls.FromString,
                                  response_serializer=resp_cls.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _unary(self, path: str, name: str, req_cls, resp_cls) -> Callable:  # noqa: ANN001
        command = is_command(name)

        async def call(request: Message, context: grpc.aio.ServicerContext) -> Message:
            channel = await self._upstream(context)
            stub = channel.unary_unary(path, request_serializer=req_cls.SerializeToString,
                                       response_deserializer=resp_cls.FromString)
            remaining = context.time_remaining()
            timeout = DEFAULT_TIMEOUT_S if remaining is None or remaining > 1e6 else remaining
            try:
                reply = await stub(request, timeout=timeout)
            except grpc.RpcError as e:
                if command:
                    log.warning("command Supervisor.%s by %s args {%s} -> %s: %s", name,
                                caller(context, CALLER_ROLE.get()), describe(request), e.code().name, e.details())
                await self._fail(context, e)
                raise
            if command:
                log.info("command Supervisor.%s by %s args {%s} -> OK: %s", name,
                         caller(context, CALLER_ROLE.get()), describe(request), getattr(reply, "message", ""))
            return reply

        return call

    def _stream(self, path: str, req_cls, resp_cls) -> Callable:  # noqa: ANN001
        async def call(request: Message, context: grpc.aio.ServicerContext):  # noqa: ANN202
            channel = await self._upstream(context)
            stub = channel.unary_stream(path, request_serializer=req_cls.SerializeToString,
                                        response_deserializer=resp_cls.FromString)
            upstream = stub(request)
            try:
                async for item in upstream:
                    yield item
            except grpc.RpcError as e:
                await self._fail(context, e)
            finally:
                upstream.cancel()  # our client went away (or the stream ended): stop the upstream one

        return call

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
