"""HAL cycle compute time (compiled kernels vs the numpy reference; default machine and 64 axes), kernel load, 1 kHz jitter.

Run: `.venv/bin/python -m benchmarks.bench_hal [--quick]` -> tables + benchmarks/results/hal.json.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._stats import machine_info, print_table, ratio, summarize, temp_env, write_json

PERIOD_NS = 1_000_000
AIM_P99_US = 50.0  # 64 axes, 1024 points of each I/O type (issue 15; was 150 in issue 5)
ENGINES = ("compiled", "numpy")
REPO = Path(__file__).resolve().parents[1]
FIFO_PRIORITY = 80
PACE_S = 0.0003  # compute runs: pause between cycles, outside the timed region
# the code before the HAL-glue work of issue 15 (fused hal_step kernel, partial commits, cheap probes):
# HalCycle.step of this commit is measured by the same bench_step in the same run
BASELINE_COMMIT = "46f591b44307d723623ec362cb7f2b43d35e164f"
METHOD = (
    "Engines: 'compiled' = the kernels of hal/kernels.py built ahead of time by numba.pycc (what the HAL "
    "runs: one hal_step call per cycle with the sim driver), 'numpy' = the vectorised reference (the path before issue 15), chosen with "
    "$EVO_HAL_ENGINE before HalCycle is built; 'baseline' = HalCycle.step (compiled engine) of commit "
    f"{BASELINE_COMMIT[:9]} (before the cycle-glue work: three kernel calls, full commits, the open+flock+stat+close "
    "probe; or the commit given by --baseline, named in compute.baseline_commit), measured by this file's "
    "bench_step in a git worktree of that commit, in the same run, right "
    "before the other engines of the same case; 'hal_step kernel alone' = the one kernel call the compiled "
    "step makes (inside a real HalCycle, fed through the cu_hal payload copy it reads), paced the same way; "
    "'floor' = the same paced loop timing an empty region (perf_counter_ns pair). Machines: 'default' = config/ "
    "(4 axes, its io.toml), '64' = synthetic 64 axes with 1024 points of each I/O type. "
    "Kernel load: `HalCycle(config)` in fresh processes on the AOT module `make kernels` builds "
    "($EVO_KERNELS=aot, the quickest of three), on numba's JIT with NUMBA_CACHE_DIR empty (cold: compiles) and "
    "then filled (warm: the fallback's load). 'compiled (numba JIT, the fallback)' rows: the same step with "
    "$EVO_KERNELS=jit. "
    "Kernel work only: inside a real HalCycle, the three calls step() makes that the kernels replace "
    "(proc.outputs, driver.cycle, proc.inputs), timed together without the segment reads, commands and commits. "
    "Compute: HalCycle.step() called directly in one process under SCHED_FIFO (other load on the "
    "machine kept out), paced by a 0.3 ms sleep outside the timed region, with a test CU writer "
    "committing cu_hal before every step; perf_counter_ns around step(). Scenarios: idle (CU connected, "
    "drives off, steady I/O), moving (all axes enabled and moving under sinusoidal torque, CU toggling "
    "DO bits every cycle), worst (moving + every DI and AI changing every cycle: precomputed random frames "
    "written into the driver's raw DI/AI buffers before each step, outside the timed region; the sim keeps "
    "pins it does not model as they are). "
    "Alternative: the same I/O semantics written the obvious way, a Python loop over the io.toml points "
    "(NC/NO, debounce, curve+offset, moving average with a deque, DO merge/inversion, AO clamp), fed the "
    "same changing inputs, against IoProcessor.inputs()+outputs(). Jitter: one subprocess per mode runs "
    "a 1 kHz loop for the given seconds; lateness = wake time minus the intended deadline (CycleTimer: "
    "absolute deadlines; naive loop: previous wake + period, i.e. its interval error), plus the rate "
    "actually achieved."
)


# --- helpers ------------------------------------------------------------------------------------

def _setup_env(tmp: Path) -> None:
    os.environ["EVO_SHM_PREFIX"] = f"bh{uuid.uuid4().hex[:8]}"
    os.environ["EVO_RUN_DIR"] = str(tmp / "run")


def _load(tmp: Path, axes: int, points: int):
    from common.config import load_config
    from hal.synthetic_config import write_config

    d = write_config(tmp / f"cfg{axes}", axes=axes, points=points, brakes=tuple(range(3, axes + 1, 8)))
    return load_config(d)


def _us(s: dict[str, float]) -> dict[str, float]:
    return {k.replace("_ns", "_us"): (v / 1000.0 if k.endswith("_ns") else v) for k, v in s.items()}


def _scenario_frames(axes: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recorded inputs of every compute run: n cycles of sinusoidal torque per axis (phases
    spread), and 64 seeded random frames of 1024 DI levels / AI values (every engine sees the same)."""
    rng = np.random.default_rng(7)
    di_frames = rng.random((64, 1024)) < 0.5
    ai_frames = rng.random((64, 1024))
    torques = 30.0 * np.sin(np.arange(n)[:, None] * 0.002
                            + np.linspace(0.0, 2 * math.pi, axes, endpoint=False)[None, :])
    return torques, di_frames, ai_frames


