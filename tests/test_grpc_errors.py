"""Error mapping of the gRPC bridge, with the real bridge process and scripted in-process consumers.

The consumers (FakeConsumer) answer with chosen result codes, stop consuming (ring full) or freeze;
the running-system tests (test_grpc_system.py) trigger the mappings the real machine produces.
"""
from __future__ import annotations

import math
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2

from common.consts import CMD_RING_SLOTS
from common.shm.commands import CuCommand, HalCommand, ReCommand, ResultCode
from common.shm.p2p import TypedP2pReader
from common.shm.segments import SEGMENTS
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from grpc_bridge.status_map import RESULT_METADATA_KEY, RESULT_TO_STATUS
from tests.helpers import free_port, shm_entries, unique_prefix, wait_for
from tests.grpc_support import FakeConsumer, Stubs, health_status, make_config, rpc_error, start_bridge, wait_serving

pytestmark = pytest.mark.timeout(120)


class Scripted:
    """respond() for FakeConsumer: OK unless a code is set for the next commands."""

    def __init__(self) -> None:
        self.result = ResultCode.OK
        self.message = "done"

    def __call__(self, cmd) -> tuple[ResultCode, str]:  # noqa: ANN001
        return self.result, self.message


@pytest.fixture(scope="module")
def rig(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    port = free_port()
    cfg = make_config(tmp_path_factory.mktemp("grpc-errors") / "config", port, command_timeout_s=5.0)
    scripts = {k: Scripted() for k in ("cu", "hal", "re")}
    fakes = {k: FakeConsumer(k, shm_prefix, scripts[k]) for k in ("cu", "hal", "re")}
    bridge = start_bridge(shm_prefix, cfg)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes"):
            wait_serving(channel, svc, bridge)
        yield type("Rig", (), dict(stubs=Stubs(channel), fakes=fakes, scripts=scripts, bridge=bridge,
                                   channel=channel, prefix=shm_prefix))
    finally:
        channel.close()
        assert bridge.stop() == 0, bridge.output()
        # A clean exit unlinks the bridge's own segments (rpc_cu, rpc_hal, rpc_re and their locks).
        assert [n for n in shm_entries(shm_prefix) if "_rpc_" in n] == []
        for f in fakes.values():
            f.close()


def result_of(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get(RESULT_METADATA_KEY)


def test_accepted_command_carries_the_ack(rig) -> None:  # noqa: ANN001
    reply = rig.stubs.machine.MoveTo(machine_pb2.MoveToRequest(axis=1, position=100.0, velocity=50.0), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK and reply.message == "done" and reply.request_id > 0
    cmd = rig.fakes["cu"].taken[-1]
    assert (cmd.code, cmd.axis, cmd.args[:3]) == (CuCommand.MOVE_ABSOLUTE, 1, (100.0, 50.0, 0.0))


@pytest.mark.parametrize("result", [r for r in ResultCode if r != ResultCode.OK], ids=lambda r: r.name)
def test_every_result_code_maps_to_its_status(rig, result: ResultCode) -> None:  # noqa: ANN001
    rig.scripts["cu"].result, rig.scripts["cu"].message = result, f"refused: {result.name}"
    try:
        err = rpc_error(rig.stubs.machine.EnableAxis, machine_pb2.AxisRequest(axis=2), timeout=5)
    finally:
        rig.scripts["cu"].result = ResultCode.OK
    assert err.code() == RESULT_TO_STATUS[result]
    assert err.details() == f"refused: {result.name}"
    assert result_of(err) == result.name


def test_locked_is_aborted_and_role_owned_is_permission_denied(rig) -> None:  # noqa: ANN001
    assert RESULT_TO_STATUS[ResultCode.LOCKED] == grpc.StatusCode.ABORTED
    rig.scripts["hal"].result, rig.scripts["hal"].message = ResultCode.IO_ROLE_OWNED, "pin owned by the CU"
    try:
        err = rpc_error(rig.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=10, value=True), timeout=5)
    finally:
        rig.scripts["hal"].result = ResultCode.OK
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_recipe_not_found_from_the_executor(rig) -> None:  # noqa: ANN001
    rig.scripts["re"].result, rig.scripts["re"].message = ResultCode.NOT_FOUND, "no recipe 'nope'"
    try:
        err = rpc_error(rig.stubs.recipes.LoadRecipe, recipes_pb2.LoadRecipeRequest(name="nope"), timeout=5)
    finally:
        rig.scripts["re"].result = ResultCode.OK
    assert err.code() == grpc.StatusCode.NOT_FOUND
    cmd = rig.fakes["re"].taken[-1]
    assert (cmd.code, cmd.text) == (ReCommand.LOAD, "nope")


INVALID = [
    ("MoveTo axis 0", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=0, position=1.0)),
    ("MoveTo unknown axis", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=9, position=1.0)),
    ("MoveTo NaN", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=1, position=math.nan)),
    ("MoveTo inf velocity", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=1, position=1.0, velocity=math.inf)),
    ("MoveTo beyond max_pos", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=1, position=1e6)),
    ("MoveTo below min_pos", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=3, position=1.0)),
    ("MoveTo above max_velocity", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=1, position=1.0, velocity=1e6)),
    ("MoveTo negative velocity", "machine", "MoveTo", machine_pb2.MoveToRequest(axis=1, position=1.0, velocity=-1)),
    ("MoveTo above max_acceleration", "machine", "MoveTo",
     machine_pb2.MoveToRequest(axis=3, position=-1.0, acceleration=1e9)),
    ("Jog above max_velocity", "machine", "Jog",
     machine_pb2.JogRequest(axis=2, direction=machine_pb2.JOG_DIRECTION_POSITIVE, velocity=1e6)),
    ("Jog bad direction", "machine", "Jog", machine_pb2.JogRequest(axis=2, direction=7, velocity=1)),
    ("EnableAxis axis 0", "machine", "EnableAxis", machine_pb2.AxisRequest(axis=0)),
    ("Home unknown axis", "machine", "Home", machine_pb2.AxisRequest(axis=64)),
    ("StopAxis unknown axis", "machine", "StopAxis", machine_pb2.AxisRequest(axis=5)),
    ("SetMode bad mode", "machine", "SetMode", machine_pb2.SetModeRequest(axis=1, mode=42)),
    ("SetMachineState bad state", "machine", "SetMachineState", machine_pb2.SetMachineStateRequest(state=99)),
    ("DO pin out of range", "io", "SetDigitalOutput", io_pb2.SetDigitalOutputRequest(pin=5000, value=True)),
    ("DO pin not in io.toml", "io", "SetDigitalOutput", io_pb2.SetDigitalOutputRequest(pin=500, value=True)),
    ("AO pin not in io.toml", "io", "SetAnalogOutput", io_pb2.SetAnalogOutputRequest(pin=7, value=1.0)),
    ("AO above max", "io", "SetAnalogOutput", io_pb2.SetAnalogOutputRequest(pin=0, value=6001.0)),
    ("AO NaN", "io", "SetAnalogOutput", io_pb2.SetAnalogOutputRequest(pin=0, value=math.nan)),
    ("recipe name empty", "recipes", "LoadRecipe", recipes_pb2.LoadRecipeRequest(name="")),
    ("recipe name with a path", "recipes", "LoadRecipe", recipes_pb2.LoadRecipeRequest(name="../etc/passwd")),
    ("recipe name too long", "recipes", "LoadRecipe", recipes_pb2.LoadRecipeRequest(name="r" * 40)),
]


