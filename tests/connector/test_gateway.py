"""Gateway deployments: in-process thread, iceoryx2 across real processes, its own process; signals."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from common.connector import (
    ChannelClosed,
    ChannelDescriptor,
    ChannelReader,
    Down,
    GatewayMode,
    Iceoryx2Routing,
    MqttRouting,
    Up,
)
from common.connector.errors import ConfigurationError
from common.connector.gateway import GatewaySpec
from common.connector.iceoryx2_transport import Iceoryx2Transport
from common.connector.mqtt import MqttConnector, MqttMessage, MqttOptions
from tests.connector.observer import Observer
from tests.helpers import REPO, wait_for


def _gateway_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"gateway:{name}"]


def test_in_process_gateway_is_a_thread_and_stops_cleanly(broker) -> None:
    c = MqttConnector(MqttOptions(port=broker.port), "inproc")
    w = c.writer(MqttRouting("ip/t"))
    assert not _gateway_threads("inproc")
    with c:
        assert len(_gateway_threads("inproc")) == 1
        wait_for(lambda: c.health == Up())
        w.send(1)
    assert not _gateway_threads("inproc")
    assert isinstance(c.health, Down) and c.health.reason == "stopped"
    with pytest.raises(ChannelClosed):
        w.send(2)


def test_envelopes_cross_processes_over_iceoryx2(iox_prefix) -> None:
    """A real subprocess publishes through a ChannelWriter; this process receives."""
    transport = Iceoryx2Transport(iox_prefix)
    desc = ChannelDescriptor("cross", Iceoryx2Routing("cross"), max_payload=256)
    service, capacity, total = "cross.in", 4, 300
    receiver = transport.open_receiver(service, capacity, desc.slot_size, f"{service}.ev")
    reader: ChannelReader = ChannelReader(desc, receiver)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.connector.proc_iox_writer", "--prefix", iox_prefix, "--service", service,
         "--count", str(total), "--capacity", str(capacity)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        got = [reader.recv(10) for _ in range(total)]
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.close()
        transport.close()
    report = json.loads(out.strip().splitlines()[-1])
    assert [m.value["i"] for m in got] == list(range(total))
    assert [m.sequence for m in got] == list(range(1, total + 1))  # strictly monotonic, no gaps
    assert got[7].correlation_id.rstrip(b"\0") == b"c7"
    assert report["sent"] == total and report["last_sequence"] == total
    assert report["backpressure"] > 0  # a 4-deep bridge against 300 sends pushed back


def test_mqtt_gateway_as_its_own_process(broker, iox_prefix) -> None:
    observer = Observer(broker.host, broker.port)
    observer.subscribe("gw/#", qos=1)
    opts = MqttOptions(port=broker.port, birth=MqttMessage("gw/online", b"true"), will=MqttMessage("gw/online", b"false"))
    c = MqttConnector(opts, "procgw", mode=GatewayMode.PROCESS, prefix=iox_prefix)
    w = c.writer(MqttRouting("gw/out", qos=1))
    r = c.reader(MqttRouting("gw/in/#", qos=1))
    spec = c.gateway_spec()
    assert GatewaySpec.from_json(spec.to_json()) == spec
    proc = c.spawn_gateway()
    try:
        c.start()
        with pytest.raises(ConfigurationError):
            c.writer(MqttRouting("gw/late"))  # the process only serves what it was given
        wait_for(lambda: c.health == Up(), 15, what="gateway health mirrored Up")
        assert c.gateway is None and proc.alive()
        w.send({"from": "app"})
        wait_for(lambda: observer.on("gw/out"), what="app -> gateway process -> broker")
        assert json.loads(observer.on("gw/out")[0].payload) == {"from": "app"}

        def inbound() -> bool:
            observer.publish("gw/in/a", b'{"from": "broker"}', qos=1)
            try:
                return r.recv(0.3).value == {"from": "broker"}
            except Exception:
                return False

        wait_for(inbound, what="broker -> gateway process -> app")
        assert observer.on("gw/online")[-1].payload == b"true"
        assert proc.stop() == 0  # SIGTERM: clean exit
        wait_for(lambda: isinstance(c.health, Down), what="mirrored Down after the gateway stopped")
        assert observer.on("gw/online")[-1].payload == b"true"  # clean DISCONNECT: no will
    finally:
        proc.stop()
        c.stop()
        observer.close()


def test_killed_gateway_process_triggers_the_last_will(broker, iox_prefix) -> None:
    observer = Observer(broker.host, broker.port)
    observer.subscribe("lw/online", qos=1)
    opts = MqttOptions(port=broker.port, birth=MqttMessage("lw/online", b"true"), will=MqttMessage("lw/online", b"false"))
    c = MqttConnector(opts, "lwgw", mode=GatewayMode.PROCESS, prefix=iox_prefix)
    c.writer(MqttRouting("lw/x"))
    proc = c.spawn_gateway()
    try:
        wait_for(lambda: [m.payload for m in observer.on("lw/online")] == [b"true"], 15, what="birth message")
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(5)
        wait_for(lambda: [m.payload for m in observer.on("lw/online")] == [b"true", b"false"], what="last will")
    finally:
        proc.stop()
        c.stop()
        observer.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_app_exits_cleanly_on_signal(broker, sig) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.connector.proc_signal_app", str(broker.port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "READY"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"signal={int(sig)}" in out and "reason='stopped'" in out and "gateway_alive=False" in out
