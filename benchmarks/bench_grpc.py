"""The gRPC bridge's cost beside the raw shared-memory command path, and its effect on CU jitter.

Run: `.venv/bin/python -m benchmarks.bench_grpc [--quick] [--out PATH]` -> table + results/grpc.json;
`--latency-only --baseline 99af192` (issue 15): GetStatus vs SetDigitalOutput vs a CU command beside
today's code, with the bridge-side breakdown -> results/grpc_round_trip.json; `--hal-at-cycle-start`: the
same, our bridge against the HAL taking commands between cycles and against it taking them at a cycle's start.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
import psutil

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from common.consts import ENV_RUN_DIR, ENV_SHM_PREFIX
from common.shm.commands import HalCommand, ResultCode
from common.shm.p2p import TypedP2pReader, TypedP2pWriter, read_header
from common.shm.rings import CommandRingWriter
from common.shm.segments import JITTER_BUCKET_US, JITTER_BUCKETS, SEGMENTS

REPO = Path(__file__).resolve().parent.parent
METHOD = (
    "HAL and CU run as real processes (1 kHz each, normal scheduling). Floor: this process writes the "
    "rpc_hal command ring itself (SET_DO on a free pin), commits, and polls hal_rpc every 50 us until the HAL's "
    "ack for that seq appears (the HAL applies the output before it acks). gRPC: the bridge process owns the "
    "rings; the client times Io.SetDigitalOutput end to end (same pin, same HAL), and Machine.GetStatus beside "
    "a raw read of cu_rpc. CU jitter: the wake-lateness histogram the CU publishes in cu_rpc (25 us buckets), "
    "differenced over a window with no watcher and over one with 10 WatchStatus clients at 50 Hz (10 channels, "
    "threads of this process: the clients' CPU is on the same 2 cores), first with normal scheduling, then "
    "with HAL and CU restarted under SCHED_FIFO (rt_priority 80) when the OS permits it. Test tolerance in the config copy: "
    "[hal] stale_reads=100, [cu] hal_stale_cycles=200 (the defaults flap on a loaded 2-core box)."
)
DO_PIN = 10
AIM_RT_P50_MS = 3.0
POLL_S = 50e-6  # the floor's ack polling period (the bridge polls every 0.5 ms)
RT_PRIORITY = 80  # SCHED_FIFO priority of HAL and CU in the real-time variant


class Procs:
    """hal, control_unit (and later grpc_bridge) as `python -m` subprocesses with a private prefix."""

    def __init__(self, prefix: str, cfg: Path, log_dir: Path, machine_code: Path = REPO) -> None:
        self.prefix = prefix
        self.machine_code = machine_code  # the tree HAL and CU run from (--machine-commit)
        self.cfg = cfg
        self.log_dir = log_dir
        self.env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.env[ENV_SHM_PREFIX] = prefix
        self.env[ENV_RUN_DIR] = str(log_dir / "run")
        self.env.pop("EVO_NOTIFY_FD", None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, package: str, code: Path | None = None, cfg: Path | None = None, **env: str) -> psutil.Process:
        """`code`: the source tree the process runs from (a baseline worktree for today's bridge;
        default: the machine's tree for hal / control_unit, this tree otherwise)."""
        if code is None:
            code = self.machine_code if package in ("hal", "control_unit") else REPO
        log = open(self.log_dir / f"{package}.log", "ab")
        self.procs[package] = subprocess.Popen(
            [sys.executable, "-m", package, "--config", str(cfg or self.cfg)], cwd=code,
            env={**self.env, "PYTHONPATH": str(code), **env},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return psutil.Process(self.procs[package].pid)

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited {p.returncode}: {(self.log_dir / f'{name}.log').read_text()[-2000:]}")

    def stop(self, package: str | None = None) -> None:
        for name in [package] if package else list(reversed(self.procs)):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wait(pred: Callable[[], Any], timeout: float, what: str, procs: Procs | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if procs is not None:
            procs.check()
        try:
            v = pred()
            if v:
                return v
        except Exception:  # noqa: BLE001 - not yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def reader(prefix: str, key: str, exclusive: bool) -> TypedP2pReader:
    spec = SEGMENTS[key]
    return TypedP2pReader.attach(spec.name(prefix), "rpc", spec.dtype, exclusive=exclusive, stale_reads=1 << 30)


def read(r: TypedP2pReader) -> np.ndarray:
    while True:
        v = r.try_read()
        if v is not None:
            return v


# --- floor: the raw command ring --------------------------------------------------------------------------
def raw_round_trips(prefix: str, n: int, procs: Procs) -> np.ndarray:
    spec = SEGMENTS["rpc_hal"]
    w = TypedP2pWriter.create(spec.name(prefix), spec.writer, spec.reader, spec.dtype)
    ring = CommandRingWriter(w.local["ring"])
    r = reader(prefix, "hal_rpc", exclusive=True)
    try:
        def followed() -> bool:
            w.commit()  # heartbeat while the HAL attaches (it retries once a second)
            return int(read(r)["acks"]["cmd_epoch_seen"]) == ring.epoch
        wait(followed, 10, "HAL attaching our rpc_hal", procs)
        out = np.empty(n, dtype=np.int64)
        pc = time.perf_counter_ns
        for i in range(n):
            t0 = pc()
            seq = ring.submit(HalCommand.SET_DO, i + 1, pin=DO_PIN, args=(float(i & 1),))
            w.commit()
            acks: list = []
            while not acks:
                acks = ring.poll_acks(read(r)["acks"])
                if not acks:
                    time.sleep(POLL_S)  # a busy spin would steal the HAL's core on 2 CPUs
            out[i] = pc() - t0
            if acks[0].seq != seq or acks[0].result != ResultCode.OK:
                raise RuntimeError(f"unexpected ack {acks[0]}")
        return out
    finally:
        r.close()
        w.close()


def raw_status_reads(prefix: str, n: int) -> np.ndarray:
    r = reader(prefix, "cu_rpc", exclusive=False)
    try:
        out = np.empty(n, dtype=np.int64)
        pc = time.perf_counter_ns
        for i in range(n):
            t0 = pc()
            read(r)
            out[i] = pc() - t0
        return out
    finally:
        r.close()


# --- gRPC ------------------------------------------------------------------------------------------------
REFUSED = {"count": 0}  # commands refused for a transient reason (a loaded box: "CU not connected"), retried


def timed(call: Callable[[], Any]) -> tuple[int, Any]:
    """(ns, reply) of one call; a transient refusal (FAILED_PRECONDITION / UNAVAILABLE on a loaded box,
    e.g. the HAL briefly not seeing the CU) is counted in REFUSED and the sample taken again."""
    for _ in range(200):
        t0 = time.perf_counter_ns()
        try:
            reply = call()
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE):
                raise
            REFUSED["count"] += 1
            time.sleep(0.05)
            continue
        return time.perf_counter_ns() - t0, reply
    raise RuntimeError("200 refusals in a row")


def grpc_round_trips(stubs: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    from grpc_bridge.protos.evo.v1 import io_pb2

    out = np.empty(n, dtype=np.int64)
    server = np.empty(n)
    for i in range(n):
        req = io_pb2.SetDigitalOutputRequest(pin=DO_PIN, value=bool(i & 1))
        out[i], reply = timed(lambda req=req: stubs.io.SetDigitalOutput(req, timeout=5))
        server[i] = reply.round_trip_ms
    return out, server


def grpc_cu_command(stubs: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Machine.AllowManualMode (a CU command acked in the CU's next cycle, no motion), toggled."""
    from grpc_bridge.protos.evo.v1 import machine_pb2

    out = np.empty(n, dtype=np.int64)
    server = np.empty(n)
    for i in range(n):
        req = machine_pb2.AllowManualModeRequest(allow=bool(i & 1))
        out[i], reply = timed(lambda req=req: stubs.machine.AllowManualMode(req, timeout=5))
        server[i] = reply.round_trip_ms
    return out, server


def trace_breakdown(path: Path) -> dict[str, dict[str, float]]:
    """Median and p99 of each stage (ms) per method from the bridge's EVO_GRPC_TRACE file."""
    import json

    stages = (("received", "submitted", "validate + ring write + commit"),
              ("submitted", "acked", "consumer: wait for its cycle + execute"),
              ("acked", "noticed", "consumer commit + wake -> link thread"),
              ("noticed", "resumed", "link thread -> event loop (snapshot, hop)"),
              ("resumed", "replied", "log + build reply"))
    by_method: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        by_method.setdefault(rec["method"], []).append(rec)
    out: dict[str, dict[str, float]] = {}
    for method, recs in by_method.items():
        row: dict[str, float] = {"n": len(recs)}
        for a, b, label in stages:
            v = np.array([(r[b] - r[a]) / 1e6 for r in recs if r.get(a) and r.get(b)])
            if v.size:
                row[f"{label} p50"] = float(np.median(v))
                row[f"{label} p99"] = float(np.percentile(v, 99))
        out[method] = row
    return out


def grpc_status(stubs: Any, n: int) -> np.ndarray:
    from grpc_bridge.protos.evo.v1 import machine_pb2

    out = np.empty(n, dtype=np.int64)
    pc = time.perf_counter_ns
    req = machine_pb2.GetStatusRequest()
    for i in range(n):
        t0 = pc()
        stubs.machine.GetStatus(req, timeout=5)
        out[i] = pc() - t0
    return out


# --- CU jitter -------------------------------------------------------------------------------------------
def stats_snapshot(r: TypedP2pReader) -> dict[str, Any]:
    st = read(r)["stats"]
    return {"hist": st["jitter_hist"].astype(np.int64).copy(), "overruns": int(st["overruns"]),
            "cycles": int(st["cycle_count"])}


def jitter_window(r: TypedP2pReader, seconds: float, cpu: dict[str, psutil.Process]) -> dict[str, Any]:
    for p in cpu.values():
        p.cpu_percent(None)
    a = stats_snapshot(r)
    time.sleep(seconds)
    b = stats_snapshot(r)
    cpu_pct = {name: p.cpu_percent(None) for name, p in cpu.items()}
    hist = b["hist"] - a["hist"]
    total = int(hist.sum())
    cum = np.cumsum(hist)

    def pct(q: float) -> float:
        i = int(np.searchsorted(cum, q * total))
        return float(min(i + 1, JITTER_BUCKETS) * JITTER_BUCKET_US)  # upper edge of the bucket, us

    return {
        "cycles": b["cycles"] - a["cycles"], "overruns": b["overruns"] - a["overruns"],
        "p50_us_le": pct(0.50), "p99_us_le": pct(0.99), "p999_us_le": pct(0.999),
        "over_775us": int(hist[-1]), "histogram": hist.tolist(), "cpu_percent": cpu_pct,
    }


class Watchers:
    """n WatchStatus clients (one channel each) at rate_hz, counting what they receive."""

    def __init__(self, address: str, n: int, rate_hz: float) -> None:
        from grpc_bridge.protos.evo.v1 import machine_pb2_grpc, types_pb2

        self.counts = [0] * n
        self.channels = [grpc.insecure_channel(address) for _ in range(n)]
        self.streams = [machine_pb2_grpc.MachineStub(c).WatchStatus(types_pb2.WatchRequest(rate_hz=rate_hz))
                        for c in self.channels]
        self.threads = [threading.Thread(target=self._consume, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _consume(self, i: int) -> None:
        try:
            for _ in self.streams[i]:
                self.counts[i] += 1
        except grpc.RpcError:
            pass

    def close(self) -> None:
        for s in self.streams:
            s.cancel()
        for t in self.threads:
            t.join(5)
        for c in self.channels:
            c.close()


# --- main ------------------------------------------------------------------------------------------------
def rt_config(cfg: Path, dest: Path) -> Path | None:
    """A copy of `cfg` with HAL and CU at SCHED_FIFO RT_PRIORITY, or None when the OS refuses it."""
    import re
    import shutil

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (PermissionError, OSError):
        return None
    shutil.copytree(cfg, dest)
    text = (dest / "config.toml").read_text()
    text, n = re.subn(r"(?m)^rt_priority = 0$", f"rt_priority = {RT_PRIORITY}", text)
    if n != 2:
        return None
    (dest / "config.toml").write_text(text)
    return dest


def jitter_pair(stats_reader: TypedP2pReader, address: str, args: argparse.Namespace,
                cpu: dict[str, psutil.Process]) -> tuple[dict[str, Any], dict[str, Any]]:
    """CU jitter over one window without watchers, then one with `args.watchers` at `args.rate`."""
    idle = jitter_window(stats_reader, args.window, cpu)
    watchers = Watchers(address, args.watchers, args.rate)
    time.sleep(1.0)
    before = list(watchers.counts)
    loaded = jitter_window(stats_reader, args.window, cpu)
    received = [b - a for a, b in zip(before, watchers.counts)]
    watchers.close()
    loaded["messages_per_s_per_client"] = [c / args.window for c in received]
    return idle, loaded


HAL_CYCLE_MS = 1.0  # [hal] cycle_time_us of the config copies


def over_get_status(rows: dict[str, Any]) -> dict[str, Any]:
    """A command's round trip beside GetStatus's (p50), in ms and in HAL cycles (aim: 1.5)."""
    st, do, cu_cmd = rows["grpc_get_status"], rows["grpc_set_digital_output"], rows["grpc_cu_command"]
    over = (do["p50_ns"] - st["p50_ns"]) / 1e6
    return {"hal_cycle_ms": HAL_CYCLE_MS, "set_do_minus_get_status_p50_ms": over,
            "cu_command_minus_get_status_p50_ms": (cu_cmd["p50_ns"] - st["p50_ns"]) / 1e6,
            "set_do_over_get_status_in_hal_cycles": over / HAL_CYCLE_MS,
            "aim_within_1_5_hal_cycles": over <= 1.5 * HAL_CYCLE_MS}


AT_START = "HAL commands_between_cycles=false"


def at_cycle_start_config(cfg: Path, dest: Path) -> Path:
    """A copy of `cfg` whose HAL takes commands only at a cycle's start (as before issue 15's wake)."""
    import shutil

    shutil.copytree(cfg, dest)
    text = (dest / "config.toml").read_text()
    if "commands_between_cycles = true" not in text:
        raise SystemExit(f"{cfg}/config.toml: no 'commands_between_cycles = true' line to switch off")
    (dest / "config.toml").write_text(text.replace("commands_between_cycles = true", "commands_between_cycles = false"))
    return dest


def baseline_config(code: Path, dest: Path, port: int, run_dir: Path) -> Path:
    """The config copy for today's bridge: `code`'s own config/ (its schema) with the same ports,
    run directory and test tolerances as ours."""
    import tests.grpc_support as gs

    saved = gs.CONFIG_DIR
    gs.CONFIG_DIR = code / "config"
    try:
        return gs.make_config(dest, port, run_dir=str(run_dir))
    finally:
        gs.CONFIG_DIR = saved


def run(args: argparse.Namespace, base_code: Path | None = None, machine_code: Path = REPO) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.helpers import free_port, remove_shm
    from tests.grpc_support import Stubs, make_config

    prefix = args.shm_prefix or f"bgr{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    port = free_port()
    cfg = make_config(tmp / "config", port, max_watch_hz=max(50.0, args.rate), run_dir=str(tmp / "run"))
    procs = Procs(prefix, cfg, tmp, machine_code)
    result: dict[str, Any] = {"method": METHOD, "machine": machine_info(), "params": vars(args) | {"prefix": prefix}}
    rows: dict[str, Any] = {}
    address = f"127.0.0.1:{port}"
    trace = tmp / "grpc-trace.jsonl"  # the bridge's per-command stage timestamps (EVO_GRPC_TRACE)

    def start_machine(config: Path) -> None:
        procs.cfg = config
        cpu["hal"] = procs.start("hal")
        wait(lambda: read_header(SEGMENTS["hal_cu"].name(prefix)).heartbeat > 100, 20, "HAL cycling", procs)
        cpu["cu"] = procs.start("control_unit")
        wait(lambda: read_header(SEGMENTS["cu_rpc"].name(prefix)).heartbeat > 500, 180, "CU cycling (a cold numba cache compiles first)", procs)
        with reader(prefix, "hal_rpc", exclusive=False) as hr:
            wait(lambda: int(read(hr)["io"]["cu_connected"]), 20, "HAL seeing the CU", procs)

    def serving(health: Any) -> None:
        for svc in ("evo.v1.Io", "evo.v1.Machine"):
            wait(lambda: health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=2).status
                 == health_pb2.HealthCheckResponse.SERVING, 30, f"{svc} serving", procs)

    cpu: dict[str, psutil.Process] = {"clients": psutil.Process()}
    try:
        start_machine(cfg)
        print("floor: raw rpc_hal ring -> hal_rpc ack ...", flush=True)
        raw_round_trips(prefix, 50, procs)  # warm-up
        rows["raw_command_round_trip"] = summarize(raw_round_trips(prefix, args.n, procs))
        rows["raw_read_cu_rpc"] = summarize(raw_status_reads(prefix, args.n))

        # Today's bridge (a worktree of --baseline) and ours take turns against the same HAL and CU,
        # `rounds` times, so that both see the same machine and the same load.
        # A variant: (name, bridge code, bridge config, bridge env, the HAL/CU config it needs or None)
        variants: list[tuple[str, Path, Path, dict[str, str], Path | None]] = [
            ("working tree", REPO, cfg, {"EVO_GRPC_TRACE": str(trace)}, cfg if args.hal_at_cycle_start else None)]
        if base_code is not None:
            variants.append((f"baseline {args.baseline}", base_code,
                             baseline_config(base_code, tmp / "config-baseline", port, tmp / "run"),
                             {"EVO_GRPC_TRACE": str(tmp / "base-trace.jsonl")}, None))  # ignored by a bridge without it
        elif args.hal_at_cycle_start:
            # the same bridge; HAL and CU restarted on a config copy whose HAL takes commands only at a cycle's start
            at_start = at_cycle_start_config(cfg, tmp / "config-at-cycle-start")
            variants.append((AT_START, REPO, at_start, {"EVO_GRPC_TRACE": str(tmp / "base-trace.jsonl")}, at_start))
        rounds = args.rounds if len(variants) > 1 else 1
        per_round = max(10, args.n // rounds)
        parts: dict[str, dict[str, list[np.ndarray]]] = {
            name: {"do": [], "do_srv": [], "cu": [], "cu_srv": [], "st": [], "cpu_s": [], "calls": []}
            for name, *_ in variants}
        for r in range(rounds):
            # alternate who goes first: a round's first bridge meets the load the floor or the other left
            for name, code, config, env, machine in (variants if r % 2 == 0 else variants[::-1]):
                if machine is not None and machine != procs.cfg:
                    procs.stop("control_unit")
                    procs.stop("hal")
                    start_machine(machine)
                print(f"gRPC round {r + 1}/{rounds}: {name} ...", flush=True)
                if "EVO_GRPC_TRACE" in env:  # one trace file per round (the bridge writes it when it stops)
                    stem = "grpc-trace" if name == "working tree" else "base-trace"
                    env = {**env, "EVO_GRPC_TRACE": str(tmp / f"{stem}-{r}.jsonl")}
                cpu["grpc"] = procs.start("grpc_bridge", code=code, cfg=config, **env)
                channel = grpc.insecure_channel(address)
                health = health_pb2_grpc.HealthStub(channel)
                serving(health)
                stubs = Stubs(channel)
                grpc_round_trips(stubs, 20)
                grpc_status(stubs, 20)
                grpc_cu_command(stubs, 20)
                # the three methods interleaved in blocks: they see the same load
                block = max(1, per_round // 5)
                cpu0 = cpu["grpc"].cpu_times()
                for _ in range(per_round // block):
                    g_rt, g_server_ms = grpc_round_trips(stubs, block)
                    parts[name]["do"].append(g_rt)
                    parts[name]["do_srv"].append(g_server_ms)
                    parts[name]["st"].append(grpc_status(stubs, block))
                    c_rt, c_server_ms = grpc_cu_command(stubs, block)
                    parts[name]["cu"].append(c_rt)
                    parts[name]["cu_srv"].append(c_server_ms)
                cpu1 = cpu["grpc"].cpu_times()
                parts[name]["cpu_s"].append(np.array([cpu1.user + cpu1.system - cpu0.user - cpu0.system]))
                parts[name]["calls"].append(np.array([3 * block * (per_round // block)]))
                if args.latency_only:  # (the full run keeps our bridge for the jitter windows)
                    channel.close()
                    procs.stop("grpc_bridge")
        result["transient_refusals_retried"] = REFUSED["count"]
        if args.latency_only:
            procs.check()
            rounds_traced = sorted(tmp.glob("grpc-trace-*.jsonl"))
            if rounds_traced:
                trace.write_text("".join(f.read_text() for f in rounds_traced))
            base_traced = sorted(tmp.glob("base-trace-*.jsonl"))
            if base_traced:
                (tmp / "base-trace.jsonl").write_text("".join(f.read_text() for f in base_traced))
        for name, *_ in variants:
            cat = {k: np.concatenate(v) for k, v in parts[name].items()}
            vrows = rows if name == "working tree" else {}
            vrows["grpc_set_digital_output"] = summarize(cat["do"]) | {"server_side_p50_ms": float(np.median(cat["do_srv"]))}
            vrows["grpc_get_status"] = summarize(cat["st"])
            vrows["grpc_cu_command"] = summarize(cat["cu"]) | {"server_side_p50_ms": float(np.median(cat["cu_srv"]))}
            vrows["bridge_cpu_ms_per_call"] = 1e3 * float(cat["cpu_s"].sum()) / max(1, int(cat["calls"].sum()))
            # paired: the difference of the p50s within each block of consecutive calls (same load),
            # then the median over blocks — steadier than the difference of the run's p50s
            pv = parts[name]
            vrows["blockwise_minus_get_status_ms"] = {
                "set_do": float(np.median([np.median(a) - np.median(b) for a, b in zip(pv["do"], pv["st"])])) / 1e6,
                "cu_command": float(np.median([np.median(a) - np.median(b) for a, b in zip(pv["cu"], pv["st"])])) / 1e6,
                "blocks": len(pv["do"])}
            if name != "working tree":
                result["baseline"] = {"rows": vrows, "command_over_get_status": over_get_status(vrows)}
                result["baseline_commit"] = args.baseline or AT_START
        if args.latency_only and trace.exists():
            result["breakdown_ms"] = trace_breakdown(trace)
        if args.latency_only and (tmp / "base-trace.jsonl").exists() and "baseline" in result:
            result["baseline"]["breakdown_ms"] = trace_breakdown(tmp / "base-trace.jsonl")

        if not args.latency_only:
            print(f"CU jitter, normal scheduling: {args.window:.0f} s without watchers, {args.window:.0f} s with "
                  f"{args.watchers} ...", flush=True)
            with reader(prefix, "cu_rpc", exclusive=False) as sr:
                rows["cu_jitter_no_watchers"], rows["cu_jitter_watchers"] = jitter_pair(sr, address, args, cpu)

        rt_cfg = None if args.no_rt or args.latency_only else rt_config(cfg, tmp / "config-rt")
        if rt_cfg is not None:
            print("CU jitter, HAL and CU under SCHED_FIFO ...", flush=True)
            procs.stop("control_unit")
            procs.stop("hal")
            start_machine(rt_cfg)
            serving(health)
            g_rt, _ = grpc_round_trips(stubs, args.n)
            rows["grpc_set_digital_output_rt"] = summarize(g_rt)
            with reader(prefix, "cu_rpc", exclusive=False) as sr:
                rows["cu_jitter_rt_no_watchers"], rows["cu_jitter_rt_watchers"] = jitter_pair(sr, address, args, cpu)
        procs.check()
        channel.close()
    finally:
        procs.stop()
        remove_shm(prefix)
    if "breakdown_ms" not in result and trace.exists():
        result["breakdown_ms"] = trace_breakdown(trace)
    result["command_over_get_status"] = over_get_status(rows)
    if args.latency_only:
        result["rows"] = rows
        return result

    rt_raw, rt_grpc = rows["raw_command_round_trip"], rows["grpc_set_digital_output"]
    idle, loaded = rows["cu_jitter_no_watchers"], rows["cu_jitter_watchers"]

    def per_k(w: dict[str, Any]) -> float:
        return 1000 * w["overruns"] / max(1, w["cycles"] + w["overruns"])

    summary: dict[str, Any] = {
        "command_round_trip_p50_ms": rt_grpc["p50_ns"] / 1e6,
        "command_round_trip_over_floor_p50": ratio(rt_grpc["p50_ns"], rt_raw["p50_ns"]),
        "get_status_p50_ms": rows["grpc_get_status"]["p50_ns"] / 1e6,
        "cu_jitter_p99_us_le": {"none": idle["p99_us_le"], "watchers": loaded["p99_us_le"]},
        "cu_overruns_per_1000_cycles": {"none": per_k(idle), "watchers": per_k(loaded)},
        "aims": {"command_round_trip_p50_under_3ms": rt_grpc["p50_ns"] / 1e6 < AIM_RT_P50_MS},
    }
    best = ("cu_jitter_rt_no_watchers", "cu_jitter_rt_watchers") if "cu_jitter_rt_watchers" in rows else \
        ("cu_jitter_no_watchers", "cu_jitter_watchers")
    a, b = rows[best[0]], rows[best[1]]
    # "No change" within what one window can resolve: p99 at most one histogram bucket worse, and
    # at most one more overrun per 1000 cycles (0.1 %).
    summary["aims"]["no_cu_jitter_change_with_watchers"] = {
        "judged_on": "SCHED_FIFO" if best[0].startswith("cu_jitter_rt") else "normal scheduling",
        "p99_us_le": [a["p99_us_le"], b["p99_us_le"]],
        "overruns_per_1000_cycles": [round(per_k(a), 3), round(per_k(b), 3)],
        "met": b["p99_us_le"] <= a["p99_us_le"] + JITTER_BUCKET_US and per_k(b) <= per_k(a) + 1.0,
    }
    result["rows"] = rows
    result["summary"] = summary
    return result


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    ms = 1e6

    def lat(label: str, key: str, floor: str | None) -> dict[str, Any]:
        r = rows[key]
        return {"what": label, "p50": r["p50_ns"] / ms, "p99": r["p99_ns"] / ms,
                "x": ratio(r["p50_ns"], rows[floor]["p50_ns"]) if floor else 1.0}

    table = [
        lat("floor: raw rpc_hal SET_DO -> hal_rpc ack", "raw_command_round_trip", None),
        lat("gRPC Io.SetDigitalOutput (HAL applied + ack)", "grpc_set_digital_output", "raw_command_round_trip"),
    ]
    if "grpc_set_digital_output_rt" in rows:
        table.append(lat("  same, HAL + CU under SCHED_FIFO", "grpc_set_digital_output_rt", "raw_command_round_trip"))
    table += [lat("floor: raw read of cu_rpc", "raw_read_cu_rpc", None),
              lat("gRPC Machine.GetStatus", "grpc_get_status", "raw_read_cu_rpc"),
              lat("gRPC Machine.AllowManualMode (CU command + ack)", "grpc_cu_command", "grpc_get_status")]
    print()
    print_table(table, [("latency", "what", ""), ("p50 ms", "p50", ".3f"), ("p99 ms", "p99", ".3f"),
                        ("x floor (p50)", "x", ".1f")])
    over = result.get("command_over_get_status")
    if over:
        print(f"\nSetDigitalOutput - GetStatus (p50): {over['set_do_minus_get_status_p50_ms']:.3f} ms = "
              f"{over['set_do_over_get_status_in_hal_cycles']:.2f} HAL cycles (aim <= 1.5); CU command - GetStatus: "
              f"{over['cu_command_minus_get_status_p50_ms']:.3f} ms")
    base_stages = (result.get("baseline") or {}).get("breakdown_ms") or {}
    for method, stages in (result.get("breakdown_ms") or {}).items():
        old = base_stages.get(method, {})
        print(f"\n{method} (n={stages['n']}), bridge-side stages in ms"
              + (f" (baseline's in brackets, n={old['n']}):" if old else ":"))
        for key, value in stages.items():
            if key.endswith(" p50"):
                label = key[:-4]
                was = f"  [p50 {old[key]:7.3f}  p99 {old[label + ' p99']:7.3f}]" if key in old else ""
                print(f"  {label:45s} p50 {value:7.3f}  p99 {stages[label + ' p99']:7.3f}{was}")
    if "cu_jitter_no_watchers" not in rows:
        return
    jit = []
    for label, key in (("normal, no watchers", "cu_jitter_no_watchers"), ("normal, 10 watchers", "cu_jitter_watchers"),
                       ("SCHED_FIFO, no watchers", "cu_jitter_rt_no_watchers"),
                       ("SCHED_FIFO, 10 watchers", "cu_jitter_rt_watchers")):
        w = rows.get(key)
        if w is None:
            continue
        c = w["cpu_percent"]
        jit.append({"what": label, "p50": w["p50_us_le"], "p99": w["p99_us_le"], "p999": w["p999_us_le"],
                    "overruns": w["overruns"], "cycles": w["cycles"], "cu": c.get("cu"), "grpc": c.get("grpc"),
                    "clients": c.get("clients")})
    print()
    print_table(jit, [("CU wake jitter", "what", ""), ("p50 us <=", "p50", ".0f"), ("p99 us <=", "p99", ".0f"),
                      ("p99.9 us <=", "p999", ".0f"), ("overruns", "overruns", ""), ("cycles", "cycles", ""),
                      ("CU cpu %", "cu", ".0f"), ("bridge cpu %", "grpc", ".0f"), ("clients cpu %", "clients", ".0f")])
    rates = rows["cu_jitter_watchers"].get("messages_per_s_per_client", [])
    if rates:
        print(f"\nwatchers received {min(rates):.1f}..{max(rates):.1f} messages/s each")
    print(f"aims: {result['summary']['aims']}")


def side_by_side(result: dict[str, Any]) -> None:
    base = result.get("baseline")
    if not base:
        return
    rows = []
    for key, label in (("grpc_get_status", "Machine.GetStatus"), ("grpc_set_digital_output", "Io.SetDigitalOutput"),
                       ("grpc_cu_command", "Machine.AllowManualMode (CU)")):
        a, b = base["rows"][key], result["rows"][key]
        rows.append({"what": label, "old50": a["p50_ns"] / 1e6, "new50": b["p50_ns"] / 1e6, "old99": a["p99_ns"] / 1e6,
                     "new99": b["p99_ns"] / 1e6, "r": ratio(b["p50_ns"], a["p50_ns"])})
    for key, label in (("set_do_minus_get_status_p50_ms", "SetDigitalOutput - GetStatus"),
                       ("cu_command_minus_get_status_p50_ms", "CU command - GetStatus")):
        a, b = base["command_over_get_status"][key], result["command_over_get_status"][key]
        rows.append({"what": label, "old50": a, "new50": b, "r": ratio(b, a)})
    for key, label in (("set_do", "SetDigitalOutput - GetStatus, blockwise"),
                       ("cu_command", "CU command - GetStatus, blockwise")):
        a, b = base["rows"]["blockwise_minus_get_status_ms"][key], result["rows"]["blockwise_minus_get_status_ms"][key]
        rows.append({"what": label, "old50": a, "new50": b, "r": ratio(b, a)})
    old_cpu, new_cpu = base["rows"].get("bridge_cpu_ms_per_call"), result["rows"].get("bridge_cpu_ms_per_call")
    rows.append({"what": "bridge CPU per call", "old50": old_cpu, "new50": new_cpu,
                 "r": ratio(new_cpu, old_cpu) if old_cpu and new_cpu else None})
    if result["baseline_commit"] == AT_START:
        print("\nside by side: the same bridge against a HAL that takes commands between cycles (new) and one whose "
              f"HAL waits for its cycle's start (old, {AT_START}), in turns (ms):")
    else:
        print(f"\nside by side: today's bridge ({result['baseline_commit']}) and ours in turns against the same HAL and CU (ms):")
    print_table(rows, [("latency", "what", ""), ("old p50", "old50", ".3f"), ("new p50", "new50", ".3f"),
                       ("old p99", "old99", ".3f"), ("new p99", "new99", ".3f"), ("new/old p50", "r", ".2f")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_grpc", description=__doc__)
    ap.add_argument("--n", type=int, default=1000, help="round trips / reads per latency row")
    ap.add_argument("--window", type=float, default=15.0, help="seconds per CU jitter window")
    ap.add_argument("--watchers", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0, help="WatchStatus rate_hz per client")
    ap.add_argument("--quick", action="store_true", help="n=100, window=3 s (smoke run)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/grpc.json)")
    ap.add_argument("--shm-prefix", help="EVO_SHM_PREFIX to use (default: a fresh one)")
    ap.add_argument("--no-rt", action="store_true", help="skip the SCHED_FIFO variant")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="also time COMMIT's bridge (a git worktree) against the same HAL and CU, in turns with ours")
    ap.add_argument("--rounds", type=int, default=3, help="turns of each bridge with --baseline")
    ap.add_argument("--machine-commit", metavar="COMMIT",
                    help="run HAL and CU from a worktree of COMMIT, or from the tree at that path (a fixed machine "
                         "while their code changes)")
    ap.add_argument("--hal-at-cycle-start", action="store_true",
                    help="side by side: our bridge against the HAL taking posted commands between cycles (default) "
                         "and against it restarted with [hal] commands_between_cycles = false, in turns")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the round trips (GetStatus vs SetDigitalOutput vs a CU command) and their breakdown")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.window = 100, 3.0
    with contextlib.ExitStack() as stack:
        from benchmarks._baseline import baseline_tree

        machine_code = REPO
        if args.machine_commit and Path(args.machine_commit).is_dir():
            machine_code = Path(args.machine_commit).resolve()  # a tree kept between runs (warm numba cache)
        elif args.machine_commit:
            machine_code = stack.enter_context(baseline_tree(args.machine_commit))
        base_code = None
        if args.baseline or args.hal_at_cycle_start:
            args.latency_only = True  # the side-by-side is the round trips only
        if args.baseline:
            base_code = stack.enter_context(baseline_tree(args.baseline))
        result = run(args, base_code, machine_code)
    report(result)
    side_by_side(result)
    path = write_json("grpc_round_trip" if args.latency_only else "grpc", result, args.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
