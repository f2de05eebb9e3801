"""The watchdog beside supervisord: crash-to-detect, crash-to-ready, cold `evo up` to all ready, shutdown.

Run: `.venv/bin/python -m benchmarks.bench_watchdog [--kills N] [--ups N]` -> table + results/watchdog.json.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from tests.fixtures.progs.evo_harness import PROG, EvoUp, machine_config, prog_module
from tests.helpers import REPO, remove_shm, unique_prefix, wait_for

METHOD = (
    "A victim program (tests/fixtures/progs/testmod.py: imports, writes a 'ready' event with CLOCK_MONOTONIC, "
    "sends READY=1) is SIGKILLed N times. crash->detect: from just before kill() to the supervisor's own record "
    "of the exit (evo: the WatchEvents state event's timestamp, taken when its loop wakes on the pidfd; "
    "supervisord: its 'exited' log line, whose ms timestamp is truncated, so up to 1 ms low). Both include the "
    "kernel's teardown of the dying process (~1-2 ms for a Python process with numpy). "
    "crash->ready: from kill() to the new process's 'ready' event; evo runs its default restart backoff of "
    "100 ms (initial_backoff_ms), every kill after >= stable_run_s of uptime so the backoff is never doubled; "
    "supervisord restarts at once (autorestart, startsecs=0). cold up: from spawning `evo up` on the default "
    "machine to every enabled module RUNNING in <run_dir>/modules.json (polled every 2 ms), in turns: our "
    "modules preloaded (the default: spawned together at boot, waiting at a start gate for their turn) with HAL "
    "and CU on the kernels `make kernels` built ahead of time (EVO_KERNELS=aot), the same module table but "
    "preload = false (each spawned only when the ones before it are ready, as systemd's After=/Requires= ordering "
    "would), and the default table with HAL and CU on numba's JIT and its cache (EVO_KERNELS=jit: every start "
    "before the AOT modules). down: from SIGTERM "
    "to the watchdog until it has exited with every module stopped and every segment unlinked. The watchdog "
    "runs at nice -10 (its modules at 0); supervisord at its default priority."
)
AIM_DETECT_MS = 5.0
AIM_READY_S = 2.0
AIM_DOWN_S = 1.0
ANCHORS = {
    "supervisord_poll_s": 1.0,  # supervisord's main loop reaps children once per 1 s select timeout
    "systemd_restart_sec_s": 0.1,  # systemd's default RestartSec
    "upstream_start_s": 3.0,  # upstream evo's start target
    "upstream_shutdown_s": 5.0,  # upstream evo's shutdown target
}


def _ready_events(path: Path, name: str) -> dict[int, int]:
    """pid -> monotonic ns of its first 'ready' event."""
    out: dict[int, int] = {}
    try:
        for line in path.read_text().splitlines():
            what, n, t, pid = line.split()
            if what == "ready" and n == name:
                out.setdefault(int(pid), int(t))
    except FileNotFoundError:
        pass
    return out


# ------------------------------------------------------------------------------------ evo
def bench_evo_kills(tmp: Path, kills: int) -> dict[str, Any]:
    from common.protos.evo.v1 import supervisor_pb2 as pb

    ev = tmp / "events"
    prefix = unique_prefix("bw")
    up = EvoUp(tmp / "evo", prefix, [prog_module("victim", "--setup", events=ev, wrap=False)],
               watchdog={"max_restarts": 1000, "initial_backoff_ms": 100, "stable_run_s": 1})
    up.start()
    detect, ready = [], []
    try:
        up.wait_api()
        up.wait_all_running()
        events: "queue.Queue[Any]" = queue.Queue()
        stream = up.client.stub.WatchEvents(pb.WatchEventsRequest(names=["victim"]))

        def pump() -> None:
            try:
                for e in stream:
                    events.put(e)
            except Exception:  # noqa: BLE001 - cancelled at the end
                pass

        threading.Thread(target=pump, daemon=True).start()
        for _ in range(kills):
            m = wait_for(lambda: (s := up.status()["victim"])["state"] == "running" and s["uptime_s"] >= 1.05 and s,
                         30, 0.01, "victim running for >= stable_run_s")
            while not events.empty():
                events.get_nowait()
            t_wall, t_mono = time.time(), time.monotonic_ns()
            os.kill(m["pid"], signal.SIGKILL)
            while True:
                e = events.get(timeout=10)
                if e.kind == pb.EVENT_KIND_STATE and e.state == pb.MODULE_STATE_BACKOFF:
                    detect.append((e.timestamp_unix - t_wall) * 1e9)
                    break
            new = wait_for(lambda: (s := up.status()["victim"])["state"] == "running" and s["pid"] != m["pid"] and s,
                           30, 0.005, "victim restarted")
            r = wait_for(lambda: _ready_events(ev, "victim").get(new["pid"]), 10, 0.005, "ready event")
            ready.append(r - t_mono)
        stream.cancel()
    finally:
        up.stop()
        remove_shm(prefix)
    return {"detect": summarize(detect), "ready": summarize(ready)}


# ------------------------------------------------------------------------------------ floor
def bench_pidfd_floor(tmp: Path, kills: int) -> dict[str, Any]:
    """The floor any supervisor can reach: this process blocked in select() on the victim's pidfd."""
    ev = tmp / "floor-events"
    lat = []
    for _ in range(kills):
        p = subprocess.Popen([sys.executable, str(PROG), "--name", "floor", "--setup", "--ping", "0", "--events", str(ev)],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: p.pid in _ready_events(ev, "floor"), 30, 0.005, "floor victim ready")
        fd = os.pidfd_open(p.pid)
        t0 = time.perf_counter_ns()
        os.kill(p.pid, signal.SIGKILL)
        select.select([fd], [], [], 10)
        lat.append(time.perf_counter_ns() - t0)
        os.close(fd)
        p.wait()
    return summarize(lat)


