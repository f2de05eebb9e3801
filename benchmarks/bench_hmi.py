"""The operator HMI's cost: CU wake jitter and bridge CPU with 0 and 10 page clients, and page load time.

Run: `.venv/bin/python -m benchmarks.bench_hmi [--window S] [--loads N] [--out PATH]` -> table + results/hmi.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from benchmarks._stats import machine_info, print_table, ratio, write_json
from benchmarks.bench_grpc import Procs, jitter_window, reader, wait
from common.shm.p2p import read_header
from common.shm.segments import SEGMENTS

METHOD = (
    "HAL, CU, RE and the gRPC bridge (with the HMI) run as real processes, 1 kHz, normal scheduling, the default "
    "[hmi] rates (page default 10 Hz). For each case one window of W s: the CU's wake-lateness histogram (cu_rpc, "
    "25 us buckets) differenced over the window, and the CPU time of the bridge process (psutil, % of one core). "
    "Cases side by side in one run: no client; 10 WebSocket live-feed clients at 10 Hz (aiohttp, in this "
    "process); the alternative a dashboard would do without a push feed: 10 clients polling GET "
    "/api/v1/evo.v1.Machine/GetStatus + GetIo + GetRecipeStatus at 10 Hz (same data per tick); 10 tabs of one "
    "headless Chromium showing the page (the browser's own CPU is on the same 2 cores and reported apart). "
    "Page load: a fresh navigation of headless Chromium to the page, time from navigation start to the first "
    "live sample drawn (performance.now() when the page has rendered its first sample), N loads; beside it, "
    "a new gRPC channel's time to the first WatchStatus message."
)
CLIENTS, RATE_HZ = 10, 10.0


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


class WsClients:
    """n live-feed WebSockets at rate_hz on their own event loop thread, counting samples."""

    def __init__(self, url: str, n: int, rate_hz: float) -> None:
        import aiohttp
        self.counts = [0] * n
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        async def one(i: int) -> None:
            async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
                await ws.send_str(json.dumps({"rate_hz": rate_hz}))
                while not self._stop.is_set():
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    if msg.data.startswith('{"type":"sample"'):
                        self.counts[i] += 1

        async def main() -> None:
            self._stop = asyncio.Event()
            await asyncio.gather(*(one(i) for i in range(n)))

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


class Pollers:
    """n HTTP clients each fetching GetStatus, GetIo and GetRecipeStatus at rate_hz (what a dashboard
    without a push feed does)."""

    def __init__(self, base: str, n: int, rate_hz: float) -> None:
        self.counts = [0] * n
        self._stop = threading.Event()
        paths = [f"{base}/evo.v1.Machine/GetStatus", f"{base}/evo.v1.Io/GetIo", f"{base}/evo.v1.Recipes/GetRecipeStatus"]

        def run(i: int) -> None:
            due = time.monotonic()
            while not self._stop.is_set():
                for p in paths:
                    _get(p)
                self.counts[i] += 1
                due += 1.0 / rate_hz
                self._stop.wait(max(0.0, due - time.monotonic()))

        self.threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(10)


def chromium_cpu(driver) -> list[psutil.Process]:  # noqa: ANN001
    root = psutil.Process(driver.service.process.pid)
    return [root, *root.children(recursive=True)]


def window_with(stats, seconds: float, bridge: psutil.Process, extra: list[psutil.Process] | None = None) -> dict:  # noqa: ANN001
    extra = extra or []
    for p in extra:
        p.cpu_percent(None)
    w = jitter_window(stats, seconds, {"bridge": bridge})
    w["browser_cpu_percent"] = sum(p.cpu_percent(None) for p in extra if p.is_running()) if extra else None
    return w


def page_loads(url: str, profile: Path, n: int, dcl: list[float]) -> list[float]:
    """Navigation -> first live sample drawn, ms (page clock); `dcl` gets DOMContentLoaded times."""
    from tests.hmi_support import chromium
    driver = chromium(profile)
    out = []
    try:
        for _ in range(n):
            driver.get("about:blank")
            driver.get(url)
            deadline = time.monotonic() + 60
            while not (t := driver.execute_script("return window.evoFirstSampleAt || 0;")):
                if time.monotonic() > deadline:
                    raise TimeoutError("no live value on the page in 60 s")
                time.sleep(0.1)  # few probes: each one costs the renderer
            dcl.append(float(driver.execute_script(
                "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd;")))
            out.append(float(t))
    finally:
        driver.quit()
    return out


def grpc_first_message(address: str, n: int) -> list[float]:
    from grpc_bridge.protos.evo.v1 import machine_pb2_grpc, types_pb2
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with grpc.insecure_channel(address) as ch:
            stream = machine_pb2_grpc.MachineStub(ch).WatchStatus(types_pb2.WatchRequest(rate_hz=10))
            next(iter(stream))
            out.append((time.perf_counter() - t0) * 1e3)
            stream.cancel()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.helpers import free_port
    from tests.hmi_support import chromium, hmi_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-hmi-"))
    prefix = f"bh{uuid.uuid4().hex[:8]}"
    gp, hp = free_port(), free_port()
    cfg = hmi_config(tmp / "config", gp, hp, run_dir=str(tmp / "run"), mqtt=False)
    procs = Procs(prefix, cfg, tmp)
    url, base = f"http://127.0.0.1:{hp}/", f"http://127.0.0.1:{hp}/api/v1"
    rows: dict[str, Any] = {}
    try:
        procs.start("hal")
        wait(lambda: read_header(SEGMENTS["hal_cu"].name(prefix)).heartbeat > 100, 30, "HAL cycling", procs)
        procs.start("control_unit")
        procs.start("recipe_executor")
        bridge = procs.start("grpc_bridge")
        wait(lambda: _get(base + "/info"), 60, "the HMI serving", procs)
        stats = reader(prefix, "cu_rpc", exclusive=False)
        time.sleep(2.0)  # settle
        print(f"{args.window:.0f} s windows: no client, {CLIENTS} live pages, {CLIENTS} pollers, {CLIENTS} Chromium tabs",
              flush=True)
        rows["no_client"] = window_with(stats, args.window, bridge)
        ws = WsClients(base + "/live", CLIENTS, RATE_HZ)
        time.sleep(1.0)
        c0 = sum(ws.counts)
        rows["websocket_10"] = window_with(stats, args.window, bridge)
        rows["websocket_10"]["messages_per_s_per_client"] = (sum(ws.counts) - c0) / args.window / CLIENTS
        ws.close()
        polls = Pollers(base, CLIENTS, RATE_HZ)
        time.sleep(1.0)
        c0 = sum(polls.counts)
        rows["polling_10"] = window_with(stats, args.window, bridge)
        rows["polling_10"]["messages_per_s_per_client"] = (sum(polls.counts) - c0) / args.window / CLIENTS
        polls.close()
        t0 = time.monotonic()
        wait(lambda: _get(url), 30, "the page served after the pollers", procs)
        print(f"page fetch after pollers: {time.monotonic() - t0:.3f} s", flush=True)
        # Every tab renders as if in front (an HMI panel shows its page; no background throttling).
        driver = chromium(tmp / "profile-tabs", extra_args=(
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows"))
        try:
            driver.get(url)
            for _ in range(CLIENTS - 1):
                driver.execute_script("window.open(arguments[0], '_blank');", url)
            wait(lambda: len(driver.window_handles) == CLIENTS, 30, "the tabs open")
            for h in driver.window_handles:  # every tab loaded and showing live samples
                driver.switch_to.window(h)
                wait(lambda: driver.execute_script("return window.evoFirstSampleAt || 0;"), 30, "a tab live")
            time.sleep(1.0)
            rows["chromium_10_tabs"] = window_with(stats, args.window, bridge, chromium_cpu(driver))
        finally:
            driver.quit()
        dcl: list[float] = []
        loads = page_loads(url, tmp / "profile-loads", args.loads, dcl)
        rows["page_dom_content_loaded_ms"] = {"samples": dcl, "p50": float(np.percentile(dcl, 50))}
        first = grpc_first_message(f"127.0.0.1:{gp}", args.loads)
        rows["page_load_to_first_value_ms"] = {"samples": loads, "p50": float(np.percentile(loads, 50)),
                                               "max": float(max(loads))}
        rows["grpc_channel_to_first_message_ms"] = {"samples": first, "p50": float(np.percentile(first, 50)),
                                                    "max": float(max(first))}
        stats.close()
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        from tests.helpers import remove_shm
        remove_shm(prefix)
    base_cpu = rows["no_client"]["cpu_percent"]["bridge"]
    ws_cpu = rows["websocket_10"]["cpu_percent"]["bridge"]
    summary = {
        "bridge_cpu_percent": {k: rows[k]["cpu_percent"]["bridge"] for k in ("no_client", "websocket_10", "polling_10",
                                                                             "chromium_10_tabs")},
        "bridge_cpu_ratio_polling_vs_websocket": ratio(rows["polling_10"]["cpu_percent"]["bridge"] - base_cpu,
                                                       ws_cpu - base_cpu),
        "cu_jitter_p99_us_le": {k: rows[k]["p99_us_le"] for k in ("no_client", "websocket_10", "polling_10",
                                                                  "chromium_10_tabs")},
        "page_load_to_first_value_ms_p50": rows["page_load_to_first_value_ms"]["p50"],
        "grpc_to_first_message_ms_p50": rows["grpc_channel_to_first_message_ms"]["p50"],
    }
    return {"bench": "hmi", "method": METHOD, "machine": machine_info(), "window_s": args.window, "rows": rows,
            "summary": summary}


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    table = []
    for label, key in (("no client", "no_client"), ("10 live pages (WebSocket, 10 Hz)", "websocket_10"),
                       ("10 pollers (HTTP GET x3, 10 Hz)", "polling_10"), ("10 Chromium tabs", "chromium_10_tabs")):
        w = rows[key]
        table.append({"what": label, "p50": w["p50_us_le"], "p99": w["p99_us_le"], "p999": w["p999_us_le"],
                      "over": w["over_775us"], "overruns": w["overruns"], "cpu": w["cpu_percent"]["bridge"],
                      "browser": w.get("browser_cpu_percent") or 0.0, "rate": w.get("messages_per_s_per_client", 0.0)})
    print_table(table, [("case", "what", ""), ("CU p50 us <=", "p50", ".0f"), ("p99 <=", "p99", ".0f"),
                        ("p99.9 <=", "p999", ".0f"), (">775us", "over", "d"), ("overruns", "overruns", "d"),
                        ("bridge CPU %", "cpu", ".1f"), ("browser CPU %", "browser", ".1f"),
                        ("msg/s/client", "rate", ".1f")])
    s = result["summary"]
    print(f"page DOMContentLoaded p50 {rows['page_dom_content_loaded_ms']['p50']:.0f} ms; "
          f"page load -> first live value drawn: p50 {s['page_load_to_first_value_ms_p50']:.0f} ms "
          f"(max {rows['page_load_to_first_value_ms']['max']:.0f}); new gRPC channel -> first WatchStatus: "
          f"p50 {s['grpc_to_first_message_ms_p50']:.1f} ms")
    if s["bridge_cpu_ratio_polling_vs_websocket"]:
        print(f"bridge CPU above idle, pollers / live pages: {s['bridge_cpu_ratio_polling_vs_websocket']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--loads", type=int, default=10, help="page loads timed")
    ap.add_argument("--out", default="", help="results JSON path (default results/hmi.json)")
    args = ap.parse_args(argv)
    result = run(args)
    report(result)
    path = write_json("hmi", result, args.out or None)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
