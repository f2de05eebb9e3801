"""Issue 17, the HTTP/JSON API and the live WebSocket of the HMI against the running machine.

HAL, CU, RE and the bridge are real processes (no watchdog: the Supervisor is UNAVAILABLE here). Every
endpoint's good path and its refusals; each refusal is compared with the same call over gRPC.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import grpc
import pytest

from common.config import load_config
from common.shm.p2p import TypedP2pReader, read_header
from common.shm.segments import SEGMENTS
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from tests.grpc_support import Stubs, wait_serving
from tests.helpers import ModuleProcess, free_port, wait_for
from tests.hmi_support import hmi_config, http

pytestmark = pytest.mark.timeout(180)

VIEWER, OPERATOR = "api-viewer", "api-operator"
MD = (("authorization", f"Bearer {OPERATOR}"),)
MODULES = ("hal", "control_unit", "recipe_executor", "grpc_bridge")


class Rig:
    def __init__(self, prefix: str, cfg_dir, grpc_port: int, hmi_port: int) -> None:  # noqa: ANN001
        self.prefix = prefix
        self.cfg = load_config(cfg_dir)
        self.base = f"http://127.0.0.1:{hmi_port}/api/v1"
        self.ws_url = f"http://127.0.0.1:{hmi_port}/api/v1/live"
        self.procs = {m: ModuleProcess(m, prefix, ["--config", str(cfg_dir)]) for m in MODULES}
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stubs = Stubs(self.channel)

    def post(self, method: str, body: object = None, token: str | None = OPERATOR) -> tuple[int, object]:
        return http("POST", f"{self.base}/{method}", {} if body is None else body, token)

    def get(self, path: str, token: str | None = VIEWER) -> tuple[int, object]:
        return http("GET", f"{self.base}/{path}", None, token)

    def status(self) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), metadata=MD, timeout=5)

    def ring_count(self, key: str) -> int:
        spec = SEGMENTS[key]
        with TypedP2pReader.attach(spec.name(self.prefix), spec.reader, spec.dtype, exclusive=False,
                                   stale_reads=1 << 30) as r:
            return int(wait_for(r.try_read, what=f"a read of {key}")["ring"]["count"])


@pytest.fixture(scope="module")
def rig(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("hmi-api")
    gp, hp = free_port(), free_port()
    cfg = hmi_config(tmp / "config", gp, hp, viewer_tokens=(VIEWER,), operator_tokens=(OPERATOR,),
                     run_dir=str(tmp / "run"), max_live_hz=20.0, default_live_hz=10.0)
    r = Rig(shm_prefix, cfg, gp, hp)
    try:
        r.procs["hal"].start()
        wait_for(lambda: read_header(SEGMENTS["hal_cu"].name(shm_prefix)).heartbeat > 100, timeout=30, what="HAL cycling")
        for name in MODULES[1:]:
            r.procs[name].start()
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Hmi"):
            wait_serving(r.channel, svc, r.procs["grpc_bridge"], timeout=60)
        wait_for(lambda: r.status().machine_state == types_pb2.MACHINE_STATE_IDLE, timeout=30, what="machine IDLE")
        yield r
    finally:
        r.channel.close()
        codes = {name: r.procs[name].stop() for name in reversed(MODULES)}
        assert codes["grpc_bridge"] == 0, r.procs["grpc_bridge"].output()


def ok(reply: tuple[int, object]) -> dict:
    status, body = reply
    assert status == 200, reply
    assert isinstance(body, dict)
    return body


def grpc_refusal(fn, request) -> tuple[str, str]:  # noqa: ANN001
    try:
        fn(request, metadata=MD, timeout=5)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    raise AssertionError("the gRPC call did not fail")


# -- session, reads ----------------------------------------------------------------------------------------
def test_info_is_public_and_the_session_needs_a_valid_token(rig: Rig) -> None:
    """Roles: /info tells a page a token is needed; /session answers only a viewer or operator token."""
    info = ok(http("GET", f"{rig.base}/info"))
    assert info["auth_required"] is True and info["live_max_hz"] == 20.0 and info["live_default_hz"] == 10.0
    assert rig.get("session", token=None) == (401, {"code": "UNAUTHENTICATED", "grpc_code": 16, "result": "",
                                                     "message": "missing 'authorization: Bearer <token>' metadata"})
    status, body = rig.get("session", token="nope")
    assert status == 401 and body["message"] == "unknown bearer token"
    viewer = ok(rig.get("session", token=VIEWER))
    assert viewer["role"] == "viewer" and viewer["machine"] == rig.cfg.machine.name
    assert [(a["id"], a["name"], a["unit"]) for a in viewer["axes"]] == [(1, "X", "mm"), (2, "Y", "mm"), (3, "Z", "mm"),
                                                                         (4, "Spindle", "deg")]
    assert ok(rig.get("session", token=OPERATOR))["role"] == "operator"


def test_reads_by_get_and_post_equal_the_grpc_replies(rig: Rig) -> None:
    """HTTP/JSON good path of every read: GetStatus, GetIo, GetRecipeStatus, ListRecipes (GET and POST)."""
    st = ok(rig.get("evo.v1.Machine/GetStatus"))
    assert [(a["id"], a["name"]) for a in st["axes"]] == [(a.id, a.name) for a in rig.cfg.axes]
    assert st["machine_state"] == "MACHINE_STATE_IDLE" and st["cu_ok"] is True and st["hal_ok"] is True
    assert len(st["cu_cycle"]["jitter_hist"]) == 32 and st["hal_cycle"]["cycle_count"] > 0
    assert st["hal_driver_state"] == "DRIVER_STATE_READY" and "drive_ready" in st["axes"][0]
    io = ok(http("POST", f"{rig.base}/evo.v1.Io/GetIo", {}, VIEWER))
    g = rig.stubs.io.GetIo(io_pb2.GetIoRequest(), metadata=MD, timeout=5)
    assert [(p["pin"], p["name"], p["role"]) for p in io["digital_outputs"]] == [(p.pin, p.name, p.role) for p in g.digital_outputs]
    assert [p["unit"] for p in io["analog_inputs"]] == [p.unit for p in g.analog_inputs]
    rec = ok(rig.get("evo.v1.Recipes/GetRecipeStatus"))
    assert rec["re_ok"] is True and rec["state"].startswith("RE_STATE_")
    listing = ok(rig.get("evo.v1.Recipes/ListRecipes"))
    assert {"home_all", "demo_cycle"} <= {r["name"] for r in listing["recipes"]}
    assert listing == json.loads(json.dumps(listing))  # plain JSON, nothing else


# -- commands: good paths ----------------------------------------------------------------------------------
def _cmd(rig: Rig, method: str, body: dict | None = None) -> dict:
    for _ in range(3):  # a loaded 2-core box may see the CU stale (> 0.2 s) for a moment: UNAVAILABLE, ask again
        answer = rig.post(method, body)
        if answer[0] != 503:
            break
    reply = ok(answer)
    assert reply["result"] == "RESULT_CODE_OK" and reply["request_id"] > 0 and reply["round_trip_ms"] >= 0, reply
    return reply


def test_machine_commands_good_path(rig: Rig) -> None:
    """Every Machine command over HTTP/JSON, its effect checked over gRPC."""
    axis = 2
    _cmd(rig, "evo.v1.Machine/AllowManualMode", {"allow": True})
    wait_for(lambda: rig.status().manual_allowed, what="manual allowed")
    _cmd(rig, "evo.v1.Machine/SetMachineState", {"state": "MACHINE_STATE_MANUAL"})
    wait_for(lambda: rig.status().machine_state == types_pb2.MACHINE_STATE_MANUAL, what="MANUAL")
    _cmd(rig, "evo.v1.Machine/SetMachineState", {"state": "MACHINE_STATE_IDLE"})
    wait_for(lambda: rig.status().machine_state == types_pb2.MACHINE_STATE_IDLE, what="IDLE")
    _cmd(rig, "evo.v1.Machine/AllowManualMode", {"allow": False})
    _cmd(rig, "evo.v1.Machine/SetMode", {"axis": axis, "mode": "OPERATIONAL_MODE_POSITION"})
    _cmd(rig, "evo.v1.Machine/EnableAxis", {"axis": axis})
    wait_for(lambda: rig.status().axes[axis - 1].power in (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION),
             timeout=15, what="axis powered")
    start = rig.status().axes[axis - 1].position
    target = start + 3.0 if start + 3.0 <= 400 else start - 3.0
    _cmd(rig, "evo.v1.Machine/MoveTo", {"axis": axis, "position": target, "velocity": 10})
    # The CU took the move: its target, and the axis on its way (arrival is test_grpc_system's).
    wait_for(lambda: (a := rig.status().axes[axis - 1]).target_position == target and abs(a.position - start) > 0.5,
             timeout=30, interval=0.05, what="axis moving to the target")
    _cmd(rig, "evo.v1.Machine/Jog", {"axis": axis, "direction": "JOG_DIRECTION_POSITIVE", "velocity": 5})
    wait_for(lambda: rig.status().axes[axis - 1].velocity > 0, timeout=30, what="jogging")
    _cmd(rig, "evo.v1.Machine/Jog", {"axis": axis, "direction": "JOG_DIRECTION_STOP"})
    _cmd(rig, "evo.v1.Machine/StopAxis", {"axis": axis})
    wait_for(lambda: rig.status().axes[axis - 1].motion == types_pb2.MOTION_STATE_STANDSTILL, timeout=30, what="stopped")
    _cmd(rig, "evo.v1.Machine/AcquireAxis", {"axis": axis})
    wait_for(lambda: rig.status().axes[axis - 1].lock_source == types_pb2.COMMAND_SOURCE_RPC, what="locked by us")
    _cmd(rig, "evo.v1.Machine/ReleaseAxis", {"axis": 0})
    wait_for(lambda: rig.status().axes[axis - 1].lock_source == types_pb2.COMMAND_SOURCE_NONE, what="released")
    _cmd(rig, "evo.v1.Machine/Home", {"axis": axis})
    wait_for(lambda: rig.status().axes[axis - 1].motion == types_pb2.MOTION_STATE_HOMING
             or rig.status().axes[axis - 1].referenced, timeout=10, what="homing")
    _cmd(rig, "evo.v1.Machine/StopAxis", {"axis": 0})
    _cmd(rig, "evo.v1.Machine/DisableAxis", {"axis": axis})
    wait_for(lambda: rig.status().axes[axis - 1].power == types_pb2.POWER_STATE_POWER_OFF, timeout=15, what="powered off")
    _cmd(rig, "evo.v1.Machine/EmergencyStop", {"reason": "api test"})
    wait_for(lambda: rig.status().safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP, what="SafetyStop")
    _cmd(rig, "evo.v1.Machine/ResetFaults", {"axis": 0})
    wait_for(lambda: rig.status().safety_state == types_pb2.SAFETY_STATE_SAFE, timeout=10, what="SAFE")
    _cmd(rig, "evo.v1.Machine/ReleaseAxis", {"axis": 0})


def test_io_commands_good_path(rig: Rig) -> None:
    """SetDigitalOutput / SetAnalogOutput over HTTP/JSON, seen in GetIo over gRPC."""
    def io() -> io_pb2.IoStatus:
        return rig.stubs.io.GetIo(io_pb2.GetIoRequest(), metadata=MD, timeout=5)
    for value in (True, False):
        _cmd(rig, "evo.v1.Io/SetDigitalOutput", {"pin": 11, "value": value})
        wait_for(lambda: next(p.value for p in io().digital_outputs if p.pin == 11) is value, what=f"DO 11 {value}")
    _cmd(rig, "evo.v1.Io/SetAnalogOutput", {"pin": 0, "value": 1500.0})
    wait_for(lambda: next(p.value for p in io().analog_outputs if p.pin == 0) == 1500.0, what="AO 0 = 1500")


def test_recipe_commands_good_path(rig: Rig) -> None:
    """LoadRecipe, StartRecipe, PauseRecipe, ResumeRecipe, AbortRecipe over HTTP/JSON."""
    def state() -> int:
        return rig.stubs.recipes.GetRecipeStatus(recipes_pb2.GetRecipeStatusRequest(), metadata=MD, timeout=5).state
    _cmd(rig, "evo.v1.Recipes/LoadRecipe", {"name": "hmi_dwell"})
    wait_for(lambda: state() == types_pb2.RE_STATE_LOADED, timeout=10, what="LOADED")
    _cmd(rig, "evo.v1.Recipes/StartRecipe")
    wait_for(lambda: state() == types_pb2.RE_STATE_RUNNING, timeout=10, what="RUNNING")
    _cmd(rig, "evo.v1.Recipes/PauseRecipe")
    wait_for(lambda: state() == types_pb2.RE_STATE_PAUSED, timeout=10, what="PAUSED")
    _cmd(rig, "evo.v1.Recipes/ResumeRecipe")
    wait_for(lambda: state() == types_pb2.RE_STATE_RUNNING, timeout=10, what="RUNNING again")
    _cmd(rig, "evo.v1.Recipes/AbortRecipe")
    wait_for(lambda: state() == types_pb2.RE_STATE_ABORTED, timeout=15, what="ABORTED")


# -- refusals ----------------------------------------------------------------------------------------------
REFUSALS = [  # (method, HTTP body, the same request as a proto, gRPC code, HTTP status, result, words)
    ("evo.v1.Machine/MoveTo", {"axis": 1, "position": 601}, machine_pb2.MoveToRequest(axis=1, position=601),
     "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT", "soft limits"),
    ("evo.v1.Machine/Jog", {"axis": 4, "direction": "JOG_DIRECTION_POSITIVE", "velocity": 1e5},
     machine_pb2.JogRequest(axis=4, direction=1, velocity=1e5), "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT", "max_velocity"),
    ("evo.v1.Machine/EnableAxis", {"axis": 9}, machine_pb2.AxisRequest(axis=9), "INVALID_ARGUMENT", 400,
     "INVALID_ARGUMENT", "not configured"),
    ("evo.v1.Machine/SetMachineState", {"state": 99}, machine_pb2.SetMachineStateRequest(state=99),
     "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT", "not one of"),
    ("evo.v1.Machine/MoveTo", {"axis": 3, "position": -1}, machine_pb2.MoveToRequest(axis=3, position=-1),
     "FAILED_PRECONDITION", 400, "STATE_FORBIDS", "not enabled"),
    ("evo.v1.Io/SetDigitalOutput", {"pin": 0, "value": True}, io_pb2.SetDigitalOutputRequest(pin=0, value=True),
     "PERMISSION_DENIED", 403, "IO_ROLE_OWNED", "BrakeOut3"),
    ("evo.v1.Io/SetAnalogOutput", {"pin": 0, "value": 1e9}, io_pb2.SetAnalogOutputRequest(pin=0, value=1e9),
     "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT", "outside"),
    ("evo.v1.Recipes/LoadRecipe", {"name": "no_such_recipe"}, recipes_pb2.LoadRecipeRequest(name="no_such_recipe"),
     "NOT_FOUND", 404, "NOT_FOUND", "no_such_recipe"),
]


@pytest.mark.parametrize("method,body,proto,code,status,result,words", REFUSALS,
                         ids=[f"{r[0].rsplit('/', 1)[1]}-{r[3]}" for r in REFUSALS])
def test_refusals_equal_grpc_code_and_message(rig: Rig, method, body, proto, code, status, result, words) -> None:  # noqa: ANN001
    """The same validation, command path and error mapping as gRPC: same code, same message, HTTP status mapped."""
    if code == "FAILED_PRECONDITION":  # axis 3 must be off (a recipe run may have left it on)
        ok(rig.post("evo.v1.Machine/DisableAxis", {"axis": 3}))
        wait_for(lambda: rig.status().axes[2].power == types_pb2.POWER_STATE_POWER_OFF, timeout=15, what="Z off")
    http_status, reply = rig.post(method, body)
    service, name = method.split("/")
    stub = {"evo.v1.Machine": rig.stubs.machine, "evo.v1.Io": rig.stubs.io, "evo.v1.Recipes": rig.stubs.recipes}[service]
    g_code, g_message = grpc_refusal(getattr(stub, name), proto)
    assert (http_status, reply["code"], reply["result"]) == (status, code, result), reply
    assert (reply["code"], reply["message"]) == (g_code, g_message)
    assert words in reply["message"] and reply["grpc_code"] == getattr(grpc.StatusCode, code).value[0]


def test_invalid_values_write_nothing_to_the_rings(rig: Rig) -> None:
    """INVALID_ARGUMENT is decided before anything reaches the CU's or HAL's command ring."""
    cu, hal = rig.ring_count("rpc_cu"), rig.ring_count("rpc_hal")
    assert rig.post("evo.v1.Machine/MoveTo", {"axis": 1, "position": "NaN"})[0] == 400
    assert rig.post("evo.v1.Io/SetDigitalOutput", {"pin": 0, "value": True})[0] == 403
    assert (rig.ring_count("rpc_cu"), rig.ring_count("rpc_hal")) == (cu, hal)


@pytest.mark.parametrize("raw,words", [
    (b"{not json", "not JSON"), (b"[1, 2]", "must be a JSON object"), (b'{"axs": 1}', 'no field named "axs"'),
    (b'{"axis": "x"}', "axis"), (b'{"axis": -1}', "out of range"),
], ids=["not-json", "not-object", "unknown-field", "wrong-type", "negative-uint"])
def test_malformed_bodies_are_invalid_argument_naming_the_problem(rig: Rig, raw: bytes, words: str) -> None:
    status, body = http("POST", f"{rig.base}/evo.v1.Machine/EnableAxis", raw, OPERATOR)
    assert status == 400 and body["code"] == "INVALID_ARGUMENT" and words in body["message"], body


def test_unknown_paths_streams_and_wrong_verbs(rig: Rig) -> None:
    status, body = rig.post("evo.v1.Machine/Fly")
    assert status == 404 and body["code"] == "UNIMPLEMENTED" and "openapi.json" in body["message"]
    status, body = rig.post("evo.v1.Machine/WatchStatus", {"rate_hz": 5})
    assert status == 404 and "/api/v1/live" in body["message"]
    req = urllib.request.Request(f"{rig.base}/evo.v1.Machine/EmergencyStop", method="GET",
                                 headers={"Authorization": f"Bearer {OPERATOR}"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("GET of a command was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers["Allow"] == "POST"
    assert rig.status().safety_state == types_pb2.SAFETY_STATE_SAFE
    status, body = http("POST", f"{rig.base}/evo.v1.Machine/EnableAxis", b'{"axis": 1, "pad": "' + b"x" * 70000 + b'"}',
                        OPERATOR)
    assert status == 400 and body["code"] == "INVALID_ARGUMENT" and "larger than 65536 bytes" in body["message"], body
    status, body = http("GET", f"{rig.base}/nothing/here/at/all")
    assert status == 404 and body["code"] == "NOT_FOUND"


def test_viewer_and_anonymous_commands_are_refused_and_write_nothing(rig: Rig) -> None:
    """Roles: the server refuses a viewer's command (PERMISSION_DENIED) and a caller without a token."""
    cu = rig.ring_count("rpc_cu")
    status, body = rig.post("evo.v1.Machine/EmergencyStop", {"reason": "viewer"}, token=VIEWER)
    assert status == 403 and body["code"] == "PERMISSION_DENIED" and "operator token is required" in body["message"]
    status, body = rig.post("evo.v1.Machine/EnableAxis", {"axis": 1}, token=None)
    assert status == 401 and body["code"] == "UNAUTHENTICATED"
    status, body = rig.get("evo.v1.Machine/GetStatus", token=None)
    assert status == 401
    assert rig.ring_count("rpc_cu") == cu
    assert rig.status().safety_state == types_pb2.SAFETY_STATE_SAFE
    log = rig.procs["grpc_bridge"].output()
    assert "command Machine.EmergencyStop by http:127.0.0.1:" in log and "(viewer)" in log