# --- compute: the real cycle --------------------------------------------------------------------

def _default_config(tmp: Path):
    """config/ of the code under test (a baseline worktree brings its own)."""
    import hal
    from common.config import load_config

    return load_config(Path(hal.__file__).resolve().parents[1] / "config")


def _hal_cycle(cfg, engine: str, backend: str | None = None):
    """HalCycle with its IoProcessor and sim driver on `engine` (compiled: the kernels of `backend`,
    $EVO_KERNELS: aot / jit; None: what the HAL loads)."""
    from hal.cycle import HalCycle

    with temp_env(EVO_HAL_ENGINE=engine, EVO_KERNELS=backend):
        hal = HalCycle(cfg)
    assert hal.proc.engine == engine and getattr(hal.driver, "engine", engine) == engine
    return hal


def bench_floor(cycles: int) -> dict[str, Any]:
    """The paced loop with nothing in the timed region: what the timer and the loop cost."""
    out = np.empty(cycles, np.int64)
    pc = time.perf_counter_ns
    with _timed_region() as rt:
        for i in range(cycles + 500):
            t0 = pc()
            t1 = pc()
            if i >= 500:
                out[i - 500] = t1 - t0
            time.sleep(PACE_S)
    return {**summarize(out), "rt_active": rt}


def bench_spin_floor(cycles: int, work_us: float) -> dict[str, Any]:
    """The paced loop timing a fixed amount of pure CPU work (a spin on the clock for `work_us`, no
    memory to speak of): what the VM adds at p50/p99 to any `work_us` of work run after the pause."""
    out = np.empty(cycles, np.int64)
    pc = time.perf_counter_ns
    work_ns = int(work_us * 1000)
    with _timed_region() as rt:
        for i in range(cycles + 500):
            t0 = pc()
            end = t0 + work_ns
            while pc() < end:
                pass
            t1 = pc()
            if i >= 500:
                out[i - 500] = t1 - t0
            time.sleep(PACE_S)
    return {**summarize(out), "rt_active": rt}


def _test_cu(axes: int, moving: bool):  # noqa: ANN202
    """A test CU: the cu_hal writer, its first `axes` axes enabled with brakes released when `moving`."""
    from common.shm.p2p import TypedP2pWriter
    from common.shm.segments import SEGMENTS

    s = SEGMENTS["cu_hal"]
    cu = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
    if moving:
        cu.local["axes"]["enable"][:axes] = 1
        cu.local["axes"]["brake_release"][:axes] = 1
    return cu


def _command_writers() -> list:
    """re_hal and rpc_hal as the RE and the gRPC bridge keep them: writers the HAL polls every cycle and
    that commit every COMMAND_BEAT cycles with no command in them (the HAL's command polls as on a machine)."""
    from common.shm.p2p import TypedP2pWriter
    from common.shm.segments import SEGMENTS

    out = []
    for key in ("re_hal", "rpc_hal"):
        s = SEGMENTS[key]
        w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
        w.commit()
        out.append(w)
    return out


COMMAND_BEAT = 10  # cycles between the command writers' commits (the bridges commit every <= 10 ms)


