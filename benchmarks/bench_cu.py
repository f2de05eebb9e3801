"""Control-unit benchmark: compute per cycle for 4 and 64 axes — the compiled core (numba kernels),
the numpy reference core and a bare CycleTimer loop side by side — the control law vectorised vs a
per-axis Python loop, the kernels' cold compile / warm load, and the 1 kHz CU loop with the
simulated HAL, with and without SCHED_FIFO.

Run: `.venv/bin/python -m benchmarks.bench_cu [--quick] [--duration S]` -> tables + results/cu.json.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._stats import machine_info, print_table, ratio, summarize, temp_env, write_json

REPO = Path(__file__).resolve().parent.parent
AIM_P99_US = {64: 50.0, 4: 30.0}  # compiled CU cycle p99 (issue 15)
FIFO_PRIORITY = 80
CYCLES = 4000
PERIOD_NS = 1_000_000
SPIN_NS = 150_000  # control_unit.cycle.RT_SPIN_US
METHOD = (
    "Compute: ControlCore driven in one process (SCHED_FIFO when permitted, to keep other load out), "
    "every axis enabled, referenced and moving (absolute moves back and forth), paced by a common.rt.CycleTimer "
    "at 1 ms outside the timed region like the CU loop (under SCHED_FIFO the last 150 us busy-waited), a plant "
    "double of the HAL sim integrated outside the timed region; perf_counter_ns around one cycle. Engines: "
    "'compiled' = the kernels of control_unit/kernels built ahead of time by numba.pycc (what the CU runs), "
    "'jit' = the same kernels through numba's JIT (the fallback while that module is stale), 'numpy' = the "
    "vectorised reference; 'bare CycleTimer loop' = the same timer and the same timing with nothing in between (the "
    "machine's floor). Kernel load: `control_unit.kernels.load()` in a fresh process on the AOT module, and on "
    "numba's JIT with an empty NUMBA_CACHE_DIR (cold: compiles) and again with that cache (warm: loads); 'CU "
    "core start' = a fresh process importing control_unit.core, loading the default config, building the "
    "compiled ControlCore and stepping it once (AOT module / JIT with the project's cache). 'law' = the control "
    "law alone (ControlLaw.step, every stage on: PID+FF+DOB+notch+low-pass+clamp); 'law, per-axis loop' = "
    "the same formulas as a Python loop over axes with floats (the obvious alternative); 'CU cycle' = "
    "set_inputs + state machines + safety + trajectory + law (ControlCore.step); 'CU cycle + publish' adds "
    "filling cu_hal outputs, CU_STATUS and PID_STATE. Jitter: `python -m hal` + `python -m control_unit` "
    "on the default machine for the given seconds, the spindle jogging and X moving, with normal scheduling "
    "and with SCHED_FIFO (CU and HAL pinned to different cores when there are two; the CU then busy-waits "
    "the last 150 us before each deadline); figures read from the "
    "CU's own cu_rpc CYCLE_STATS (wake lateness histogram in 25 us buckets -> p50/p99 as bucket upper "
    "bounds, exact max, overruns = missed deadlines)."
)


# --- machine with N axes -------------------------------------------------------------------------
def _config_with_axes(tmp: Path, n: int, rt_cu: int = 0, rt_hal: int = 0, cpu_cu: int = -1, cpu_hal: int = -1) -> Path:
    dst = tmp / f"cfg{n}_{rt_cu}_{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "config", dst)
    x = (dst / "axis_01_x.toml").read_text()
    if n != 4:
        for f in dst.glob("axis_*.toml"):
            f.unlink()
        for i in range(1, n + 1):
            text = re.sub(r"(?m)^id = \d+", f"id = {i}", x)
            text = re.sub(r'(?m)^name = "X"', f'name = "A{i}"', text)
            text = re.sub(r"(?m)^\[guard\][^\[]*", "", text)
            (dst / f"axis_{i:02d}_a{i}.toml").write_text(text)
    cfg = dst / "config.toml"
    text = cfg.read_text()
    text = re.sub(r"(?ms)(^\[cu\]\n(?:(?!^\[).)*?)^rt_priority = \d+", rf"\g<1>rt_priority = {rt_cu}", text)
    text = re.sub(r"(?ms)(^\[hal\]\n(?:(?!^\[).)*?)^rt_priority = \d+", rf"\g<1>rt_priority = {rt_hal}", text)
    text = re.sub(r"(?ms)(^\[cu\]\n(?:(?!^\[).)*?)^cpu = -?\d+", rf"\g<1>cpu = {cpu_cu}", text)
    text = re.sub(r"(?ms)(^\[hal\]\n(?:(?!^\[).)*?)^cpu = -?\d+", rf"\g<1>cpu = {cpu_hal}", text)
    # the 2-core machines these runs share are often loaded: staleness must not end a run early
    text = re.sub(r"(?m)^stale_reads = \d+", "stale_reads = 200", text)
    text = re.sub(r"(?m)^hal_stale_cycles = \d+", "hal_stale_cycles = 200", text)
    # a HAL starting on a loaded box (imports, kernels from the cache) may need more than 5 s
    text = re.sub(r"(?m)^hal_attach_timeout_s = [\d.]+", "hal_attach_timeout_s = 30.0", text)
    cfg.write_text(text)
    return dst


class _Plant:
    """The HAL sim's plant formula (hal/drivers/sim.py), vectorised, for feeding the core."""

    def __init__(self, cfg: Any, n: int) -> None:
        self.g, self.d, self.c = np.zeros(n), np.zeros(n), np.zeros(n)
        for a in cfg.axes:
            k = a.kinematics
            g = 2 * (k.max_acceleration or 10 * k.max_velocity) / 100
            self.g[a.id - 1], self.d[a.id - 1], self.c[a.id - 1] = g, 10 * g / k.max_velocity, 2 * g
        self.x, self.v = np.zeros(n), np.zeros(n)

    def step(self, torque: np.ndarray, enable: np.ndarray, dt: float) -> None:
        a = self.g * np.where(enable, np.clip(torque, -100, 100), 0.0) - self.d * self.v - self.c * np.sign(self.v)
        self.v += a * dt
        self.x += self.v * dt


