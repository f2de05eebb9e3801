"""`evo up` on config/examples/canopen: the HAL runs the canopen driver inside a private network namespace against
the emulated drives and I/O node (udp_multicast); CU, RE, gRPC and MQTT bridges talk to us on the host's loopback.

Issue 13 "must exist": axis enabled and moved over gRPC moves the emulated drive, feedback on MQTT; a DO reaches the
I/O node; an input on the node appears in GetIo; EMCY code in the axis error text; heartbeat lost -> axes fault, safe
stop, health says why; node back -> re-configured and OPERATIONAL without any process restart.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading

import grpc
import paho.mqtt.client as mqtt
import pytest

from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, types_pb2
from tests.canopen_support import EmulatorProcess, NetNs, canopen_config
from tests.fixtures.progs.evo_harness import EvoUp, instance_processes
from tests.grpc_support import Stubs
from tests.helpers import free_port, remove_shm, unique_prefix, wait_for
from tests.mosquitto_broker import start_broker

pytestmark = pytest.mark.timeout(300)


class Feed:
    """Latest JSON payload per MQTT topic under evo/+/axes/#."""

    def __init__(self, port: int) -> None:
        self.latest: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"canopen-test-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("evo/+/axes/#")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:  # noqa: ANN001
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            self.latest[msg.topic.split("/", 2)[2]] = data

    def get(self, key: str) -> dict | None:
        with self.lock:
            return self.latest.get(key)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Machine:
    def __init__(self, up: EvoUp, emu: EmulatorProcess, stubs: Stubs, feed: Feed) -> None:
        self.up, self.emu, self.stubs, self.feed = up, emu, stubs, feed

    def status(self) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5)

    def axis(self, axis_id: int) -> machine_pb2.AxisStatus:
        return self.status().axes[axis_id - 1]


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canopen-machine")
    ns = NetNs().create()
    prefix = unique_prefix("com")
    emu = up = feed = channel = None
    broker = start_broker(tmp / "broker")
    try:
        emu = EmulatorProcess(ns, "2:drive,3:drive,10:io:di=0x3", log=tmp / "emulator.log")
        # generous bus time-outs: this 2-core box runs several test machines at once (a late HAL is not a lost node)
        cfg = canopen_config(tmp / "cfg", canopen_edit={r"^pdo_timeout_ms = 100$": "pdo_timeout_ms = 500",
                                                        r"^heartbeat_timeout_ms = 350$": "heartbeat_timeout_ms = 1500"})
        for axis_file in ("axis_01_x.toml", "axis_02_y.toml"):  # a HAL late by 100 ms under load lags 5 mm
            f = cfg / axis_file
            f.write_text(f.read_text().replace("lag_error_limit = 5.0", "lag_error_limit = 50.0"))
        grpc_port = free_port()
        text = (cfg / "config.toml").read_text()
        for pattern, repl in ((r"^hal_ready_timeout_s = 5.0$", "hal_ready_timeout_s = 20.0"),
                              (r"^stale_reads = \d+$", "stale_reads = 200"),
                              (r"^hal_stale_cycles = \d+$", "hal_stale_cycles = 200"),
                              (r"^port = 1883$", f"port = {broker.port}"),
                              (r"^embedded_broker = true$", "embedded_broker = false"),
                              (r"^port = 50051$", f"port = {grpc_port}"),
                              (r"^\[zenoh\]\nenabled = true$", "[zenoh]\nenabled = false")):
            text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
            assert n == 1, pattern
        (cfg / "config.toml").write_text(text)
        modules = [
            {"name": "hal", "argv": [*ns.prefix(), "{python}", "-m", "hal", "--config", "{config}"],
             "ready_segments": ["hal_cu"], "liveness_segments": ["hal_cu"], "ready_timeout_s": 40.0,
             "watchdog_timeout_s": 5.0},
            {"name": "cu", "package": "control_unit", "liveness_segments": ["cu_hal"], "watchdog_timeout_s": 5.0, "ready_timeout_s": 40.0},
            {"name": "re", "package": "recipe_executor", "liveness_segments": ["re_cu"], "wait_ready": False,
             "watchdog_timeout_s": 5.0, "ready_timeout_s": 40.0},
            {"name": "grpc", "package": "grpc_bridge", "liveness_segments": ["rpc_cu"], "wait_ready": False,
             "watchdog_timeout_s": 5.0, "ready_timeout_s": 40.0},
            {"name": "mqtt", "package": "mqtt_bridge", "watchdog_timeout_s": 5.0, "ready_timeout_s": 40.0},
        ]
        up = EvoUp(tmp / "up", prefix, modules)
        up.config_dir = cfg
        up.start()
        up.wait_api(30)
        up.wait_all_running(180)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stubs = Stubs(channel)
        feed = Feed(broker.port)
        m = Machine(up, emu, stubs, feed)

        def idle() -> bool:
            try:
                st = m.status()
            except grpc.RpcError:
                return False
            return st.machine_state == types_pb2.MACHINE_STATE_IDLE and st.safety_state == types_pb2.SAFETY_STATE_SAFE

        wait_for(idle, timeout=60, interval=0.1, what=f"machine IDLE and SAFE ({up.output()[-3000:]})")
        yield m
    finally:
        if feed is not None:
            feed.close()
        if channel is not None:
            channel.close()
        if up is not None:
            up.stop()
            for pid in instance_processes(prefix):
                os.kill(pid, signal.SIGKILL)
        remove_shm(prefix)
        if emu is not None:
            emu.stop()
        broker.close()
        ns.delete()