@pytest.mark.parametrize("stub,method,request_", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_values_are_refused_before_anything_is_written(rig, stub: str, method: str, request_) -> None:  # noqa: ANN001
    counts = {k: len(f.taken) for k, f in rig.fakes.items()}
    err = rpc_error(getattr(getattr(rig.stubs, stub), method), request_, timeout=5)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details()
    assert {k: len(f.taken) for k, f in rig.fakes.items()} == counts


def test_role_pin_is_refused_before_anything_is_written(rig) -> None:  # noqa: ANN001
    before = len(rig.fakes["hal"].taken)
    err = rpc_error(rig.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=0, value=True), timeout=5)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "BrakeOut3" in err.details()
    assert len(rig.fakes["hal"].taken) == before


def test_watch_rate_must_be_finite_and_not_negative(rig) -> None:  # noqa: ANN001
    for rate in (-1.0, math.nan, math.inf):
        stream = rig.stubs.machine.WatchStatus(types_pb2.WatchRequest(rate_hz=rate), timeout=5)
        err = rpc_error(next, stream)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_ring_full_is_resource_exhausted_and_recovers(rig) -> None:  # noqa: ANN001
    hal = rig.fakes["hal"]
    hal.consuming.clear()
    try:
        for _ in range(CMD_RING_SLOTS):  # each waits for its ack until its short deadline
            err = rpc_error(rig.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=20, value=True),
                            timeout=0.1)
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        err = rpc_error(rig.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=20, value=True), timeout=5)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert result_of(err) == ResultCode.BUSY.name
    finally:
        hal.consuming.set()
    # Once the HAL has taken the 16 (its ack segment says so), the next command goes through even if
    # the bridge's last tick predates that (it re-reads the acks when the ring looks full).
    wait_for(lambda: int(read_segment(rig, "hal_rpc")["acks"]["consumed"]) == rig_ring_count(rig, "hal"),
             what="the HAL consumed the ring")
    reply = rig.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=20, value=False), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK
    assert hal.taken[-1].code == HalCommand.SET_DO and hal.taken[-1].pin == 20 and hal.taken[-1].args[0] == 0.0