def _timer(fifo: bool) -> Any:
    """The CU's own pacing: absolute 1 ms deadlines, the last 150 us busy-waited under SCHED_FIFO."""
    from common.rt import CycleTimer

    return CycleTimer(PERIOD_NS, spin_ns=SPIN_NS if fifo else 0)


def bench_bare(cycles: int, fifo: bool) -> dict[str, float]:
    """The floor: the same timer and the same perf_counter_ns pair with nothing in between."""
    timer = _timer(fifo)
    pc = time.perf_counter_ns
    samples = np.empty(cycles, dtype=np.int64)
    for i in range(cycles):
        timer.wait()
        t0 = pc()
        samples[i] = pc() - t0
        timer.done()
    return summarize(samples)


def _fifo() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
        return True
    except (PermissionError, OSError):
        return False


def _normal() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


def bench_compute(tmp: Path, n: int, cycles: int, engine: str, fifo: bool, law: bool = False,
                  backend: str = "aot") -> dict[str, Any]:
    from common.config import load_config
    from common.shm.commands import CuCommand as C
    from common.shm.rings import Command
    from common.shm.segments import CU_TO_HAL, CU_TO_RPC, HAL_AXIS_FEEDBACK
    from common.states import CommandSource
    from control_unit import commands
    from control_unit.control_law import ControlLaw, LawGains
    from control_unit.core import ControlCore
    from control_unit.diagnostics import StatusWriter, fill_pid

    cfg = load_config(_config_with_axes(tmp, n))
    with temp_env(EVO_KERNELS=backend):  # the compiled engine's kernels: the AOT module, or numba's JIT
        core = ControlCore(cfg, engine=engine)
    dt = core.dt
    plant = _Plant(cfg, n)
    fb = np.zeros(64, dtype=HAL_AXIS_FEEDBACK)
    fb["active"][:n] = 1
    bits = np.zeros(16, dtype=np.uint64)  # logical DI bank: the guard-closed input (and Z's brake) on
    for role in ("GuardClosed", "BrakeIn3"):
        if cfg.io_registry.has(role):
            pin = cfg.io_registry.pin(role).pin
            bits[pin // 64] |= np.uint64(1 << (pin % 64))
    out = np.zeros((), dtype=CU_TO_HAL)
    rpc = np.zeros((), dtype=CU_TO_RPC)
    pid = rpc["pid"]
    status = StatusWriter(rpc["status"])
    status.bind(core)
    o = out["axes"]
    o_views = [o[f][:n] for f in ("target_position", "target_velocity", "calculated_torque", "enable",
                                   "brake_release")]
    t = [0.0]
    timer = _timer(fifo)

    def cmd(code: C, axis: int = 0, args: tuple = ()) -> None:
        a = tuple(args) + (0.0,) * (8 - len(args))
        r = commands.execute(core, Command(1, 1, 0, int(code), axis, 0, 0, a, ""), CommandSource.RPC, t[0])
        assert r[0] == 0, r

    def feed() -> None:
        fb["position"][:n] = plant.x
        fb["velocity"][:n] = plant.v
        fb["drive_ready"][:n] = core.ax.enable

    def cycle(publish: bool) -> int:
        timer.wait()
        t[0] += dt
        feed()
        t0 = time.perf_counter_ns()
        core.set_inputs(fb, bits, True)
        core.step(t[0])
        if publish:  # what CycleRunner does after step (PID diagnostics every 10th cycle)
            for view, src in zip(o_views, (core.traj.pos, core.traj.vel, core.torque, core.ax.enable,
                                           core.ax.brake_release)):
                view[:] = src
            status.fill(core, 0, 0)
            if core.cycle % 10 == 0:
                fill_pid(pid, core)
        dt_ns = time.perf_counter_ns() - t0
        timer.done()
        plant.step(core.torque, core.ax.enable, dt)
        return dt_ns

    for _ in range(200):
        cycle(False)
    cmd(C.ENABLE_AXIS, 0)
    for _ in range(400):
        cycle(False)
    core.ax.referenced[:] = True  # skip homing: full speed, soft limits on
    pmin, span = core.p.pmin, core.p.pmax - core.p.pmin  # back and forth inside every axis's soft limits
    res: dict[str, np.ndarray] = {}
    for publish in (False, True):
        samples = np.empty(cycles, dtype=np.int64)
        k = 0
        for i in range(cycles):
            if i % 300 == 0:
                for a in range(1, n + 1):
                    cmd(C.MOVE_ABSOLUTE, a, (float(pmin[a - 1] + span[a - 1] * (0.2 + 0.4 * (k % 2) + 0.01 * (a % 7))),))
                k += 1
            samples[i] = cycle(publish)
        res["CU cycle + publish" if publish else "CU cycle"] = samples
    moving = bool(np.any(core.ax.power == 3))
    if law:
        # the law alone, every stage on, vectorised vs per-axis loop
        gains = LawGains.uniform(n, kp=90, ki=400, kd=2.4, tf=0.001, tt=0.05, kvff=0.02, kaff=0.025,
                                 friction=2.0, jn=0.025, bn=0.02, gdob=100.0, f_notch=120.0, bw_notch=30.0,
                                 flp=300.0)
        vec = ControlLaw(gains, dt)
        naive = _NaiveLaw(gains, dt)
        rng = np.random.default_rng(1)
        sp, spv, spa, pos, vel = (rng.normal(size=n) for _ in range(5))
        act = np.ones(n, dtype=bool)
        lim = gains.out_max
        for label, fn in (("law (vectorised)", lambda: vec.step(sp, spv, spa, pos, vel, act, lim)),
                          ("law, per-axis loop", lambda: naive.step(sp, spv, spa, pos, vel, act, lim))):
            samples = np.empty(cycles, dtype=np.int64)
            for i in range(cycles):
                timer.wait()
                t0 = time.perf_counter_ns()
                fn()
                samples[i] = time.perf_counter_ns() - t0
                timer.done()
            res[label] = samples
        # same results from both implementations (checked, not timed)
        law2, naive2 = ControlLaw(gains, dt), _NaiveLaw(gains, dt)
        for _ in range(50):
            y1 = law2.step(sp, spv, spa, pos, vel, act, lim)
            y2 = naive2.step(sp, spv, spa, pos, vel, act, lim)
        assert np.allclose(y1, y2), "naive and vectorised laws disagree"
    out_stats: dict[str, Any] = {k: summarize(v) for k, v in res.items()}
    out_stats["axes_moving_at_end"] = moving
    out_stats["timer_overruns"] = timer.overruns
    return out_stats


_LOAD_PROBE = (
    "import sys, time; t0 = time.perf_counter(); from control_unit import kernels; t1 = time.perf_counter(); "
    "k = kernels.load(); print(t1 - t0, k.load_s, len(k.compiled), int('numba' in sys.modules))"
)
_START_PROBE = (
    "import time; t0 = time.perf_counter(); from pathlib import Path; from common.config import load_config; "
    "from control_unit.core import ControlCore; t1 = time.perf_counter(); "
    "core = ControlCore(load_config(Path('config'))); core.step(0.001); t2 = time.perf_counter(); "
    "print(t1 - t0, t2 - t1)"
)


def bench_kernel_load(tmp: Path) -> dict[str, float]:
    """`kernels.load()` in fresh processes: the AOT module (make kernels), numba's JIT with a private empty
    NUMBA_CACHE_DIR (cold: compiles) and filled (warm); and the CU core's start on the AOT module and on
    the JIT with the project's cache (the quickest of three each)."""
    import subprocess
    import sys

    res: dict[str, float] = {}
    for label, extra in (("aot", {"EVO_KERNELS": "aot"}),
                         ("cold", {"EVO_KERNELS": "jit", "NUMBA_CACHE_DIR": str(tmp / "numba_cache")}),
                         ("warm", {"EVO_KERNELS": "jit", "NUMBA_CACHE_DIR": str(tmp / "numba_cache")})):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _LOAD_PROBE], cwd=REPO, env=dict(os.environ, **extra),
                             capture_output=True, text=True, timeout=1800, check=True).stdout.split()
        res[f"{label}_process_s"] = time.perf_counter() - t0
        res[f"{label}_import_s"], res[f"{label}_load_s"] = float(out[0]), float(out[1])
        res[f"{label}_compiled"], res[f"{label}_numba"] = int(out[2]), int(out[3])
    for backend in ("aot", "jit"):
        starts = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _START_PROBE], cwd=REPO, capture_output=True, text=True,
                                 env=dict(os.environ, EVO_KERNELS=backend), timeout=300, check=True).stdout.split()
            starts.append((time.perf_counter() - t0, float(out[0]), float(out[1])))
        res[f"cu_start_{backend}_process_s"], res[f"cu_start_{backend}_import_s"], res[f"cu_start_{backend}_build_s"] = \
            min(starts)
    return res


