"""The control API: gRPC `evo.v1.Supervisor` on `<run_dir>/supervisor.sock`, served by `evo up`.

Handlers run on gRPC threads and hand every request to the watchdog loop with `Watchdog.call`.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import psutil

from common.protos.evo.v1 import supervisor_pb2 as pb
from common.protos.evo.v1 import supervisor_pb2_grpc as pb_grpc

from evo.instance import socket_path
from evo.watchdog import NotApplicable, ShuttingDown, UnknownModule, Watchdog

log = logging.getLogger("evo.control")

CALL_TIMEOUT_S = 5.0
_EVENT_KINDS = {"snapshot": pb.EVENT_KIND_SNAPSHOT, "state": pb.EVENT_KIND_STATE, "status": pb.EVENT_KIND_STATUS}


def state_pb(state: str) -> int:
    return pb.ModuleState.Value(f"MODULE_STATE_{state.upper()}")


def state_name(value: int) -> str:
    """`MODULE_STATE_RUNNING` -> "running"."""
    return pb.ModuleState.Name(value).removeprefix("MODULE_STATE_").lower()


class _ProcStats:
    """cpu % and RSS per pid with psutil; cpu is measured between calls (lifetime average first)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    def get(self, pid: int) -> tuple[float, int]:
        if pid <= 0:
            return 0.0, 0
        with self._lock:
            try:
                p = self._procs.get(pid)
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                    t = p.cpu_times()
                    age = max(1e-3, time.time() - p.create_time())
                    p.cpu_percent(None)
                    cpu = 100.0 * (t.user + t.system) / age
                else:
                    cpu = p.cpu_percent(None)
                return cpu, p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._procs.pop(pid, None)
                return 0.0, 0

    def prune(self, live: set[int]) -> None:
        with self._lock:
            for pid in [p for p in self._procs if p not in live]:
                del self._procs[pid]


def module_info(d: dict[str, Any], cpu: float = 0.0, rss: int = 0) -> pb.ModuleInfo:
    info = pb.ModuleInfo(
        name=d["name"], state=state_pb(d["state"]), pid=d["pid"], restarts=d["restarts"], uptime_s=d["uptime_s"],
        last_exit=d["last_exit"], cpu_percent=cpu, rss_bytes=rss, heartbeat_age_s=d["heartbeat_age_s"],
        watchdog_age_s=d["watchdog_age_s"], status=d["status"], reason=d["reason"], enabled=d["enabled"],
        since_unix=d["since"], kind=d["kind"], standby_pid=d.get("standby_pid", 0),
    )
    if d["last_exit_code"] is not None:
        info.last_exit_code = d["last_exit_code"]
    if d["last_exit_signal"] is not None:
        info.last_exit_signal = d["last_exit_signal"]
    return info


