"""MQTT publishing through the connector framework and the bridge, beside a bare paho publish loop.

Run: `.venv/bin/python -m benchmarks.bench_mqtt [--messages N] [--changes N] [--out PATH]` -> table + results/mqtt.json.
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
import uuid
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks._stats import machine_info, print_table, ratio, summarize, write_json
from common.connector import BackPressure, MqttRouting, Up
from common.connector.mqtt import MqttConnector, MqttOptions
from common.shm.p2p import TypedP2pWriter, segment_name
from common.shm.segments import CU_TO_MQT
from common.states import MachineState
from tests.helpers import REPO, ModuleProcess, remove_shm, unique_prefix, wait_for
from tests.mosquitto_broker import start_broker

METHOD = (
    "One mosquitto on loopback; one paho subscriber (threaded loop) in this process counts and timestamps "
    "arrivals (broker: max_queued_messages 0, so nothing is dropped for a slow subscriber). Throughput: N "
    "messages of a typical axis-telemetry JSON body (~330 B) published as fast as the "
    "path accepts them, rate = N / (first send .. last arrival). (a) bare paho: Client.publish in a loop, "
    "network thread via loop_start, payload pre-encoded once; (b) the bridge's publish path: "
    "ChannelWriter.send(dict) -> JsonCodec into an envelope slot -> bounded bridge -> gateway thread -> paho "
    "(BackPressure is retried after a 50 us sleep). Latency: one message in flight at a time, send -> "
    "subscriber callback, same clock. (c) segment change -> subscriber: a test CU writer commits cu_mqt at "
    "1 kHz, flips machine_state at a random phase, and the real `python -m mqtt_bridge` process (50 Hz scan) "
    "publishes the state topic; latency = commit of the change -> arrival."
)


def _body(i: int) -> dict[str, Any]:
    return {
        "live": True, "id": 1, "name": "X", "power": "MOTION", "motion": "CONSTANT_VELOCITY", "mode": "POSITION",
        "coupling": "UNCOUPLED", "gearbox": "NO_GEARBOX", "loading": "PRODUCTION", "referenced": True,
        "enabled": True, "in_position": False, "brake_released": True, "errors": [], "error_flags": 0,
        "position": {"value": 100.0 + i * 1e-3, "unit": "mm"}, "velocity": {"value": 50.0, "unit": "mm/s"},
        "target_position": {"value": 500.0, "unit": "mm"}, "lag_error": {"value": 0.001, "unit": "mm"},
        "torque": {"value": 12.5, "unit": "%"}, "seq": i,
    }


class Sink:
    """A paho subscriber recording arrival times (perf_counter_ns) per topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: list[tuple[int, bytes]] = []
        self.cond = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sink-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv311)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(topic, 1)
        if not subscribed.wait(5):
            raise RuntimeError("sink could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        t = time.perf_counter_ns()
        with self.cond:
            self.arrivals.append((t, msg.payload))
            self.cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout)

    def reset(self) -> None:
        with self.cond:
            self.arrivals.clear()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _paho_client(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv311)
    c.max_inflight_messages_set(20)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _throughput(sink: Sink, n: int, send: Callable[[int], None]) -> dict[str, float]:
    sink.reset()
    t0 = time.perf_counter_ns()
    for i in range(n):
        send(i)
    t_sent = time.perf_counter_ns()
    # QoS 0 may lose messages under a flood: wait for all, or until arrivals stop for a second
    seen = -1
    while not sink.wait_count(n, 1.0):
        if len(sink.arrivals) == seen:
            break
        seen = len(sink.arrivals)
    got = min(len(sink.arrivals), n)
    if got == 0:
        raise RuntimeError("nothing arrived")
    t_last = sink.arrivals[got - 1][0]
    return {"n": n, "delivered": got, "lost": n - got, "msgs_per_s": got / ((t_last - t0) / 1e9),
            "send_phase_s": (t_sent - t0) / 1e9}


def _latency(sink: Sink, n: int, send: Callable[[int], None]) -> list[int]:
    out = []
    for i in range(n):
        sink.reset()
        t0 = time.perf_counter_ns()
        send(i)
        if not sink.wait_count(1, 10):
            raise RuntimeError("message lost")
        out.append(sink.arrivals[0][0] - t0)
    return out


def bench_bare(port: int, sink: Sink, n: int, lat_n: int, qos: int) -> dict[str, Any]:
    c = _paho_client(port)
    payloads = [json.dumps(_body(i), separators=(",", ":")).encode() for i in range(max(n, lat_n))]
    try:
        tp = _throughput(sink, n, lambda i: c.publish("bench/bare", payloads[i], qos))
        lat = _latency(sink, lat_n, lambda i: c.publish("bench/bare", payloads[i], qos))
    finally:
        c.disconnect()
        c.loop_stop()
    return {"throughput": tp, "latency": summarize(lat)}


def bench_connector(port: int, sink: Sink, n: int, lat_n: int, qos: int) -> dict[str, Any]:
    conn = MqttConnector(MqttOptions(port=port), "bench", outbound_capacity=256)
    w = conn.writer(MqttRouting("bench/conn", qos))
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

    with conn:
        wait_for(lambda: conn.health == Up(), 10, what="connector up")
        tp = _throughput(sink, n, send)
        lat = _latency(sink, lat_n, send)
    tp["backpressure_retries"] = retries
    return {"throughput": tp, "latency": summarize(lat)}


