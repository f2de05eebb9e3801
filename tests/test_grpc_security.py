"""gRPC bridge security: TLS with a self-signed certificate made here, bearer tokens, the two roles.

The bridge is a real process; scripted consumers stand in for the machine (commands are acked).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.protos.evo.v1 import supervisor_pb2, supervisor_pb2_grpc
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from tests.helpers import free_port, wait_for
from tests.grpc_support import FakeConsumer, Stubs, health_status, make_config, rpc_error, start_bridge

pytestmark = pytest.mark.timeout(120)

VIEWER, OPERATOR = "viewer-token-1", "operator-token-1"


def self_signed(dest: Path) -> tuple[Path, Path]:
    key, cert = dest / "key.pem", dest / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return key, cert


@pytest.fixture(scope="module")
def secure(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("grpc-security")
    key, cert = self_signed(tmp)
    port = free_port()
    cfg = make_config(tmp / "config", port, viewer_tokens=(VIEWER,), operator_tokens=(OPERATOR,),
                      tls_cert=str(cert), tls_key="../key.pem", run_dir=str(tmp / "run"))
    fakes = {k: FakeConsumer(k, shm_prefix) for k in ("cu", "hal", "re")}
    bridge = start_bridge(shm_prefix, cfg)
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    channel = grpc.secure_channel(f"localhost:{port}", creds)
    try:
        wait_for(lambda: bridge.alive() and health_status(channel, "evo.v1.Io") == health_pb2.HealthCheckResponse.SERVING,
                 timeout=20, interval=0.05, what="bridge serving over TLS")
        yield type("Secure", (), dict(channel=channel, stubs=Stubs(channel), fakes=fakes, bridge=bridge, port=port))
    finally:
        channel.close()
        assert bridge.stop() == 0, bridge.output()
        for f in fakes.values():
            f.close()


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_plaintext_client_cannot_talk_to_the_tls_port(secure) -> None:  # noqa: ANN001
    with grpc.insecure_channel(f"127.0.0.1:{secure.port}") as plain:
        err = rpc_error(Stubs(plain).machine.GetStatus, machine_pb2.GetStatusRequest(), metadata=md(VIEWER), timeout=3)
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_health_and_reflection_need_no_token(secure) -> None:  # noqa: ANN001
    assert health_status(secure.channel) == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(secure.channel)
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Supervisor"} <= names


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer nope"),), (("authorization", f"Basic {OPERATOR}"),)],
                         ids=["missing", "unknown", "not-bearer"])
def test_without_a_valid_token_every_call_is_unauthenticated(secure, metadata) -> None:  # noqa: ANN001
    before = len(secure.fakes["hal"].taken)
    for call, req in [(secure.stubs.machine.GetStatus, machine_pb2.GetStatusRequest()),
                      (secure.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=10, value=True)),
                      (secure.stubs.recipes.ListRecipes, recipes_pb2.ListRecipesRequest())]:
        err = rpc_error(call, req, metadata=metadata, timeout=5)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    stream = secure.stubs.machine.WatchStatus(types_pb2.WatchRequest(rate_hz=10), metadata=metadata, timeout=5)
    assert rpc_error(next, stream).code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(secure.fakes["hal"].taken) == before


def test_viewer_reads_and_watches_but_cannot_command(secure) -> None:  # noqa: ANN001
    status = secure.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), metadata=md(VIEWER), timeout=5)
    assert [a.id for a in status.axes] == [1, 2, 3, 4]
    stream = secure.stubs.io.WatchIo(types_pb2.WatchRequest(rate_hz=20), metadata=md(VIEWER), timeout=5)
    assert next(stream).hal_ok
    stream.cancel()
    before = {k: len(f.taken) for k, f in secure.fakes.items()}
    for call, req in [(secure.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=10, value=True)),
                      (secure.stubs.machine.MoveTo, machine_pb2.MoveToRequest(axis=1, position=10)),
                      (secure.stubs.recipes.StartRecipe, recipes_pb2.StartRecipeRequest())]:
        err = rpc_error(call, req, metadata=md(VIEWER), timeout=5)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
        assert "operator" in err.details()
    sup = supervisor_pb2_grpc.SupervisorStub(secure.channel)
    err = rpc_error(sup.RestartModule, supervisor_pb2.ModuleRequest(name="hal"), metadata=md(VIEWER), timeout=5)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert {k: len(f.taken) for k, f in secure.fakes.items()} == before
    wait_for(lambda: "Io.SetDigitalOutput by ipv4:127.0.0.1" in secure.bridge.output()
             and "(viewer) args {pin=10 value=True} -> PERMISSION_DENIED" in secure.bridge.output(),
             what="the refused command in the bridge log")


def test_operator_commands_and_the_log_names_the_caller(secure) -> None:  # noqa: ANN001
    reply = secure.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=21, value=True),
                                             metadata=md(OPERATOR), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK
    assert secure.fakes["hal"].taken[-1].pin == 21
    wait_for(lambda: f"command Io.SetDigitalOutput #{reply.request_id} by ipv4:127.0.0.1" in secure.bridge.output()
             and "(operator) args {pin=21 value=True} -> OK" in secure.bridge.output(),
             what="the command in the bridge log")


def test_supervisor_without_a_watchdog_is_unavailable_with_a_reason(secure) -> None:  # noqa: ANN001
    sup = supervisor_pb2_grpc.SupervisorStub(secure.channel)
    err = rpc_error(sup.ListModules, supervisor_pb2.ListModulesRequest(), metadata=md(VIEWER), timeout=5)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "no watchdog running" in err.details() and "supervisor.sock" in err.details()
    assert health_status(secure.channel, "evo.v1.Supervisor") == health_pb2.HealthCheckResponse.NOT_SERVING