def bench_step(machine: str, scenario: str, cycles: int, engine: str = "compiled", points: int = 1024,
               backend: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        cfg = _default_config(tmp) if machine == "default" else _load(tmp, int(machine), points)
        axes = max(cfg.axis_ids)
        hal = _hal_cycle(cfg, engine, backend)
        housekeeping = getattr(hal, "housekeeping", None)  # (a baseline tree's step still does it inside)
        moving = scenario != "idle"
        cu = _test_cu(axes, moving)
        commanders = _command_writers()
        try:
            torque = cu.local["axes"]["calculated_torque"]
            bank = cu.local["do_bank"]
            torques, di_frames, ai_frames = _scenario_frames(axes, 500 + cycles)
            frames = len(di_frames)
            noisy = scenario == "worst"
            dio = hal.dio
            warm = 500
            out = np.empty(cycles, np.int64)
            now = time.perf_counter_ns()
            pc = time.perf_counter_ns
            start_pos = hal.dio.position[:axes].copy()
            with _timed_region() as rt:
                for i in range(warm + cycles):
                    now += PERIOD_NS
                    if moving:
                        torque[:axes] = torques[i]
                        bank[1 + i % 15] = i  # role-less and some role pins change; brake outputs (word 0) stay
                    if noisy:
                        np.copyto(dio.di, di_frames[i % frames])
                        np.copyto(dio.ai, ai_frames[i % frames])
                    cu.commit()
                    if i % COMMAND_BEAT == 0:
                        for w in commanders:
                            w.commit()
                    t0 = pc()
                    hal.step(now, 0.001)
                    t1 = pc()
                    if housekeeping is not None:  # after the cycle, as the loop does (timed: bench_hal --parts)
                        housekeeping(now)
                    if i >= warm:
                        out[i - warm] = t1 - t0
                    time.sleep(PACE_S)  # paced like the real loop (the CPU is not hogged; caches cool)
            assert hal.cu_connected, "the CU writer was not seen"
            assert all(c.status.value == "live" for c in (hal.re_cmds, hal.rpc_cmds)), "the command writers were not seen"
            if moving:
                assert np.count_nonzero(hal.dio.position[:axes] != start_pos) == axes, "axes should move"
        finally:
            hal.close()
            cu.close()
            for w in commanders:
                w.close()
    return {**summarize(out), "rt_active": rt}


def bench_work(machine: str, scenario: str, cycles: int, engine: str, points: int = 1024) -> dict[str, Any]:
    """Only the work the kernels replace, inside a real HalCycle: proc.outputs + driver.cycle +
    proc.inputs, fed like step() feeds them (moving: torque and DO bits change every cycle)."""
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        cfg = _default_config(tmp) if machine == "default" else _load(tmp, int(machine), points)
        axes = max(cfg.axis_ids)
        hal = _hal_cycle(cfg, engine)
        try:
            proc, drv, dio = hal.proc, hal.driver, hal.dio
            moving = scenario != "idle"
            if moving:
                dio.enable[:axes] = True
                dio.brake_release[:axes] = True
            bank = np.zeros(16, np.uint64)
            ao = np.zeros(1024)
            torques, di_frames, ai_frames = _scenario_frames(axes, 500 + cycles)
            worst = scenario == "worst"
            out = np.empty(cycles, np.int64)
            pc = time.perf_counter_ns
            now = pc()
            with _timed_region() as rt:
                for i in range(500 + cycles):
                    now += PERIOD_NS
                    if moving:
                        dio.torque[:axes] = torques[i]
                        bank[1 + i % 15] = i
                    t0 = pc()
                    proc.outputs(bank, ao, now, True)
                    drv.cycle(dio, now, 0.001)
                    if worst:
                        np.copyto(dio.di, di_frames[i & 63])
                        np.copyto(dio.ai, ai_frames[i & 63])
                    proc.inputs(dio.di, dio.ai, now)
                    t1 = pc()
                    if i >= 500:
                        out[i - 500] = t1 - t0
                    time.sleep(PACE_S)
        finally:
            hal.close()
    return {**summarize(out), "rt_active": rt}


@contextlib.contextmanager
def _timed_region():  # noqa: ANN202
    """A timed loop's surroundings: garbage collected and frozen, SCHED_FIFO when permitted (yields
    whether it is on), both undone afterwards, also on an error."""
    gc.collect()
    gc.freeze()
    rt = _fifo_on()
    try:
        yield rt
    finally:
        _fifo_off()
        gc.unfreeze()


def _fifo_on() -> bool:
    from common.rt import setup_realtime

    return setup_realtime(FIFO_PRIORITY)


def _fifo_off() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


# --- compute: the naive alternative -------------------------------------------------------------

class NaiveIo:
    """The io.toml semantics as a per-point Python loop (what one writes without vectorising)."""

    def __init__(self, cfg) -> None:
        io = cfg.io
        self.di = [(p.pin, p.is_nc, p.debounce_ms * 1_000_000) for p in io.points_of("di")]
        self.di_state = {p.pin: False for p in io.points_of("di")}
        self.di_since = {p.pin: None for p in io.points_of("di")}
        self.ai = [(p.pin, p.curve, p.average) for p in io.points_of("ai")]
        self.ai_hist = {p.pin: collections.deque(maxlen=p.average) for p in io.points_of("ai")}
        self.do = [(p.pin, p.role is not None, p.inverted) for p in io.points_of("do")]
        self.do_value = {p.pin: bool(p.init) for p in io.points_of("do")}
        self.ao = [(p.pin, p.role is not None, p.min, p.max) for p in io.points_of("ao")]
        self.ao_value = {p.pin: float(p.init) for p in io.points_of("ao")}
        self.di_out = [False] * 1024
        self.ai_out = [0.0] * 1024
        self.do_out = np.zeros(16, np.uint64)
        self.ao_out = [0.0] * 1024

    def cycle(self, di_phys: np.ndarray, ai_raw: np.ndarray, cu_bank: np.ndarray, cu_ao: np.ndarray, now: int) -> None:
        di_phys = di_phys.tolist()
        for pin, nc, deb in self.di:
            level = di_phys[pin] != nc
            if level != self.di_state[pin]:
                since = self.di_since[pin]
                if since is None:
                    self.di_since[pin] = since = now
                if now - since >= deb:
                    self.di_state[pin] = level
                    self.di_since[pin] = None
            else:
                self.di_since[pin] = None
            self.di_out[pin] = self.di_state[pin] != nc
        raw = ai_raw.tolist()
        for pin, curve, n in self.ai:
            eng = curve.to_engineering(raw[pin])
            h = self.ai_hist[pin]
            h.append(eng)
            self.ai_out[pin] = sum(h) / len(h)
        words = [int(w) for w in cu_bank]
        out = [0] * 16
        for pin, role, inv in self.do:
            w, b = divmod(pin, 64)
            value = bool((words[w] >> b) & 1) if role else self.do_value[pin]
            if value != inv:
                out[w] |= 1 << b
        self.do_out[:] = out
        cu = cu_ao.tolist()
        for pin, role, lo, hi in self.ao:
            v = cu[pin] if role else self.ao_value[pin]
            self.ao_out[pin] = lo if v < lo else hi if v > hi else v


def bench_io_semantics(cycles: int, points: int = 1024) -> dict[str, Any]:
    from hal.io import IoProcessor

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        cfg = _load(tmp, 8, points)
    rng = np.random.default_rng(3)
    frames = 64
    di = rng.random((frames, 1024)) < 0.5
    ai = rng.random((frames, 1024))
    banks = rng.integers(0, 2**63, (frames, 16), dtype=np.int64).astype(np.uint64)
    aos = rng.random((frames, 1024)) * 10.0
    results = {}
    for name in ("compiled", "numpy", "naive"):
        proc = NaiveIo(cfg) if name == "naive" else IoProcessor(cfg.io, cfg.io_registry, engine=name)
        out = np.empty(cycles, np.int64)
        pc = time.perf_counter_ns
        now = 0
        _fifo_on()
        for i in range(cycles + 200):
            now += PERIOD_NS
            k = i % frames
            t0 = pc()
            if name == "naive":
                proc.cycle(di[k], ai[k], banks[k], aos[k], now)
            else:
                proc.outputs(banks[k], aos[k], now, True)
                proc.inputs(di[k], ai[k], now)
            t1 = pc()
            if i >= 200:
                out[i - 200] = t1 - t0
            time.sleep(PACE_S)
        _fifo_off()
        results[name] = summarize(out)
    return results


# --- jitter (subprocess workers) ----------------------------------------------------------------

def jitter_worker(mode: str, seconds: float, config_dir: str | None) -> dict[str, Any]:
    from common.rt import CycleTimer, setup_realtime

    n = int(seconds * 1e9 / PERIOD_NS)
    rt = False
    if mode.endswith("fifo"):
        rt = setup_realtime(FIFO_PRIORITY)
        if not rt:
            return {"error": "SCHED_FIFO not permitted"}
    hal = None
    if mode.startswith("hal"):
        from common.config import load_config

        hal = _hal_cycle(load_config(config_dir), mode.split("_")[1])
    gc.collect()
    gc.freeze()
    late = np.empty(n, np.int64)
    pc = time.perf_counter_ns
    start = pc()
    if mode == "sleep":
        prev = pc()
        for i in range(n):
            time.sleep(PERIOD_NS / 1e9)
            t = pc()
            late[i] = t - prev - PERIOD_NS
            prev = t
        overruns = None
    else:
        timer = CycleTimer(PERIOD_NS)
        for i in range(n):
            late[i] = timer.wait()
            if hal is not None:
                now = pc()
                hal.step(now, PERIOD_NS / 1e9)
                hal.housekeeping(now)
            timer.done()
        overruns = timer.overruns
    elapsed = pc() - start
    if hal is not None:
        hal.close()
    s = summarize(late)
    return {"mode": mode, "rt_active": rt, "late": s, "overruns": overruns,
            "achieved_hz": n / (elapsed / 1e9), "cycles": n}


def run_jitter(mode: str, seconds: float, config_dir: Path | None, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_hal", "--jitter-worker", mode, "--seconds", str(seconds)]
    if config_dir is not None:
        cmd += ["--config", str(config_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds * 4 + 60)
    if r.returncode != 0:
        return {"mode": mode, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the baseline: this file's bench_step against another commit's HalCycle ----------------------

def _baseline_env(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(tree), EVO_HAL_ENGINE="compiled")


def warm_baseline(tree: Path) -> str:
    """The baseline tree's kernels compiled into its own cache ("" or the error)."""
    r = subprocess.run([sys.executable, "-m", "hal.kernels"], cwd=tree, env=_baseline_env(tree), capture_output=True,
                       text=True, timeout=900)
    return "" if r.returncode == 0 else f"baseline kernels: {(r.stderr.strip().splitlines() or ['?'])[-1]}"


def baseline_step(tree: Path | None, machine: str, scenario: str, cycles: int) -> dict[str, Any]:
    """This file's bench_step in a subprocess whose imports come from `tree` (BASELINE_COMMIT; None: this tree)."""
    cwd = tree if tree is not None else REPO
    env = _baseline_env(cwd)
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--step-worker",
                        json.dumps([machine, scenario, cycles])], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=cycles * 0.05 + 300)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


PARTS = ("hal_step kernel (the three polls, the numerics, hal_cu's and the status segments' commits)",
         "after it: the wakes (or, when the kernel stopped for it, the cycle in Python)", "whole step",
         "housekeeping after it (probes, injection poll, state file, health)", "step + housekeeping")


def bench_parts(scenario: str, cycles: int) -> dict[str, Any]:
    """Where a paced 64-axis step's time goes: HalCycle._step_polled's parts timed one by one (the same
    calls in the same order, perf_counter_ns between them; the kernels poll and commit, as from the step's
    first cycles on; re_hal and rpc_hal committed every COMMAND_BEAT cycles), then HalCycle.housekeeping as
    the loop calls it right after; AOT kernels, SCHED_FIFO, 0.3 ms pause."""
    from common.shm.wake import post_bits
    from hal.kernels import FL_COMMIT, FL_POLL, FL_PUBLISH, TO_PYTHON, WAKE_ALL, WAKE_BITS, WAKE_SHIFT

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        hal = _hal_cycle(_load(tmp, 64, 1024), "compiled", "aot")
        moving = scenario != "idle"
        cu = _test_cu(64, moving)
        commanders = _command_writers()
        glue = 0
        try:
            assert hal._sim is not None, "the fused sim path is what this times"
            ax, bank = cu.local["axes"], cu.local["do_bank"]
            torques, _, _ = _scenario_frames(64, 500 + cycles)
            marks = np.zeros((cycles, len(PARTS)), np.int64)
            pc = time.perf_counter_ns
            now = pc()
            with _timed_region() as rt:
                for i in range(500 + cycles):
                    now += PERIOD_NS
                    if moving:
                        ax["calculated_torque"][:64] = torques[i]
                        bank[1 + i % 15] = i
                    cu.commit()
                    if i % COMMAND_BEAT == 0:
                        for w in commanders:
                            w.commit()
                    if hal.step != hal._step_polled:  # the first cycles: attach, the first whole commits
                        assert i < 100, "the HAL did not reach its polled step"
                        hal.step(now, 0.001)
                        hal.housekeeping(now)
                        time.sleep(PACE_S)
                        continue
                    t0 = pc()  # --- HalCycle._step_polled, part by part
                    res = hal._k(hal._phase, FL_POLL | FL_COMMIT | FL_PUBLISH, now, 0.001, *hal._k_tail)
                    t1 = pc()
                    if res & TO_PYTHON:
                        hal._step_glue(now, 0.001, res)
                        glue += i >= 500
                    else:
                        if res & WAKE_BITS:
                            post_bits((res >> WAKE_SHIFT) & WAKE_ALL, hal._posters)
                        hal.cycles += 1
                    t2 = pc()
                    hal.housekeeping(now)
                    t3 = pc()
                    if i >= 500:
                        marks[i - 500] = (t1 - t0, t2 - t1, t2 - t0, t3 - t2, t3 - t0)
                    time.sleep(PACE_S)
        finally:
            hal.close()
            cu.close()
            for w in commanders:
                w.close()
    return {"rt_active": rt, "cycles_in_python": glue,
            **{name: _us(summarize(marks[:, k])) for k, name in enumerate(PARTS)}}


def step_ab(commit: str, rounds: int, quick: bool, out: str | None) -> int:
    """The 64-axis HalCycle.step (bench_step: re_hal / rpc_hal committed every COMMAND_BEAT cycles, paced,
    SCHED_FIFO) of COMMIT's tree and of this one in turns, each in its own process with this file's
    bench_step (the same load for both within a round): p50 / p99 per round and the medians over the rounds."""
    from benchmarks._baseline import baseline_tree

    res: dict[str, Any] = {"machine": machine_info(), "method": step_ab.__doc__, "commit": commit, "rounds": []}
    cycles = 2000 if quick else 10000
    with baseline_tree(commit) as tree:
        err = warm_baseline(tree)
        if err:
            print(err)
            return 1
        for r in range(rounds):
            got: dict[str, Any] = {"baseline": {}, "this tree": {}}
            for sc in ("idle", "moving"):
                for side, t in (("baseline", tree), ("this tree", None)):
                    d = baseline_step(t, "64", sc, cycles)
                    if "error" in d:
                        print(f"{side}: {d['error']}")
                        return 1
                    got[side][sc] = {k: d[k] for k in ("p50_us", "p99_us")}
            res["rounds"].append(got)
            print(f"round {r + 1}: " + "; ".join(f"{side} " + ", ".join(
                f"{sc} {v[sc]['p50_us']:.1f} / {v[sc]['p99_us']:.1f}" for sc in v) for side, v in got.items()), flush=True)
    med = {side: {sc: {k: float(np.median([g[side][sc][k] for g in res["rounds"]])) for k in ("p50_us", "p99_us")}
                  for sc in ("idle", "moving")} for side in ("baseline", "this tree")}
    res["medians"] = med
    print(f"\n64 axes, whole step, median over {rounds} rounds, p50 / p99 us (baseline = {commit}):")
    for sc in ("idle", "moving"):
        b, t = med["baseline"][sc], med["this tree"][sc]
        print(f"  {sc}: baseline {b['p50_us']:.1f} / {b['p99_us']:.1f}, this tree {t['p50_us']:.1f} / {t['p99_us']:.1f}")
    print(f"\nresults: {write_json('hal_step_ab', res, out)}")
    return 0


def bench_fused(machine: str, scenario: str, cycles: int, points: int = 1024) -> dict[str, Any]:
    """The one kernel call HalCycle.step makes with the sim driver (hal_step), inside a real
    HalCycle, fed through the cu_hal payload it reads (moving: torques and DO bits every cycle)."""
    from hal.kernels import FL_CONNECTED, FL_FRESH, PHASE_ALL

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        cfg = _default_config(tmp) if machine == "default" else _load(tmp, int(machine), points)
        axes = max(cfg.axis_ids)
        hal = _hal_cycle(cfg, "compiled")
        try:
            k, tail, dio = hal._k, hal._k_tail, hal.dio
            cu = hal.cu_in.local
            moving = scenario != "idle"
            if moving:
                cu["axes"]["enable"][:axes] = 1
                cu["axes"]["brake_release"][:axes] = 1
            torques, di_frames, ai_frames = _scenario_frames(axes, 500 + cycles)
            worst = scenario == "worst"
            out = np.empty(cycles, np.int64)
            pc = time.perf_counter_ns
            now = pc()
            with _timed_region() as rt:
                for i in range(500 + cycles):
                    now += PERIOD_NS
                    if moving:
                        cu["axes"]["calculated_torque"][:axes] = torques[i]
                        cu["do_bank"][1 + i % 15] = i
                    if worst:
                        np.copyto(dio.di, di_frames[i & 63])
                        np.copyto(dio.ai, ai_frames[i & 63])
                    t0 = pc()
                    k(PHASE_ALL, FL_CONNECTED | FL_FRESH, now, 0.001, *tail)
                    t1 = pc()
                    if i >= 500:
                        out[i - 500] = t1 - t0
                    time.sleep(PACE_S)
        finally:
            hal.close(save=False)
    return {**summarize(out), "rt_active": rt}


# --- main ---------------------------------------------------------------------------------------

_START_PROBE = """
import sys, time
t0 = time.perf_counter()
from common.config import load_config
from hal.cycle import HalCycle
t1 = time.perf_counter()
hal = HalCycle(load_config({config!r}))
t2 = time.perf_counter()
hal.close()
print(t1 - t0, t2 - t1, int("numba" in sys.modules))
"""


def bench_kernel_load(tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """A HalCycle built in fresh processes: on the AOT module (what `make kernels` leaves), on numba's JIT
    with its cache empty (a first start with nothing built: compiles) and filled (the fallback's start)."""
    out: dict[str, Any] = {}
    cache = tmp / "numba-cache"
    for label, extra in (("aot", {"EVO_KERNELS": "aot"}), ("jit_cold", {"EVO_KERNELS": "jit", "NUMBA_CACHE_DIR": str(cache)}),
                         ("jit_warm", {"EVO_KERNELS": "jit", "NUMBA_CACHE_DIR": str(cache)})):
        best = None
        for _ in range(1 if label == "jit_cold" else 3):  # the quickest of three: the start without other load
            r = subprocess.run([sys.executable, "-c", _START_PROBE.format(config=str(REPO / "config"))], cwd=REPO,
                               env=dict(env, **extra), capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                return {"error": r.stderr.strip().splitlines()[-1]}
            imports, build, numba_loaded = r.stdout.split()[-3:]
            if best is None or float(imports) + float(build) < sum(best[:2]):
                best = (float(imports), float(build), numba_loaded == "1")
        out[f"halcycle_{label}_imports_s"], out[f"halcycle_{label}_build_s"], out[f"halcycle_{label}_numba"] = best
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer cycles, shorter jitter runs")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/hal.json)")
    ap.add_argument("--jitter-worker", help=argparse.SUPPRESS)
    ap.add_argument("--step-worker", help=argparse.SUPPRESS)
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline commit's rows")
    ap.add_argument("--baseline", default=BASELINE_COMMIT, help=f"the commit of the baseline rows (default {BASELINE_COMMIT[:9]})")
    ap.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--parts", action="store_true", help="only where the 64-axis step's time goes, part by part")
    ap.add_argument("--step-ab", metavar="COMMIT", help="the 64-axis step of COMMIT's tree (a git worktree) and of "
                    "this one in turns, --rounds times: p50 / p99 per round and their medians")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)
    if args.step_ab:
        return step_ab(args.step_ab, args.rounds, args.quick, args.out)
    if args.parts:
        res = {"machine": machine_info(), "method": bench_parts.__doc__ + " Floor: " + bench_spin_floor.__doc__}
        n = 2000 if args.quick else 10000
        floors = {f"{us:g} us of pure CPU work (spin)": _us(bench_spin_floor(n, us)) for us in (30.0, 45.0)}
        res["spin_floor"] = floors
        print("\nfloor: the same paced loop timing a fixed spin on the clock, microseconds")
        print_table([{"work": k, **v} for k, v in floors.items()],
                    [("work", "work", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                     ("p99.9", "p999_us", ".1f"), ("max", "max_us", ".1f")])
        for scenario in ("idle", "moving"):
            r = res[scenario] = bench_parts(scenario, 2000 if args.quick else 10000)
            print(f"\n64 axes, {scenario} (SCHED_FIFO: {r['rt_active']}), microseconds")
            print_table([{"part": n, **r[n]} for n in PARTS],
                        [("part", "part", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                         ("p99.9", "p999_us", ".1f"), ("mean", "mean_us", ".1f"), ("max", "max_us", ".1f")])
        print(f"\nresults: {write_json('hal_parts', res, args.out)}")
        return 0
    if args.jitter_worker:
        print(json.dumps(jitter_worker(args.jitter_worker, args.seconds, args.config)))
        return 0
    if args.step_worker:
        machine, scenario, n = json.loads(args.step_worker)
        print(json.dumps(_us(bench_step(machine, scenario, int(n), "compiled"))))
        return 0

    cycles = 2000 if args.quick else 10000
    seconds = 2.0 if args.quick else 5.0
    info = machine_info()
    print(f"HAL benchmark on {info['cpu_model']} ({info['cores']} cores), Python {info['python']}, "
          f"load {info['loadavg_at_start']}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        load = bench_kernel_load(tmp, dict(env, EVO_SHM_PREFIX=os.environ["EVO_SHM_PREFIX"] + "k",
                                           EVO_RUN_DIR=str(tmp / "run")))
    print("  measured kernel load", flush=True)

    rows = []
    compute: dict[str, Any] = {"floor": _us(bench_floor(cycles))}
    rows.append({"case": "floor: empty timed region, same paced loop", **compute["floor"]})
    cases = [(m, sc) for m in ("default", "64") for sc in ("idle", "moving", "worst")]
    baseline = args.baseline
    compute["baseline_commit"] = baseline
    with contextlib.ExitStack() as stack:
        tree = None
        if not args.no_baseline:  # a worktree of the baseline commit, its kernels compiled in its own cache
            from benchmarks._baseline import baseline_tree

            tree = stack.enter_context(baseline_tree(baseline))
            err = warm_baseline(tree)
            if err:
                print(f"  {err}: no baseline rows", flush=True)
                compute["baseline_error"] = err
                tree = None
        for machine, scenario in cases:  # the engines of one case back to back: the same load for each
            per = {}
            engines = list(ENGINES)
            if tree is not None:
                base = baseline_step(tree, machine, scenario, cycles)
                compute[f"{machine}_{scenario}_baseline"] = base
                if "error" not in base:
                    per["baseline"] = base
                    engines.append("baseline")
            for engine in ENGINES:
                per[engine] = _us(bench_step(machine, scenario, cycles, engine, backend="aot" if engine == "compiled"
                                             else None))
                compute[f"{machine}_{scenario}_{engine}"] = per[engine]
            per["jit"] = _us(bench_step(machine, scenario, cycles, "compiled", backend="jit"))
            compute[f"{machine}_{scenario}_compiled_jit"] = per["jit"]
            engines.append("jit")
            per["kernel"] = _us(bench_fused(machine, scenario, cycles))
            compute[f"{machine}_{scenario}_hal_step_kernel"] = per["kernel"]
            label = "default machine (4 axes)" if machine == "default" else "64 axes"
            for engine in engines + ["kernel"]:
                name = {"baseline": f"baseline {baseline[:9]}", "kernel": "hal_step kernel alone",
                        "compiled": "compiled (AOT module)", "jit": "compiled (numba JIT, the fallback)"}.get(engine, engine)
                rows.append({"case": f"HalCycle.step {label}, {scenario}, {name}", **per[engine],
                             "ratio": ratio(per[engine]["p50_us"], per["compiled"]["p50_us"]),
                             "ratio99": ratio(per[engine]["p99_us"], per["compiled"]["p99_us"])})
            print(f"  measured {machine} {scenario}", flush=True)
    work: dict[str, Any] = {}
    for machine in ("default", "64"):
        for scenario in ("moving", "worst"):
            per = {e: _us(bench_work(machine, scenario, cycles, e)) for e in ENGINES}
            label = "default machine" if machine == "default" else "64 axes"
            for engine in ENGINES:
                work[f"{machine}_{scenario}_{engine}"] = per[engine]
                rows.append({"case": f"kernel work only (outputs+sim+inputs) {label}, {scenario}, {engine}",
                             **per[engine], "ratio": ratio(per[engine]["p50_us"], per["compiled"]["p50_us"]),
                             "ratio99": ratio(per[engine]["p99_us"], per["compiled"]["p99_us"])})
            print(f"  measured work {machine} {scenario}", flush=True)
    compute["work"] = work
    sem = {k: _us(v) for k, v in bench_io_semantics(cycles // 2).items()}
    for name, label in (("compiled", "compiled kernels"), ("numpy", "numpy reference"), ("naive", "naive per-point loop")):
        rows.append({"case": f"I/O semantics only (IoProcessor), {label}", **sem[name],
                     "ratio": ratio(sem[name]["p50_us"], sem["compiled"]["p50_us"]),
                     "ratio99": ratio(sem[name]["p99_us"], sem["compiled"]["p99_us"])})
    print("\nCompute per cycle (1024 points of each I/O type unless default), microseconds; x = / compiled")
    print_table(rows, [("case", "case", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                       ("p99.9", "p999_us", ".1f"), ("max", "max_us", ".1f"), ("x p50", "ratio", ".1f"),
                       ("x p99", "ratio99", ".1f")])
    for machine in ("64", "default"):
        p99 = max(compute[f"{machine}_moving_compiled"]["p99_us"], compute[f"{machine}_idle_compiled"]["p99_us"])
        print(f"aim: {machine}-machine p99 <= {AIM_P99_US:.0f} us -> compiled idle/moving p99 {p99:.1f} us "
              f"({'met' if p99 <= AIM_P99_US else 'NOT met'}); worst case p99 "
              f"{compute[f'{machine}_worst_compiled']['p99_us']:.1f} us")
    if "error" not in load:
        print("\nHalCycle(config/) in a fresh process, imports + build: " + "; ".join(
            f"{label} {load[f'halcycle_{key}_imports_s']:.2f} + {load[f'halcycle_{key}_build_s']:.2f} s"
            f"{' (numba imported)' if load[f'halcycle_{key}_numba'] else ' (no numba)'}"
            for key, label in (("aot", "AOT module"), ("jit_warm", "numba JIT, cache warm"),
                               ("jit_cold", "numba JIT, cache empty (compiles)"))))
    else:
        print(f"\nkernel load: {load['error']}")

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        _load(tmp, 64, 1024)
        env = dict(env, EVO_SHM_PREFIX=os.environ["EVO_SHM_PREFIX"], EVO_RUN_DIR=os.environ["EVO_RUN_DIR"])
        jitter = {}
        jrows = []
        modes = [("sleep", "naive loop: work + time.sleep(period)"), ("timer", "bare CycleTimer, normal scheduling"),
                 ("timer_fifo", f"bare CycleTimer, SCHED_FIFO {FIFO_PRIORITY}")]
        for engine in ENGINES:
            modes += [(f"hal_{engine}", f"HAL loop 64 axes, {engine}, normal"),
                      (f"hal_{engine}_fifo", f"HAL loop 64 axes, {engine}, SCHED_FIFO {FIFO_PRIORITY}")]
        for mode, label in modes:
            r = run_jitter(mode, seconds, tmp / "cfg64" if mode.startswith("hal") else None, env)
            jitter[mode] = r
            if "error" in r:
                jrows.append({"loop": label, "note": r["error"]})
                continue
            late = _us(r["late"])
            jrows.append({"loop": label, "mode": mode, **late, "hz": r["achieved_hz"], "overruns": r["overruns"]})
            print(f"  measured jitter {mode}", flush=True)
    bare = {m: jitter[m] for m in ("timer", "timer_fifo") if "error" not in jitter.get(m, {"error": 1})}
    for r in jrows:
        if "p99_us" in r and r["mode"].startswith("hal"):
            b = bare.get("timer_fifo" if r["mode"].endswith("fifo") else "timer")
            if b is not None:
                r["ratio"] = ratio(r["p99_us"], b["late"]["p99_ns"] / 1000.0)
                r["over_ratio"] = ratio(r["overruns"] + 1, b["overruns"] + 1)
    print(f"\n1 kHz wake lateness over {seconds:.0f} s per loop, microseconds (x = HAL / bare CycleTimer, same scheduling)")
    print_table(jrows, [("loop", "loop", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                        ("max", "max_us", ".0f"), ("rate Hz", "hz", ".0f"), ("overruns", "overruns", ""),
                        ("x p99", "ratio", ".2f"), ("x (overruns+1)", "over_ratio", ".2f"), ("note", "note", "")])

    path = write_json("hal", {
        "benchmark": "hal", "method": METHOD, "machine": info, "aim_p99_us_64_axes": AIM_P99_US,
        "kernel_load": load, "compute_us": compute, "io_semantics_us": sem, "jitter": jitter,
    }, args.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
