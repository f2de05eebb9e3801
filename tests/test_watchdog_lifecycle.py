"""`evo up` life cycle with real processes: bad config, one watchdog per instance, the watchdog killed
(children die with it, mosquitto included; the next `evo up` starts clean), readiness timeouts.
"""
from __future__ import annotations

import os
import signal
import socket

import psutil
import pytest

from tests.fixtures.progs.evo_harness import EvoUp, instance_processes, pid_gone, prog_module
from tests.helpers import free_port, remove_shm, shm_entries, unique_prefix, wait_for


@pytest.fixture
def instance(tmp_path):
    """Factory of EvoUp instances; everything they started is gone afterwards."""
    made: list[EvoUp] = []

    def make(modules, prefix=None, **kw) -> EvoUp:
        up = EvoUp(tmp_path / f"i{len(made)}", prefix or unique_prefix("wl"), modules, **kw)
        made.append(up)
        return up

    yield make
    leftovers = []
    for up in made:
        up.stop()
        pids = instance_processes(up.prefix)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        leftovers += pids
        remove_shm(up.prefix)
    assert not leftovers, f"processes left behind: {leftovers}"


def test_bad_config_exit_2_nothing_started(instance):
    up = instance([prog_module("alpha", "--setup", wrap=False)], watchdog={"max_restarts": 5, "no_such_field": 1})
    up.start()
    assert up.proc.wait(30) == 2
    out = up.output()
    assert "no_such_field" in out and "nothing started" in out
    assert not (up.run_dir / "watchdog.lock").exists()
    assert instance_processes(up.prefix) == []


def test_bad_module_table_exit_2(instance):
    up = instance([{"name": "x", "argv": ["true"], "bogus": 1}])
    up.start()
    assert up.proc.wait(30) == 2
    assert "bogus" in up.output()


def test_cli_without_watchdog_is_a_one_line_error(instance):
    up = instance([prog_module("alpha", wrap=False)])
    for args in (["status"], ["stop", "alpha"], ["restart", "alpha"], ["down"]):
        r = up.cli(*args)
        assert r.returncode == 1, args
        assert r.stderr.strip().count("\n") == 0 and "no watchdog running" in r.stderr, (args, r.stderr)


def test_killed_watchdog_takes_children_and_next_up_starts_clean(instance):
    port = free_port()
    prefix = unique_prefix("wk")
    mods = [
        prog_module("alpha", "--segment", "hal_cu", "--setup", ready_segments=["hal_cu"], liveness_segments=["hal_cu"],
                    wrap=False),
        prog_module("beta", "--segment", "cu_hal"),  # no process_setup: dies through evo.launch's pdeathsig
        {"name": "mosquitto", "argv": ["mosquitto", "-c", "{run_dir}/mosquitto.conf"], "notify": False,
         "tcp": f"127.0.0.1:{port}", "watchdog_timeout_s": 0.0},
    ]
    extra = f"[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n"
    up = instance(mods, prefix=prefix, extra_config=extra).start()
    up.wait_api()
    st = up.wait_all_running()
    children = [m["pid"] for m in st.values()]
    assert psutil.Process(st["mosquitto"]["pid"]).name() == "mosquitto"
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    # a second watchdog for the same instance is refused
    second = instance(mods, prefix=prefix, extra_config=extra)
    second.config_dir, second.run_dir, second.env = up.config_dir, up.run_dir, up.env
    second.modules_file = up.modules_file
    second.start()
    assert second.proc.wait(30) == 1
    assert "already running" in second.output() and str(up.proc.pid) in second.output()
    # SIGKILL the watchdog: every child dies with it (PR_SET_PDEATHSIG)
    up.close_client()
    os.kill(up.proc.pid, signal.SIGKILL)
    up.proc.wait(5)
    wait_for(lambda: all(pid_gone(p) for p in children), 5, what="every child gone after the watchdog was killed")
    assert "hal_cu" in " ".join(shm_entries(prefix))  # left by the killed alpha: stale
    # the next `evo up` clears the leftovers and starts clean
    again = instance(mods, prefix=prefix, extra_config=extra)
    again.config_dir, again.run_dir, again.env, again.modules_file = up.config_dir, up.run_dir, up.env, up.modules_file
    again.start()
    again.wait_api()
    st2 = again.wait_all_running()
    assert all(m["restarts"] == 0 for m in st2.values())
    assert "stale segment(s) left by a killed run" in again.output()
    r = again.down()
    assert r.returncode == 0, r.stderr
    wait_for(lambda: all(pid_gone(m["pid"]) for m in st2.values()), 5, what="children gone after down")
    assert shm_entries(prefix) == []
    assert instance_processes(prefix) == []


