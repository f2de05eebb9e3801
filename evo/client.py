"""Client side of the control API for the CLI: find the instance's watchdog and call it.

Every failure becomes a `ClientError` with one readable line (no watchdog, unknown module, ...).
"""
from __future__ import annotations

import os
import select
from pathlib import Path

import grpc

from common.protos.evo.v1 import supervisor_pb2 as pb
from common.protos.evo.v1 import supervisor_pb2_grpc as pb_grpc

from evo.instance import grpc_target, lock_holder, socket_path


class ClientError(RuntimeError):
    """One line for the terminal."""


class Client:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.pid = lock_holder(self.run_dir)
        if self.pid is None or not socket_path(self.run_dir).exists():
            raise ClientError(f"no watchdog running for this instance (run dir {self.run_dir}); start one with `evo up`")
        self.channel = grpc.insecure_channel(grpc_target(self.run_dir))
        self.stub = pb_grpc.SupervisorStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rpc(self, method: str, request: object, timeout: float) -> object:
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE and "shutting down" not in (e.details() or ""):  # type: ignore[attr-defined]
                raise ClientError(f"the watchdog (pid {self.pid}) does not answer on {socket_path(self.run_dir)}") from None
            raise ClientError(e.details() or code.name) from None  # type: ignore[attr-defined]

    def list_modules(self, names: list[str] | None = None) -> pb.ListModulesResponse:
        return self._rpc("ListModules", pb.ListModulesRequest(names=names or []), 5.0)  # type: ignore[return-value]

    def start(self, name: str) -> pb.ModuleReply:
        return self._rpc("StartModule", pb.ModuleRequest(name=name), 120.0)  # type: ignore[return-value]

    def stop(self, name: str) -> pb.ModuleReply:
        return self._rpc("StopModule", pb.ModuleRequest(name=name), 120.0)  # type: ignore[return-value]

    def restart(self, name: str) -> pb.ModuleReply:
        return self._rpc("RestartModule", pb.ModuleRequest(name=name), 120.0)  # type: ignore[return-value]

    def shutdown(self) -> pb.ShutdownReply:
        return self._rpc("Shutdown", pb.ShutdownRequest(), 10.0)  # type: ignore[return-value]

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the watchdog process to end (pidfd, no polling). True when it has."""
        if not self.pid or self.pid < 0:
            return lock_holder(self.run_dir) is None
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
            return bool(readable)
        finally:
            os.close(fd)
