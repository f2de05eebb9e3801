"""Recipe executor cost beside what a user would otherwise write: loading (parse + full validation)
against a bare tomllib parse, and per-step time of I/O steps against a hand-written Python script.

Run: `.venv/bin/python -m benchmarks.bench_re [--steps N] [--out PATH]` -> table + results/re.json.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from common.config import load_config
from common.recipes import MachineLimits, load_bundle
from common.shm.commands import HalCommand, ReCommand
from common.shm.p2p import ReadContention, TypedP2pReader, TypedP2pWriter, segment_name, writer_alive
from common.shm.rings import CommandRingWriter
from common.shm.segments import HAL_TO_RPC, RE_TO_RPC, RPC_TO_HAL, RPC_TO_RE
from common.states import ReState
from recipe_executor.program import compile_bundle
from tests.helpers import REPO, ModuleProcess, remove_shm, unique_prefix, wait_for

METHOD = (
    "load: in one process, N loads of config/recipes/demo_cycle.toml (+ the recipe it calls): (a) tomllib.loads "
    "of both files, no checks -- what a script would do; (b) evo load_bundle + compile: strict parse, validation "
    "against the machine (axes, pins, limits), call graph, flattening. "
    "step: the simulated HAL and the CU run as subprocesses; a recipe of 2N set_do steps (toggle DO 20) runs in the RE "
    "subprocess, timed from the START ack to Completed as seen on re_rpc (per step = total / 2N); each set_do "
    "is acked by the HAL and verified in hal_re before the next. Beside it, a hand-written script does the same "
    "through rpc_hal: submit SET_DO, commit, poll (0.5 ms sleeps) until the ack and the applied bit, next."
)
PIN = 20


class Client:
    """Minimal command-ring client: writer of `src_dst`, non-exclusive reader of `dst_src`."""

    def __init__(self, src: str, dst: str, dtype: np.dtype, ack_dtype: np.dtype) -> None:
        self.w = TypedP2pWriter.create(segment_name(src, dst), src, dst, dtype)
        self.ring = CommandRingWriter(self.w.local["ring"])
        self.r = wait_for(lambda: TypedP2pReader.attach(segment_name(dst, src), src, ack_dtype, exclusive=False,
                                                        stale_reads=1_000_000), 20, what=f"{dst}_{src}")
        self.rid = 0
        self.acks: dict[int, Any] = {}

    def pump(self) -> np.ndarray:
        self.w.commit()
        try:
            d = self.r.read()
        except ReadContention:  # torn by the 1 kHz writer: use the last good copy, retry next pump
            return self.r.local
        for a in self.ring.poll_acks(d["acks"]):
            self.acks[a.request_id] = a
        return d

    def wait_followed(self) -> None:
        wait_for(lambda: int(self.pump()["acks"]["cmd_epoch_seen"]) == self.ring.epoch, 20, interval=0.003,
                 what="consumer following")

    def submit(self, code: int, **kw: Any) -> int:
        self.rid += 1
        self.ring.submit(int(code), self.rid, **kw)
        self.w.commit()
        return self.rid

    def call(self, code: int, **kw: Any) -> Any:
        rid = self.submit(code, **kw)
        return wait_for(lambda: self.pump() is not None and self.acks.get(rid), 10, interval=0.001, what="ack")

    def close(self) -> None:
        self.w.close()
        self.r.close()


def bench_load(n: int) -> dict[str, dict[str, float]]:
    cfg = load_config(REPO / "config")
    machine = MachineLimits.from_config(cfg)
    d = cfg.recipes_dir()
    files = [d / "demo_cycle.toml", d / "spindle_warmup.toml"]
    plain, evo = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        for f in files:
            tomllib.loads(f.read_text())
        plain.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        compile_bundle(load_bundle(d, "demo_cycle", machine), machine)
        evo.append(time.perf_counter_ns() - t0)
    return {"tomllib": summarize(plain), "evo": summarize(evo)}


def _config(base: Path, tick_ms: int, steps: int) -> Path:
    cfg = base / f"config_tick{tick_ms}"
    shutil.copytree(REPO / "config", cfg)
    text = (cfg / "config.toml").read_text()
    text = re.sub(r"(?m)^tick_ms = \d+", f"tick_ms = {tick_ms}", text)
    # heartbeat thresholds widened (not the cycle times): a starved 2-core box must not flip the
    # HAL into its safe state mid-run, which refuses DO writes and would end the run
    text = re.sub(r"(?m)^stale_reads = \d+", "stale_reads = 250", text)
    text = re.sub(r"(?m)^hal_stale_cycles = \d+", "hal_stale_cycles = 250", text)
    (cfg / "config.toml").write_text(text)
    (cfg / "recipes" / "bench_io.toml").write_text(
        f'[[step]]\ntype = "repeat"\ncount = {steps}\n'
        f'[[step.steps]]\ntype = "set_do"\npin = {PIN}\nvalue = true\n'
        f'[[step.steps]]\ntype = "set_do"\npin = {PIN}\nvalue = false\n'
    )
    return cfg


def bench_re_steps(prefix: str, cfg: Path, env: dict[str, str], steps: int, rounds: int) -> list[float]:
    re_proc = ModuleProcess("recipe_executor", prefix, ["--config", str(cfg)], env=env).start()
    per_step: list[float] = []
    try:
        wait_for(lambda: writer_alive(f"{prefix}_re_rpc"), 20, what="RE up")
        c = Client("rpc", "re", RPC_TO_RE, RE_TO_RPC)
        try:
            c.wait_followed()
            wait_for(lambda: int(c.pump() is not None) and True, 1)
            for _ in range(rounds):
                assert c.call(ReCommand.LOAD, text="bench_io").ok
                rid = c.submit(ReCommand.START)
                wait_for(lambda: c.pump() is not None and c.acks.get(rid), 10, interval=0.0002, what="START ack")
                t0 = time.perf_counter_ns()
                while True:
                    st = int(c.pump()["status"]["re_state"])
                    if st != ReState.RUNNING:
                        break
                    time.sleep(0.0002)
                total = time.perf_counter_ns() - t0
                assert st == ReState.COMPLETED, f"bench recipe ended in {ReState(st).name}: {re_proc.output()[-2000:]}"
                per_step.append(total / (2 * steps))
                assert c.call(ReCommand.RESET).ok
        finally:
            c.close()
    finally:
        re_proc.stop()
    return per_step


def bench_script_steps(steps: int, rounds: int) -> list[float]:
    c = Client("rpc", "hal", RPC_TO_HAL, HAL_TO_RPC)
    samples: list[float] = []
    try:
        c.wait_followed()
        w, b = divmod(PIN, 64)
        for _ in range(rounds * 2 * steps):
            value = len(samples) % 2 == 0
            t0 = time.perf_counter_ns()
            rid = c.submit(HalCommand.SET_DO, pin=PIN, args=(1.0 if value else 0.0,))
            while True:
                d = c.pump()
                a = c.acks.get(rid)
                if a is not None:
                    assert a.ok, a.message
                    if bool((int(d["io"]["do_bank"][w]) >> b) & 1) == value:
                        break
                time.sleep(0.0005)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        c.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="repeat count (2 set_do steps each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", type=int, default=300)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    load = bench_load(args.loads)
    rows = [
        {"what": "load (a) tomllib.loads, no checks", "p50_us": load["tomllib"]["p50_ns"] / 1e3,
         "p99_us": load["tomllib"]["p99_ns"] / 1e3, "ratio": 1.0},
        {"what": "load (b) evo load_bundle + compile", "p50_us": load["evo"]["p50_ns"] / 1e3,
         "p99_us": load["evo"]["p99_ns"] / 1e3, "ratio": ratio(load["evo"]["p50_ns"], load["tomllib"]["p50_ns"])},
    ]

    prefix = unique_prefix("bre")
    os.environ["EVO_SHM_PREFIX"] = prefix
    base = Path(tempfile.mkdtemp(prefix="bench_re_"))
    env = {"EVO_RUN_DIR": str(base / "run")}
    step_results: dict[str, dict[str, float]] = {}
    hal = cu = None
    try:
        cfg5 = _config(base, 5, args.steps)
        cfg1 = _config(base, 1, args.steps)
        hal = ModuleProcess("hal", prefix, ["--config", str(cfg5)], env=env).start()
        wait_for(lambda: writer_alive(f"{prefix}_hal_re"), 30, what="HAL up")
        cu = ModuleProcess("control_unit", prefix, ["--config", str(cfg5)], env=env).start()
        wait_for(lambda: writer_alive(f"{prefix}_cu_hal"), 30, what="CU up")  # the HAL holds outputs safe without it
        script = bench_script_steps(args.steps, args.rounds)
        re5 = bench_re_steps(prefix, cfg5, env, args.steps, args.rounds)
        re1 = bench_re_steps(prefix, cfg1, env, args.steps, args.rounds)
        step_results = {"script": summarize(script), "re_tick5": summarize(re5), "re_tick1": summarize(re1)}
    finally:
        for p in (cu, hal):
            if p is not None:
                p.stop()
        remove_shm(prefix)
        shutil.rmtree(base, ignore_errors=True)

    base_ns = step_results["script"]["p50_ns"]
    rows += [
        {"what": "set_do step: hand-written script (rpc_hal)", "p50_us": base_ns / 1e3,
         "p99_us": step_results["script"]["p99_ns"] / 1e3, "ratio": 1.0},
        {"what": "set_do step: RE, tick_ms = 5 (default)", "p50_us": step_results["re_tick5"]["p50_ns"] / 1e3,
         "p99_us": step_results["re_tick5"]["p99_ns"] / 1e3, "ratio": ratio(step_results["re_tick5"]["p50_ns"], base_ns)},
        {"what": "set_do step: RE, tick_ms = 1", "p50_us": step_results["re_tick1"]["p50_ns"] / 1e3,
         "p99_us": step_results["re_tick1"]["p99_ns"] / 1e3, "ratio": ratio(step_results["re_tick1"]["p50_ns"], base_ns)},
    ]
    print(METHOD, "\n")
    print_table(rows, [("what", "what", ""), ("p50 µs", "p50_us", ".1f"), ("p99 µs", "p99_us", ".1f"),
                       ("ratio", "ratio", ".2f")])
    print("\n(RE step rows: p50/p99 over rounds of the mean per-step time of one run; script rows: per step.)")
    path = write_json("re", {"machine": machine_info(), "method": METHOD, "params": vars(args),
                             "load": load, "step": step_results, "rows": rows}, args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
