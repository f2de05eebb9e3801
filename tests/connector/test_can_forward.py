"""The worked example of CAN frames through a bridge: the MQTT bridge's can_forward output with a real mosquitto and
python-can's virtual bus (a bare python-can peer on the other end).

Issue 13 Part 3: "the MQTT bridge can publish chosen raw CAN frames and forward chosen topics to CAN IDs".
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid

import can
import paho.mqtt.client as mqtt
import pytest

from common.config import ConfigError, load_config
from mqtt_bridge.bridge import Bridge
from mqtt_bridge.can_forward import CanForwardOutput
from tests.canopen_support import EXAMPLE
from tests.helpers import REPO, remove_shm, unique_prefix, wait_for

pytestmark = pytest.mark.timeout(90)


def forward_config(tmp, port: int, channel: str):  # noqa: ANN001, ANN201
    d = tmp / "cfg"
    shutil.copytree(REPO / "config", d)
    text = (d / "config.toml").read_text()
    text = re.sub(r"(?m)^port = 1883$", f"port = {port}", text, count=1)
    text = re.sub(r"(?m)^\[zenoh\]\nenabled = true$", "[zenoh]\nenabled = false", text, count=1)
    (d / "config.toml").write_text(text)
    example = (EXAMPLE / "can_forward.toml").read_text()
    example = example.replace("enabled = false", "enabled = true").replace('interface = "socketcan"', 'interface = "virtual"')
    (d / "can_forward.toml").write_text(example.replace('channel = "can0"', f'channel = "{channel}"'))
    return d


def test_frames_published_on_mqtt_and_topics_sent_as_frames(tmp_path, broker, monkeypatch) -> None:
    """Frames matching a [[publish]] rule appear on MQTT with id and hex bytes; a message on a [[subscribe]] topic
    leaves as a frame of its CAN id; a malformed message is refused, never sent."""
    prefix = unique_prefix("cf")
    monkeypatch.setenv("EVO_SHM_PREFIX", prefix)
    monkeypatch.setenv("EVO_RUN_DIR", str(tmp_path / "run"))
    channel = f"cf-{uuid.uuid4().hex[:8]}"
    cfg = load_config(forward_config(tmp_path, broker.port, channel))
    peer = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    bridge = Bridge(cfg)
    out = next(o for o in bridge.outputs if isinstance(o, CanForwardOutput))
    got: dict[str, dict] = {}
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cf-{os.getpid()}")

    def on_message(_c, _u, m) -> None:  # noqa: ANN001
        with lock:
            got[m.topic] = json.loads(m.payload)

    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_connect = lambda c, *_: c.subscribe("evo/+/can/#")
    sub.on_subscribe = lambda *_: subscribed.set()
    stop = threading.Event()

    def scans() -> None:
        while not stop.is_set():
            out.scan(time.time(), None, None, None, {}, False)
            time.sleep(0.005)

    t = threading.Thread(target=scans, daemon=True)
    try:
        bridge.start()
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        wait_for(lambda: bridge.connector.health.__class__.__name__ == "Up" and out.can.health.__class__.__name__ == "Up",
                 what="MQTT and CAN connectors Up")
        t.start()
        root = bridge.topics.root
        wait_for(subscribed.is_set, what="the subscription acknowledged")
        peer.send(can.Message(arbitration_id=0x18A, is_extended_id=False, data=b"\x03\x00"))
        peer.send(can.Message(arbitration_id=0x6A5, is_extended_id=False, data=b"\xde\xad"))
        peer.send(can.Message(arbitration_id=0x6B0, is_extended_id=False, data=b"\x00"))  # outside the mask
        wait_for(lambda: f"{root}/can/io/0x18A" in got and f"{root}/can/line/0x6A5" in got, what="frames on MQTT")
        assert {k: v for k, v in got[f"{root}/can/io/0x18A"].items() if k != "ts"} == \
            {"id": "0x18A", "extended": False, "fd": False, "data": "0300"}
        assert got[f"{root}/can/line/0x6A5"]["data"] == "dead"
        assert not any("0x6B0" in k for k in got)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cf-pub-{os.getpid()}")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish(f"{root}/can/cmd/speed", json.dumps({"data": "0102ff"}), qos=1).wait_for_publish(5)
        pub.publish(f"{root}/can/cmd/speed", json.dumps("zz not hex"), qos=1).wait_for_publish(5)
        pub.publish(f"{root}/can/cmd/speed", json.dumps("aabb"), qos=1).wait_for_publish(5)
        frames = []
        deadline = time.monotonic() + 10
        while len(frames) < 2 and time.monotonic() < deadline:
            m = peer.recv(0.1)
            if m is not None:
                frames.append((m.arbitration_id, bytes(m.data)))
        pub.loop_stop()
        pub.disconnect()
        assert frames == [(0x6E0, b"\x01\x02\xff"), (0x6E0, b"\xaa\xbb")]
        assert out.refused == 1 and out.forwarded == 2
    finally:
        stop.set()
        if t.is_alive():
            t.join(5)
        sub.loop_stop()
        sub.disconnect()
        bridge.stop()
        peer.shutdown()
        remove_shm(prefix)


def test_forwarding_is_off_by_default_and_a_bad_file_is_refused(tmp_path) -> None:
    """No can_forward.toml (or enabled = false): no output; a rule naming an unknown interface: ConfigError."""
    d = tmp_path / "cfg"
    shutil.copytree(REPO / "config", d)
    assert (d / "can_forward.toml").exists() is False
    (d / "can_forward.toml").write_text('enabled = true\n[[publish]]\niface = "can9"\ncan_id = 0x10\ntopic = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert any(m.message.startswith("can_forward.toml [publish[0]] iface: 'can9' is not one of [interfaces]")
               for m in e.value.errors), str(e.value)
