"""The one cycle loop (issue 15): common/rt.py CycleLoop, its idle wait on the wake semaphore, and
SCHED_FIFO + mlockall as the HAL's and CU's default whenever the OS permits it.

Real threads and processes, real semaphores, the real HAL and CU on the default configuration.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from common.rt import CycleLoop, StopFlag
from common.shm.p2p import TypedP2pReader
from common.shm.segments import CYCLE_STATS, SEGMENTS
from common.shm.wake import WakePoster, WakeWaiter
from tests.helpers import REPO, ModuleProcess, module_env, wait_for


def _start(loop: CycleLoop, stats: np.ndarray, step, **kw) -> threading.Thread:
    loop.start((stats,))
    th = threading.Thread(target=loop.run, args=(step, "test"), kwargs=kw, daemon=True)
    th.start()
    return th


def test_cycle_loop_steps_and_publishes_its_figures():
    """Issue 15 "one cycle-loop skeleton": step(now_ns, ticks) every period, the figures published
    into the stats view before each step, the stop flag ends it."""
    stop = StopFlag()
    stats = np.zeros((), CYCLE_STATS)
    seen: list[tuple[int, int, int]] = []
    loop = CycleLoop("t", 2_000_000, stop)

    def step(now_ns: int, ticks: int) -> None:
        seen.append((now_ns, ticks, int(stats["cycle_count"])))
        if len(seen) >= 50:
            stop.set()

    th = _start(loop, stats, step)
    th.join(30)
    assert not th.is_alive() and len(seen) == 50
    assert [c for _, _, c in seen] == list(range(1, 51))  # published before each step
    assert all(t >= 1 for _, t, _ in seen)
    assert all(b > a for (a, _, _), (b, _, _) in zip(seen, seen[1:]))
    assert int(stats["cycle_time_ns"]) == 2_000_000 and int(stats["jitter_hist"].sum()) == 50
    assert int(stats["rt_active"]) == 0  # no priority asked


def test_cycle_loop_publishes_only_when_asked_without_auto_publish():
    """Issue 15 "a machine that idles cheaply": with auto_publish=False the loop leaves the stats
    view alone (no copy per cycle); `publish()` from the step writes the figures up to that cycle."""
    stop = StopFlag()
    stats = np.zeros((), CYCLE_STATS)
    seen: list[tuple[int, int]] = []
    loop = CycleLoop("t", 1_000_000, stop, auto_publish=False)

    def step(now_ns: int, ticks: int) -> None:
        before = int(stats["cycle_count"])
        if len(seen) % 10 == 9:  # like the CU: only in the cycles that commit the status segments
            loop.publish()
        seen.append((before, int(stats["cycle_count"])))
        if len(seen) >= 40:
            stop.set()

    th = _start(loop, stats, step)
    th.join(30)
    assert not th.is_alive() and len(seen) == 40
    assert [b for b, _ in seen[:10]] == [0] * 10  # nothing published before the first publish()
    assert [a for _, a in seen[9::10]] == [10, 20, 30, 40]  # each publish() carries its own cycle
    assert [a for _, a in seen[10:19]] == [10] * 9  # and stays until the next one
    assert int(stats["cycle_time_ns"]) == 1_000_000 and int(stats["jitter_hist"].sum()) == 40


def test_the_timers_record_is_current_after_each_wait_and_done_without_a_publish():
    """The HAL's compiled publish copies the timer's record itself (hal/kernels.py hal_publish, T_REC): the
    record given to the timer must hold the figures as of the last wait() / done(), overruns included."""
    from common.rt import CycleTimer

    rec = np.zeros((), CYCLE_STATS)
    t = CycleTimer(1_000_000, record=rec)
    assert t.record is rec
    t.rt_active = True
    for _ in range(3):
        t.wait()
        t.done()
    time.sleep(0.0035)  # the next deadlines pass: skipped ticks
    t.wait()
    t.done()
    assert t.overruns >= 2
    got = {f: int(rec[f]) for f in ("cycle_count", "cycle_time_ns", "last_cycle_ns", "max_cycle_ns",
                                    "last_wake_jitter_ns", "max_wake_jitter_ns", "overruns", "rt_active")}
    assert got == {"cycle_count": 4, "cycle_time_ns": 1_000_000, "last_cycle_ns": t.last_cycle_ns,
                   "max_cycle_ns": t.max_cycle_ns, "last_wake_jitter_ns": t.last_jitter_ns,
                   "max_wake_jitter_ns": t.max_jitter_ns, "overruns": t.overruns, "rt_active": 1}
    assert int(rec["jitter_hist"].sum()) == 4
    t.resync()
    assert int(rec["cycle_count"]) == 5 and int(rec["last_wake_jitter_ns"]) == 0
    with pytest.raises(TypeError, match="0-d CYCLE_STATS"):
        CycleTimer(1_000_000, record=np.zeros(3))


def test_idle_loop_blocks_on_its_wake_and_a_post_runs_one_step(fresh_prefix):
    """Issue 15 "the RE ticks at its rate only while a recipe runs": idle, the loop blocks on its
    WakeWaiter; a writer's post (here from another thread) runs a step at once — the idle time-out is
    30 s, so only the post can have done it — and busy again it ticks at its period."""
    stop = StopFlag()
    stats = np.zeros((), CYCLE_STATS)
    waiter = WakeWaiter("re", fresh_prefix)
    busy = threading.Event()
    steps: list[int] = []
    loop = CycleLoop("re", 1_000_000, stop)

    def step(now_ns: int, ticks: int) -> None:
        steps.append(now_ns)

    th = _start(loop, stats, step, idle=lambda: not busy.is_set(), waiter=waiter, idle_timeout_s=30.0)
    try:
        wait_for(lambda: loop.idle_waits >= 1, 10, what="the loop idles")
        n = len(steps)
        poster = WakePoster("re", fresh_prefix)
        poster.post()
        wait_for(lambda: len(steps) > n, 10, what="a step after the post")
        assert loop.idle_waits >= 2  # back to idle after one step
        busy.set()
        poster.post()  # ends the current idle wait
        wait_for(lambda: len(steps) > n + 50, 10, what="ticking while busy")
        assert int(stats["overruns"]) >= 0 and int(stats["cycle_count"]) >= n + 50
    finally:
        stop.set()
        busy.set()
        WakePoster("re", fresh_prefix).post()
        th.join(30)
        waiter.close()
    assert not th.is_alive()


def test_wake_between_runs_work_on_a_post_without_moving_the_deadlines(fresh_prefix):
    """Issue 15 command round trip (the HAL's loop): sleeping to a deadline on the WakeWaiter, a post
    runs `work` at once — a 200 ms period, so only the post can explain it — and the cycles keep their
    deadlines (no extra step, no overrun counted); a post closer to the deadline than the guard is
    left to the cycle, and a flood of posts is served a bounded number of times per period."""
    stop = StopFlag()
    stats = np.zeros((), CYCLE_STATS)
    waiter = WakeWaiter("hal", fresh_prefix)
    period = 200_000_000
    steps: list[int] = []
    works: list[int] = []
    loop = CycleLoop("hal", period, stop)
    loop.wake_between(waiter, works.append, 150_000_000)  # guard: the last 150 ms of each period
    th = _start(loop, stats, lambda now_ns, ticks: steps.append(now_ns))
    poster = WakePoster("hal", fresh_prefix)
    try:
        wait_for(lambda: len(steps) >= 2, 10, what="two cycles")
        n = len(steps)
        poster.post()
        wait_for(lambda: works, 10, interval=0.001, what="the post's work")
        assert len(steps) == n, "the work ran between cycles, not as a cycle"
        assert steps[-1] < works[0] < steps[-1] + period
        assert works[0] - steps[-1] < period - 150_000_000 + 10_000_000, "posted early in the period"
        # a post inside the guard: the cycle takes it, no work
        wait_for(lambda: len(steps) > n, 10, interval=0.001, what="the next cycle")
        k = len(works)
        last = steps[-1]
        while steps[-1] == last and time.perf_counter_ns() < last + period - 100_000_000:
            time.sleep(0.002)
        if steps[-1] == last:  # still in this period, inside its guard
            poster.post()
            wait_for(lambda: steps[-1] != last, 10, interval=0.001, what="the next cycle")
            assert len(works) == k, "a post inside the guard ran the work"
        # a flood: at most the bound per period, never a step too many
        n = len(steps)
        for _ in range(500):
            poster.post()
        wait_for(lambda: len(steps) >= n + 3, 10, interval=0.001, what="three more cycles")
        assert len(works) - k <= 3 * 32 + 1
        gaps = np.diff(steps[-4:])
        assert (gaps >= period * 0.5).all(), f"cycles kept their period: {gaps}"
    finally:
        stop.set()
        poster.post()
        th.join(30)
        poster.close()
        waiter.close()
    assert not th.is_alive()


RT_PROBE = """
import os, sys, resource, logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from common.rt import setup_realtime
if sys.argv[1] == "unprivileged":
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
on = setup_realtime(41)
print("RESULT", on, os.sched_getscheduler(0) == os.SCHED_FIFO, flush=True)
"""


def _probe(mode: str, **env: str) -> tuple[str, str]:
    e = module_env("x", **env)
    if "EVO_RT" not in env:
        e.pop("EVO_RT", None)
    out = subprocess.run([sys.executable, "-c", RT_PROBE, mode], cwd=REPO, env=e, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    result = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    return result[0], out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to show FIFO granted and to drop to an unprivileged user")
def test_fifo_when_permitted_one_warning_otherwise_and_env_off():
    """Issue 15: SCHED_FIFO + mlockall whenever the OS permits it; one clear warning and normal
    scheduling otherwise; EVO_RT=off (what the test suite sets) turns it off with an info line."""
    result, _ = _probe("root")
    assert result == "RESULT True True"
    result, err = _probe("unprivileged")
    assert result == "RESULT False False"
    warnings = [ln for ln in err.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1 and "SCHED_FIFO 41 not permitted" in warnings[0] and "CAP_SYS_NICE" in warnings[0]
    result, err = _probe("root", EVO_RT="off")
    assert result == "RESULT False False" and "EVO_RT=off" in err and "WARNING" not in err


def _rt_active(key: str) -> int:
    spec = SEGMENTS[key]
    r = TypedP2pReader.attach(spec.name(), spec.reader, spec.dtype, exclusive=False, stale_reads=1 << 30)
    try:
        return int(r.read()["stats"]["rt_active"])
    finally:
        r.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root or CAP_SYS_NICE")
def test_default_machine_runs_hal_and_cu_under_fifo(fresh_prefix, tmp_path):
    """Issue 15 "SCHED_FIFO + mlockall the default for HAL and CU": started on the packaged default
    configuration without EVO_RT=off, both report rt_active in their cycle figures and run as
    SCHED_FIFO processes."""
    env = {"EVO_RUN_DIR": str(tmp_path), "EVO_RT": "on"}
    hal = ModuleProcess("hal", fresh_prefix, ["--config", str(REPO / "config")], log_dir=tmp_path, env=env)
    cu = ModuleProcess("control_unit", fresh_prefix, ["--config", str(REPO / "config")], log_dir=tmp_path, env=env)
    try:
        hal.start()
        cu.start()
        try:
            wait_for(lambda: _rt_active("hal_mqt") == 1, 30, what="HAL rt_active")
            wait_for(lambda: _rt_active("cu_mqt") == 1, 30, what="CU rt_active")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- HAL ---\n{hal.output()}\n--- CU ---\n{cu.output()}") from None
        assert os.sched_getscheduler(hal.pid) == os.SCHED_FIFO
        assert os.sched_getscheduler(cu.pid) == os.SCHED_FIFO
        assert os.sched_getparam(hal.pid).sched_priority == 41 and os.sched_getparam(cu.pid).sched_priority == 40
        assert "VmLck" in open(f"/proc/{cu.pid}/status").read()
        locked = [ln for ln in open(f"/proc/{cu.pid}/status") if ln.startswith("VmLck")]
        assert int(locked[0].split()[1]) > 0  # mlockall took effect
    finally:
        cu.stop()
        hal.stop()


def test_cycle_timer_histogram_wraps_like_a_u32_instead_of_failing():
    """The jitter histogram is bumped through a memoryview of its u32 field (cheaper than a numpy
    scalar): a bucket at 2**32 - 1 (49 days of 1 kHz wakes) wraps to 0 as the numpy field did, and the
    loop goes on (a ValueError there would stop a HAL or CU after 49 days)."""
    from common.rt import CycleTimer

    t = CycleTimer(1_000_000)
    t.hist[:] = 0xFFFFFFFF
    t.wait()
    assert sorted(t.hist.tolist()).count(0) == 1 and t.cycle_count == 1