class _NaiveLaw:
    """The same law written per axis with Python floats: what one writes without numpy."""

    def __init__(self, g: Any, dt: float) -> None:
        from control_unit.control_law import notch_coefficients

        self.dt = dt
        self.n = len(g.kp)
        self.p = [{k: float(getattr(g, k)[i]) for k in g.__dataclass_fields__} for i in range(self.n)]
        self.s = [dict(i=0.0, d=0.0, dob=0.0, vp=0.0, up=0.0, x1=0.0, x2=0.0, y1=0.0, y2=0.0, lp=0.0, first=True)
                  for _ in range(self.n)]
        self.nc = [notch_coefficients(p["f_notch"], p["bw_notch"], dt) for p in self.p]
        self.out = [0.0] * self.n

    def step(self, sp, spv, spa, pos, vel, act, lim) -> list[float]:
        dt = self.dt
        for k in range(self.n):
            p, s = self.p[k], self.s[k]
            if not act[k]:
                self.out[k] = 0.0
                continue
            e = float(sp[k]) - float(pos[k])
            v, sv = float(vel[k]), float(spv[k])
            alpha = dt / (p["tf"] + dt)
            s["d"] += alpha * (p["kd"] * (sv - v) - s["d"])
            s["i"] += p["ki"] * e * dt
            u = p["kp"] * e + s["i"] + s["d"]
            ff = p["kvff"] * sv + p["kaff"] * float(spa[k]) + p["friction"] * ((sv > 0) - (sv < 0))
            u += ff
            if p["gdob"] > 0:
                beta = p["gdob"] * dt / (1 + p["gdob"] * dt)
                if not s["first"]:
                    acc = (v - s["vp"]) / dt
                    s["dob"] += beta * (s["up"] - (p["jn"] * acc + p["bn"] * v) - s["dob"])
                s["vp"] = v
                u += s["dob"]
            b0, b1, b2, a1, a2 = self.nc[k]
            y = b0 * u + b1 * s["x1"] + b2 * s["x2"] - a1 * s["y1"] - a2 * s["y2"]
            s["x2"], s["x1"], s["y2"], s["y1"] = s["x1"], u, s["y1"], y
            if p["flp"] > 0:
                tau = 1 / (2 * math.pi * p["flp"])
                s["lp"] += dt / (tau + dt) * (y - s["lp"])
                y = s["lp"]
            m = float(lim[k])
            o = min(max(y, -m), m)
            if p["tt"] > 0:
                s["i"] += dt / p["tt"] * (o - y)
            s["up"] = o
            s["first"] = False
            self.out[k] = o
        return self.out


