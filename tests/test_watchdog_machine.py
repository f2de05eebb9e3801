"""`evo up` on the real default machine (config/: HAL, CU, RE, gRPC bridge, embedded mosquitto, MQTT bridge):
all ready in order, process titles, heartbeat liveness, one module killed alone, `evo down` leaves nothing.
"""
from __future__ import annotations

import os
import signal

import psutil
import pytest

from tests.fixtures.progs.evo_harness import EvoUp, instance_processes, machine_config
from tests.helpers import remove_shm, shm_entries, unique_prefix, wait_for

TITLES = {"hal": "evo-hal", "cu": "evo-cu", "re": "evo-re", "grpc": "evo-grpc", "mqtt": "evo-mqtt"}


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("machine")
    prefix = unique_prefix("wm")
    up = EvoUp(tmp, prefix, None)
    up.config_dir, up.modules = machine_config(tmp / "machine")
    if "hal" not in up.modules or "cu" not in up.modules:
        pytest.fail(f"the default machine's HAL/CU packages are missing (running: {up.modules})")
    up.start()
    try:
        up.wait_api(30)
        up.wait_all_running(60)
        yield up
    finally:
        up.stop()
        leftovers = instance_processes(prefix)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        remove_shm(prefix)
        assert not leftovers, f"processes left behind: {leftovers}"


def test_every_module_ready_in_order_with_titles(machine):
    st = machine.status()
    assert [n for n, m in st.items() if m["state"] == "running"] == machine.modules
    for name in machine.modules:
        if name in TITLES:
            assert psutil.Process(st[name]["pid"]).cmdline()[0].startswith(TITLES[name]), name
    out = machine.output()
    started = [out.index(f"{n}: started pid") for n in machine.modules]
    assert started == sorted(started)
    assert out.index("hal: ready in") < out.index("cu: started pid") < out.index("cu: ready in") < out.index("re: started pid")
    # cycle modules are watched through their segment heartbeats too
    assert 0 <= st["hal"]["heartbeat_age_s"] < 1.0 and 0 <= st["cu"]["heartbeat_age_s"] < 1.0


def test_hal_and_cu_run_the_kernels_built_ahead_of_time(machine):
    """Issue 15 cold start: the running HAL and CU map the extension `make kernels` built and no numba /
    llvmlite (their import and a cache load cost ~0.5 s of each start)."""
    st = machine.status()
    for name, module in (("hal", "hal/_kernels_aot."), ("cu", "control_unit/kernels/_aot.")):
        maps = open(f"/proc/{st[name]['pid']}/maps").read()
        assert module in maps, f"{name} did not load {module}*.so"
        assert "llvmlite" not in maps and "/numba/" not in maps, f"{name} loaded numba"


def test_each_killed_module_is_restarted_alone(machine):
    for victim in machine.modules:  # every module of the machine, in start order
        before = machine.status()
        os.kill(before[victim]["pid"], signal.SIGKILL)
        m = machine.wait_state(victim, "running", timeout=30, restarts=before[victim]["restarts"] + 1)
        assert m["pid"] != before[victim]["pid"]
        after = machine.status()
        for name in machine.modules:
            if name != victim:
                assert after[name]["pid"] == before[name]["pid"], f"{name} restarted when {victim} was killed"
                assert after[name]["restarts"] == before[name]["restarts"], name


def test_down_leaves_no_process_and_no_segment(machine):
    pids = [m["pid"] for m in machine.status().values() if m["pid"]]
    assert shm_entries(machine.prefix)  # the machine's segments exist while it runs
    r = machine.down()
    assert r.returncode == 0, r.stderr
    assert machine.proc.returncode == 0
    wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), 5, what="every module gone")
    assert shm_entries(machine.prefix) == []
    assert instance_processes(machine.prefix) == []
    out = machine.output()
    stops = [out.index(f"{n}: stopped") for n in reversed(machine.modules)]
    assert stops == sorted(stops)