def test_supervisor_through_http_without_a_watchdog_is_unavailable(rig: Rig) -> None:
    status, body = rig.get("evo.v1.Supervisor/ListModules")
    assert status == 503 and body["code"] == "UNAVAILABLE" and "no watchdog running" in body["message"]
    status, body = rig.post("evo.v1.Supervisor/StopModule", {"name": "hal"}, token=VIEWER)
    assert status == 403 and body["code"] == "PERMISSION_DENIED"


def test_openapi_document_lists_every_unary_method(rig: Rig) -> None:
    """The API documented: an OpenAPI 3.1 document generated from the protos."""
    doc = ok(http("GET", f"{rig.base}/openapi.json"))
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    assert set(paths["/api/v1/evo.v1.Machine/MoveTo"]) == {"post"}
    assert set(paths["/api/v1/evo.v1.Machine/GetStatus"]) == {"get", "post"}
    assert "/api/v1/evo.v1.Machine/WatchStatus" not in paths and "/api/v1/evo.v1.Supervisor/ListModules" in paths
    assert paths["/api/v1/evo.v1.Machine/MoveTo"]["post"]["description"]
    schemas = doc["components"]["schemas"]
    refs = {v for v in json.dumps(doc).split('"') if v.startswith("#/components/schemas/")}
    assert refs and all(r.rsplit("/", 1)[1] in schemas for r in refs)
    assert set(schemas["evo.v1.MoveToRequest"]["properties"]) == {"axis", "position", "velocity", "acceleration"}


