"""Issue 17, the HMI's error paths: every command result to HTTP like gRPC, a port in use, bad [hmi] config.

The bridge is a real process; scripted consumers (FakeConsumer) answer with the result code under test.
"""
from __future__ import annotations

import re
import socket
import time

import grpc
import pytest

from common.config import load_config
from common.config.errors import ConfigError
from common.consts import CMD_RING_SLOTS
from common.shm.commands import ResultCode
from grpc_bridge.protos.evo.v1 import machine_pb2
from grpc_bridge.status_map import RESULT_METADATA_KEY, RESULT_TO_STATUS, STATUS_TO_HTTP
from tests.grpc_support import FakeConsumer, Stubs, health_status, start_bridge, wait_serving
from tests.helpers import free_port, wait_for
from tests.hmi_support import hmi_config, http

pytestmark = pytest.mark.timeout(120)

NOT_SERVING = 2  # grpc.health.v1 HealthCheckResponse.NOT_SERVING


class Scripted:
    def __init__(self) -> None:
        self.result, self.message = ResultCode.OK, "done"

    def __call__(self, cmd) -> tuple[ResultCode, str]:  # noqa: ANN001
        return self.result, self.message


@pytest.fixture(scope="module")
def rig(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("hmi-errors")
    gp, hp = free_port(), free_port()
    cfg = hmi_config(tmp / "config", gp, hp, command_timeout_s=5.0)
    scripts = {k: Scripted() for k in ("cu", "hal", "re")}
    fakes = {k: FakeConsumer(k, shm_prefix, scripts[k]) for k in ("cu", "hal", "re")}
    bridge = start_bridge(shm_prefix, cfg)
    channel = grpc.insecure_channel(f"127.0.0.1:{gp}")
    try:
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Hmi"):
            wait_serving(channel, svc, bridge)
        yield type("Rig", (), dict(stubs=Stubs(channel), fakes=fakes, scripts=scripts, bridge=bridge,
                                   base=f"http://127.0.0.1:{hp}/api/v1", tmp=tmp))
    finally:
        channel.close()
        assert bridge.stop() == 0, bridge.output()
        for f in fakes.values():
            f.close()


@pytest.mark.parametrize("result", [r for r in ResultCode if r != ResultCode.OK], ids=lambda r: r.name)
def test_every_ack_result_maps_like_grpc(rig, result: ResultCode) -> None:  # noqa: ANN001
    """Statuses mapped to HTTP codes with the gRPC code and message in the body (same as the gRPC call)."""
    rig.scripts["cu"].result, rig.scripts["cu"].message = result, f"scripted {result.name}"
    try:
        status, body = http("POST", f"{rig.base}/evo.v1.Machine/EnableAxis", {"axis": 1})
        try:
            rig.stubs.machine.EnableAxis(machine_pb2.AxisRequest(axis=1), timeout=5)
            raise AssertionError("gRPC accepted it")
        except grpc.RpcError as e:
            g = (e.code().name, e.details(), dict(e.trailing_metadata() or ()).get(RESULT_METADATA_KEY))
    finally:
        rig.scripts["cu"].result = ResultCode.OK
    code = RESULT_TO_STATUS[result]
    assert (body["code"], body["message"], body["result"]) == g == (code.name, f"scripted {result.name}", result.name)
    assert status == STATUS_TO_HTTP[code] and body["grpc_code"] == code.value[0]


def test_full_ring_is_resource_exhausted_429(rig) -> None:  # noqa: ANN001
    """A full command ring says so (RESOURCE_EXHAUSTED, HTTP 429), never drops silently."""
    cu = rig.fakes["cu"]
    cu.consuming.clear()
    try:
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(CMD_RING_SLOTS + 4) as pool:
            replies = list(pool.map(lambda i: http("POST", f"{rig.base}/evo.v1.Machine/StopAxis", {"axis": 0},
                                                   timeout=30), range(CMD_RING_SLOTS + 4)))
            time.sleep(0.1)
    finally:
        cu.consuming.set()
    busy = [b for s, b in replies if s == 429]
    assert len(busy) >= 4 and all(b["code"] == "RESOURCE_EXHAUSTED" and "ring full" in b["message"] for b in busy), replies
    # the ones that got a slot wait for their ack: answered once consumed, or at the deadline (504)
    assert all(s in (200, 429, 504) for s, _ in replies), replies


def test_consumer_gone_is_unavailable_503_at_once(rig, shm_prefix: str) -> None:  # noqa: ANN001
    re = rig.fakes["re"]
    re.close()
    try:
        t0 = time.monotonic()
        status, body = http("POST", f"{rig.base}/evo.v1.Recipes/StartRecipe", {})
        assert status == 503 and body["code"] == "UNAVAILABLE" and "recipe executor" in body["message"], body
        assert time.monotonic() - t0 < 5.0
    finally:
        rig.fakes["re"] = FakeConsumer("re", shm_prefix, rig.scripts["re"])


def test_hmi_port_in_use_is_reported_and_retried_while_grpc_serves(rig, shm_prefix: str) -> None:  # noqa: ANN001
    """A port in use: an error naming the address, health evo.v1.Hmi NOT_SERVING, gRPC serving; once the
    port is free the page is served."""
    gp = free_port()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    hp = squatter.getsockname()[1]
    cfg = hmi_config(rig.tmp / "config-port", gp, hp)
    bridge = start_bridge(shm_prefix + "p", cfg)  # its own segments: another instance
    channel = grpc.insecure_channel(f"127.0.0.1:{gp}")
    try:
        wait_for(lambda: bridge.alive() and health_status(channel) == 1, timeout=30, interval=0.05, what="gRPC serving")
        wait_for(lambda: health_status(channel, "evo.v1.Hmi") == NOT_SERVING, timeout=10, what="Hmi NOT_SERVING")
        wait_for(lambda: f"cannot listen on 127.0.0.1:{hp} ([hmi] bind/port): in use by another program" in bridge.output(),
                 timeout=10, what="the error in the log")
        assert bridge.output().count(f"cannot listen on 127.0.0.1:{hp}") == 1  # said once, not per retry
        squatter.close()
        wait_for(lambda: health_status(channel, "evo.v1.Hmi") == 1, timeout=20, interval=0.1, what="Hmi SERVING once free")
        status, _ = http("GET", f"http://127.0.0.1:{hp}/api/v1/info")
        assert status == 200
    finally:
        squatter.close()
        channel.close()
        assert bridge.stop() == 0, bridge.output()
        from tests.helpers import remove_shm
        remove_shm(shm_prefix + "p")


@pytest.mark.parametrize("line,field,words", [
    ("port = {grpc_port}", "port", "also [grpc] port"),
    ("default_live_hz = 50.0", "default_live_hz", "exceeds max_live_hz"),
    ('bind = ""', "bind", "must not be empty"),
    ("max_live_hz = 0.0", "max_live_hz", "out of range"),
    ("refresh = 1", "refresh", "unknown field"),
], ids=["port-clash", "default-above-max", "empty-bind", "rate-bound", "unknown-field"])
def test_bad_hmi_config_is_an_error_with_file_section_field(tmp_path, line: str, field: str, words: str) -> None:  # noqa: ANN001
    """Bad [hmi] config starts nothing: the error names config.toml, [hmi] and the field."""
    gp = free_port()
    cfg = hmi_config(tmp_path / "config", gp, free_port())
    path = cfg / "config.toml"
    values = {"enabled": "true", "bind": '"127.0.0.1"', "port": str(free_port()), "max_live_hz": "20.0",
              "default_live_hz": "10.0"}
    key, _, value = line.format(grpc_port=gp).partition(" = ")
    values[key] = value
    section = "[hmi]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    text, n = re.subn(r"(?ms)^\[hmi\]\n.*?(?=^\[)", section + "\n", path.read_text())
    assert n == 1
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    errors = exc.value.errors
    assert any(e.file == "config.toml" and e.section == "hmi" and e.field == field and words in str(e) for e in errors), \
        [str(e) for e in errors]
