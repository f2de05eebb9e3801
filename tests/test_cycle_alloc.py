"""Zero allocation per cycle (issue 15): after warm-up, 10 000 cycles of the HAL (HalCycle.step) and
of the CU (CycleRunner.cycle) with their real segments, idle, leave sys.getallocatedblocks() unchanged.

Both run in this process on the default machine's configuration: the HAL's hal_cu is what the CU
reads and the CU's cu_hal is what the HAL reads, so every inbound link is LIVE, every commit and
every wake-change test runs, exactly as in the processes (only the sleeping is left out).
"""
from __future__ import annotations

import gc
import sys
import time

import pytest

from common.config import load_config
from common.shm.wake import WakeWaiter
from tests.helpers import REPO

WARMUP = 10_000  # free lists and every periodic path (100 ms, 0.5 s) reach their steady state
CYCLES = 10_000


@pytest.fixture(scope="module")
def machine(shm_prefix, tmp_path_factory):
    from control_unit.cycle import CycleRunner
    from hal.cycle import HalCycle

    run_dir = tmp_path_factory.mktemp("alloc_run")
    mp = pytest.MonkeyPatch()
    mp.setenv("EVO_RUN_DIR", str(run_dir))
    cfg = load_config(REPO / "config")
    waiters = [WakeWaiter(dst) for dst in ("mqt", "rpc", "re")]  # the posts reach real semaphores
    hal = HalCycle(cfg)
    cu = CycleRunner(cfg)
    try:
        hal.step(time.perf_counter_ns(), 0.001)
        assert cu._attach_hal()
        cu._create_writers()
        yield hal, cu
    finally:
        cu._shutdown()
        hal.close()
        for w in waiters:
            w.close()
        mp.undo()


def _run(hal, cu, n: int, t0: int, period_ns: int = 1_000_000) -> int:
    step, cycle = hal.step, cu.cycle
    for i in range(n):
        now_ns = t0 + i * period_ns
        step(now_ns, 0.001)
        cycle(now_ns * 1e-9)
    return t0 + n * period_ns


def test_hal_and_cu_cycles_allocate_nothing(machine):
    """Issue 15 "zero allocation per cycle, proven by a test": 10 000 idle HAL + CU cycles after
    warm-up leave the interpreter's allocated block count where it was."""
    hal, cu = machine
    # collect BEFORE the warm-up: a full collection empties the interpreter's free lists (floats,
    # tuples), which the first cycles then refill with a bounded handful of blocks
    gc.collect()
    gc.disable()
    try:
        t = _run(hal, cu, WARMUP, time.perf_counter_ns())
        assert hal.cu_in.live and cu.hal.live, (hal.cu_in.reason, cu.hal.reason)  # the real paths ran
        before = sys.getallocatedblocks()
        before = sys.getallocatedblocks()  # counted while the first int lives: the same +1 as `after`
        _run(hal, cu, CYCLES, t)
        after = sys.getallocatedblocks()
    finally:
        gc.enable()
    assert hal.cu_in.live and cu.hal.live
    assert after == before, f"{after - before} blocks allocated over {CYCLES} cycles"
