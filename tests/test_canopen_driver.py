"""The CANopen HAL driver against our emulated CiA 402 drives and CiA 401 I/O node on python-can's virtual bus.

Issue 13: start-up (boot-up, identity, PDO mapping by SDO, OPERATIONAL), CiA 402 state machine and modes, I/O,
missing node / wrong identity, heartbeat lost and the node back, EMCY codes. Cross-process runs: test_canopen_machine.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from common.config import load_config
from common.states import DriverState
from hal.drivers.base import DriverError, DriverIO
from hal.drivers.canopen import CanopenDriver
from hal.drivers.cia402 import (
    CW_DISABLE_VOLTAGE,
    CW_ENABLE_OPERATION,
    CW_FAULT_RESET,
    CW_QUICK_STOP,
    CW_SHUTDOWN,
    CW_SWITCH_ON,
    DriveState,
    controlword,
    decode,
)
from hal.drivers.canopen_emulator.emulator import Emulator, parse_nodes
from tests.canopen_support import canopen_config

pytestmark = pytest.mark.timeout(120)
NODES = "2:drive,3:drive,10:io:di=0x3"
_chan = itertools.count()


class Rig:
    """An emulator and a driver on one virtual channel; `pump` runs HAL cycles until a condition holds."""

    def __init__(self, tmp: Path, nodes: str, edit: dict[str, str] | None) -> None:
        self.channel = f"evo-test-{next(_chan)}"
        self.cfg = load_config(canopen_config(tmp / "cfg", interface="virtual", channel=self.channel,
                                              canopen_edit=edit))
        self.emu = Emulator.open("virtual", self.channel, parse_nodes(nodes))
        self.emu.power_on()
        self.io = DriverIO()
        self.driver: CanopenDriver | None = None

    def open(self) -> CanopenDriver:
        self.driver = CanopenDriver(self.cfg, self.cfg.system.hal.driver_args)
        self.driver.open(self.io)
        return self.driver

    def pump(self, pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
        assert self.driver is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.driver.cycle(self.io, time.perf_counter_ns(), 0.001)
            if pred():
                return
            time.sleep(0.001)
        raise AssertionError(f"timed out waiting for {what}; health {self.driver.health()}")

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
        self.emu.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(nodes: str = NODES, edit: dict[str, str] | None = None) -> Rig:
        r = Rig(tmp_path / f"r{len(made)}", nodes, edit)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_start_up_maps_pdos_by_sdo_and_every_node_is_operational(rig) -> None:
    """Start-up: NMT reset communication, boot-up, identity, PDO mapping by SDO, heartbeat time, OPERATIONAL."""
    r = rig()
    d = r.open()
    assert d.health().state is DriverState.READY and "3 nodes OPERATIONAL" in d.health().message
    drive = r.emu.nodes[2]
    assert drive.nmt_state == 5 and drive.heartbeat_ms == 100
    assert drive.boots == 2  # power-on, then the driver's reset communication
    # the mapping the driver wrote by SDO, read back from the node's own dictionary
    assert [drive.get(0x1A00, s) for s in range(3)] == [2, 0x60410010, 0x60640020]
    assert [drive.get(0x1A01, s) for s in range(4)] == [3, 0x606C0020, 0x60770010, 0x603F0010]
    assert [drive.get(0x1600, s) for s in range(3)] == [2, 0x60400010, 0x607A0020]
    assert drive.get(0x1800, 2) == 1 and drive.get(0x1A02, 0) == 0 and drive.get(0x1802, 1) & 0x80000000
    assert drive.get(0x6060) == 8 and drive.get(0x6081) == 400000  # mode + start-up SDO writes
    io_node = r.emu.nodes[10]
    assert [io_node.get(0x1A00, s) for s in range(2)] == [1, 0x60000108]
    assert [io_node.get(0x1A01, s) for s in range(3)] == [2, 0x64010110, 0x64010210]
    assert [io_node.get(0x1601, s) for s in range(2)] == [1, 0x64110110]


def test_enable_walks_the_cia402_state_machine_and_csp_follows_the_target(rig) -> None:
    """CiA 402 per axis: controlword/statusword state machine; CSP; actual values scaled to axis units."""
    r = rig()
    r.open()
    io = r.io
    assert not io.drive_ready[0] and io.axis_state[0] == DriverState.READY and io.referenced[0]  # Absolute homing
    io.enable[0] = True
    r.pump(lambda: io.drive_ready[0], what="drive 2 OPERATION ENABLED")
    assert r.emu.nodes[2].status()["state"] == "OPERATION_ENABLED" and io.axis_state[0] == DriverState.ENABLED
    io.target_position[0] = 12.5
    r.pump(lambda: abs(io.position[0] - 12.5) < 1e-3, what="X at 12.5")
    assert r.emu.nodes[2].status()["position"] == 12500  # 1000 counts per mm
    assert not io.drive_fault[0] and not io.drive_ready[1]  # Y untouched
    io.enable[0] = False
    r.pump(lambda: not io.drive_ready[0] and r.emu.nodes[2].status()["state"] == "READY_TO_SWITCH_ON",
           what="X shut down")


def test_profile_velocity_and_cyclic_torque_per_axis_from_config(rig) -> None:
    """Modes of operation per axis from canopen.toml: PV (0x60FF) on X, CST (0x6071) on Y."""
    r = rig(edit={r'^mode = "csp"$': 'mode = "pv"', r'^(axis = 2\nmode = )"csp"$': r'\1"cst"'})
    r.open()
    assert r.emu.nodes[2].get(0x6060) == 3 and r.emu.nodes[3].get(0x6060) == 10
    assert r.emu.nodes[3].get(0x1600, 2) == 0x60710010
    io = r.io
    io.enable[0] = io.enable[1] = True
    r.pump(lambda: io.drive_ready[0] and io.drive_ready[1], what="both enabled")
    io.target_velocity[0] = 5.0  # mm/s
    io.torque[1] = 2.5  # % rated -> 25 per mille
    r.pump(lambda: abs(io.velocity[0] - 5.0) < 0.01 and io.position[0] > 0.02, what="X moving at 5 mm/s")
    r.pump(lambda: r.emu.nodes[3].status()["target_torque"] == 25 and io.torque_estimate[1] == 2.5,
           what="Y torque 2.5 %")


def test_quick_stop_on_disable_when_configured(rig) -> None:
    """CiA 402 quick stop: with stop = "quick_stop" enable low sends controlword 0x02; the drive ramps at 0x6085
    in QUICK STOP ACTIVE, then switches itself off (0x605A = 2)."""
    r = rig(edit={r'^mode = "csp"$': 'mode = "pv"\nstop = "quick_stop"',
                  r'^    \{ index = 0x605A, subindex = 0, value = 2 \},.*$':
                  '    { index = 0x605A, subindex = 0, value = 2 },\n    { index = 0x6085, subindex = 0, value = 100000 },'})
    r.open()
    io = r.io
    io.enable[0] = True
    r.pump(lambda: io.drive_ready[0], what="X enabled")
    io.target_velocity[0] = 50.0  # mm/s = 50 000 counts/s; the quick stop takes 0.5 s at 100 000 counts/s^2
    r.pump(lambda: abs(io.velocity[0] - 50.0) < 0.5, what="X at 50 mm/s")
    io.enable[0] = False
    r.pump(lambda: r.emu.nodes[2].status()["state"] == "QUICK_STOP_ACTIVE" and not io.drive_ready[0],
           what="quick stop active (seen by the driver too)")
    assert r.emu.nodes[2].status()["controlword"] == CW_QUICK_STOP
    r.pump(lambda: r.emu.nodes[2].status()["state"] == "SWITCH_ON_DISABLED" and io.velocity[0] == 0.0,
           what="stopped and switched off")


def test_io_node_outputs_reach_the_node_and_its_inputs_come_back(rig) -> None:
    """CiA 401: DO bits and AO to the node's RPDOs; DI and AI from its TPDOs onto the io.toml pins."""
    r = rig()
    r.open()
    io = r.io
    assert list(io.di[:4]) == [True, True, False, False]  # di=0x3 at power-on
    io.do_bank[0] = 0b101
    io.ao[0] = 0.5
    r.pump(lambda: r.emu.nodes[10].status()["do"] == 0b101 and r.emu.nodes[10].status()["ao"][0] == 16384,
           what="DO 0 and 2 and AO 0 on the node")
    r.emu.handle({"cmd": "set_di", "node": 10, "pin": 3, "value": True})
    r.emu.handle({"cmd": "set_ai", "node": 10, "channel": 1, "raw": 8192})
    r.pump(lambda: io.di[3] and abs(io.ai[1] - 8192 / 32767) < 1e-9, what="DI 3 and AI 1 from the node")


