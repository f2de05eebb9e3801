"""A client for the emulator's control channel (JSON lines on a Unix socket): status and fault injection.

Used by the tests and benchmarks; integrators can script their own bring-up checks with it.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class EmulatorError(RuntimeError):
    """The emulator refused a command (the message is its reason)."""


class EmulatorControl:
    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise EmulatorError("emulator closed the control connection")
                buf += chunk
        reply = json.loads(buf)
        if not reply.pop("ok", False):
            raise EmulatorError(reply.get("error", "refused"))
        return reply

    def status(self) -> list[dict[str, Any]]:
        return self.call("status")["devices"]

    def device(self, position: int) -> dict[str, Any]:
        return self.status()[position - 1]
