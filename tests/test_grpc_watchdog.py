"""The gRPC bridge in a watchdog-started machine (`python -m evo up`): Supervisor forwarded over TCP.

ListModules, WatchEvents and RestartModule go through the bridge's port to the watchdog's socket.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2

from common.protos.evo.v1 import supervisor_pb2, supervisor_pb2_grpc
from grpc_bridge.protos.evo.v1 import machine_pb2, recipes_pb2, types_pb2
from tests.helpers import REPO, free_port, module_env, shm_entries, wait_for
from tests.grpc_support import Stubs, health_status, make_config, rpc_error, wait_serving

pytestmark = pytest.mark.timeout(180)

OPERATOR = "op-token-wd"
MD = (("authorization", f"Bearer {OPERATOR}"),)
RUNNING = supervisor_pb2.MODULE_STATE_RUNNING


@pytest.fixture(scope="module")
def system(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("grpc-watchdog")
    port = free_port()
    run_dir = tmp / "run"
    cfg = make_config(tmp / "config", port, operator_tokens=(OPERATOR,), mqtt=False)
    log = open(tmp / "evo-up.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "evo", "up", "--config", str(cfg)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env=module_env(shm_prefix, EVO_RUN_DIR=str(run_dir)), start_new_session=True,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    direct = grpc.insecure_channel(f"unix:{run_dir / 'supervisor.sock'}")

    def output() -> str:
        log.flush()
        return (tmp / "evo-up.log").read_text(errors="replace")

    try:
        def up() -> bool:
            assert proc.poll() is None, f"evo up exited {proc.returncode}:\n{output()}"
            return health_status(channel, "evo.v1.Supervisor") == health_pb2.HealthCheckResponse.SERVING
        wait_for(up, timeout=60, interval=0.1, what="the bridge forwarding the Supervisor")
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes"):
            wait_serving(channel, svc, timeout=30)
        yield type("System", (), dict(channel=channel, direct=direct, proc=proc, output=staticmethod(output),
                                      prefix=shm_prefix, run_dir=run_dir, sup=supervisor_pb2_grpc.SupervisorStub(channel),
                                      sup_direct=supervisor_pb2_grpc.SupervisorStub(direct)))
    finally:
        channel.close()
        direct.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        assert proc.returncode == 0, output()


def test_list_modules_through_the_bridge_equals_the_socket(system) -> None:  # noqa: ANN001
    def same() -> bool:
        via = system.sup.ListModules(supervisor_pb2.ListModulesRequest(), metadata=MD, timeout=5)
        direct = system.sup_direct.ListModules(supervisor_pb2.ListModulesRequest(), timeout=5)
        return [(m.name, m.state, m.pid) for m in via.modules] == [(m.name, m.state, m.pid) for m in direct.modules]
    wait_for(same, timeout=10, interval=0.1, what="same module list via the bridge and the socket")
    resp = system.sup.ListModules(supervisor_pb2.ListModulesRequest(), metadata=MD, timeout=5)
    states = {m.name: m.state for m in resp.modules}
    assert all(states[n] == RUNNING for n in ("hal", "cu", "re", "grpc")), states
    assert resp.instance == system.prefix


def test_watch_events_are_forwarded(system) -> None:  # noqa: ANN001
    stream = system.sup.WatchEvents(supervisor_pb2.WatchEventsRequest(), metadata=MD, timeout=30)
    first = next(stream)
    assert first.kind == supervisor_pb2.EVENT_KIND_SNAPSHOT and first.name
    stream.cancel()


def test_machine_status_under_the_watchdog(system) -> None:  # noqa: ANN001
    st = Stubs(system.channel).machine.GetStatus(machine_pb2.GetStatusRequest(), metadata=MD, timeout=5)
    assert st.cu_ok and st.hal_ok and [a.name for a in st.axes] == ["X", "Y", "Z", "Spindle"]


def test_errors_of_the_watchdog_are_forwarded(system) -> None:  # noqa: ANN001
    err = rpc_error(system.sup.RestartModule, supervisor_pb2.ModuleRequest(name="nope"), metadata=MD, timeout=10)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope" in err.details()
    err = rpc_error(system.sup.ListModules, supervisor_pb2.ListModulesRequest(), timeout=5)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_restart_the_recipe_executor_through_the_bridge(system) -> None:  # noqa: ANN001
    def re_info():  # noqa: ANN202
        resp = system.sup.ListModules(supervisor_pb2.ListModulesRequest(names=["re"]), metadata=MD, timeout=5)
        return resp.modules[0]

    old_pid = re_info().pid
    reply = system.sup.RestartModule(supervisor_pb2.ModuleRequest(name="re"), metadata=MD, timeout=30)
    assert reply.module.name == "re"
    wait_for(lambda: (m := re_info()).state == RUNNING and m.pid != old_pid, timeout=30, what="re running again")
    # The bridge follows the new executor's re_rpc segment: recipe commands work again.
    recipes = Stubs(system.channel).recipes

    def loads() -> bool:
        try:
            recipes.LoadRecipe(recipes_pb2.LoadRecipeRequest(name="home_all"), metadata=MD, timeout=5)
            return True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()  # only while it re-attaches
            return False
    wait_for(loads, timeout=30, interval=0.1, what="LoadRecipe accepted by the new executor")
    # status comes from the bridge's sampled snapshot: the next sample shows the new executor
    wait_for(lambda: recipes.GetRecipeStatus(recipes_pb2.GetRecipeStatusRequest(), metadata=MD, timeout=5).re_ok,
             what="recipe status sampled from the new executor")
    wait_for(lambda: recipes.GetRecipeStatus(recipes_pb2.GetRecipeStatusRequest(), metadata=MD, timeout=5).state
             == types_pb2.RE_STATE_LOADED, what="recipe LOADED")
    wait_for(lambda: "command Supervisor.RestartModule by ipv4:127.0.0.1" in (system.run_dir / "log" / "grpc.log").read_text(),
             what="the forwarded command in the bridge's log")


def test_shutdown_leaves_nothing_behind(system) -> None:  # noqa: ANN001
    os.killpg(system.proc.pid, signal.SIGTERM)
    assert system.proc.wait(60) == 0, system.output()
    assert shm_entries(system.prefix) == []
