"""The gRPC bridge against the running machine: HAL, CU, RE and the bridge as real processes.

Reflection, health, status vs segments, a watched move, outputs in HAL's segment, the real refusals.
"""
from __future__ import annotations

import signal

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.config import IoType, load_config
from common.shm.conversions import decode_str
from common.shm.io_helpers import get_bit
from common.shm.p2p import TypedP2pReader, read_header
from common.shm.segments import SEGMENTS
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from tests.helpers import ModuleProcess, free_port, wait_for
from tests.grpc_support import Stubs, health_status, make_config, rpc_error, wait_serving

pytestmark = pytest.mark.timeout(180)

MODULES = ("hal", "control_unit", "recipe_executor", "grpc_bridge")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Machine:
    def __init__(self, prefix: str, cfg_dir, port: int) -> None:  # noqa: ANN001
        self.prefix = prefix
        self.cfg = load_config(cfg_dir)
        self.procs = {m: ModuleProcess(m, prefix, ["--config", str(cfg_dir)]) for m in MODULES}
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stubs = Stubs(self.channel)

    def segment(self, key: str) -> np.ndarray:
        """A copy of a segment's payload, read as a tool does (non-exclusive)."""
        spec = SEGMENTS[key]
        with TypedP2pReader.attach(spec.name(self.prefix), spec.reader, spec.dtype, exclusive=False,
                                   stale_reads=1 << 30) as r:
            return wait_for(r.try_read, what=f"a consistent read of {key}").copy()  # retried on contention

    def heartbeat(self, key: str) -> int:
        return read_header(SEGMENTS[key].name(self.prefix)).heartbeat

    def status(self) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5)

    def recipe(self) -> recipes_pb2.RecipeStatus:
        return self.stubs.recipes.GetRecipeStatus(recipes_pb2.GetRecipeStatusRequest(), timeout=5)


@pytest.fixture(scope="module")
def machine(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("grpc-system")
    port = free_port()
    cfg_dir = make_config(tmp / "config", port, run_dir=str(tmp / "run"))
    m = Machine(shm_prefix, cfg_dir, port)
    try:
        # The watchdog's order: HAL first, the CU once HAL's inputs are settled (debounce), then the rest.
        m.procs["hal"].start()
        wait_for(lambda: m.heartbeat("hal_cu") > 100, timeout=20, what="HAL cycling")
        for name in MODULES[1:]:
            m.procs[name].start()
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes"):
            wait_serving(m.channel, svc, m.procs["grpc_bridge"], timeout=30)
        st = wait_for(lambda: (s := m.status()).machine_state == types_pb2.MACHINE_STATE_IDLE and s, timeout=20,
                      what="machine IDLE")
        assert st.safety_state == types_pb2.SAFETY_STATE_SAFE, st
        yield m
    finally:
        m.channel.close()
        codes = {name: m.procs[name].stop() for name in reversed(MODULES)}
        assert codes["grpc_bridge"] == 0, m.procs["grpc_bridge"].output()


def test_reflection_lists_the_services(machine: Machine) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(machine.channel)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    names = {s.name for r in stub.ServerReflectionInfo(iter([req]), timeout=5) for s in r.list_services_response.service}
    assert {"evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Supervisor", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="evo.v1.Machine")
    files = [r.file_descriptor_response for r in stub.ServerReflectionInfo(iter([req]), timeout=5)]
    assert files and files[0].file_descriptor_proto


def test_bridge_process_title_is_evo_grpc(machine: Machine) -> None:
    assert psutil.Process(machine.procs["grpc_bridge"].pid).cmdline()[0].startswith("evo-grpc")


def test_health_is_serving(machine: Machine) -> None:
    for svc in ("", "evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes"):
        assert health_status(machine.channel, svc) == SERVING, svc
    assert health_status(machine.channel, "evo.v1.Supervisor") == NOT_SERVING  # no watchdog in this module


def test_status_matches_the_segments(machine: Machine) -> None:
    def matches() -> bool:
        st = machine.status()
        seg = machine.segment("cu_rpc")["status"]
        assert st.cu_ok and st.hal_ok and 0 <= st.cu_heartbeat_age_s < 0.2 and 0 <= st.hal_heartbeat_age_s < 0.2
        assert [(a.id, a.name) for a in st.axes] == [(a.id, a.name) for a in machine.cfg.axes]
        if (st.machine_state, st.safety_state, st.machine_error_flags) != (
                int(seg["machine_state"]), int(seg["safety_state"]), int(seg["machine_errors"])):
            return False
        for a in st.axes:
            s = seg["axes"][a.id - 1]
            same = (a.power, a.motion, a.mode, a.coupling, a.gearbox, a.loading, a.referenced, a.error_flags,
                    a.lock_source) == (int(s["power"]), int(s["motion"]), int(s["mode"]), int(s["coupling"]),
                                       int(s["gearbox"]), int(s["loading"]), bool(s["referenced"]),
                                       int(s["error_flags"]), int(s["lock_source"]))
            if not same or abs(a.position - float(s["position"])) > machine.cfg.axis(a.id).kinematics.in_position_window:
                return False
            assert len(a.errors) == bin(a.error_flags).count("1")
            assert all(e.code and e.text for e in a.errors)
        return True

    wait_for(matches, timeout=10, interval=0.05, what="GetStatus equal to cu_rpc")

    def io_matches() -> bool:
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        seg = machine.segment("hal_rpc")["io"]
        assert [p.pin for p in io.digital_inputs] == [p.pin for p in machine.cfg.io.points_of(IoType.DI)]
        assert [p.pin for p in io.analog_outputs] == [p.pin for p in machine.cfg.io.points_of(IoType.AO)]
        # the banks hold physical levels; GetIo shows logical values (NC inputs, inverted outputs)
        di_pts = {p.pin: p for p in machine.cfg.io.points_of(IoType.DI)}
        do_pts = {p.pin: p for p in machine.cfg.io.points_of(IoType.DO)}
        return all(p.value == (get_bit(seg["di_bank"], p.pin) ^ di_pts[p.pin].inverts_logic) for p in io.digital_inputs) and \
            all(p.value == (get_bit(seg["do_bank"], p.pin) ^ do_pts[p.pin].inverts_logic) for p in io.digital_outputs) and \
            all(abs(p.value - float(seg["ai_values"][p.pin])) < 1e-6 for p in io.analog_inputs)

    wait_for(io_matches, timeout=10, interval=0.05, what="GetIo equal to hal_rpc")


def test_recipes_are_listed_from_the_recipe_directory(machine: Machine) -> None:
    listing = machine.stubs.recipes.ListRecipes(recipes_pb2.ListRecipesRequest(), timeout=5)
    by_name = {r.name: r for r in listing.recipes}
    assert {"demo_cycle", "home_all"} <= set(by_name)
    assert by_name["home_all"].valid and by_name["home_all"].step_count > 0 and by_name["home_all"].description


def test_set_a_do_and_see_it_in_the_hal_segment(machine: Machine) -> None:
    for value in (True, False, True):
        reply = machine.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=11, value=value), timeout=5)
        assert reply.result == types_pb2.RESULT_CODE_OK and reply.message
        # The HAL acks after applying and commits hal_rpc in the same cycle: visible at once.
        assert get_bit(machine.segment("hal_rpc")["io"]["do_bank"], 11) is value

    def in_get_io() -> bool:
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        return next(p for p in io.digital_outputs if p.pin == 11).value

    wait_for(in_get_io, what="DO 11 on in GetIo")
    machine.stubs.io.SetAnalogOutput(io_pb2.SetAnalogOutputRequest(pin=0, value=1500.0), timeout=5)
    assert float(machine.segment("hal_rpc")["io"]["ao_values"][0]) == 1500.0


