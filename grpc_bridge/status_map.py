"""How command results become gRPC status codes (one table), and the error the services raise.

LOCKED maps to ABORTED: another source holds the axis lock, a concurrency conflict a client may retry.
"""
from __future__ import annotations

import grpc

from common.shm.commands import ResultCode

RESULT_TO_STATUS: dict[ResultCode, grpc.StatusCode] = {
    ResultCode.OK: grpc.StatusCode.OK,
    ResultCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ResultCode.STATE_FORBIDS: grpc.StatusCode.FAILED_PRECONDITION,
    ResultCode.IO_ROLE_OWNED: grpc.StatusCode.PERMISSION_DENIED,
    ResultCode.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ResultCode.LOCKED: grpc.StatusCode.ABORTED,
    ResultCode.UNKNOWN_COMMAND: grpc.StatusCode.UNIMPLEMENTED,
    ResultCode.NOT_EXECUTED: grpc.StatusCode.UNAVAILABLE,
    ResultCode.SAFETY: grpc.StatusCode.FAILED_PRECONDITION,
    ResultCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ResultCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ResultCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
}

RESULT_METADATA_KEY = "evo-result"  # trailing metadata: the ResultCode name behind an error


def status_of(result: ResultCode) -> grpc.StatusCode:
    return RESULT_TO_STATUS.get(result, grpc.StatusCode.UNKNOWN)


class CommandError(Exception):
    """A refused call: the gRPC status, a readable message, and the ResultCode behind it."""

    def __init__(self, code: grpc.StatusCode, message: str, result: ResultCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.result = result

    @classmethod
    def from_result(cls, result: ResultCode, message: str) -> "CommandError":
        return cls(status_of(result), message or result.name.lower().replace("_", " "), result)

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        """End the call with this status (raises inside grpc)."""
        if self.result is not None:
            context.set_trailing_metadata(((RESULT_METADATA_KEY, self.result.name),))
        await context.abort(self.code, self.message)


def invalid(message: str) -> CommandError:
    return CommandError(grpc.StatusCode.INVALID_ARGUMENT, message, ResultCode.INVALID_ARGUMENT)


def unavailable(message: str) -> CommandError:
    return CommandError(grpc.StatusCode.UNAVAILABLE, message, ResultCode.NOT_EXECUTED)


# The HMI's HTTP/JSON API: gRPC status -> HTTP status (the mapping of google.rpc.Code / grpc-gateway);
# the body carries the gRPC code's name, its number, the message and the ResultCode behind it.
STATUS_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status_of(code: grpc.StatusCode) -> int:
    return STATUS_TO_HTTP.get(code, 500)
