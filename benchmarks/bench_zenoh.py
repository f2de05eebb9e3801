"""Zenoh output (issue 14): segment change -> Zenoh subscriber beside the MQTT path of the same bridge,
status query round trip, and publish throughput beside a bare zenoh-python put loop.

Run: `.venv/bin/python -m benchmarks.bench_zenoh [--messages N] [--changes N] [--queries N] [--out PATH]`
-> table + results/zenoh.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zenoh

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from benchmarks.bench_mqtt import Sink, _body
from common.connector import BackPressure, Up, ZenohRouting
from common.connector.routing import Congestion
from common.connector.zenoh import ZenohConnector, ZenohOptions
from common.shm.p2p import TypedP2pWriter, segment_name
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from common.states import MachineState
from tests.helpers import (
    REPO,
    ModuleProcess,
    free_port,
    remove_shm,
    unique_prefix,
    wait_for,
)
from tests.mosquitto_broker import start_broker

METHOD = (
    "All on loopback, explicit endpoints, scouting off. (a) throughput: N axis-telemetry JSON bodies (~330 B) "
    "published as fast as the path accepts them to a client-mode subscriber session in this process (callback "
    "counts, congestion BLOCK so nothing is dropped); rate = N / (first send .. last arrival). bare: "
    "zenoh Publisher.put of a pre-encoded payload in a loop; connector: ChannelWriter.send(dict) -> JsonCodec into "
    "an envelope slot -> bounded bridge -> gateway thread -> Publisher.put (BackPressure retried after 50 us). "
    "(b) segment change -> subscriber: test writers commit cu_mqt, hal_mqt and re_mqt at 1 kHz, machine_state "
    "flips at a random phase, the real `python -m mqtt_bridge` process (50 Hz scan) publishes evo/bench/state "
    "on MQTT (mosquitto, QoS 1) and on Zenoh from the same scan; both arrivals are timed against the same "
    "commit. (c) query round trip: get(evo/bench/status) from a client session with a fresh correlation id "
    "(the connector's query()) at a random phase, answered by the bridge from the next scan's samples (so "
    "it waits up to one 20 ms scan by design); beside a bare zenoh "
    "queryable answering a pre-encoded payload of the same size in its callback."
)


def _session(mode: str, listen: tuple[str, ...] = (), connect: tuple[str, ...] = ()) -> Any:
    return zenoh.open(ZenohOptions(mode=mode, listen=listen, connect=connect, min_peers=0 if mode == "peer" else 1)
                      .to_config())


class ZSink:
    """A Zenoh subscriber recording arrival times (perf_counter_ns)."""

    def __init__(self, session: Any, key: str) -> None:
        self.arrivals: list[tuple[int, bytes]] = []
        self.cond = threading.Condition()
        self.sub = session.declare_subscriber(key, self._on)

    def _on(self, sample: Any) -> None:
        t = time.perf_counter_ns()
        with self.cond:
            self.arrivals.append((t, sample.payload.to_bytes()))
            self.cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout)

    def reset(self) -> None:
        with self.cond:
            self.arrivals.clear()


def _throughput(sink: ZSink, n: int, send: Callable[[int], None]) -> dict[str, float]:
    sink.reset()
    t0 = time.perf_counter_ns()
    for i in range(n):
        send(i)
    seen = -1
    while not sink.wait_count(n, 1.0):
        if len(sink.arrivals) == seen:
            break
        seen = len(sink.arrivals)
    got = min(len(sink.arrivals), n)
    if got == 0:
        raise RuntimeError("nothing arrived")
    return {"n": n, "delivered": got, "lost": n - got, "msgs_per_s": got / ((sink.arrivals[got - 1][0] - t0) / 1e9)}


def bench_throughput(n: int) -> dict[str, Any]:
    port = free_port()
    ep = f"tcp/127.0.0.1:{port}"
    pub_session = _session("peer", listen=(ep,))
    sub_session = _session("client", connect=(ep,))
    out: dict[str, Any] = {}
    try:
        payloads = [json.dumps(_body(i), separators=(",", ":")).encode() for i in range(n)]
        bare_sink = ZSink(sub_session, "bench/bare")
        pub = pub_session.declare_publisher("bench/bare", congestion_control=zenoh.CongestionControl.BLOCK)
        wait_for(lambda: pub.put(b"{}") or bare_sink.wait_count(1, 0.05), 10, what="bare subscriber matched")
        out["bare"] = _throughput(bare_sink, n, lambda i: pub.put(payloads[i]))
        pub.undeclare()
    finally:
        pub_session.close()
    conn = ZenohConnector(ZenohOptions(listen=(ep,), min_peers=0), "bench", outbound_capacity=256)
    w = conn.writer(ZenohRouting("bench/conn", congestion=Congestion.BLOCK))
    retries = 0

    def send(i: int) -> None:
        nonlocal retries
        while True:
            try:
                w.send(_body(i))
                return
            except BackPressure:
                retries += 1
                time.sleep(50e-6)

    try:
        conn_sink = ZSink(sub_session, "bench/conn")
        with conn:
            wait_for(lambda: conn.health == Up(), 10, what="connector up")
            wait_for(lambda: send(-1) or conn_sink.wait_count(1, 0.05), 20, what="connector subscriber matched")
            out["connector"] = _throughput(conn_sink, n, send)
            out["connector"]["backpressure_retries"] = retries
    finally:
        sub_session.close()
    return out


def _bridge_config(base: Path, mqtt_port: int, zenoh_port: int) -> Path:
    d = base / "config"
    shutil.copytree(REPO / "config", d)
    text = (d / "config.toml").read_text()
    text = re.sub(r"(?m)^port = 1883$", f"port = {mqtt_port}", text)
    text = re.sub(r'(?m)^machine_id = ""$', 'machine_id = "bench"', text)
    text = re.sub(r'(?m)^run_dir = ""$', f'run_dir = "{base / "run"}"', text)
    text = text.replace('"tcp/127.0.0.1:7447"', f'"tcp/127.0.0.1:{zenoh_port}"')
    (d / "config.toml").write_text(text)
    (base / "run").mkdir(exist_ok=True)
    return d


def bench_bridge(changes: int, queries: int, base: Path) -> dict[str, Any]:
    broker = start_broker(base / "broker")
    prefix = unique_prefix("bzn")
    os.environ["EVO_SHM_PREFIX"] = prefix
    zport = free_port()
    cfg = _bridge_config(base, broker.port, zport)
    writers = [TypedP2pWriter.create(segment_name(src, "mqt"), src, "mqt", dt)
               for src, dt in (("cu", CU_TO_MQT), ("hal", HAL_TO_MQT), ("re", RE_TO_MQT))]
    status = writers[0].local["status"]
    status["axis_count"] = 4
    lock = threading.Lock()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            with lock:
                for w in writers:
                    w.commit()
            time.sleep(0.001)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    msink = Sink(broker.port, "evo/bench/state")
    bridge = ModuleProcess("mqtt_bridge", prefix, ["--config", str(cfg)], log_dir=base).start()
    probe = ZenohConnector(ZenohOptions(mode="client", connect=(f"tcp/127.0.0.1:{zport}",)), "probe")
    mq_lat: list[int] = []
    z_lat: list[int] = []
    q_lat: list[int] = []
    size = 0
    try:
        wait_for(lambda: any(b'"live":true' in p for _, p in msink.arrivals), 30, what="bridge publishing on MQTT")
        probe.start()
        wait_for(lambda: probe.health == Up(), 30, what="probe connected to the bridge")
        zsink = ZSink(probe.session, "evo/bench/state")
        wait_for(lambda: probe.query("evo/bench/status").ok, 30, what="the status queryable")
        rng = random.Random(7)
        states = (MachineState.IDLE, MachineState.ACTIVE)
        for i in range(changes):
            target = states[(i + 1) % 2]
            name = target.name.encode()
            msink.reset()
            zsink.reset()
            time.sleep(rng.uniform(0.0, 0.02))  # random phase against the 50 Hz scan
            with lock:
                status["machine_state"] = target
                writers[0].commit()
                t0 = time.perf_counter_ns()
            wait_for(lambda: any(name in p for _, p in msink.arrivals) and any(name in p for _, p in zsink.arrivals),
                     5, what="state change on both")
            mq_lat.append(next(ts for ts, p in msink.arrivals if name in p) - t0)
            z_lat.append(next(ts for ts, p in zsink.arrivals if name in p) - t0)
        for _ in range(queries):
            time.sleep(rng.uniform(0.0, 0.02))  # random phase against the scan that answers it
            t0 = time.perf_counter_ns()
            res = probe.query("evo/bench/status")
            q_lat.append(time.perf_counter_ns() - t0)
            assert len(res.ok) == 1 and res.mismatched == 0
        size = len(json.dumps(probe.query("evo/bench/status").ok[0].value, separators=(",", ":")))
    finally:
        probe.stop()
        bridge.stop()
        stop.set()
        pumper.join(2)
        for w in writers:
            w.close()
        msink.close()
        broker.close()
        remove_shm(prefix)
    return {"mqtt": summarize(mq_lat), "zenoh": summarize(z_lat), "query": summarize(q_lat), "status_bytes": size}


def bench_bare_query(queries: int, size: int) -> dict[str, Any]:
    port = free_port()
    ep = f"tcp/127.0.0.1:{port}"
    server = _session("peer", listen=(ep,))
    querier = _session("client", connect=(ep,))
    payload = b"x" * size
    q = server.declare_queryable("bench/status", lambda query: query.reply("bench/status", payload))
    lat = []
    try:
        wait_for(lambda: list(querier.get("bench/status", timeout=1.0)), 10, what="bare queryable")
        for _ in range(queries):
            t0 = time.perf_counter_ns()
            replies = list(querier.get("bench/status", timeout=2.0))
            lat.append(time.perf_counter_ns() - t0)
            assert replies and replies[0].ok is not None
    finally:
        q.undeclare()
        querier.close()
        server.close()
    return summarize(lat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000, help="messages per throughput run")
    ap.add_argument("--changes", type=int, default=200, help="segment changes timed on MQTT and Zenoh")
    ap.add_argument("--queries", type=int, default=300, help="status queries timed")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench_zenoh_"))
    try:
        tp = bench_throughput(args.messages)
        br = bench_bridge(args.changes, args.queries, base)
        bare_q = bench_bare_query(args.queries, br["status_bytes"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = {"throughput": tp, "bridge": br, "bare_query": bare_q}
    rows = [
        {"what": "(a) bare zenoh Publisher.put loop", "rate": tp["bare"]["msgs_per_s"], "lost": tp["bare"]["lost"],
         "x": 1.0, "p50_ms": None, "p99_ms": None},
        {"what": "(a) connector writer -> gateway -> put", "rate": tp["connector"]["msgs_per_s"],
         "lost": tp["connector"]["lost"], "x": ratio(tp["connector"]["msgs_per_s"], tp["bare"]["msgs_per_s"]),
         "p50_ms": None, "p99_ms": None},
        {"what": "(b) segment change -> MQTT subscriber (QoS 1)", "rate": None, "lost": None, "x": 1.0,
         "p50_ms": br["mqtt"]["p50_ns"] / 1e6, "p99_ms": br["mqtt"]["p99_ns"] / 1e6},
        {"what": "(b) segment change -> Zenoh subscriber", "rate": None, "lost": None,
         "x": ratio(br["zenoh"]["p50_ns"], br["mqtt"]["p50_ns"]),
         "p50_ms": br["zenoh"]["p50_ns"] / 1e6, "p99_ms": br["zenoh"]["p99_ns"] / 1e6},
        {"what": f"(c) bare queryable get, {br['status_bytes']} B", "rate": None, "lost": None, "x": 1.0,
         "p50_ms": bare_q["p50_ns"] / 1e6, "p99_ms": bare_q["p99_ns"] / 1e6},
        {"what": "(c) get evo/bench/status (bridge)", "rate": None, "lost": None,
         "x": ratio(br["query"]["p50_ns"], bare_q["p50_ns"]),
         "p50_ms": br["query"]["p50_ns"] / 1e6, "p99_ms": br["query"]["p99_ns"] / 1e6},
    ]
    print(METHOD, "\n")
    print_table(rows, [("what", "what", ""), ("msgs/s", "rate", ".0f"), ("lost", "lost", ""), ("ratio", "x", ".2f"),
                       ("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f")])
    print("\n(ratio: (a) rate against the bare put loop; (b) p50 against the MQTT path of the same run; "
          "(c) p50 against the bare queryable.)")
    path = write_json("zenoh", {"machine": machine_info(), "method": METHOD, "params": vars(args),
                                "results": results, "rows": rows}, args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