def test_driver_reports_every_node_operational(machine: Machine) -> None:
    """The HAL reports ready only with every node OPERATIONAL: driver state and message over gRPC."""
    st = machine.status()
    assert st.hal_driver_state == types_pb2.DRIVER_STATE_READY, st.hal_driver_message
    assert st.hal_driver_message == "3 nodes OPERATIONAL on udp_multicast 239.74.163.2"
    for nid in (2, 3, 10):
        node = machine.emu.node(nid)
        assert node["nmt"] == "OPERATIONAL" and node["heartbeat_ms"] == 100, node


def test_axis_enabled_and_moved_over_grpc_moves_the_drive_with_feedback_on_mqtt(machine: Machine) -> None:
    """Axis enabled and moved over gRPC moves the emulated drive (CSP); position feedback on MQTT."""
    s = machine.stubs
    # the CU attaches rpc_cu within its optional_attach_interval_s: UNAVAILABLE until then
    wait_for(lambda: s.machine.EnableAxis(machine_pb2.AxisRequest(axis=1), timeout=5), timeout=15, interval=0.1,
             what="EnableAxis accepted")
    wait_for(lambda: machine.axis(1).power == types_pb2.POWER_STATE_STANDBY, timeout=20, interval=0.05,
             what="X powered (drive OPERATION ENABLED)")
    assert machine.emu.node(2)["state"] == "OPERATION_ENABLED"
    reply = s.machine.MoveTo(machine_pb2.MoveToRequest(axis=1, position=10.0, velocity=20.0), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK
    try:
        wait_for(lambda: abs(machine.emu.node(2)["position"] - 10000) <= 50, timeout=30, interval=0.05,
                 what="drive 2 at 10000 counts")
    except AssertionError as e:
        raise AssertionError(f"{e}; drive {machine.emu.node(2)}; axis {machine.axis(1)}") from None
    try:
        wait_for(lambda: (a := machine.feed.get("axes/1")) is not None and abs(a["position"]["value"] - 10.0) < 0.05,
                 timeout=15, interval=0.05, what="axes/1 on MQTT at 10.0")
    except AssertionError as e:
        raise AssertionError(f"{e}; mqtt {machine.feed.get('axes/1')}; drive {machine.emu.node(2)}; "
                             f"axis {machine.axis(1)}") from None
    ax = machine.axis(1)
    assert abs(ax.position - 10.0) < 0.05 and not ax.errors


def test_a_digital_output_reaches_the_io_node(machine: Machine) -> None:
    """A DO set over gRPC reaches the I/O node (0x6200 sub 1, bit 2)."""
    reply = machine.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=2, value=True), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK
    wait_for(lambda: machine.emu.node(10)["do"] & 0b100, timeout=10, interval=0.02, what="DO 2 on node 10")
    machine.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=2, value=False), timeout=5)
    wait_for(lambda: not machine.emu.node(10)["do"] & 0b100, timeout=10, interval=0.02, what="DO 2 off")