# ------------------------------------------------------------------------------------ supervisord
def bench_supervisord_kills(tmp: Path, kills: int) -> dict[str, Any] | None:
    exe = shutil.which("supervisord", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not exe:
        return None
    d = tmp / "sup"
    d.mkdir()
    ev = d / "events"
    log = d / "supervisord.log"
    conf = d / "supervisord.conf"
    conf.write_text(
        "[supervisord]\nnodaemon=true\n"
        f"logfile={log}\nloglevel=info\npidfile={d}/supervisord.pid\n"
        "[program:victim]\n"
        f"command={sys.executable} {PROG} --name victim --setup --ping 0 --events {ev}\n"
        f"directory={REPO}\nautorestart=true\nstartsecs=0\nstartretries=1000\n"
        f"stdout_logfile={d}/victim.out\nredirect_stderr=true\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    detect, ready = [], []
    pat = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ exited: victim .*SIGKILL")
    try:
        for _ in range(kills):
            seen = wait_for(lambda: _ready_events(ev, "victim"), 30, 0.005, "supervisord victim ready")
            pid = max(seen, key=seen.get)
            n_exits = len([ln for ln in log.read_text().splitlines() if pat.match(ln)])
            t_wall, t_mono = time.time(), time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)

            def exited() -> float | None:
                hits = [pat.match(ln) for ln in log.read_text().splitlines()]
                hits = [h for h in hits if h]
                if len(hits) <= n_exits:
                    return None
                h = hits[n_exits]
                return datetime.strptime(h.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(h.group(2)) / 1000

            t_log = wait_for(exited, 10, 0.002, "supervisord exit log line")
            detect.append(max(0.0, t_log - t_wall) * 1e9)
            r = wait_for(lambda: {p: t for p, t in _ready_events(ev, "victim").items() if p != pid and t > t_mono},
                         10, 0.005, "supervisord restart")
            ready.append(min(r.values()) - t_mono)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    return {"detect": summarize(detect), "ready": summarize(ready), "version": version}


# ------------------------------------------------------------------------------------ cold up / down
def _sequential_table(cfg: Path, path: Path) -> Path:
    """The default machine's module table with preload off: the strictly sequential alternative."""
    from common.config import load_config
    from evo.modules import default_modules

    lines = []
    for s in default_modules(load_config(cfg)):
        fields: dict[str, Any] = {
            "name": s.name, "argv": list(s.argv), "notify": s.notify, "ready_segments": list(s.ready_segments),
            "liveness_segments": list(s.liveness_segments), "ready_timeout_s": s.ready_timeout_s,
            "watchdog_timeout_s": s.watchdog_timeout_s, "enabled": s.enabled, "wait_ready": s.wait_ready,
            "wrap": s.wrap, "preload": False,
        }
        if s.tcp:
            fields["tcp"] = f"{s.tcp[0]}:{s.tcp[1]}"
        lines.append("[[module]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def bench_up_down(tmp: Path, runs: int) -> dict[str, Any]:
    cfg, modules = machine_config(tmp / "machine")
    sequential = _sequential_table(cfg, tmp / "sequential.toml")
    ups, internal, downs, cli_downs, seq_ups, jit_ups, jit_internal = [], [], [], [], [], [], []
    for i in range(3 * runs):
        # in turns, so drift in the machine's load hits all alike: the default table (HAL and CU on the
        # kernels built ahead of time), the strictly sequential table, the default table on numba's JIT
        variant = ("default", "sequential", "jit")[i % 3]
        preload = variant != "sequential"
        prefix = unique_prefix("bu")
        run_dir = tmp / f"run{i}"
        env = dict(os.environ, EVO_SHM_PREFIX=prefix, EVO_RUN_DIR=str(run_dir), PYTHONPATH=str(REPO),
                   EVO_KERNELS="jit" if variant == "jit" else "aot")
        env.pop("EVO_CONFIG_DIR", None)
        out = open(tmp / f"up{i}.out", "wb")
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "evo", "--config", str(cfg), "up"]
        if not preload:
            argv += ["--modules", str(sequential)]
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def all_running() -> bool:
            mods = json.loads((run_dir / "modules.json").read_text())["modules"]
            return all(m["state"] == "running" for m in mods if m["enabled"])

        try:
            try:
                wait_for(all_running, 60, 0.002, "default machine running")
            except AssertionError as e:
                tail = (tmp / f"up{i}.out").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{e}; rc={proc.poll()}; evo up output:\n{tail}") from None
            {"default": ups, "sequential": seq_ups, "jit": jit_ups}[variant].append(time.monotonic() - t0)
            wait_for(lambda: "modules ready in" in (tmp / f"up{i}.out").read_text(), 10, 0.01, "ready log line")
            m = re.search(r"all \d+ modules ready in ([\d.]+) s", (tmp / f"up{i}.out").read_text())
            if preload:
                (internal if variant == "default" else jit_internal).append(float(m.group(1)) if m else float("nan"))
            if variant != "default":
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            elif i == 3 * runs - 3:  # the last run goes down through the CLI, the others by SIGTERM (Ctrl-C)
                t1 = time.monotonic()
                r = subprocess.run([sys.executable, "-m", "evo", "--config", str(cfg), "down"], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=60)
                proc.wait(30)
                cli_downs.append(time.monotonic() - t1)
                assert r.returncode == 0, r.stderr
            else:
                t1 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                downs.append(time.monotonic() - t1)
            left = [n for n in os.listdir("/dev/shm") if n.startswith(prefix + "_")]
            assert not left, f"segments left after down: {left}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            out.close()
            remove_shm(prefix)
    return {"modules": modules, "up_s": ups, "up_internal_s": internal, "down_s": downs, "cli_down_s": cli_downs,
            "sequential_up_s": seq_ups, "jit_up_s": jit_ups, "jit_up_internal_s": jit_internal}


# ------------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=25, help="SIGKILLs per supervisor")
    ap.add_argument("--ups", type=int, default=4, help="cold starts of the default machine")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    info = machine_info()
    print(f"{info['cpu_model']}, {info['cores']} cores, Python {info['python']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-wd-") as t:
        tmp = Path(t)
        print(f"evo: {a.kills} kills ...", flush=True)
        evo = bench_evo_kills(tmp, a.kills)
        print(f"floor (bare pidfd wait): {a.kills} kills ...", flush=True)
        floor = bench_pidfd_floor(tmp, a.kills)
        print(f"supervisord: {a.kills} kills ...", flush=True)
        sup = bench_supervisord_kills(tmp, a.kills)
        print(f"default machine: {a.ups} cold starts ...", flush=True)
        ud = bench_up_down(tmp, a.ups)
    ms = 1e6
    up_med = statistics.median(ud["up_s"])
    down_med = statistics.median(ud["down_s"]) if ud["down_s"] else float("nan")
    rows = [
        {"what": "crash -> detect p50 [ms]", "evo": evo["detect"]["p50_ns"] / ms,
         "supervisord": sup["detect"]["p50_ns"] / ms if sup else None,
         "anchor": "supervisord polls every 1 s", "ratio": ratio(sup["detect"]["p50_ns"], evo["detect"]["p50_ns"]) if sup else None},
        {"what": "crash -> detect p99 [ms]", "evo": evo["detect"]["p99_ns"] / ms,
         "supervisord": sup["detect"]["p99_ns"] / ms if sup else None,
         "anchor": f"aim <= {AIM_DETECT_MS:g} ms", "ratio": ratio(sup["detect"]["p99_ns"], evo["detect"]["p99_ns"]) if sup else None},
        {"what": "  floor: kill -> pidfd readable p50 [ms]", "evo": floor["p50_ns"] / ms, "supervisord": None,
         "anchor": "kernel teardown + wake-up", "ratio": None},
        {"what": "  floor: kill -> pidfd readable p99 [ms]", "evo": floor["p99_ns"] / ms, "supervisord": None,
         "anchor": "", "ratio": None},
        {"what": "crash -> ready p50 [ms]", "evo": evo["ready"]["p50_ns"] / ms,
         "supervisord": sup["ready"]["p50_ns"] / ms if sup else None,
         "anchor": "systemd RestartSec 100 ms + start", "ratio": ratio(sup["ready"]["p50_ns"], evo["ready"]["p50_ns"]) if sup else None},
        {"what": "crash -> ready p99 [ms]", "evo": evo["ready"]["p99_ns"] / ms,
         "supervisord": sup["ready"]["p99_ns"] / ms if sup else None, "anchor": "",
         "ratio": ratio(sup["ready"]["p99_ns"], evo["ready"]["p99_ns"]) if sup else None},
        {"what": f"cold evo up -> all ready, median [s] ({len(ud['modules'])} modules)", "evo": up_med,
         "supervisord": None, "anchor": f"upstream 3 s; aim {AIM_READY_S:g} s",
         "ratio": ratio(ANCHORS["upstream_start_s"], up_med)},
        {"what": "  same, max [s]", "evo": max(ud["up_s"]), "supervisord": None, "anchor": "", "ratio": None},
        {"what": "  same table, preload off (strictly sequential), median [s]",
         "evo": statistics.median(ud["sequential_up_s"]), "supervisord": None,
         "anchor": "systemd-style ordering", "ratio": ratio(statistics.median(ud["sequential_up_s"]), up_med)},
        {"what": "  same, inside the watchdog [s]", "evo": statistics.median(ud["up_internal_s"]),
         "supervisord": None, "anchor": "(after its own imports)", "ratio": None},
        {"what": "  same table, HAL and CU on numba's JIT (EVO_KERNELS=jit), median [s]",
         "evo": statistics.median(ud["jit_up_s"]), "supervisord": None,
         "anchor": "the start before the AOT modules", "ratio": ratio(statistics.median(ud["jit_up_s"]), up_med)},
        {"what": "down: SIGTERM -> all stopped, median [s]", "evo": down_med, "supervisord": None,
         "anchor": f"upstream 5 s; aim {AIM_DOWN_S:g} s", "ratio": ratio(ANCHORS["upstream_shutdown_s"], down_med)},
        {"what": "  `evo down` command, wall [s]", "evo": ud["cli_down_s"][0] if ud["cli_down_s"] else None,
         "supervisord": None, "anchor": "(incl. the CLI's start)", "ratio": None},
    ]
    print()
    print_table(rows, [("metric", "what", ""), ("evo", "evo", ".3f"), ("supervisord", "supervisord", ".3f"),
                       ("alternative / evo", "ratio", ".1f"), ("anchor", "anchor", "")])
    aims = {
        "detect_p99_ms": (evo["detect"]["p99_ns"] / ms, AIM_DETECT_MS),
        "cold_up_s": (up_med, AIM_READY_S),
        "down_s": (down_med, AIM_DOWN_S),
    }
    print("\naims: " + ", ".join(f"{k} {v:.3f} (aim {aim:g}) {'met' if v <= aim else 'MISSED'}"
                                  for k, (v, aim) in aims.items()))
    if not sup:
        print("supervisord not installed (pip install supervisor): its column is empty; anchor: 1 s polling")
    load_end = list(os.getloadavg())
    print(f"load average at start {info['loadavg_at_start']}, at end {[round(x, 2) for x in load_end]} "
          f"({info['cores']} cores): other work on the machine shows up in every figure")
    path = write_json("watchdog", {
        "machine": info, "loadavg_at_end": load_end, "method": METHOD, "anchors": ANCHORS, "evo": evo,
        "pidfd_floor": floor, "supervisord": sup, "up_down": ud,
        "rows": rows, "aims": {k: {"value": v, "aim": aim, "met": v <= aim} for k, (v, aim) in aims.items()},
    }, a.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