def test_a_missing_node_stops_the_start_naming_it(rig) -> None:
    """Missing node at start: DriverError naming the node id (nothing starts)."""
    r = rig(nodes="2:drive,10:io:di=0x3", edit={r"^boot_timeout_ms = 3000$": "boot_timeout_ms = 300"})
    with pytest.raises(DriverError) as e:
        r.open()
    msg = str(e.value)
    assert "node 3" in msg and "Y drive" in msg and "no boot-up within 300 ms" in msg and "node 2" not in msg
    r.driver = None


def test_a_wrong_identity_stops_the_start_naming_node_and_values(rig) -> None:
    """Wrong identity at start: DriverError naming the node and the values read and expected."""
    r = rig(nodes="2:drive,3:drive:product_code=0x999:revision=0x20000,10:io:di=0x3")
    with pytest.raises(DriverError) as e:
        r.open()
    msg = str(e.value)
    assert "node 3" in msg and "wrong device" in msg
    assert "product_code 0x00000999 (expected 0x00000402)" in msg and "revision 0x00020000 (expected 0x00010000)" in msg
    r.driver = None


def test_heartbeat_lost_faults_the_axis_and_the_node_back_is_reconfigured(rig) -> None:
    """Heartbeat lost -> drive fault 0x8130 and health says why; boot-up -> re-configured, OPERATIONAL again."""
    r = rig()
    d = r.open()
    io = r.io
    io.enable[0] = True
    r.pump(lambda: io.drive_ready[0], what="X enabled")
    r.emu.handle({"cmd": "silent", "node": 2, "on": True})
    # its TPDOs go stale first (pdo_timeout_ms 100: 0x8100), then the heartbeat consumer times out (350 ms)
    r.pump(lambda: io.drive_fault[0] and io.drive_error_code[0] == 0x8100, what="X stale")
    r.pump(lambda: io.drive_error_code[0] == 0x8130, what="X heartbeat lost")
    assert io.drive_fault[0] and not io.drive_ready[0] and not io.drive_fault[1]
    h = d.health()
    assert h.state is DriverState.DEGRADED and "node 2 (X drive): heartbeat lost" in h.message
    io.enable[0] = False  # the CU drops enable on a drive fault
    r.emu.handle({"cmd": "reboot", "node": 2})
    r.pump(lambda: not io.drive_fault[0] and d.health().state is DriverState.READY
           and r.emu.nodes[2].status()["nmt"] == "OPERATIONAL", what="X back")
    st = r.emu.nodes[2].status()
    assert st["nmt"] == "OPERATIONAL" and st["heartbeat_ms"] == 100 and st["tpdos"] == ["0x182", "0x282"]
    assert r.emu.nodes[2].get(0x1A00, 2) == 0x60640020  # the PDO mapping was written again
    io.enable[0] = True
    r.pump(lambda: io.drive_ready[0], what="X enabled again")