def test_an_input_on_the_node_appears_in_get_io(machine: Machine) -> None:
    """An input on the node (DI 3, AI 0) appears in GetIo with its io.toml scaling."""
    machine.emu.command(cmd="set_di", node=10, pin=3, value=True)
    machine.emu.command(cmd="set_ai", node=10, channel=0, raw=16384)  # half scale of 0..10 bar

    def seen() -> bool:
        io = machine.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)
        di3 = next(p for p in io.digital_inputs if p.pin == 3).value
        ai0 = next(p for p in io.analog_inputs if p.pin == 0).value
        return di3 and abs(ai0 - 5.0) < 0.01

    wait_for(seen, timeout=10, interval=0.05, what="DI 3 and AI 0 in GetIo")


def test_emcy_code_reaches_the_axis_error_text(machine: Machine) -> None:
    """EMCY frames -> axis error with the EMCY code and its CiA 301 text (gRPC and MQTT)."""
    machine.emu.command(cmd="emcy", node=3, code=0x4310, register=0x09)
    try:
        wait_for(lambda: machine.axis(2).drive_error == "0x4310 excess temperature (drive)", timeout=10,
                 interval=0.02, what="Y drive_error from EMCY")
    except AssertionError as e:
        raise AssertionError(f"{e}; drive {machine.emu.node(3)}; axis {machine.axis(2)}; "
                             f"{machine.status().hal_driver_message}") from None
    wait_for(lambda: ((machine.feed.get("axes/2") or {}).get("drive") or {}).get("error")
             == "0x4310 excess temperature (drive)", timeout=10, interval=0.05, what="axes/2 drive.error on MQTT")
    # Y is not enabled: the driver's fault reset clears the drive, and its code goes away
    wait_for(lambda: machine.axis(2).drive_error_code == 0 and machine.emu.node(3)["state"] == "SWITCH_ON_DISABLED",
             timeout=10, interval=0.05, what="Y fault reset by the driver")


def test_heartbeat_lost_faults_the_axis_and_the_node_back_is_reconfigured_without_restart(machine: Machine) -> None:
    """Heartbeat lost mid-run -> X faults, the CU stops it (STO, POWER_ERROR), health says why; the node back ->
    re-configured and OPERATIONAL by the driver alone (same HAL process)."""
    hal_pid = machine.up.status()["hal"]["pid"]
    boots = machine.emu.node(2)["boots"]
    machine.emu.command(cmd="silent", node=2, on=True)

    def lost() -> bool:
        st = machine.status()
        return (st.hal_driver_state == types_pb2.DRIVER_STATE_DEGRADED
                and "node 2 (X drive): heartbeat lost (none for 1500 ms)" in st.hal_driver_message
                and st.axes[0].drive_error.startswith("0x8130"))

    wait_for(lost, timeout=15, interval=0.05, what="heartbeat lost reported")
    ax = machine.axis(1)
    assert ax.power == types_pb2.POWER_STATE_POWER_ERROR and "DRIVE_FAULT" in [e.code for e in ax.errors], ax
    machine.emu.command(cmd="reboot", node=2)
    wait_for(lambda: machine.status().hal_driver_state == types_pb2.DRIVER_STATE_READY, timeout=20, interval=0.05,
             what="driver READY again")
    node = machine.emu.node(2)
    assert node["nmt"] == "OPERATIONAL" and node["boots"] == boots + 1 and node["heartbeat_ms"] == 100
    assert node["tpdos"] == ["0x182", "0x282"]
    assert machine.up.status()["hal"]["pid"] == hal_pid  # no process restart
    wait_for(lambda: machine.axis(1).drive_error_code == 0, timeout=10, interval=0.05, what="X drive error cleared")