def test_never_ready_module_is_killed_then_left_down_and_start_up_continues(instance):
    mods = [
        prog_module("late", "--setup", "--no-ready", ready_timeout_s=0.3, wrap=False),
        prog_module("after", "--setup", wrap=False),
    ]
    up = instance(mods, watchdog={"max_restarts": 1}).start()
    up.wait_api()
    m = up.wait_state("late", "failed", timeout=20)
    assert m["last_exit"] == "SIGKILL" and "not ready within 0.3 s (waiting for READY=1)" in m["reason"]
    up.wait_state("after", "running")
    out = up.output()
    assert "start-up finished" in out and "degraded: late failed" in out
    assert up.down().returncode == 0


def test_port_taken_by_another_program_is_reported_not_called_ready(instance):
    """A tcp-readiness module (e.g. the embedded broker) whose port another program already serves
    is not started and not declared ready because of the other program's answer."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        mods = [
            prog_module("alpha", wrap=False),
            {"name": "broker", "argv": ["mosquitto", "-p", str(port)], "notify": False,
             "tcp": f"127.0.0.1:{port}", "watchdog_timeout_s": 0.0},
        ]
        up = instance(mods, watchdog={"max_restarts": 1, "initial_backoff_ms": 10}).start()
        up.wait_api()
        m = up.wait_state("broker", "failed")
        assert "already in use by another program" in m["reason"] and str(port) in m["reason"]
        assert up.status()["alpha"]["state"] == "running"  # the rest keeps running
        assert "already in use" in up.output()


BAD_RECIPE = '[recipe]\ndescription = "names an axis the machine lacks"\n\n[[step]]\ntype = "move"\ntargets = { Q = 1.0 }\nvelocity = 5.0\n'


def test_invalid_recipes_are_listed_at_evo_up_and_the_machine_starts(instance):
    """Issue 16: recipes are checked with the config; `evo up` starts with the bad ones listed."""
    up = instance([prog_module("alpha", wrap=False)])
    (up.config_dir / "recipes" / "bad_axis.toml").write_text(BAD_RECIPE)
    up.start()
    up.wait_all_running()
    out = wait_for(lambda: "invalid recipe" in up.output() and up.output(), 10, what="the invalid recipe listed")
    assert "recipes/bad_axis.toml" in out and "Q" in out
    assert up.down().returncode == 0


def test_a_missing_recipes_dir_is_a_config_error_nothing_started(instance):
    up = instance([prog_module("alpha", wrap=False)], extra_config='[re]\nrecipes_dir = "no_such_dir"\n')
    up.start()
    assert up.proc.wait(30) == 2
    out = up.output()
    assert "config.toml [re] recipes_dir" in out and "no_such_dir" in out and "nothing started" in out
    assert instance_processes(up.prefix) == []


def test_a_module_refusing_its_config_at_start_up_stops_everything_exit_2(instance, tmp_path):
    """A module that exits 2 during start-up (its configuration or its driver's network refused, e.g.
    an EtherCAT SubDevice that is not the one configured): nothing else starts, evo up exits 2."""
    ev = tmp_path / "events"
    up = instance([prog_module("hal", "--setup", "--refuse-config", events=ev, wrap=False),
                   prog_module("cu", "--setup", events=ev, preload=True, wrap=False)])
    up.start()
    assert up.proc.wait(60) == 2, up.output()[-2000:]
    out = up.output()
    assert "hal refused its configuration during start-up" in out and "nothing started" in out
    assert [w for w, n, _, _ in up.events(ev) if n == "cu" and w == "start"] == []  # cu never passed its gate
    assert instance_processes(up.prefix) == []