def test_emcy_code_reaches_the_axis_and_a_fault_reset_clears_it(rig) -> None:
    """EMCY frames -> axis error with the EMCY code; the driver's fault reset clears it when enable drops."""
    r = rig()
    d = r.open()
    io = r.io
    io.enable[1] = True
    r.pump(lambda: io.drive_ready[1], what="Y enabled")
    r.emu.handle({"cmd": "emcy", "node": 3, "code": 0x2310, "register": 0x03})
    r.pump(lambda: io.drive_fault[1] and io.drive_error_code[1] == 0x2310, what="Y EMCY 0x2310")
    assert io.axis_state[1] == DriverState.FAULT
    assert "node 3 (Y drive): EMCY 0x2310 continuous over-current" in d.health().message
    io.enable[1] = True  # fault latched while enable stays high
    r.pump(lambda: r.emu.nodes[3].status()["state"] == "FAULT", timeout=1.0)
    io.enable[1] = False
    r.pump(lambda: not io.drive_fault[1] and io.drive_error_code[1] == 0, what="fault reset")
    assert r.emu.nodes[3].status()["state"] == "SWITCH_ON_DISABLED" and d.health().state is DriverState.READY


def test_cia402_controlword_for_each_state() -> None:
    """CiA 402 controlword/statusword state machine, fault reset edge and quick stop (master side)."""
    assert decode(0x0240) is DriveState.SWITCH_ON_DISABLED and decode(0x0231) is DriveState.READY_TO_SWITCH_ON
    assert decode(0x0233) is DriveState.SWITCHED_ON and decode(0x0637) is DriveState.OPERATION_ENABLED
    assert decode(0x0217) is DriveState.QUICK_STOP_ACTIVE and decode(0x0208) is DriveState.FAULT
    assert decode(0x020F) is DriveState.FAULT_REACTION_ACTIVE and decode(0x0000) is DriveState.NOT_READY
    assert controlword(DriveState.SWITCH_ON_DISABLED, True, False) == CW_SHUTDOWN
    assert controlword(DriveState.READY_TO_SWITCH_ON, True, False) == CW_SWITCH_ON
    assert controlword(DriveState.SWITCHED_ON, True, False) == CW_ENABLE_OPERATION
    assert controlword(DriveState.OPERATION_ENABLED, False, False) == CW_SHUTDOWN
    assert controlword(DriveState.OPERATION_ENABLED, False, False, quick_stop=True) == CW_QUICK_STOP
    assert controlword(DriveState.FAULT, True, False) == CW_DISABLE_VOLTAGE  # latched while enabled
    assert controlword(DriveState.FAULT, False, True) == CW_FAULT_RESET
    assert controlword(DriveState.FAULT, False, False) == CW_DISABLE_VOLTAGE  # edges, not a level


