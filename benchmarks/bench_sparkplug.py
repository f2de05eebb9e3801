"""Sparkplug B beside the JSON tree, in one run of one bridge process: segment change -> decoded update.

Run: `.venv/bin/python -m benchmarks.bench_sparkplug [--changes N] [--out PATH]` -> table + results/sparkplug.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from common.states import MachineState
from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb
from tests.helpers import ModuleProcess, remove_shm, unique_prefix, wait_for
from tests.mosquitto_broker import start_broker
from tests.sparkplug_support import GROUP, MID, LiveWriter, fill, sparkplug_config

METHOD = (
    "One mosquitto on loopback; the real `python -m mqtt_bridge` process (50 Hz scan) with the JSON tree and "
    "[mqtt.sparkplug] both on, fed by test writers of cu_mqt/hal_mqt/re_mqt committing at 200 Hz. One paho "
    "subscriber in this process takes both namespaces and DECODES each message before stamping it: JSON with "
    "json.loads, Sparkplug with the compiled Tahu proto (Payload.FromString, metric looked up by the alias its "
    "birth announced). A change is committed to the segment at a random phase against the scan; latency = "
    "commit -> decoded arrival, per path, from the same change. (1) machine_state flips: JSON evo/<id>/state "
    "(on change, QoS 1, retained) vs Sparkplug NDATA Machine/State (QoS 0). (2) axis 1 position steps: "
    "Sparkplug DDATA Axes/X/Position (on change) vs JSON evo/<id>/axes/1 (periodic at telemetry_hz = 50 here, "
    "i.e. every scan). Bytes = MQTT payload size of the message that carried the change."
)


class Host:
    """Subscriber to evo/<id>/# and spBv1.0/<group>/#; records (t_decoded, key, value, bytes)."""

    def __init__(self, port: int) -> None:
        self.events: list[tuple[int, str, Any, int]] = []
        self.aliases: dict[int, str] = {}
        self.cond = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv311)
        self.c.on_message = self._on_message
        subs = threading.Event()
        self.c.on_subscribe = lambda *a: subs.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe([(f"evo/{MID}/#", 1), (f"spBv1.0/{GROUP}/#", 1)])
        if not subs.wait(5):
            raise RuntimeError("host could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        topic, data = msg.topic, msg.payload
        out: list[tuple[str, Any]] = []
        if topic.startswith("spBv1.0/"):
            p = pb.Payload.FromString(data)
            kind = topic.split("/")[2]
            for m in p.metrics:
                if kind in ("NBIRTH", "DBIRTH"):
                    self.aliases[m.alias] = m.name
                name = m.name or self.aliases.get(m.alias, "")
                f = m.WhichOneof("value")
                out.append((f"spb:{name}", None if f is None else getattr(m, f)))
        else:
            body = json.loads(data)
            if topic.endswith("/state"):
                out.append(("json:state", body.get("machine_state")))
            elif topic.endswith("/axes/1") and body.get("live"):
                out.append(("json:axis1", body["position"]["value"]))
        t = time.perf_counter_ns()
        with self.cond:
            for key, value in out:
                self.events.append((t, key, value, len(data)))
            self.cond.notify_all()

    def first(self, key: str, value: Any, since: int, timeout: float = 5.0) -> tuple[int, int]:
        """(t_decoded, bytes) of the first event `key == value` at index >= since."""
        def find() -> tuple[int, int] | None:
            for t, k, v, n in self.events[since:]:
                if k == key and v == value:
                    return t, n
            return None

        with self.cond:
            if not self.cond.wait_for(lambda: find() is not None, timeout):
                raise RuntimeError(f"no {key} = {value!r} within {timeout} s")
            return find()  # type: ignore[return-value]

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run(changes: int, base: Path) -> dict[str, Any]:
    prefix = unique_prefix("bspb")
    os.environ["EVO_SHM_PREFIX"] = prefix
    broker = start_broker(base / "broker", config_extra="max_queued_messages 0\n")
    cfg = sparkplug_config(base / "cfg", broker.port, run_dir=base / "run")
    text = (cfg / "config.toml").read_text().replace("telemetry_hz = 10.0", "telemetry_hz = 50.0")
    (cfg / "config.toml").write_text(text)
    ws = {"cu": LiveWriter("cu", CU_TO_MQT), "hal": LiveWriter("hal", HAL_TO_MQT), "re": LiveWriter("re", RE_TO_MQT)}
    fill(ws["cu"], ws["hal"], ws["re"])
    host = Host(broker.port)
    bridge = ModuleProcess("mqtt_bridge", prefix, ["--config", str(cfg)], log_dir=base).start()
    cu = ws["cu"]
    status = cu.local["status"]
    rng = random.Random(18)
    out: dict[str, list[int]] = {"json_state": [], "spb_state": [], "json_axis": [], "spb_axis": [],
                                 "json_state_bytes": [], "spb_state_bytes": [], "json_axis_bytes": [],
                                 "spb_axis_bytes": []}
    try:
        wait_for(lambda: "Axes/X/Position" in host.aliases.values() and "Machine/State" in host.aliases.values(),
                 20, what="the births")

        def change(apply: Callable[[], None], keys: tuple[tuple[str, Any, str], ...]) -> None:
            time.sleep(rng.uniform(0.0, 0.02))  # random phase against the 50 Hz scan
            since = host.mark()
            with cu.lock:
                apply()
                cu.w.commit()
                t0 = time.perf_counter_ns()
            for key, value, name in keys:
                t, n = host.first(key, value, since)
                out[name].append(t - t0)
                out[name + "_bytes"].append(n)

        states = (MachineState.IDLE, MachineState.ACTIVE)
        for i in range(changes):
            target = states[(i + 1) % 2]
            change(lambda target=target: status.__setitem__("machine_state", target),
                   (("json:state", target.name, "json_state"), ("spb:Machine/State", target.name, "spb_state")))
        for i in range(changes):
            pos = round(100.0 + (i + 1) * 0.25, 6)
            change(lambda pos=pos: status["axes"][0].__setitem__("position", pos),
                   (("json:axis1", pos, "json_axis"), ("spb:Axes/X/Position", pos, "spb_axis")))
    finally:
        bridge.stop()
        host.close()
        for w in ws.values():
            w.close()
        broker.close()
        remove_shm(prefix)
    lat = {k: summarize(v) for k, v in out.items() if not k.endswith("_bytes")}
    size = {k: sum(v) / len(v) for k, v in out.items() if k.endswith("_bytes")}
    return {"latency": lat, "bytes": size, "bridge_log_tail": bridge.output()[-600:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=200, help="changes per series (state flips, position steps)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench_spb_"))
    try:
        res = run(args.changes, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lat, size = res["latency"], res["bytes"]
    rows = []
    for series, label_json, label_spb in (("state", "JSON evo/<id>/state", "Sparkplug NDATA Machine/State"),
                                          ("axis", "JSON evo/<id>/axes/1", "Sparkplug DDATA Axes/X/Position")):
        j, s = lat[f"json_{series}"], lat[f"spb_{series}"]
        jb, sb = size[f"json_{series}_bytes"], size[f"spb_{series}_bytes"]
        rows.append({"what": f"({'1' if series == 'state' else '2'}) {label_json}", "p50_ms": j["p50_ns"] / 1e6,
                     "p99_ms": j["p99_ns"] / 1e6, "p50_ratio": 1.0, "bytes": jb, "bytes_ratio": 1.0})
        rows.append({"what": f"({'1' if series == 'state' else '2'}) {label_spb}", "p50_ms": s["p50_ns"] / 1e6,
                     "p99_ms": s["p99_ns"] / 1e6, "p50_ratio": ratio(s["p50_ns"], j["p50_ns"]), "bytes": sb,
                     "bytes_ratio": ratio(sb, jb)})
    print(METHOD, "\n")
    print_table(rows, [("what", "what", ""), ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
                       ("x JSON p50", "p50_ratio", ".2f"), ("bytes/update", "bytes", ".0f"),
                       ("x JSON bytes", "bytes_ratio", ".2f")])
    print("\n(ratios: Sparkplug against the JSON row of the same change.)")
    path = write_json("sparkplug", {"machine": machine_info(), "method": METHOD, "params": vars(args),
                                    "results": res, "rows": rows}, args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
