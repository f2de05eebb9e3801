"""HAL cycle compute time (8 / 64 axes, 1024 points per I/O type) and 1 kHz wake jitter, side by side.

Run: `.venv/bin/python -m benchmarks.bench_hal [--quick]` -> tables + benchmarks/results/hal.json.
"""
from __future__ import annotations

import argparse
import collections
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

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json

PERIOD_NS = 1_000_000
AIM_P99_US = 150.0  # 64 axes, 1024 points of each I/O type
FIFO_PRIORITY = 80
PACE_S = 0.0003  # compute runs: pause between cycles, outside the timed region
METHOD = (
    "Compute: HalCycle.step() called directly in one process under SCHED_FIFO (other load on the "
    "machine kept out), paced by a 0.3 ms sleep outside the timed region, with a test CU writer "
    "committing cu_hal before every step; perf_counter_ns around step(). Scenarios: idle (CU connected, "
    "drives off, steady I/O), moving (all axes enabled and moving under sinusoidal torque, CU toggling "
    "DO bits every cycle), worst (moving + every DI and AI changing every cycle: the driver's status is "
    "overwritten with precomputed random frames, two 1024-element copies included in the time). "
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


# --- compute: the real cycle --------------------------------------------------------------------

def bench_step(axes: int, scenario: str, cycles: int, points: int = 1024) -> dict[str, Any]:
    from common.shm.p2p import TypedP2pWriter
    from common.shm.segments import SEGMENTS
    from hal.cycle import HalCycle

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        cfg = _load(tmp, axes, points)
        hal = HalCycle(cfg)
        s = SEGMENTS["cu_hal"]
        cu = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
        try:
            ax = cu.local["axes"]
            torque = ax["calculated_torque"]
            bank = cu.local["do_bank"]
            moving = scenario != "idle"
            if moving:
                ax["enable"][:axes] = 1
                ax["brake_release"][:axes] = 1
            rng = np.random.default_rng(7)
            frames = 64
            di_frames = rng.random((frames, 1024)) < 0.5
            ai_frames = rng.random((frames, 1024))
            noisy = scenario == "worst"
            if noisy:
                drv_cycle = hal.driver.cycle
                dio = hal.dio
                k = [0]

                def cycle(io, now_ns, dt_s):
                    drv_cycle(io, now_ns, dt_s)
                    np.copyto(dio.di, di_frames[k[0] % frames])
                    np.copyto(dio.ai, ai_frames[k[0] % frames])
                    k[0] += 1

                hal.driver.cycle = cycle
            phase = np.linspace(0.0, 2 * math.pi, axes, endpoint=False)
            warm = 500
            out = np.empty(cycles, np.int64)
            now = time.perf_counter_ns()
            gc.collect()
            gc.freeze()
            pc = time.perf_counter_ns
            start_pos = hal.dio.position[:axes].copy()
            rt = _fifo_on()
            for i in range(warm + cycles):
                now += PERIOD_NS
                if moving:
                    torque[:axes] = 30.0 * np.sin(i * 0.002 + phase)
                    bank[1 + i % 15] = i  # role-less and some role pins change; brake outputs (word 0) stay
                cu.commit()
                t0 = pc()
                hal.step(now, 0.001)
                t1 = pc()
                if i >= warm:
                    out[i - warm] = t1 - t0
                time.sleep(PACE_S)  # paced like the real loop (the CPU is not hogged; caches cool)
            _fifo_off()
            gc.unfreeze()
            assert hal.cu_connected, "the CU writer was not seen"
            if moving:
                assert np.count_nonzero(hal.dio.position[:axes] != start_pos) == axes, "axes should move"
        finally:
            hal.close()
            cu.close()
    return {**summarize(out), "rt_active": rt}


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
    for name in ("vectorised", "naive"):
        proc = IoProcessor(cfg.io, cfg.io_registry) if name == "vectorised" else NaiveIo(cfg)
        out = np.empty(cycles, np.int64)
        pc = time.perf_counter_ns
        now = 0
        _fifo_on()
        for i in range(cycles + 200):
            now += PERIOD_NS
            k = i % frames
            t0 = pc()
            if name == "vectorised":
                proc.outputs(banks[k], aos[k], now, True)
                proc.inputs(di[k], ai[k], now)
            else:
                proc.cycle(di[k], ai[k], banks[k], aos[k], now)
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
        from hal.cycle import HalCycle

        hal = HalCycle(load_config(config_dir))
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
                hal.step(pc(), PERIOD_NS / 1e9)
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


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer cycles, shorter jitter runs")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/hal.json)")
    ap.add_argument("--jitter-worker", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jitter_worker:
        print(json.dumps(jitter_worker(args.jitter_worker, args.seconds, args.config)))
        return 0

    cycles = 2000 if args.quick else 10000
    seconds = 2.0 if args.quick else 5.0
    info = machine_info()
    print(f"HAL benchmark on {info['cpu_model']} ({info['cores']} cores), Python {info['python']}, "
          f"load {info['loadavg_at_start']}", flush=True)

    rows = []
    compute: dict[str, Any] = {}
    for axes in (8, 64):
        for scenario in ("idle", "moving", "worst"):
            s = _us(bench_step(axes, scenario, cycles))
            compute[f"{axes}_{scenario}"] = s
            rows.append({"case": f"HalCycle.step {axes} axes, {scenario}", **s})
            print(f"  measured {axes} axes {scenario}", flush=True)
    sem = {k: _us(v) for k, v in bench_io_semantics(cycles // 2).items()}
    base = sem["vectorised"]["p50_us"]
    rows.append({"case": "I/O semantics, vectorised (IoProcessor)", **sem["vectorised"], "ratio": 1.0})
    rows.append({"case": "I/O semantics, naive per-point loop", **sem["naive"],
                 "ratio": ratio(sem["naive"]["p50_us"], base)})
    print("\nCompute per cycle (1024 points of each I/O type), microseconds")
    print_table(rows, [("case", "case", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                       ("p99.9", "p999_us", ".1f"), ("max", "max_us", ".1f"), ("x p50", "ratio", ".1f")])
    p99_64 = max(compute["64_moving"]["p99_us"], compute["64_idle"]["p99_us"])
    print(f"aim: 64-axis p99 < {AIM_P99_US:.0f} us -> idle/moving p99 {p99_64:.1f} us "
          f"({'met' if p99_64 < AIM_P99_US else 'NOT met'}); worst case p99 {compute['64_worst']['p99_us']:.1f} us")

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        _setup_env(tmp)
        _load(tmp, 64, 1024)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
        jitter = {}
        jrows = []
        modes = [("sleep", "naive loop: work + time.sleep(period)"), ("timer", "CycleTimer, normal scheduling"),
                 ("timer_fifo", f"CycleTimer, SCHED_FIFO {FIFO_PRIORITY}"),
                 ("hal", "HAL loop 64 axes (CycleTimer + step), normal"),
                 ("hal_fifo", f"HAL loop 64 axes (CycleTimer + step), SCHED_FIFO {FIFO_PRIORITY}")]
        for mode, label in modes:
            r = run_jitter(mode, seconds, tmp / "cfg64" if mode.startswith("hal") else None, env)
            jitter[mode] = r
            if "error" in r:
                jrows.append({"loop": label, "note": r["error"]})
                continue
            late = _us(r["late"])
            jrows.append({"loop": label, **late, "hz": r["achieved_hz"], "overruns": r["overruns"]})
            print(f"  measured jitter {mode}", flush=True)
    base_p99 = next((r["p99_us"] for r in jrows if r["loop"].startswith("naive") and "p99_us" in r), None)
    for r in jrows:
        if "p99_us" in r:
            r["ratio"] = ratio(r["p99_us"], base_p99)
    print(f"\n1 kHz wake lateness over {seconds:.0f} s per loop, microseconds")
    print_table(jrows, [("loop", "loop", ""), ("p50", "p50_us", ".1f"), ("p99", "p99_us", ".1f"),
                        ("max", "max_us", ".0f"), ("rate Hz", "hz", ".0f"), ("overruns", "overruns", ""),
                        ("p99 vs naive", "ratio", ".2f"), ("note", "note", "")])

    path = write_json("hal", {
        "benchmark": "hal", "method": METHOD, "machine": info, "aim_p99_us_64_axes": AIM_P99_US,
        "compute_us": compute, "io_semantics_us": sem, "jitter": jitter,
    }, args.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