def test_bus_errors_make_the_driver_degraded_or_faulted_and_it_recovers_the_bus(rig) -> None:
    """Bus errors -> driver health: error frames DEGRADED, a bus that refuses frames FAULT, with the reason; the
    driver reopens the bus on its own with back-off."""
    import can

    r = rig()
    d = r.open()
    peer = can.Bus(interface="virtual", channel=r.channel, receive_own_messages=False)
    try:
        peer.send(can.Message(arbitration_id=0x004, is_error_frame=True, is_extended_id=False, data=bytes(8)))
        r.pump(lambda: d.health().state is DriverState.DEGRADED, what="error frames seen")
        assert "bus error frames seen" in d.health().message
    finally:
        peer.shutdown()
    assert d.network is not None
    d.network.bus.shutdown()  # the bus object now refuses every frame (like a controller gone)
    d.cycle(r.io, time.perf_counter_ns(), 0.001)
    d.cycle(r.io, time.perf_counter_ns(), 0.001)
    h = d.health()
    assert h.state is DriverState.FAULT and h.message.startswith("bus virtual " + r.channel + ": send failed")
    # the supervisor reopens the bus after reconnect_ms (500) with back-off: sending again, every node still there
    r.pump(lambda: d.health().state is DriverState.READY, what="bus reopened and nodes answering")
    r.io.enable[0] = True
    r.pump(lambda: r.io.drive_ready[0], what="X enabled after the bus came back")