def _bridge_config(base: Path, port: int) -> Path:
    d = base / "config"
    shutil.copytree(REPO / "config", d)
    text = (d / "config.toml").read_text()
    text = re.sub(r"(?m)^port = 1883$", f"port = {port}", text)
    text = re.sub(r'(?m)^machine_id = ""$', 'machine_id = "bench"', text)
    text = re.sub(r'(?m)^run_dir = ""$', f'run_dir = "{base / "run"}"', text)
    from tests.helpers import zenoh_isolated  # 7447 may be another machine's

    (d / "config.toml").write_text(zenoh_isolated(text))
    (base / "run").mkdir(exist_ok=True)
    return d


def bench_bridge_latency(port: int, changes: int, base: Path) -> dict[str, Any]:
    """Real bridge process; a 1 kHz CU writer flips machine_state; change -> arrival of evo/bench/state."""
    prefix = unique_prefix("bmq")
    os.environ["EVO_SHM_PREFIX"] = prefix
    cfg = _bridge_config(base, port)
    sink = Sink(port, "evo/bench/state")
    writer = TypedP2pWriter.create(segment_name("cu", "mqt"), "cu", "mqt", CU_TO_MQT)
    status = writer.local["status"]
    lock = threading.Lock()
    stop = threading.Event()

    def pump() -> None:  # the CU's 1 kHz commits
        while not stop.is_set():
            with lock:
                writer.commit()
            time.sleep(0.001)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    bridge = ModuleProcess("mqtt_bridge", prefix, ["--config", str(cfg)], log_dir=base).start()
    samples: list[int] = []
    try:
        wait_for(lambda: any(b'"live":true' in p for _, p in sink.arrivals), 20, what="bridge publishing live state")
        rng = random.Random(7)
        states = (MachineState.IDLE, MachineState.ACTIVE)
        for i in range(changes):
            target = states[(i + 1) % 2]
            name = target.name.encode()
            sink.reset()
            time.sleep(rng.uniform(0.0, 0.02))  # random phase against the 50 Hz scan
            with lock:
                status["machine_state"] = target
                writer.commit()
                t0 = time.perf_counter_ns()
            wait_for(lambda: any(name in p for _, p in sink.arrivals), 5, what="state change")
            t1 = next(ts for ts, p in sink.arrivals if name in p)
            samples.append(t1 - t0)
    finally:
        bridge.stop()
        stop.set()
        t.join(2)
        writer.close()
        sink.close()
        remove_shm(prefix)
    return {"latency": summarize(samples), "bridge_log_tail": bridge.output()[-500:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000, help="messages per throughput run")
    ap.add_argument("--latency", type=int, default=500, help="one-at-a-time messages per latency run")
    ap.add_argument("--changes", type=int, default=200, help="segment changes for the bridge latency")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench_mqtt_"))
    # no per-client queue limit: a flood must not be cut by the broker before the subscriber sees it
    broker = start_broker(base / "broker", config_extra="max_queued_messages 0\n")
    results: dict[str, Any] = {}
    try:
        for qos in (0, 1):
            bare_sink = Sink(broker.port, "bench/bare")
            conn_sink = Sink(broker.port, "bench/conn")
            try:
                results[f"bare_q{qos}"] = bench_bare(broker.port, bare_sink, args.messages, args.latency, qos)
                results[f"connector_q{qos}"] = bench_connector(broker.port, conn_sink, args.messages, args.latency, qos)
            finally:
                bare_sink.close()
                conn_sink.close()
        results["bridge"] = bench_bridge_latency(broker.port, args.changes, base)
    finally:
        broker.close()
        shutil.rmtree(base, ignore_errors=True)

    rows = []
    for qos in (0, 1):
        bare, conn = results[f"bare_q{qos}"], results[f"connector_q{qos}"]
        rows.append({"what": f"(a) bare paho publish loop, QoS {qos}", "rate": bare["throughput"]["msgs_per_s"],
                     "lost": bare["throughput"]["lost"],
                     "rate_ratio": 1.0, "p50_ms": bare["latency"]["p50_ns"] / 1e6,
                     "p99_ms": bare["latency"]["p99_ns"] / 1e6, "lat_ratio": 1.0})
        rows.append({"what": f"(b) connector writer -> gateway, QoS {qos}", "rate": conn["throughput"]["msgs_per_s"],
                     "lost": conn["throughput"]["lost"],
                     "rate_ratio": ratio(conn["throughput"]["msgs_per_s"], bare["throughput"]["msgs_per_s"]),
                     "p50_ms": conn["latency"]["p50_ns"] / 1e6, "p99_ms": conn["latency"]["p99_ns"] / 1e6,
                     "lat_ratio": ratio(conn["latency"]["p50_ns"], bare["latency"]["p50_ns"])})
    br = results["bridge"]["latency"]
    base_lat = results["bare_q1"]["latency"]["p50_ns"]
    rows.append({"what": "(c) segment change -> subscriber (bridge, QoS 1)", "rate": None, "lost": None, "rate_ratio": None,
                 "p50_ms": br["p50_ns"] / 1e6, "p99_ms": br["p99_ns"] / 1e6, "lat_ratio": ratio(br["p50_ns"], base_lat)})
    print(METHOD, "\n")
    print_table(rows, [("what", "what", ""), ("msgs/s", "rate", ".0f"), ("lost", "lost", ""), ("x paho", "rate_ratio", ".2f"),
                       ("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"), ("x paho p50", "lat_ratio", ".1f")])
    print("\n(ratios against the bare paho row of the same QoS; (c) against bare paho QoS 1.)")
    path = write_json("mqtt", {"machine": machine_info(), "method": METHOD, "params": vars(args),
                               "results": results, "rows": rows}, args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
