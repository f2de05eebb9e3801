"""Runs one operator command end to end: validate, submit to a ring, wait for the ack, log, reply.

Every command is logged once with the caller (peer and role), its arguments and its result. With
EVO_GRPC_TRACE=<file>, each command's stage timestamps (received, submitted, acked by the consumer,
noticed by the link thread, resumed on the event loop, replied; CLOCK_MONOTONIC ns) are kept and
written there as JSON lines when the bridge stops (benchmarks/bench_grpc.py's breakdown).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
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
TRACE_ENV = "EVO_GRPC_TRACE"
TRACE_KEEP = 100_000  # commands kept for the trace file (the oldest are dropped)


@dataclass(frozen=True)
class RingCommand:
    """What goes into a command ring slot (see common/shm/commands.py for each code's arguments)."""

    target: Target
    code: int
    axis: int = 0
    pin: int = 0
    args: Sequence[float] = field(default_factory=tuple)
    text: str = ""


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


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
        self.trace_path = os.environ.get(TRACE_ENV) or None
        self.trace: collections.deque[dict] | None = collections.deque(maxlen=TRACE_KEEP) if self.trace_path else None

    async def run(self, method: str, request: Message, context: grpc.aio.ServicerContext,
                  build: Callable[[], RingCommand]) -> types_pb2.CommandReply:
        """`build` validates the request (raising CommandError) and returns the ring command."""
        t0 = time.perf_counter()
        rid = next(self._ids)
        stamps: dict | None = {"method": method, "received": time.monotonic_ns()} if self.trace is not None else None
        try:
            cmd = build()
            ack = await self._execute(cmd, rid, context, stamps)
        except CommandError as e:
            self._log(method, request, context, rid, e.result.name if e.result is not None else e.code.name,
                      e.message, t0, refused=True)
            await e.abort(context)
            raise  # unreachable: abort raises
        rt_ms = (time.perf_counter() - t0) * 1e3
        # Logged right after the reply leaves (next loop turn, same context): the line costs 0.1-0.2 ms
        # that the caller's round trip does not need to wait for.
        asyncio.get_running_loop().call_soon(self._log, method, request, context, rid, "OK", ack.message, t0,
                                             False, rt_ms)
        if stamps is not None and self.trace is not None:
            stamps["replied"] = time.monotonic_ns()
            self.trace.append(stamps)
        return types_pb2.CommandReply(request_id=rid, result=types_pb2.RESULT_CODE_OK, message=ack.message,
                                      round_trip_ms=rt_ms)

    async def _execute(self, cmd: RingCommand, rid: int, context: grpc.aio.ServicerContext,
                       stamps: dict | None = None) -> Ack:
        fut = self.link.submit_async(cmd.target, cmd.code, rid, axis=cmd.axis, pin=cmd.pin, args=cmd.args,
                                     text=cmd.text)
        if stamps is not None:
            stamps["submitted"] = time.monotonic_ns()
        timeout = self.timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining - DEADLINE_MARGIN_S))
        # The ack resolves `fut` on this loop (the link's eventfd); the deadline is a timer on the
        # same future rather than asyncio.wait_for, whose wrapper future costs loop turns per command.
        expiry = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            ack = await fut
        except asyncio.TimeoutError:
            raise CommandError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no ack from the {cmd.target.label} within {timeout:.3f} s", ResultCode.TIMEOUT) from None
        finally:
            expiry.cancel()
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                self.link.forget(cmd.target, fut)  # deadline or the call cancelled: its ack is dropped
        if stamps is not None:
            stamps.update(resumed=time.monotonic_ns(), acked=ack.done_ns, noticed=fut.noticed_ns)
        if ack.result != ResultCode.OK:
            raise CommandError.from_result(ack.result, ack.message)
        return ack

    def write_trace(self) -> None:
        """Write the kept stage timestamps (EVO_GRPC_TRACE) as JSON lines; nothing without tracing."""
        if self.trace_path is None or self.trace is None:
            return
        try:
            with open(self.trace_path, "w", encoding="utf-8") as f:
                for stamps in self.trace:
                    f.write(json.dumps(stamps) + "\n")
        except OSError as e:
            log.warning("cannot write the command trace %s: %s", self.trace_path, e)

    @staticmethod
    def _log(method: str, request: Message, context: grpc.ServicerContext, rid: int, result: str, message: str,
             t0: float, refused: bool = False, ms: float | None = None) -> None:
        ms = (time.perf_counter() - t0) * 1e3 if ms is None else ms
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