def test_stale_consumer_is_unavailable_at_once(rig) -> None:  # noqa: ANN001
    cu = rig.fakes["cu"]
    cu.frozen.set()
    try:
        def refused() -> grpc.RpcError | None:
            try:
                rig.stubs.machine.Home(machine_pb2.AxisRequest(axis=1), timeout=5)
            except grpc.RpcError as e:
                return e
            return None
        err = wait_for(refused, timeout=5, what="Home refused while the CU is frozen")
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        assert "stale" in err.details()
        wait_for(lambda: health_status(rig.channel, "evo.v1.Machine") == health_pb2.HealthCheckResponse.NOT_SERVING,
                 what="Machine NOT_SERVING")
    finally:
        cu.frozen.clear()
    wait_serving(rig.channel, "evo.v1.Machine")
    assert rig.stubs.machine.Home(machine_pb2.AxisRequest(axis=1), timeout=5).result == types_pb2.RESULT_CODE_OK


def test_a_second_bridge_for_the_instance_refuses_to_start(rig, tmp_path) -> None:  # noqa: ANN001
    cfg = make_config(tmp_path / "config", free_port())
    second = start_bridge(rig.prefix, cfg)
    try:
        second.proc.wait(30)
    finally:
        second.stop()
    assert second.proc.returncode == 1
    assert "another gRPC bridge runs for this instance" in second.output()
    assert health_status(rig.channel) == health_pb2.HealthCheckResponse.SERVING  # the first one carries on


def test_unreadable_tls_files_stop_the_start_cleanly(tmp_path) -> None:  # noqa: ANN001
    prefix = unique_prefix("gtls")
    cfg = make_config(tmp_path / "config", free_port(), tls_cert="missing-cert.pem", tls_key="missing-key.pem")
    bridge = start_bridge(prefix, cfg)
    try:
        bridge.proc.wait(30)
    finally:
        bridge.stop()
    assert bridge.proc.returncode == 1
    assert "cannot start" in bridge.output() and "missing-key.pem" in bridge.output()
    assert shm_entries(prefix) == []


def test_consumer_gone_fails_pending_and_new_commands_quickly(rig) -> None:  # noqa: ANN001
    re = rig.fakes["re"]
    re.consuming.clear()
    results: list[grpc.RpcError] = []
    t = threading.Thread(target=lambda: results.append(
        rpc_error(rig.stubs.recipes.StartRecipe, recipes_pb2.StartRecipeRequest(), timeout=30)))
    t.start()
    wait_for(lambda: re.writer.local["acks"]["consumed"] < rig_ring_count(rig, "re"), what="command pending")
    re.close()  # the executor exits with the command pending
    t.join(30)
    assert results and results[0].code() == grpc.StatusCode.UNAVAILABLE, results
    err = rpc_error(rig.stubs.recipes.PauseRecipe, recipes_pb2.PauseRecipeRequest(), timeout=30)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "recipe executor is not running" in err.details()
    wait_for(lambda: health_status(rig.channel, "evo.v1.Recipes") == health_pb2.HealthCheckResponse.NOT_SERVING,
             what="Recipes NOT_SERVING")
    assert rig.bridge.alive()