# -- live feed --------------------------------------------------------------------------------------------
async def _live(url: str, hello: dict, n: int, change: dict | None = None) -> list[dict]:
    out: list[dict] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_str(json.dumps(hello))
        while len(out) < n:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                out.append({"type": "closed", "code": ws.close_code})
                break
            out.append(json.loads(msg.data))
            if change is not None and len(out) == 3:
                await ws.send_str(json.dumps(change))
    return out


def test_live_feed_hello_samples_and_rate(rig: Rig) -> None:
    """Live data over a WebSocket at the rate the page chooses, within the configured limit."""
    msgs = asyncio.run(_live(rig.ws_url, {"token": VIEWER, "rate_hz": 5}, 8, change={"rate_hz": 1000}))
    assert msgs[0] == {"type": "hello", "role": "viewer", "auth": True, "rate_hz": 5.0, "max_hz": 20.0}
    samples = [m for m in msgs if m["type"] == "sample"]
    assert len(samples) >= 4 and all(a["seq"] < b["seq"] for a, b in zip(samples, samples[1:]))
    s = samples[0]
    assert [a["name"] for a in s["machine"]["axes"]] == ["X", "Y", "Z", "Spindle"]
    assert s["io"]["digital_inputs"] and s["recipe"]["re_ok"] is True and s["machine"]["cu_ok"] is True
    assert {"type": "rate", "rate_hz": 20.0} in msgs  # 1000 Hz asked, clamped to [hmi] max_live_hz
    assert any(m["type"] == "modules" and m["available"] is False and "no watchdog" in m["reason"] for m in msgs)