# --- 1 kHz loop with the simulated HAL -----------------------------------------------------------
def bench_loop(tmp: Path, seconds: float, fifo: bool, pin: bool = False) -> dict[str, Any]:
    from common.shm.commands import CuCommand as C
    from common.shm.segments import JITTER_BUCKET_US
    from tests.cu_support import Machine
    from tests.helpers import remove_shm

    prefix = f"bc{uuid.uuid4().hex[:8]}"
    os.environ["EVO_SHM_PREFIX"] = prefix
    cores = os.cpu_count() or 1
    cpu_cu, cpu_hal = (cores - 1, cores - 2) if pin and cores >= 2 else (-1, -1)
    cfgd = _config_with_axes(tmp, 4, rt_cu=FIFO_PRIORITY if fifo else 0, rt_hal=FIFO_PRIORITY + 1 if fifo else 0,
                             cpu_cu=cpu_cu, cpu_hal=cpu_hal)
    run = tmp / f"run_{prefix}"
    m = Machine(prefix, cfgd, run)
    try:
        m.start()
        c = m.rpc
        c.cmd(C.ENABLE_AXIS, 0)
        time.sleep(1.0)
        c.cmd(C.JOG_POSITIVE, 4, args=(3600.0,), expect=None)
        with c._lock:
            s0 = c._read()["stats"].copy()
        t_end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < t_end:
            c.cmd(C.MOVE_ABSOLUTE, 1, args=(25.0 + 5.0 * (k % 2),), expect=None)
            k += 1
            time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        with c._lock:
            s1 = c._read()["stats"].copy()
    finally:
        m.stop()
        remove_shm(prefix)
    hist = s1["jitter_hist"].astype(np.int64) - s0["jitter_hist"].astype(np.int64)
    cum = np.cumsum(hist) / max(1, hist.sum())
    edges = (np.arange(len(hist)) + 1) * JITTER_BUCKET_US

    def pct(q: float) -> float:
        return float(edges[int(np.searchsorted(cum, q))])

    return {
        "mode": ("SCHED_FIFO" if fifo else "normal")
        + (f" + pinned (CU cpu {cpu_cu}, HAL cpu {cpu_hal})" if cpu_cu >= 0 else ""),
        "rt_active": bool(s1["rt_active"]),
        "seconds": seconds,
        "cycles": int(s1["cycle_count"] - s0["cycle_count"]),
        "jitter_p50_us": pct(0.5),
        "jitter_p99_us": pct(0.99),
        "jitter_max_us": float(s1["max_wake_jitter_ns"]) / 1e3,
        "overruns": int(s1["overruns"] - s0["overruns"]),
        "max_cycle_us": float(s1["max_cycle_ns"]) / 1e3,
    }