def test_move_an_axis_and_watch_it_arrive(machine: Machine) -> None:
    axis = 2  # Y: no brake, unreferenced -> at most 5 % of max_velocity
    window = machine.cfg.axis(axis).kinematics.in_position_window
    machine.stubs.machine.EnableAxis(machine_pb2.AxisRequest(axis=axis), timeout=5)
    stream = machine.stubs.machine.WatchStatus(types_pb2.WatchRequest(rate_hz=50), timeout=60)
    start = None
    for st in stream:
        a = st.axes[axis - 1]
        if a.power in (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION):
            start = a.position
            break
    assert start is not None
    target = start + 5.0 if start + 5.0 <= machine.cfg.axis(axis).kinematics.max_pos else start - 5.0
    reply = machine.stubs.machine.MoveTo(machine_pb2.MoveToRequest(axis=axis, position=target, velocity=20.0), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK
    seen_moving = False
    for st in stream:
        a = st.axes[axis - 1]
        seen_moving |= a.motion != types_pb2.MOTION_STATE_STANDSTILL or abs(a.velocity) > 0
        if seen_moving and a.in_position and abs(a.position - target) <= window:
            break
    stream.cancel()
    assert seen_moving and abs(a.position - target) <= window
    seg = machine.segment("cu_rpc")["status"]["axes"][axis - 1]
    assert abs(float(seg["position"]) - target) <= window


def test_invalid_values_are_refused_before_the_cu_sees_them(machine: Machine) -> None:
    count = int(machine.segment("rpc_cu")["ring"]["count"])
    err = rpc_error(machine.stubs.machine.MoveTo, machine_pb2.MoveToRequest(axis=1, position=601.0), timeout=5)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "soft limits" in err.details()
    err = rpc_error(machine.stubs.machine.Jog, machine_pb2.JogRequest(axis=4, direction=1, velocity=1e5), timeout=5)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_velocity" in err.details()
    assert int(machine.segment("rpc_cu")["ring"]["count"]) == count


def test_state_forbids_is_failed_precondition_with_the_reason(machine: Machine) -> None:
    z = machine.status().axes[2]
    assert z.power == types_pb2.POWER_STATE_POWER_OFF
    err = rpc_error(machine.stubs.machine.MoveTo, machine_pb2.MoveToRequest(axis=3, position=-1.0), timeout=5)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not enabled" in err.details()


def test_role_pin_is_permission_denied(machine: Machine) -> None:
    before = int(machine.segment("rpc_hal")["ring"]["count"])
    err = rpc_error(machine.stubs.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=0, value=True), timeout=5)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "BrakeOut3" in err.details()
    assert int(machine.segment("rpc_hal")["ring"]["count"]) == before


