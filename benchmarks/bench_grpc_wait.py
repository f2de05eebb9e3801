"""How a gRPC handler should wait for another party's answer: a bare server on loopback, one way each.

Run: `.venv/bin/python -m benchmarks.bench_grpc_wait [--n 600] [--delay-ms 1] [--only a,b]` -> table +
results/grpc_wait.json. Issue 15: the bridge's command handler suspends until a consumer's ack;
this isolates what each way of waiting costs above an immediate handler, without HAL, CU or rings.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
import posix_ipc

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json

REPO = Path(__file__).resolve().parent.parent
METHOD = (
    "One server process per way of waiting (grpc.aio unless named sync-*), one unary method with raw "
    "bytes (no protobuf), on 127.0.0.1; one synchronous client in this process calls it n times, the "
    "ways interleaved in blocks of 20 calls so that they see the same load. The party the handler "
    "waits for is a thread of the server that sleeps `delay` after the request arrives and then "
    "answers (the way named); `block` is the reference: the handler itself sleeps `delay` without "
    "suspending (what an immediate handler plus the same sleep costs). Cost of a way = its p50 "
    "minus block's p50."
)
SERVICE, METHOD_NAME = "bench.Wait", "Call"
SPIN_BOUND_S = 0.05  # the spinning ways give up after this (never reached in a healthy run)

AIO_WAYS = ("immediate", "block", "sleep", "threadsafe", "wrap_future", "eventfd", "spin", "blocking_sem",
            "work_after", "yield_block", "block_yield")
SYNC_WAYS = ("sync-immediate", "sync-block", "sync-sem")
UV_WAYS = ("uv-immediate", "uv-block", "uv-eventfd")  # the same grpc.aio ways on uvloop (if installed)
WAYS = AIO_WAYS + SYNC_WAYS + UV_WAYS
WHAT = {
    "immediate": "grpc.aio, handler returns at once (GetStatus-like)",
    "block": "grpc.aio, handler sleeps `delay` in the loop (reference)",
    "sleep": "grpc.aio, await asyncio.sleep(delay) (suspend, loop timer, no thread)",
    "threadsafe": "grpc.aio, await future; thread: loop.call_soon_threadsafe(set_result)",
    "wrap_future": "grpc.aio, await wrap_future(concurrent future); thread: set_result",
    "eventfd": "grpc.aio, await future; thread writes an eventfd the loop watches (add_reader)",
    "spin": "grpc.aio, poll a flag with await sleep(0) until the thread sets it",
    "blocking_sem": "grpc.aio, handler blocks the loop on a POSIX semaphore the thread posts",
    "work_after": "grpc.aio, block, then 0.2 ms of work on the loop's next turn (a deferred log line)",
    "yield_block": "grpc.aio, await asyncio.sleep(0) (suspend without idling), then block",
    "block_yield": "grpc.aio, block, then await asyncio.sleep(0) (suspend without idling)",
    "sync-immediate": "grpc sync server (thread pool), handler returns at once",
    "sync-block": "grpc sync server, handler sleeps `delay`",
    "sync-sem": "grpc sync server, handler blocks on a POSIX semaphore the thread posts",
    "uv-immediate": "grpc.aio on uvloop, handler returns at once",
    "uv-block": "grpc.aio on uvloop, handler sleeps `delay` in the loop (reference of the uv-* ways)",
    "uv-eventfd": "grpc.aio on uvloop, await future; thread writes an eventfd the loop watches",
}


class Answerer:
    """The other party: a thread that sleeps `delay` after each request, then answers via `done`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.q: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def ask(self, done: Callable[[], None]) -> None:
        self.q.put(done)

    def _run(self) -> None:
        while True:
            done = self.q.get()
            time.sleep(self.delay_s)
            done()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _handler_aio(way: str, delay_s: float, answerer: Answerer) -> Callable[..., Any]:
    loop_holder: dict[str, Any] = {}
    efd = os.eventfd(0, os.EFD_NONBLOCK) if way == "eventfd" else -1
    waiting: list[asyncio.Future] = []
    sem = posix_ipc.Semaphore(None, posix_ipc.O_CREX) if way == "blocking_sem" else None
    if sem is not None:
        sem.unlink()

    def on_eventfd() -> None:
        try:
            os.eventfd_read(efd)
        except BlockingIOError:
            return
        while waiting:
            f = waiting.pop()
            if not f.done():
                f.set_result(None)

    async def handler(request: bytes, context: Any) -> bytes:
        loop = asyncio.get_running_loop()
        if way == "immediate":
            pass
        elif way == "block":
            time.sleep(delay_s)
        elif way == "yield_block":
            await asyncio.sleep(0)
            time.sleep(delay_s)
        elif way == "block_yield":
            time.sleep(delay_s)
            await asyncio.sleep(0)
        elif way == "work_after":
            time.sleep(delay_s)
            loop.call_soon(_busy, 200e-6)
        elif way == "sleep":
            await asyncio.sleep(delay_s)
        elif way == "threadsafe":
            fut = loop.create_future()
            answerer.ask(lambda: loop.call_soon_threadsafe(fut.set_result, None))
            await fut
        elif way == "wrap_future":
            cfut: concurrent.futures.Future[None] = concurrent.futures.Future()
            answerer.ask(lambda: cfut.set_result(None))
            await asyncio.wrap_future(cfut)
        elif way == "eventfd":
            if "reader" not in loop_holder:
                loop.add_reader(efd, on_eventfd)
                loop_holder["reader"] = True
            fut = loop.create_future()
            waiting.append(fut)
            answerer.ask(lambda: os.eventfd_write(efd, 1))
            await fut
        elif way == "spin":
            flag = threading.Event()
            answerer.ask(flag.set)
            end = time.monotonic() + SPIN_BOUND_S
            while not flag.is_set() and time.monotonic() < end:
                await asyncio.sleep(0)
        elif way == "blocking_sem":
            assert sem is not None
            answerer.ask(sem.release)
            sem.acquire(SPIN_BOUND_S)
        return request

    return handler