def bench_commits(cycles: int, fifo: bool) -> dict[str, Any]:
    """The CU cycle's commits on real segments, paced like the cycle (CycleTimer at 1 ms): cu_hal, and
    cu_rpc / cu_re / cu_mqt with the status copied into the last two (a moving machine: every cycle) or
    cu_hal alone (at rest between beats). 'python' = CycleRunner's path before issue 15's last step
    (TypedP2pWriter.commit x4 + two np.copyto, what the numpy engine still does); 'compiled' = one
    kernels/outputs.cu_publish call on the AOT module. Alternated per cycle: the same load for both."""
    from common.shm.p2p import TypedP2pWriter, segment_name
    from common.shm.segments import CU_TO_HAL, CU_TO_MQT, CU_TO_RE, CU_TO_RPC
    from common.shm.views import field_bytes
    from control_unit import kernels
    from control_unit.kernels.outputs import PUB_MQT, PUB_RE, PUB_RPC, publish_args

    with temp_env(EVO_SHM_PREFIX=f"bcu{uuid.uuid4().hex[:8]}", EVO_KERNELS="aot"):
        k = kernels.load()
        segs = {"hal": CU_TO_HAL, "rpc": CU_TO_RPC, "re": CU_TO_RE, "mqt": CU_TO_MQT}
        w = {d: TypedP2pWriter.create(segment_name("cu", d), "cu", d, dt) for d, dt in segs.items()}
    try:
        for x in w.values():
            x.commit()
        args = publish_args(w["hal"], w["rpc"], w["re"], w["mqt"])
        publish = k.loaded.entry("cu_publish", 0, *args)
        src, s_re, s_mqt = (field_bytes(w[d].local, "status") for d in ("rpc", "re", "mqt"))

        def python(which: int) -> None:
            w["hal"].commit()
            if which & PUB_RPC:
                w["rpc"].commit()
            if which & PUB_RE:
                np.copyto(s_re, src)
                w["re"].commit()
            if which & PUB_MQT:
                np.copyto(s_mqt, src)
                w["mqt"].commit()

        out: dict[str, Any] = {}
        timer = _timer(fifo)
        pc = time.perf_counter_ns
        for label, which in (("all four (moving)", PUB_RPC | PUB_RE | PUB_MQT), ("cu_hal alone (at rest)", 0)):
            t = np.empty((cycles, 2), np.int64)
            for i in range(cycles + 200):
                for j, fn in enumerate((python, None)):
                    timer.wait()
                    t0 = pc()
                    if fn is None:
                        publish(which, *args)
                    else:
                        fn(which)
                    t1 = pc()
                    timer.done()
                    if i >= 200:
                        t[i - 200, j] = t1 - t0
            out[label] = {"python": summarize(t[:, 0]), "compiled": summarize(t[:, 1])}
        return out
    finally:
        for x in w.values():
            x.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s loops, fewer compute cycles")
    ap.add_argument("--duration", type=float, default=None, help="seconds per 1 kHz loop (default 60)")
    ap.add_argument("--no-loop", action="store_true", help="skip the 1 kHz loops with the simulated HAL")
    ap.add_argument("--commits", action="store_true", help="only the cycle's commits: Python path vs cu_publish")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/cu.json)")
    args = ap.parse_args(argv)
    if args.commits:
        fifo = _fifo()
        r = bench_commits(1500 if args.quick else 5000, fifo)
        _normal()
        print(f"\nthe CU cycle's commits, paced at 1 ms ({'SCHED_FIFO' if fifo else 'normal scheduling'}), microseconds")
        print_table([{"what": f"{label}, {how}", "p50": v[how]["p50_ns"] / 1e3, "p99": v[how]["p99_ns"] / 1e3,
                      "x": ratio(v["python"]["p50_ns"], v[how]["p50_ns"])} for label, v in r.items()
                     for how in ("python", "compiled")],
                    [("what", "what", ""), ("p50", "p50", ".1f"), ("p99", "p99", ".1f"), ("python/x p50", "x", ".2f")])
        print(f"\nresults: {write_json('cu_commits', {'machine': machine_info(), 'method': bench_commits.__doc__, 'commits': r}, args.out)}")
        return 0
    seconds = args.duration if args.duration is not None else (10.0 if args.quick else 60.0)
    cycles = 1500 if args.quick else CYCLES
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cu_"))
    os.environ.setdefault("EVO_RUN_DIR", str(tmp / "run"))
    try:
        kernel_load = bench_kernel_load(tmp)
        fifo = _fifo()
        compute: dict[str, Any] = {}
        for n in (4, 64):
            c: dict[str, Any] = {"bare CycleTimer loop": bench_bare(cycles, fifo)}
            for engine in ("compiled", "jit", "numpy"):  # jit: the compiled engine on numba's JIT (the fallback)
                r = bench_compute(tmp, n, cycles, "numpy" if engine == "numpy" else "compiled", fifo,
                                  law=engine == "numpy", backend="jit" if engine == "jit" else "aot")
                c.update({f"{k} ({engine})" if k.startswith("CU") else k: v for k, v in r.items()
                          if engine != "jit" or k.startswith("CU")})
            compute[str(n)] = c
        _normal()
        rows = []
        for n in ("4", "64"):
            c = compute[n]
            for label, st in c.items():
                if not isinstance(st, dict):
                    continue
                row = {"axes": int(n), "what": label, "p50_us": st["p50_ns"] / 1e3, "p99_us": st["p99_ns"] / 1e3,
                       "max_us": st["max_ns"] / 1e3, "numpy_x_p50": None, "numpy_x_p99": None}
                if label.endswith(("(compiled)", "(jit)")):
                    ref = c[label.replace("(compiled)", "(numpy)").replace("(jit)", "(numpy)")]
                    row["numpy_x_p50"] = ratio(ref["p50_ns"], st["p50_ns"])
                    row["numpy_x_p99"] = ratio(ref["p99_ns"], st["p99_ns"])
                if label.startswith("law (vectorised)"):
                    row["numpy_x_p50"] = ratio(c["law, per-axis loop"]["p50_ns"], st["p50_ns"])
                rows.append(row)
        print(f"\nCU compute per cycle ({cycles} cycles each, in-process, paced by CycleTimer at 1 ms, "
              f"{'SCHED_FIFO' if fifo else 'normal scheduling'})")
        print_table(rows, [("axes", "axes", ""), ("what", "what", ""), ("p50 us", "p50_us", ".1f"),
                           ("p99 us", "p99_us", ".1f"), ("max us", "max_us", ".1f"),
                           ("numpy/compiled p50", "numpy_x_p50", ".1f"), ("p99", "numpy_x_p99", ".1f")])
        aims = {}
        for n, aim in AIM_P99_US.items():
            p99 = compute[str(n)]["CU cycle (compiled)"]["p99_ns"] / 1e3
            aims[n] = {"aim_us": aim, "p99_us": p99, "met": p99 <= aim}
            print(f"aim: {n}-axis compiled CU cycle p99 <= {aim:.0f} us -> {p99:.1f} us "
                  f"({'met' if p99 <= aim else 'NOT met'})")
        kl = kernel_load
        print(f"\nkernels: AOT module load {kl['aot_load_s'] * 1e3:.1f} ms (process {kl['aot_process_s']:.2f} s, numba "
              f"imported: {bool(kl['aot_numba'])}); numba JIT cold compile {kl['cold_load_s']:.1f} s (process "
              f"{kl['cold_process_s']:.1f} s), warm load {kl['warm_load_s'] * 1e3:.0f} ms (imports "
              f"{kl['warm_import_s'] * 1e3:.0f} ms, process {kl['warm_process_s']:.2f} s)")
        for b in ("aot", "jit"):
            print(f"CU core start on {b}: process {kl[f'cu_start_{b}_process_s']:.2f} s (imports "
                  f"{kl[f'cu_start_{b}_import_s']:.2f} s, config + core + first step {kl[f'cu_start_{b}_build_s']:.2f} s)")
        path = write_json("cu", {"machine": info, "method": METHOD, "compute": compute, "kernel_load": kernel_load,
                                 "aims": aims}, args.out)  # written again with the loops below
        if args.no_loop:
            print(f"\nresults: {path}")
            return 0
        loops = [bench_loop(tmp, seconds, False), bench_loop(tmp, seconds, True, pin=True)]
        print(f"\nCU 1 kHz loop with the simulated HAL ({seconds:.0f} s each)")
        print_table(loops, [("mode", "mode", ""), ("rt", "rt_active", ""), ("cycles", "cycles", ""),
                            ("jitter p50 us", "jitter_p50_us", ".0f"), ("p99 us", "jitter_p99_us", ".0f"),
                            ("max us", "jitter_max_us", ".0f"), ("overruns", "overruns", ""),
                            ("max cycle us", "max_cycle_us", ".0f")])
        fifo_loop = loops[1]
        print(f"aim: zero overruns in {seconds:.0f} s under SCHED_FIFO -> {fifo_loop['overruns']} "
              f"({'met' if fifo_loop['rt_active'] and fifo_loop['overruns'] == 0 else 'NOT met'})")
        path = write_json("cu", {"machine": info, "method": METHOD, "compute": compute, "kernel_load": kernel_load,
                                 "loops": loops, "aims": {**{f"compute_p99_{n}_us": a for n, a in aims.items()},
                                                          "fifo_overruns": 0}}, args.out)
        print(f"\nresults: {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
