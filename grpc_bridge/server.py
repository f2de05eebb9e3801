"""Assembles the bridge: shm link, services, Supervisor forwarding, health, reflection, auth, TLS, HMI.

`run(cfg)` is the process (`python -m grpc_bridge`): grpc.aio on one event loop plus the link thread.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1.health import aio as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.config import EvoConfig
from common.notify import WatchdogPinger, notify_ready, notify_stopping
from common.rt import process_setup
from common.shm.p2p import WriterAlreadyExists

from .auth import AuthInterceptor, TokenAuth
from .decode_guard import DecodeGuard
from .commands import CommandGateway, log_denied
from .convert import StatusBuilder
from .hmi import HMI_SERVICE, HmiServer
from .methods import COMMAND_METHODS, OWN_SERVICES, Method, is_command, method_table  # noqa: F401 - re-exported
from .protos.evo.v1 import io_pb2_grpc, machine_pb2_grpc, recipes_pb2_grpc
from .services import IoService, MachineService, RecipesService
from .shm_link import CU, HAL, RE, ShmLink, Snapshot
from .supervisor_forward import SERVICE as SUPERVISOR, SupervisorForwarder, load_descriptor
from .validation import Validator
from .watch import Broadcast, Streamer

log = logging.getLogger("grpc_bridge")

GRACE_S = 1.0  # in-flight calls get this long at shutdown
HEALTH_REFRESH_S = 0.25  # health of what samples do not carry (HMI bound, Supervisor socket)

def _listen_address(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    return f"{host}:{port}"


def _resolve(cfg: EvoConfig, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(cfg.dir) / p


class Bridge:
    """The gRPC server (grpc.aio, one event loop) and everything behind it. Build it and call
    `await start()` / `await stop()` inside a running loop."""

    def __init__(self, cfg: EvoConfig) -> None:
        self.cfg = cfg
        g, sysc = cfg.system.grpc, cfg.system
        self.link = ShmLink(sample_hz=g.max_watch_hz, cycle_periods_s={
            "cu": sysc.cu.cycle_time_us / 1e6, "hal": sysc.hal.cycle_time_us / 1e6, "re": sysc.re.tick_ms / 1e3})
        try:
            self.link.bind_loop(asyncio.get_running_loop())  # command acks reach the handlers via an eventfd
            self.broadcast = Broadcast(asyncio.get_running_loop())
            self.link.on_sample.append(self.broadcast.publish_threadsafe)
            self.broadcast.on_watchers = self.link.set_watchers  # samplers run only while watched
            self.broadcast.fresh = self.link.fresh_snapshot  # unary reads with nobody watching
            self.health = health_aio.HealthServicer()
            self.auth = TokenAuth(g.viewer_tokens, g.operator_tokens)
            self.gate = AuthInterceptor(self.auth, is_command, log_denied)
            # DecodeGuard outermost: undecodable bytes are INVALID_ARGUMENT before anything else looks
            self.server = grpc.aio.server(interceptors=[DecodeGuard(), self.gate], options=[("grpc.so_reuseport", 0)])
            self.supervisor: SupervisorForwarder | None = None
            self.methods: dict[str, Method] = {}
            self.service_names = self._add_services()
            self.address, self.port, self.tls = self._listen()
            self.hmi = HmiServer(cfg, self.methods, self.gate, self.broadcast, self.builder) \
                if cfg.system.hmi.enabled else None
        except BaseException:
            self.link.close()  # unlink what we created
            raise
        self._health_state: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._health_task: asyncio.Task | None = None
        self.broadcast.listeners.append(self._update_health)

    def _add_services(self) -> tuple[str, ...]:
        """Machine, Io, Recipes, the forwarded Supervisor (when its code exists), health, reflection."""
        cfg, g = self.cfg, self.cfg.system.grpc
        gateway = self.gateway = CommandGateway(self.link, g.command_timeout_s)
        validator, builder = Validator(cfg), StatusBuilder(cfg)
        self.builder = builder
        streamer = Streamer(self.broadcast, g.max_watch_hz)
        servicers = {
            "evo.v1.Machine": MachineService(gateway, validator, builder, streamer),
            "evo.v1.Io": IoService(gateway, validator, builder, streamer),
            "evo.v1.Recipes": RecipesService(gateway, validator, builder, streamer, cfg),
        }
        machine_pb2_grpc.add_MachineServicer_to_server(servicers["evo.v1.Machine"], self.server)
        io_pb2_grpc.add_IoServicer_to_server(servicers["evo.v1.Io"], self.server)
        recipes_pb2_grpc.add_RecipesServicer_to_server(servicers["evo.v1.Recipes"], self.server)
        names = list(OWN_SERVICES)
        pb2, svc = load_descriptor()
        if svc is not None:
            self.supervisor = SupervisorForwarder(cfg.run_dir() / "supervisor.sock", pb2, svc)
            self.server.add_generic_rpc_handlers((self.supervisor.handler(),))
            names.append(SUPERVISOR)
        self.methods.update(method_table(servicers, self.supervisor))  # the HMI's HTTP API serves these too
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        return tuple(names)

    def _listen(self) -> tuple[str, int, bool]:
        """Bind [grpc] bind:port, with TLS when a certificate and key are configured."""
        g = self.cfg.system.grpc
        address = _listen_address(g.bind, g.port)
        tls = bool(g.tls_cert or g.tls_key)
        if tls:
            key = _resolve(self.cfg, g.tls_key).read_bytes()
            cert = _resolve(self.cfg, g.tls_cert).read_bytes()
            port = self.server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            port = self.server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        if not self.auth.enabled and g.bind not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s without tokens: every caller is an operator", address)
        return address, port, tls

    def _update_health(self, snap: Snapshot) -> None:
        """Per-service health follows what the service needs; "" (overall) is SERVING while we run."""
        src = snap.sources
        want = {
            "": True,
            "evo.v1.Machine": src[CU.key].ok,
            "evo.v1.Io": src[HAL.key].ok,
            "evo.v1.Recipes": src[RE.key].ok,
        }
        if self.supervisor is not None:
            want[SUPERVISOR] = self.supervisor.available()
        if self.hmi is not None:
            want[HMI_SERVICE] = self.hmi.serving
        for name, ok in want.items():
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            if self._health_state.get(name) != status:
                self._health_state[name] = status
                task = asyncio.ensure_future(self.health.set(name, status))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _refresh_health(self) -> None:
        """Health also follows what is not a sample: the HMI binding late, the Supervisor socket
        appearing. The link publishes only on a source's change while nobody watches."""
        while True:
            await asyncio.sleep(HEALTH_REFRESH_S)
            if self.broadcast.latest is not None:
                self._update_health(self.broadcast.latest)

    async def start(self) -> "Bridge":
        self.link.start()
        self._health_task = asyncio.ensure_future(self._refresh_health())
        await self.server.start()
        if self.hmi is not None:
            await self.hmi.start()  # a port in use is logged and retried; gRPC serves regardless
        log.info("serving %s on %s (%s, %s)", ", ".join(self.service_names), self.address,
                 "TLS" if self.tls else "plaintext", "tokens" if self.auth.enabled else "no tokens")
        return self

    async def stop(self) -> None:
        self.broadcast.listeners.clear()
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()
        self.broadcast.close()  # ends the Watch* streams and the HMI's live feeds
        if self.hmi is not None:
            await self.hmi.stop()
        await self.server.stop(GRACE_S)
        if self.supervisor is not None:
            await self.supervisor.close()
        self.link.close()
        self.gateway.write_trace()


async def serve(cfg: EvoConfig) -> int:
    """Serve until SIGTERM/SIGINT, then stop cleanly (segments unlinked). Returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bridge = Bridge(cfg)
    except WriterAlreadyExists as e:
        log.error("another gRPC bridge runs for this instance (%s); exiting", e.segment)
        return 1
    except (OSError, RuntimeError) as e:  # TLS files unreadable, port taken, ...
        log.error("cannot start: %s", e)
        return 1
    await bridge.start()
    notify_ready(f"serving on {bridge.address}")
    pinger = WatchdogPinger().start()
    try:
        await stop.wait()
    finally:
        notify_stopping()
        pinger.stop()
        await bridge.stop()
        log.info("stopped")
    return 0


def run(cfg: EvoConfig) -> int:
    """The process (`python -m grpc_bridge`): title evo-grpc, then serve()."""
    process_setup("evo-grpc")
    return asyncio.run(serve(cfg))