def test_live_feed_refusals(rig: Rig) -> None:
    msgs = asyncio.run(_live(rig.ws_url, {"rate_hz": 5}, 2))
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == "UNAUTHENTICATED" and msgs[1] == {"type": "closed", "code": 4401}
    msgs = asyncio.run(_live(rig.ws_url, {"token": OPERATOR, "rate_hz": -1}, 2))
    assert msgs[0]["code"] == "INVALID_ARGUMENT" and "rate_hz" in msgs[0]["message"] and msgs[1]["code"] == 4400
    msgs = asyncio.run(_live(rig.ws_url, ["not", "an", "object"], 2))  # type: ignore[arg-type]
    assert msgs[0]["code"] == "INVALID_ARGUMENT" and msgs[1]["code"] == 4400
    msgs = asyncio.run(_live(rig.ws_url, {"token": OPERATOR, "rate_hz": 20}, 12, change={"rate_hz": "fast"}))
    assert any(m["type"] == "error" and m["code"] == "INVALID_ARGUMENT" for m in msgs[3:]), msgs


def test_two_pages_get_the_same_shared_sample_text(rig: Rig) -> None:
    """The fan-out: every page gets the bridge's one sample per tick, serialised once (same bytes)."""
    async def two() -> tuple[dict[int, str], dict[int, str]]:
        async def collect() -> dict[int, str]:
            seen: dict[int, str] = {}
            async with aiohttp.ClientSession() as s, s.ws_connect(rig.ws_url) as ws:
                await ws.send_str(json.dumps({"token": VIEWER, "rate_hz": 20}))
                while len(seen) < 25:
                    msg = await ws.receive(timeout=10)
                    if '"type":"sample"' in msg.data:
                        seen[json.loads(msg.data)["seq"]] = msg.data
            return seen
        a, b = await asyncio.gather(collect(), collect())
        return a, b
    a, b = asyncio.run(two())
    common = set(a) & set(b)
    assert common, (sorted(a), sorted(b))
    assert all(a[k] == b[k] for k in common)