def read_segment(rig, key: str):  # noqa: ANN001, ANN201
    """A committed copy of a segment, read as a tool does (non-exclusive; retried on contention)."""
    spec = SEGMENTS[key]
    with TypedP2pReader.attach(spec.name(rig.prefix), spec.reader, spec.dtype, exclusive=False,
                               stale_reads=1 << 30) as r:
        return wait_for(lambda: r.try_read(), what=f"a consistent read of {key}").copy()


def rig_ring_count(rig, key: str) -> int:  # noqa: ANN001
    return int(read_segment(rig, f"rpc_{key}")["ring"]["count"])


def test_a_caller_cannot_forge_log_lines(rig):
    """Issue 16 (log injection): a newline or NUL in a caller's string is escaped in the log, and a
    1 MB reason is capped — one line per logged command."""
    forged = "pressed\nERROR grpc_bridge: FORGED LINE\x00"
    rig.stubs.machine.EmergencyStop(machine_pb2.EmergencyStopRequest(reason=forged), timeout=5)
    rig.stubs.machine.EmergencyStop(machine_pb2.EmergencyStopRequest(reason="x" * (1 << 20)), timeout=10)
    out = wait_for(lambda: "more characters" in (o := rig.bridge.output()) and o, 10,
                   what="the capped 1 MB reason in the log")
    assert "FORGED LINE" in out  # logged, but escaped on its own line:
    assert not any(line.startswith("ERROR grpc_bridge: FORGED") for line in out.splitlines())
    assert "pressed\\nERROR" in out and "\\x00" in out
    assert max(len(line) for line in out.splitlines()) < 4000


@pytest.mark.parametrize("method,data", [
    ("/evo.v1.Machine/MoveTo", b"\xff\xff\xff\xff\xff"),  # garbage
    ("/evo.v1.Machine/EmergencyStop", b"\x0a\x03\xff\xfe\xfd"),  # field 1 (string) with invalid UTF-8
    ("/evo.v1.Recipes/LoadRecipe", b"\x0a\x10ab"),  # truncated: a 16-byte string with 2 bytes
    ("/evo.v1.Machine/WatchStatus", b"\xff\x00"),  # a server stream
])
def test_undecodable_request_bytes_are_invalid_argument_and_write_nothing(rig, method, data):
    """Issue 16: undecodable bytes (garbage, invalid UTF-8 in a string field) are INVALID_ARGUMENT with the
    decoder's text — not UNKNOWN — and nothing reaches a consumer."""
    before = {k: len(f.taken) for k, f in rig.fakes.items()}
    stream = method.endswith("WatchStatus")
    call = (rig.channel.unary_stream if stream else rig.channel.unary_unary)(method)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as ei:
        r = call(data, timeout=5)
        if stream:
            next(iter(r))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ei.value.code(), ei.value.details())
    assert "undecodable request" in ei.value.details()
    assert {k: len(f.taken) for k, f in rig.fakes.items()} == before  # nothing reached a consumer


def test_values_of_a_source_that_is_not_live_are_flagged_not_served_as_current(rig):
    """Issue 16: GetStatus while the CU is gone returned OK with its last values marked only by cuOk=false.
    Now every value says whether its source is live: MachineStatus.cu_status / hal_status give the
    reason, AxisStatus.live and each I/O point's live flag are false."""
    m = rig.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5)
    assert m.cu_status == "live" and m.hal_status == "live" and all(a.live for a in m.axes)
    for key in ("cu", "hal"):
        rig.fakes[key].frozen.set()  # its heartbeat stops: stale
    try:
        m = wait_for(lambda: (s := rig.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5))
                     and not s.cu_ok and not s.hal_ok and s, 15, what="both sources stale")
        assert m.cu_status != "live" and m.cu_status and m.hal_status != "live"
        assert m.axes and not any(a.live for a in m.axes)
        io = rig.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        points = [*io.digital_inputs, *io.digital_outputs, *io.analog_inputs, *io.analog_outputs]
        assert points and not any(p.live for p in points) and not io.hal_ok
    finally:
        for key in ("cu", "hal"):
            rig.fakes[key].frozen.clear()
    m = wait_for(lambda: (s := rig.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5))
                 and s.cu_ok and s.hal_ok and s, 15, what="live again")
    assert m.cu_status == "live" and all(a.live for a in m.axes)
    io = rig.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
    assert all(p.live for p in io.digital_inputs)