def test_unknown_recipe_is_not_found(machine: Machine) -> None:
    err = rpc_error(machine.stubs.recipes.LoadRecipe, recipes_pb2.LoadRecipeRequest(name="no_such_recipe"), timeout=5)
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()


def test_recipe_control_and_an_axis_locked_by_the_recipe_is_aborted(machine: Machine) -> None:
    machine.stubs.machine.ReleaseAxis(machine_pb2.AxisRequest(axis=0), timeout=5)  # our locks from the move test
    r = machine.stubs.recipes
    r.LoadRecipe(recipes_pb2.LoadRecipeRequest(name="home_all"), timeout=5)
    wait_for(lambda: machine.recipe().state == types_pb2.RE_STATE_LOADED, what="recipe LOADED")
    r.StartRecipe(recipes_pb2.StartRecipeRequest(), timeout=5)
    # START takes X, Y, Z (every axis the recipe names) for the recipe executor until the run ends.
    wait_for(lambda: machine.status().axes[0].lock_source == types_pb2.COMMAND_SOURCE_RE, timeout=10,
             what="axis 1 locked by the recipe")
    err = rpc_error(machine.stubs.machine.EnableAxis, machine_pb2.AxisRequest(axis=1), timeout=5)
    assert err.code() == grpc.StatusCode.ABORTED and "locked" in err.details()
    r.PauseRecipe(recipes_pb2.PauseRecipeRequest(), timeout=5)
    watch = r.WatchRecipe(types_pb2.WatchRequest(rate_hz=50), timeout=30)
    assert any(s.state == types_pb2.RE_STATE_PAUSED for s in watch)
    watch.cancel()
    r.ResumeRecipe(recipes_pb2.ResumeRecipeRequest(), timeout=5)
    r.AbortRecipe(recipes_pb2.AbortRecipeRequest(), timeout=5)
    wait_for(lambda: machine.recipe().state in (types_pb2.RE_STATE_ABORTED, types_pb2.RE_STATE_COMPLETED),
             timeout=10, what="recipe aborted")
    wait_for(lambda: all(a.lock_source == types_pb2.COMMAND_SOURCE_NONE for a in machine.status().axes[:3]),
             what="the recipe's axis locks given back")
    assert decode_str(machine.segment("re_rpc")["status"]["program_name"]) == machine.recipe().program_name


def test_recipe_executor_gone_is_unavailable_at_once(machine: Machine) -> None:
    machine.procs["recipe_executor"].kill(signal.SIGKILL)
    err = rpc_error(machine.stubs.recipes.StartRecipe, recipes_pb2.StartRecipeRequest(), timeout=30)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "recipe executor is not running" in err.details()
    wait_for(lambda: health_status(machine.channel, "evo.v1.Recipes") == NOT_SERVING, what="Recipes NOT_SERVING")
    assert health_status(machine.channel, "evo.v1.Machine") == SERVING
    assert machine.procs["grpc_bridge"].alive()


def test_io_shows_logical_values_not_wire_levels(machine: Machine) -> None:
    """The NC E-stop's closed circuit (physical 1) must read as 'not pressed' to an operator."""
    def estop_seen():
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        return next(p for p in io.digital_inputs if p.role == "EStop") if io.hal_ok else None

    estop = wait_for(estop_seen, what="GetIo with a live HAL")
    pin = machine.cfg.io_registry.pin("EStop").pin
    assert get_bit(machine.segment("hal_rpc")["io"]["di_bank"], pin) is True  # circuit closed
    assert estop.value is False


def test_read_your_writes_getio_after_an_acked_set_shows_the_value(machine: Machine) -> None:
    """Issue 16: GetIo straight after an acked SetDigitalOutput served the last 50 Hz sample (the old
    value in 100 of 200 tries). The ack and the state the HAL left are one commit: served together."""
    stale = []
    for i in range(60):
        value = i % 2 == 0
        machine.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=11, value=value), timeout=5)
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        if next(p for p in io.digital_outputs if p.pin == 11).value is not value:
            stale.append(i)
        machine.stubs.io.SetAnalogOutput(io_pb2.SetAnalogOutputRequest(pin=0, value=1000.0 + i), timeout=5)
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        if next(p for p in io.analog_outputs if p.pin == 0).value != 1000.0 + i:
            stale.append(-i)
    assert stale == [], f"reads that did not show the acked value: {stale}"
