"""Issue 14: the MQTT bridge process whose Zenoh listen port is taken keeps serving MQTT and says
why on health/zenoh (retained, Down with the reason); once the port is free it comes Up by itself.
Real `python -m mqtt_bridge`, a real mosquitto, a real socket holding the port."""
from __future__ import annotations

import json
import re
import shutil
import socket

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import REPO, ModuleProcess, free_port, wait_for
from tests.mosquitto_broker import start_broker

MID = "zp-cell"


def test_taken_listen_port_is_down_with_the_reason_and_mqtt_keeps_going(tmp_path, shm_prefix) -> None:
    broker = start_broker(tmp_path / "broker")
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO / "config", cfg)
    text = (cfg / "config.toml").read_text()
    text = re.sub(r"(?m)^port = 1883$", f"port = {broker.port}", text)
    text = re.sub(r'(?m)^machine_id = ""$', f'machine_id = "{MID}"', text)
    text = re.sub(r'(?m)^run_dir = ""$', f'run_dir = "{tmp_path / "run"}"', text)
    text = text.replace('"tcp/127.0.0.1:7447"', f'"tcp/127.0.0.1:{port}"')
    (cfg / "config.toml").write_text(text)
    (tmp_path / "run").mkdir()
    got: dict[str, list[dict]] = {}
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"zp-{shm_prefix}")
    c.on_message = lambda _c, _u, m: got.setdefault(m.topic, []).append(json.loads(m.payload))
    c.connect("127.0.0.1", broker.port)
    c.subscribe(f"evo/{MID}/#", 1)
    c.loop_start()
    bridge = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
    try:
        def last(topic: str) -> dict:
            return (got.get(f"evo/{MID}/{topic}") or [{}])[-1]

        wait_for(lambda: last("health/zenoh").get("state") == "Down", 30, 0.02, "health/zenoh Down on MQTT")
        h = last("health/zenoh")
        assert "Address already in use" in h["reason"] and str(port) in h["reason"]
        assert h["link"]["open_failures"] >= 1
        wait_for(lambda: last("state"), 10, 0.02, "state still published on MQTT")
        wait_for(lambda: last("health/mqtt").get("state") == "Up", 10, 0.02, "health/mqtt Up beside a Down zenoh")
        assert bridge.alive()
        holder.close()
        wait_for(lambda: last("health/zenoh").get("state") == "Up", 60, 0.05, "health/zenoh Up once the port is free")
        assert bridge.alive()
    finally:
        holder.close()
        c.loop_stop()
        c.disconnect()
        assert bridge.stop() == 0, bridge.output()
        broker.close()
