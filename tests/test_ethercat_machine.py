"""Issue 12, end to end: `evo up` with config/examples/ethercat, the HAL's EtherCAT driver exchanging real frames
with the emulated SubDevices (2 CiA 402 drives, 1 DI/DO terminal) on a veth pair in a private network namespace;
gRPC and MQTT clients on the host's loopback. One machine for the whole module; tests run in file order.
"""
from __future__ import annotations

import json
import os
import signal

import grpc
import pytest

from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, types_pb2
from tests.connector.observer import Observer
from tests.ethercat_support import Emulator, EvoUp, VethNs, ethercat_config, modules_table
from tests.grpc_support import Stubs, wait_serving
from tests.helpers import free_port, wait_for
from tests.mosquitto_broker import start_broker

pytestmark = pytest.mark.timeout(300)
MID = "ecat"
SCALE = 10000.0  # increments_per_unit of both drives in the example


class Rig:
    def __init__(self, ns: VethNs, emu: Emulator, up: EvoUp, channel: grpc.Channel, observer: Observer) -> None:
        self.ns, self.emu, self.up, self.channel, self.obs = ns, emu, up, channel, observer
        self.stubs = Stubs(channel)

    def status(self) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=5)

    def io(self) -> io_pb2.IoStatus:
        return self.stubs.io.GetIo(io_pb2.GetIoRequest(), timeout=5)

    def mqtt_last(self, topic: str) -> dict | None:
        msgs = self.obs.on(f"evo/{MID}/{topic}")
        return json.loads(msgs[-1].payload) if msgs else None

    def wait_power(self, axis: int, states: tuple[int, ...], timeout: float = 20.0) -> machine_pb2.AxisStatus:
        return wait_for(lambda: (a := self.status().axes[axis - 1]).power in states and a, timeout=timeout,
                        interval=0.05, what=f"axis {axis} power in {states}")

    def reset_and_enable(self, axis: int) -> machine_pb2.AxisStatus:
        def reset_ok() -> bool:
            self.stubs.machine.ResetFaults(machine_pb2.AxisRequest(axis=0), timeout=5)
            st = self.status()
            return st.safety_state == types_pb2.SAFETY_STATE_SAFE and st.axes[axis - 1].error_flags == 0
        wait_for(reset_ok, timeout=20, interval=0.2, what="machine and axis reset")
        self.stubs.machine.EnableAxis(machine_pb2.AxisRequest(axis=axis), timeout=5)
        return self.wait_power(axis, (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION))