def serve(way: str, port: int, delay_s: float) -> None:
    """The server process of one way (until SIGTERM)."""
    uv = way.startswith("uv-")
    way = way.removeprefix("uv-")
    answerer = Answerer(delay_s)
    if way.startswith("sync-"):
        sem = posix_ipc.Semaphore(None, posix_ipc.O_CREX)
        sem.unlink()

        def handler(request: bytes, context: Any) -> bytes:
            if way == "sync-block":
                time.sleep(delay_s)
            elif way == "sync-sem":
                answerer.ask(sem.release)
                sem.acquire(SPIN_BOUND_S)
            return request

        server = grpc.server(concurrent.futures.ThreadPoolExecutor(4), options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {METHOD_NAME: grpc.unary_unary_rpc_method_handler(handler)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        stop.wait()
        server.stop(0.5)
        return

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {METHOD_NAME: grpc.unary_unary_rpc_method_handler(_handler_aio(way, delay_s, answerer))}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop(0.5)

    if uv:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(main())
    else:
        asyncio.run(main())


def cycle_load(busy_us: float) -> None:
    """A stand-in for HAL or CU beside the server: a 1 kHz loop that computes `busy_us` per cycle."""
    period = 1e-3
    nxt = time.monotonic()
    while True:
        end = time.monotonic() + busy_us * 1e-6
        while time.monotonic() < end:
            pass
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.monotonic()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    ways = [w for w in WAYS if not args.only or w in args.only.split(",")]
    try:
        import uvloop  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        ways = [w for w in ways if not w.startswith("uv-")]
    procs: dict[str, subprocess.Popen[str]] = {}
    loads = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_grpc_wait", "--cycle-load", str(args.load_us)],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))) for _ in range(args.load)]
    calls: dict[str, Callable[[bytes], Any]] = {}
    channels = []
    try:
        for w in ways:
            port = _free_port()
            env = dict(os.environ, PYTHONPATH=str(REPO))
            p = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_grpc_wait", "--serve", w, "--port",
                                  str(port), "--delay-ms", str(args.delay_ms)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, text=True)
            procs[w] = p
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"server {w} did not start")
            ch = grpc.insecure_channel(f"127.0.0.1:{port}")
            channels.append(ch)
            calls[w] = ch.unary_unary(f"/{SERVICE}/{METHOD_NAME}")
        samples: dict[str, list[int]] = {w: [] for w in ways}
        pc = time.perf_counter_ns
        for w in ways:  # warm-up
            for _ in range(20):
                calls[w](b"x", timeout=5)
        block = 20
        for _ in range(max(1, args.n // block)):
            for w in ways:
                call = calls[w]
                for _ in range(block):
                    t0 = pc()
                    call(b"x", timeout=5)
                    samples[w].append(pc() - t0)
    finally:
        for ch in channels:
            ch.close()
        for p in [*procs.values(), *loads]:
            p.send_signal(signal.SIGTERM)
        for p in [*procs.values(), *loads]:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    rows = {w: summarize(np.array(s)) for w, s in samples.items()}
    ref = rows.get("block", {}).get("p50_ns")
    refs = {"sync-": rows.get("sync-block", {}).get("p50_ns"), "uv-": rows.get("uv-block", {}).get("p50_ns")}
    for w, r in rows.items():
        base = next((v for k, v in refs.items() if w.startswith(k)), ref)
        if base and not w.endswith("immediate"):
            r["cost_over_block_p50_ms"] = (r["p50_ns"] - base) / 1e6
    return {"method": METHOD, "machine": machine_info(), "params": vars(args),
            "grpc_poll_strategy": os.environ.get("GRPC_POLL_STRATEGY", "(default)"), "rows": rows,
            "loadavg_at_end": list(os.getloadavg())}


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    ref = rows.get("block", {}).get("p50_ns")
    table = [{"way": w, "what": WHAT[w], "p50": r["p50_ns"] / 1e6, "p99": r["p99_ns"] / 1e6,
              "cost": r.get("cost_over_block_p50_ms"), "x": ratio(r["p50_ns"], ref) if ref else None}
             for w, r in rows.items()]
    print_table(table, [("way", "way", ""), ("p50 ms", "p50", ".3f"), ("p99 ms", "p99", ".3f"),
                        ("p50 - block", "cost", ".3f"), ("x block", "x", ".2f"), ("what", "what", "")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_grpc_wait", description=__doc__)
    ap.add_argument("--n", type=int, default=600, help="calls per way")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="how long the other party takes")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(WAYS))
    ap.add_argument("--load", type=int, default=0, help="1 kHz cycle loops beside the server (HAL, CU stand-ins)")
    ap.add_argument("--load-us", type=float, default=150.0, help="computation per cycle of each load loop")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/grpc_wait.json)")
    ap.add_argument("--cycle-load", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--serve", choices=WAYS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cycle_load is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        cycle_load(args.cycle_load)
        return 0
    if args.serve:
        serve(args.serve, args.port, args.delay_ms / 1e3)
        return 0
    result = run(args)
    report(result)
    print(f"\nresults: {write_json('grpc_wait', result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
