"""Runs one operator command end to end: validate, submit to a ring, wait for the ack, log, reply.

Every command is logged once with the caller (peer and role), its arguments and its result.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from common.shm.commands import ResultCode
from common.shm.rings import Ack

from .auth import CALLER_ROLE, Role
from .protos.evo.v1 import types_pb2
from .shm_link import ShmLink, Target
from .status_map import CommandError

log = logging.getLogger("grpc_bridge.commands")

DEADLINE_MARGIN_S = 0.002  # answer a little before the caller's deadline so the reply still arrives


@dataclass(frozen=True)
class RingCommand:
    """What goes into a command ring slot (see common/shm/commands.py for each code's arguments)."""

    target: Target
    code: int
    axis: int = 0
    pin: int = 0
    args: Sequence[float] = field(default_factory=tuple)
    text: str = ""


def describe(request: Message) -> str:
    """`name=value` for every field, defaults included (a 0 pin must show in the log), enums by name."""
    parts = []
    for f in request.DESCRIPTOR.fields:
        value = getattr(request, f.name)
        if isinstance(value, Message):
            text = "{" + text_format.MessageToString(value, as_one_line=True) + "}"
        elif isinstance(value, (str, bytes)):
            text = repr(value)
        elif f.enum_type is not None and isinstance(value, int):
            ev = f.enum_type.values_by_number.get(value)
            text = ev.name if ev is not None else str(value)
        elif isinstance(value, (int, float, bool)):
            text = str(value)
        else:  # repeated
            text = str(list(value))
        parts.append(f"{f.name}={text}")
    return " ".join(parts)


def caller(context: grpc.ServicerContext, role: Role | None) -> str:
    return f"{context.peer()} ({role.label if role else 'unauthenticated'})"


class CommandGateway:
    """Shared by the Machine, Io and Recipes services."""

    def __init__(self, link: ShmLink, timeout_s: float) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)

    async def run(self, method: str, request: Message, context: grpc.aio.ServicerContext,
                  build: Callable[[], RingCommand]) -> types_pb2.CommandReply:
        """`build` validates the request (raising CommandError) and returns the ring command."""
        t0 = time.perf_counter()
        rid = next(self._ids)
        try:
            cmd = build()
            ack = await self._execute(cmd, rid, context)
        except CommandError as e:
            self._log(method, request, context, rid, e.result.name if e.result is not None else e.code.name,
                      e.message, t0, refused=True)
            await e.abort(context)
            raise  # unreachable: abort raises
        rt_ms = (time.perf_counter() - t0) * 1e3
        self._log(method, request, context, rid, "OK", ack.message, t0)
        return types_pb2.CommandReply(request_id=rid, result=types_pb2.RESULT_CODE_OK, message=ack.message,
                                      round_trip_ms=rt_ms)

    async def _execute(self, cmd: RingCommand, rid: int, context: grpc.aio.ServicerContext) -> Ack:
        fut = self.link.submit(cmd.target, cmd.code, rid, axis=cmd.axis, pin=cmd.pin, args=cmd.args, text=cmd.text)
        timeout = self.timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining - DEADLINE_MARGIN_S))
        try:
            ack = await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except asyncio.TimeoutError:
            self.link.forget(cmd.target, fut)
            raise CommandError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no ack from the {cmd.target.label} within {timeout:.3f} s", ResultCode.TIMEOUT) from None
        if ack.result != ResultCode.OK:
            raise CommandError.from_result(ack.result, ack.message)
        return ack

    @staticmethod
    def _log(method: str, request: Message, context: grpc.ServicerContext, rid: int, result: str, message: str,
             t0: float, refused: bool = False) -> None:
        ms = (time.perf_counter() - t0) * 1e3
        log.log(logging.WARNING if refused else logging.INFO, "command %s #%d by %s args {%s} -> %s%s (%.2f ms)",
                method, rid, caller(context, CALLER_ROLE.get()), describe(request), result,
                f": {message}" if message else "", ms)


def log_denied(method: str, request: object, context: grpc.ServicerContext, code: grpc.StatusCode,
               message: str, role: Role | None) -> None:
    """Commands the interceptor refused (no token, viewer) are logged like the others."""
    args = describe(request) if isinstance(request, Message) else "<stream>"
    service, _, name = method.lstrip("/").partition("/")
    log.warning("command %s.%s by %s args {%s} -> %s: %s", service.rsplit(".", 1)[-1], name,
                caller(context, role), args, code.name, message)
