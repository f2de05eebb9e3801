"""A grpc.aio.ServicerContext stand-in for calls that do not arrive over gRPC (the HMI's HTTP API).

The servicers run unchanged: `abort()` raises CallAborted carrying the status, message and trailers.
"""
from __future__ import annotations

import time
from typing import Iterable, NoReturn

import grpc


class CallAborted(Exception):
    """The behavior ended the call with a status (what grpc would send as the call's status)."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = dict(trailing)


class LocalContext:
    """The part of grpc.aio.ServicerContext our servicers use: peer, deadline, metadata, abort."""

    def __init__(self, peer: str, metadata: Iterable[tuple[str, str]] = (), timeout_s: float | None = None) -> None:
        self._peer = peer
        self._metadata = tuple(metadata)
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.initial: tuple[tuple[str, str], ...] = ()

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.trailing = tuple(metadata)

    async def send_initial_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.initial = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple = ()) -> NoReturn:
        raise CallAborted(code, details, tuple(trailing_metadata) or self.trailing)