class SupervisorService(pb_grpc.SupervisorServicer):
    def __init__(self, wd: Watchdog, config_dir: Path | None = None) -> None:
        self.wd = wd
        self.config_dir = config_dir
        self.stats = _ProcStats()

    # -- helpers
    def _call(self, context: grpc.ServicerContext, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.wd.call(fn, *args).result(CALL_TIMEOUT_S)
        except UnknownModule as e:
            context.abort(grpc.StatusCode.NOT_FOUND, e.message)
        except NotApplicable as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except ShuttingDown as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except futures.TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the watchdog did not answer in time")

    def _infos(self, context: grpc.ServicerContext, names: list[str]) -> list[pb.ModuleInfo]:
        snap = self._call(context, self.wd.snapshot, names)
        out = []
        for d in snap:
            cpu, rss = self.stats.get(d["pid"])
            out.append(module_info(d, cpu, rss))
        if not names:
            self.stats.prune({d["pid"] for d in snap})
        return out

    def _module_op(self, request: pb.ModuleRequest, context: grpc.ServicerContext, op: Callable[..., Any],
                   wait_s: float) -> pb.ModuleReply:
        message, done = self._call(context, op, request.name)
        try:
            done.result(wait_s)
        except futures.TimeoutError:
            message += " (not settled yet)"
        return pb.ModuleReply(module=self._infos(context, [request.name])[0], message=message)

    # -- RPCs
    def ListModules(self, request: pb.ListModulesRequest, context: grpc.ServicerContext) -> pb.ListModulesResponse:
        mods = self._infos(context, list(request.names))
        return pb.ListModulesResponse(
            modules=mods, watchdog_pid=self.wd.pid, watchdog_uptime_s=time.monotonic() - self.wd.t0,
            instance=self.wd.prefix, config_dir=str(self.config_dir or ""), run_dir=str(self.wd.run_dir),
            degraded=any(m.state == pb.MODULE_STATE_FAILED for m in mods),
        )

    def _wait_s(self, name: str) -> float:
        spec = self.wd.modules[name].spec if name in self.wd.modules else None
        ready = spec.ready_timeout_s if spec else 10.0
        return self.wd.policy.sigterm_timeout_s + ready + 1.0

    def StartModule(self, request: pb.ModuleRequest, context: grpc.ServicerContext) -> pb.ModuleReply:
        return self._module_op(request, context, self.wd.op_start, self._wait_s(request.name))

    def StopModule(self, request: pb.ModuleRequest, context: grpc.ServicerContext) -> pb.ModuleReply:
        return self._module_op(request, context, self.wd.op_stop, self.wd.policy.sigterm_timeout_s + 2.0)

    def RestartModule(self, request: pb.ModuleRequest, context: grpc.ServicerContext) -> pb.ModuleReply:
        return self._module_op(request, context, self.wd.op_restart, self._wait_s(request.name))

    def Shutdown(self, request: pb.ShutdownRequest, context: grpc.ServicerContext) -> pb.ShutdownReply:
        msg = self._call(context, self.wd.begin_shutdown, "Shutdown over the control API")
        return pb.ShutdownReply(message=msg)

    def WatchEvents(self, request: pb.WatchEventsRequest, context: grpc.ServicerContext) -> Iterator[pb.ModuleEvent]:
        q, snap = self._call(context, self.wd.subscribe, list(request.names))
        try:
            for d in snap:
                yield pb.ModuleEvent(
                    timestamp_unix=time.time(), name=d["name"], kind=pb.EVENT_KIND_SNAPSHOT, state=state_pb(d["state"]),
                    previous_state=state_pb(d["state"]), pid=d["pid"], restarts=d["restarts"], reason=d["reason"],
                    last_exit=d["last_exit"], status=d["status"],
                )
            while context.is_active():
                try:
                    ev = q.get(timeout=0.25)
                except queue.Empty:
                    continue
                if ev is None:
                    return
                yield pb.ModuleEvent(
                    timestamp_unix=ev["timestamp_unix"], name=ev["name"], kind=_EVENT_KINDS[ev["kind"]],
                    state=state_pb(ev["state"]), previous_state=state_pb(ev["previous_state"]), pid=ev["pid"],
                    restarts=ev["restarts"], reason=ev["reason"], last_exit=ev["last_exit"], status=ev["status"],
                )
        finally:
            self.wd.call(self.wd.unsubscribe, q)


class ControlServer:
    """The gRPC server on the Unix socket; start() before the loop runs, stop() after it ends."""

    def __init__(self, wd: Watchdog, config_dir: Path | None = None) -> None:
        self.path = socket_path(wd.run_dir)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="evo-control"),
                                  options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_SupervisorServicer_to_server(SupervisorService(wd, config_dir), self.server)

    def start(self) -> "ControlServer":
        try:
            os.unlink(self.path)  # a killed watchdog's socket; we hold the instance lock
        except FileNotFoundError:
            pass
        self.server.add_insecure_port(f"unix:{self.path}")
        self.server.start()
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        self.server.stop(grace_s).wait(grace_s + 1.0)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
