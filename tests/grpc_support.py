"""Helpers of the gRPC bridge tests (no tests here): config copies, bridge process, channels, fakes.

FakeConsumer stands in for the HAL / CU / RE in unit tests of the error mapping only.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.shm.commands import ResultCode
from common.shm.p2p import SegmentNotFound, ShmError, TypedP2pReader, TypedP2pWriter
from common.shm.rings import Command, CommandRingReader
from common.shm.segments import SEGMENTS
from common.shm.wake import WakePoster
from grpc_bridge.protos.evo.v1 import io_pb2_grpc, machine_pb2_grpc, recipes_pb2_grpc
from tests.helpers import REPO, ModuleProcess, free_port, wait_for

if TYPE_CHECKING:
    from grpc_bridge.shm_link import ShmLink

CONFIG_DIR = REPO / "config"


def make_config(dest: Path, port: int, *, viewer_tokens: tuple[str, ...] = (), operator_tokens: tuple[str, ...] = (),
                tls_cert: str = "", tls_key: str = "", max_watch_hz: float = 50.0,
                command_timeout_s: float = 2.0, run_dir: str = "", hal_stale_reads: int = 100,
                cu_hal_stale_cycles: int = 200, mqtt: bool = True) -> Path:
    """A copy of the default machine's config with the [grpc] section (and run_dir) replaced.
    `hal_stale_reads`: the HAL's cu_hal staleness in cycles; 3 cycles flaps on a loaded 2-core test
    box (the CU misses a few ms), which would make HAL refuse outputs at random in these tests;
    `cu_hal_stale_cycles` likewise for the CU's view of the HAL (else random safety stops).
    `mqtt=False` disables the MQTT bridge and the embedded broker (for `evo up`)."""
    shutil.copytree(CONFIG_DIR, dest, dirs_exist_ok=True)
    path = dest / "config.toml"
    text = path.read_text()

    def toml_list(items: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{t}"' for t in items) + "]"

    section = (
        "[grpc]\n"
        f'bind = "127.0.0.1"\nport = {port}\n'
        f'tls_cert = "{tls_cert}"\ntls_key = "{tls_key}"\n'
        f"viewer_tokens = {toml_list(viewer_tokens)}\noperator_tokens = {toml_list(operator_tokens)}\n"
        f"max_watch_hz = {max_watch_hz}\ncommand_timeout_s = {command_timeout_s}\n"
    )
    text, n = re.subn(r"(?ms)^\[grpc\]\n.*?(?=^\[)", section + "\n", text)
    assert n == 1, "config.toml has no [grpc] section to replace"
    text = re.sub(r"(?m)^port = 8080$", f"port = {free_port()}", text)  # the HMI: never the default port
    text, n = re.subn(r"(?m)^stale_reads = \d+$", f"stale_reads = {hal_stale_reads}", text, count=1)
    assert n == 1, "config.toml has no [hal] stale_reads"
    text, n = re.subn(r"(?m)^hal_stale_cycles = \d+$", f"hal_stale_cycles = {cu_hal_stale_cycles}", text)
    assert n == 1, "config.toml has no [cu] hal_stale_cycles"
    if not mqtt:
        text, n = re.subn(r"(?m)^(\[watchdog\.modules\.mqtt\]\n)enabled = true$", r"\1enabled = false", text)
        assert n == 1, "config.toml has no [watchdog.modules.mqtt] enabled"
        text, n = re.subn(r"(?m)^embedded_broker = true$", "embedded_broker = false", text)
        assert n <= 1
    if run_dir:
        text, n = re.subn(r'(?m)^run_dir = ".*"$', f'run_dir = "{run_dir}"', text)
        assert n == 1
    from tests.helpers import zenoh_isolated

    path.write_text(zenoh_isolated(text))
    return dest


def start_bridge(prefix: str, config: Path) -> ModuleProcess:
    return ModuleProcess("grpc_bridge", prefix, ["--config", str(config)]).start()


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_serving(channel: grpc.Channel, service: str = "", proc: ModuleProcess | None = None,
                 timeout: float = 20.0) -> None:
    def ok() -> bool:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.package} exited:\n{proc.output()}")
        return health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING
    wait_for(ok, timeout=timeout, interval=0.05, what=f"health SERVING of {service or 'the server'}")


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.machine = machine_pb2_grpc.MachineStub(channel)
        self.io = io_pb2_grpc.IoStub(channel)
        self.recipes = recipes_pb2_grpc.RecipesStub(channel)


def rpc_error(fn: Callable, *args, **kwargs) -> grpc.RpcError:
    """Call and return the RpcError it must raise."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"{fn} did not fail")


class FakeConsumer:
    """Stands in for one consumer (`cu`, `hal`, `re`) of the bridge's command rings: writes the
    `<x>_rpc` segment (heartbeat, acks) and answers each command from rpc_<x> with `respond(cmd)`.
    `consuming.clear()` stops taking commands (heartbeat continues) to fill the ring."""

    def __init__(self, key: str, prefix: str, respond: Callable[[Command], tuple[ResultCode, str]] | None = None) -> None:
        spec = SEGMENTS[f"{key}_rpc"]
        self.cmd_spec = SEGMENTS[f"rpc_{key}"]
        self.prefix = prefix
        self.writer = TypedP2pWriter.create(spec.name(prefix), spec.writer, spec.reader, spec.dtype)
        self.acks = CommandRingReader(self.writer.local["acks"])
        self.respond = respond or (lambda cmd: (ResultCode.OK, "ok"))
        self.taken: list[Command] = []
        self.consuming = threading.Event()
        self.consuming.set()
        self.frozen = threading.Event()  # set: no more commits (a hung consumer)
        self._stop = threading.Event()
        self._reader: TypedP2pReader | None = None
        self.wake = WakePoster("rpc", prefix)  # like the real consumers: the bridge is woken by an ack
        self.writer.commit()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.frozen.is_set():
                time.sleep(0.001)
                continue
            if self._reader is None:
                try:
                    self._reader = TypedP2pReader.attach(self.cmd_spec.name(self.prefix), self.cmd_spec.reader,
                                                         self.cmd_spec.dtype, exclusive=False, stale_reads=10_000)
                except (SegmentNotFound, ShmError):
                    pass
            acked = False
            if self._reader is not None and self.consuming.is_set():
                view = self._reader.try_read()
                if view is not None:
                    for cmd in self.acks.take(view["ring"]):
                        self.taken.append(cmd)
                        result, message = self.respond(cmd)
                        self.acks.ack(cmd, result, message)
                        acked = True
            self.writer.commit()
            if acked:
                self.wake.post()
            time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._reader is not None:
            self._reader.close()
        self.wake.close()
        self.writer.close()


@contextlib.contextmanager
def running_link(prefix: str) -> Iterator[tuple["ShmLink", dict[str, FakeConsumer]]]:
    """A started gRPC ShmLink (50 Hz) with a FakeConsumer for cu, hal and re, all live and following
    its rings; closed (and the fakes with it) on exit."""
    from grpc_bridge.shm_link import TARGETS, ShmLink

    fakes = {k: FakeConsumer(k, prefix) for k in ("cu", "hal", "re")}
    lk = ShmLink(sample_hz=50.0, prefix=prefix).start()
    try:
        wait_for(lambda: all(lk.source_ok(t)[0] for t in TARGETS), 20, what="the consumers live and following our rings")
        yield lk, fakes
    finally:
        lk.close()
        for f in fakes.values():
            f.close()