@pytest.fixture(scope="module")
def rig(shm_prefix: str, tmp_path_factory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("ecat-machine")
    ns = VethNs().create()
    emu = up = broker = observer = channel = None
    try:
        emu = Emulator(ns, tmp)
        broker = start_broker(tmp / "broker")
        port = free_port()
        cfg = ethercat_config(tmp / "config", grpc_port=port, mqtt_port=broker.port, machine_id=MID)
        observer = Observer(broker.host, broker.port)
        observer.subscribe(f"evo/{MID}/#", qos=1)
        up = EvoUp(cfg, modules_table(tmp / "modules.toml", ns), shm_prefix, tmp / "run", tmp / "evo-up.log")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        r = Rig(ns, emu, up, channel, observer)

        def serving() -> bool:
            assert up.proc.poll() is None, f"evo up exited {up.proc.returncode}:\n{up.output()}"
            wait_serving(channel, "evo.v1.Machine", timeout=1)
            return True
        wait_for(serving, timeout=90, interval=0.2, what=f"the machine serving gRPC\n{up.output()[-3000:]}")
        yield r
    finally:
        if channel is not None:
            channel.close()
        code = up.stop() if up is not None else 0
        if observer is not None:
            observer.close()
        if broker is not None:
            broker.close()
        if emu is not None:
            emu.stop()
        ns.delete()
        if up is not None:
            assert code == 0, up.output()[-4000:]


def test_hal_reports_ready_only_with_every_subdevice_in_op(rig: Rig) -> None:
    """Must exist: `evo up` with an EtherCAT config — HAL in OP (driver health READY, all SubDevices in OP)."""
    st = wait_for(lambda: (s := rig.status()).hal_driver_state == types_pb2.DRIVER_STATE_READY and s, timeout=30,
                  interval=0.1, what="HAL driver READY")
    assert "3 SubDevices in OP on ecm" in st.hal_driver_message
    devs = rig.emu.ctl.status()
    assert [d["al_state"] for d in devs] == ["OP", "OP", "OP"]
    assert [d["station"] for d in devs] == [0x1001, 0x1002, 0x1003]
    # process data keeps flowing (frames counted by the emulator)
    n0 = rig.emu.call("status")["frames"]
    wait_for(lambda: rig.emu.call("status")["frames"] > n0 + 100, timeout=10, what="cyclic frames")
    wait_for(lambda: (rig.mqtt_last("state") or {}).get("driver", {}).get("state") == "READY", timeout=15,
             what="MQTT state.driver READY")


def test_axis_enabled_and_moved_in_csp_moves_the_emulated_drive(rig: Rig) -> None:
    """Must exist: an axis enabled and moved over gRPC in CSP moves the emulated drive; feedback on MQTT."""
    wait_for(lambda: rig.status().machine_state == types_pb2.MACHINE_STATE_IDLE, timeout=30, interval=0.1,
             what="machine IDLE")
    a = rig.reset_and_enable(1)
    drive = rig.emu.device(1)
    assert drive["statusword"] & 0x6F == 0x27, drive  # CiA 402 Operation enabled, walked by the driver
    assert drive["mode"] == 8  # CSP, written at start-up by SDO and in every RxPDO
    target = a.position + 5.0
    reply = rig.stubs.machine.MoveTo(machine_pb2.MoveToRequest(axis=1, position=target, velocity=20.0), timeout=5)
    assert reply.result == types_pb2.RESULT_CODE_OK, reply
    window = 0.05
    wait_for(lambda: abs(rig.emu.device(1)["actual_position"] / SCALE - target) < window, timeout=30, interval=0.05,
             what="the emulated drive at the target (increments)")
    wait_for(lambda: (a := rig.status().axes[0]).in_position and abs(a.position - target) < window, timeout=20,
             interval=0.05, what="gRPC feedback at the target")

    def mqtt_at_target() -> bool:
        m = rig.mqtt_last("axes/1")
        return m is not None and abs(float(m["position"]["value"]) - target) < window
    wait_for(mqtt_at_target, timeout=15, interval=0.05, what="MQTT axes/1 position at the target")
    assert abs(rig.emu.device(1)["target_position"] / SCALE - target) < window  # the CU's set-point in 0x607A


def test_a_do_set_over_grpc_appears_on_the_terminal_outputs(rig: Rig) -> None:
    """Must exist: a DO set over gRPC appears on the terminal's output bits."""
    for value in (True, False, True):
        reply = rig.stubs.io.SetDigitalOutput(io_pb2.SetDigitalOutputRequest(pin=3, value=value), timeout=5)
        assert reply.result == types_pb2.RESULT_CODE_OK, reply
        wait_for(lambda: bool(rig.emu.device(3)["do"] >> 3 & 1) is value, timeout=10, interval=0.02,
                 what=f"terminal output 4 = {value}")
    assert rig.emu.device(3)["do"] == 1 << 3


def test_a_di_raised_on_the_terminal_appears_in_get_io(rig: Rig) -> None:
    """Must exist: a DI raised on the terminal appears in GetIo."""
    def di(pin: int) -> bool:
        return next(p for p in rig.io().digital_inputs if p.pin == pin).value

    assert not di(2)
    rig.emu.call("set_di", position=3, value=0b0000_0101)  # channel 1 (E-stop circuit closed) + channel 3
    wait_for(lambda: di(2), timeout=10, interval=0.02, what="DI 2 true in GetIo")
    rig.emu.call("set_di", position=3, value=0b0000_0001)
    wait_for(lambda: not di(2), timeout=10, interval=0.02, what="DI 2 false in GetIo")


def test_a_drive_fault_carries_its_error_code_to_grpc_and_mqtt(rig: Rig) -> None:
    """Must exist (driver): a drive fault carries the drive's error code (0x603F) into the axis error text."""
    rig.wait_power(1, (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION))
    rig.emu.call("fault", position=1, code=0x7305)
    a = wait_for(lambda: (a := rig.status().axes[0]).drive_error_code == 0x7305 and a, timeout=10, interval=0.05,
                 what="drive_error_code 0x7305 in GetStatus")
    assert "incremental sensor 1 fault" in a.drive_error

    def on_mqtt() -> bool:
        m = rig.mqtt_last("axes/1")
        return m is not None and m.get("drive", {}).get("error_code") == 0x7305
    wait_for(on_mqtt, timeout=15, interval=0.05, what="MQTT axes/1 drive.error_code")
    # the CU drops enable on the fault; the driver then resets the drive (controlword bit 7)
    wait_for(lambda: rig.emu.device(1)["error_code"] == 0, timeout=15, interval=0.05, what="drive fault reset")
    rig.reset_and_enable(1)
    assert rig.status().axes[0].drive_error_code == 0


def test_a_subdevice_leaving_op_is_brought_back_by_the_driver(rig: Rig) -> None:
    """Must exist (driver): a SubDevice leaving OP is a drive fault + DEGRADED health with the AL status code;
    the driver acknowledges and requests OP again by itself."""
    rig.emu.call("leave_op", position=2, code=0x001B)

    # DEGRADED lasts only until the first retry (recovery_backoff_ms = 100) plus the ack and OP request: a
    # loaded host may answer GetStatus too late to see it, so the MQTT state history counts as well
    def degraded() -> str | None:
        s = rig.status()
        if s.hal_driver_state == types_pb2.DRIVER_STATE_DEGRADED:
            return s.hal_driver_message
        for msg in rig.obs.on(f"evo/{MID}/state"):
            driver = json.loads(msg.payload).get("driver", {})
            if driver.get("state") == "DEGRADED":
                return driver.get("message", "")
        return None
    text = wait_for(degraded, timeout=15, interval=0.02, what="driver DEGRADED (gRPC or MQTT)")
    assert "position 2 (Y drive)" in text and "0x001B" in text
    assert "Sync manager watchdog" in text
    wait_for(lambda: rig.emu.device(2)["al_state"] == "OP", timeout=15, interval=0.05, what="position 2 back in OP")
    st = wait_for(lambda: (s := rig.status()).hal_driver_state == types_pb2.DRIVER_STATE_READY and s, timeout=15,
                  interval=0.05, what="driver READY again")
    assert "position 2 (Y drive) back in OP" in st.hal_driver_message


def test_emulator_silent_faults_the_axes_and_the_bus_comes_back_by_itself(rig: Rig) -> None:
    """Must exist: the emulator stops answering mid-run — the axes it serves fault, the machine goes to its safe
    stop, driver health says why; it comes back — the driver returns to OP by itself and the axes can be reset
    and enabled again, with no process restarted."""
    pids = {m: rig.up.module_pid(m) for m in ("hal", "cu", "grpc", "mqtt")}
    rig.wait_power(1, (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION))
    rig.emu.call("silent", on=True)

    def down() -> machine_pb2.MachineStatus | None:
        s = rig.status()
        return s if s.hal_driver_state == types_pb2.DRIVER_STATE_FAULT else None
    st = wait_for(down, timeout=15, interval=0.05, what="driver FAULT")
    assert "no answer" in st.hal_driver_message and "position 1 (X drive)" in st.hal_driver_message
    a = wait_for(lambda: (a := rig.status().axes[0]).drive_error_code == 0x7500 and a, timeout=10, interval=0.05,
                 what="axis 1 drive fault (communication error)")
    assert a.power not in (types_pb2.POWER_STATE_MOTION, types_pb2.POWER_STATE_STANDBY)
    wait_for(lambda: (s := rig.status()).safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP
             or s.machine_state == types_pb2.MACHINE_STATE_SYSTEM_ERROR, timeout=10, interval=0.05,
             what="the machine's safe stop (NC E-stop on the lost terminal reads open)")
    m = wait_for(lambda: (x := rig.mqtt_last("state")) and x.get("driver", {}).get("state") == "FAULT" and x,
                 timeout=15, what="MQTT state.driver FAULT")
    assert "no answer" in m["driver"]["message"]
    # power comes back: the SubDevices restart in INIT with no station address -> recover + reconfig + OP
    rig.emu.call("restore", power_cycle=True)
    wait_for(lambda: [d["al_state"] for d in rig.emu.ctl.status()] == ["OP", "OP", "OP"], timeout=30, interval=0.1,
             what="every SubDevice back in OP")
    st = wait_for(lambda: (s := rig.status()).hal_driver_state == types_pb2.DRIVER_STATE_READY and s, timeout=20,
                  interval=0.05, what="driver READY again")
    assert "back in OP" in st.hal_driver_message
    a = rig.reset_and_enable(1)
    assert a.drive_error_code == 0
    assert {m: rig.up.module_pid(m) for m in pids} == pids  # nothing was restarted


def test_hal_sigkill_in_op_is_restarted_and_brings_the_bus_to_op_again(rig: Rig) -> None:
    """Must exist: a HAL SIGKILL during OP — the watchdog restarts it and it brings the bus to OP again."""
    old = rig.up.module_pid("hal")
    assert old > 0
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (p := rig.up.module_pid("hal")) not in (0, old) and rig.up.module_state("hal") == "running"
                   and p, timeout=60, interval=0.1, what="the HAL restarted and running")
    assert new != old
    st = wait_for(lambda: (s := rig.status()).hal_driver_state == types_pb2.DRIVER_STATE_READY and s.hal_ok and s,
                  timeout=30, interval=0.1, what="driver READY after the restart")
    assert "3 SubDevices in OP" in st.hal_driver_message
    assert [d["al_state"] for d in rig.emu.ctl.status()] == ["OP", "OP", "OP"]
    n0 = rig.emu.call("status")["frames"]
    wait_for(lambda: rig.emu.call("status")["frames"] > n0 + 100, timeout=10, what="cyclic frames again")
    rig.reset_and_enable(2)
    assert rig.emu.device(2)["statusword"] & 0x6F == 0x27


def test_shutdown_disables_the_drives_and_leaves_the_segment_in_init(rig: Rig) -> None:
    """Must exist (driver): shutdown — drives disabled (controlword), segment to INIT, socket closed."""
    rig.wait_power(2, (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION))
    assert rig.emu.device(2)["statusword"] & 0x6F == 0x27
    assert rig.up.stop() == 0, rig.up.output()[-3000:]
    devs = rig.emu.ctl.status()
    assert [d["al_state"] for d in devs] == ["INIT", "INIT", "INIT"]
    # the last command took the power stage off: CiA 402 "shutdown", or "disable voltage" for a drive
    # that was already in SWITCH ON DISABLED (hal/drivers/cia402.py)
    assert all(d["controlword"] in (0x0006, 0x0000) for d in devs[:2]), [d["controlword"] for d in devs[:2]]
    assert all(d["statusword"] & 0x6F != 0x27 for d in devs[:2])  # not operation enabled any more
    n = rig.emu.call("status")["frames"]
    assert rig.emu.call("status")["frames"] == n  # nothing is sent any more
