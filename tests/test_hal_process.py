"""The HAL as a real subprocess: every io.toml feature, commands/acks/ownership, CU absent or frozen.

One HAL per module on a custom io.toml; a test-side CU, RE and RPC drive it through real segments.
"""
from __future__ import annotations

import math

import pytest

from common.shm.commands import HalCommand, ResultCode
from common.states import DriverState
from hal.synthetic_config import axis_toml, write_config
from tests.helpers import wait_for
from tests.hal_harness import CommandClient, FakeCu, HalView, Injector, ok, read, start_hal

STALE_READS = 100

IO_TOML = """
[Safety]
io = [
    { type="di", role="EStop", pin=0, logic="NC", debounce=0, sim=true, name="E-stop" },
]
[Inputs]
io = [
    { type="di", pin=1, logic="NO", debounce=0, sim=true, name="NO closed" },
    { type="di", pin=2, logic="NC", debounce=0, sim=true, name="NC closed" },
    { type="di", pin=3, logic="NC", debounce=0, sim=false, name="NC open" },
    { type="di", pin=4, debounce=1500, sim=false, name="slow debounce" },
    { type="di", pin=5, debounce=0, sim=false, name="no debounce (marker)" },
    { type="di", pin=6, debounce=0, enable_pin=7, enable_state=true, enable_timeout=300, name="two-hand left" },
    { type="di", pin=7, debounce=0, name="two-hand right" },
    { type="di", pin=8, debounce=0, enable_pin=9, enable_state=false, name="enabled while 9 off" },
    { type="di", pin=9, debounce=0 },
    { type="di", role="BrakeIn1", pin=20, debounce=0 },
    { type="di", role="LimitMin1", pin=21, logic="NC", debounce=0 },
    { type="di", role="LimitMax1", pin=22, logic="NC", debounce=0 },
    { type="di", role="Ref1", pin=23, debounce=0 },
]
[Analog]
io = [
    { type="ai", pin=0, max=10.0, average=1, sim=6.0 },
    { type="ai", pin=1, max=10.0, average=1, offset=0.5 },
    { type="ai", pin=2, min=-10.0, max=10.0, average=1, curve="quadratic" },
    { type="ai", pin=3, max=100.0, average=1, curve=[0.2, 0.0, 0.8] },
    { type="ai", pin=4, max=10.0, average=1000 },
    { type="ao", pin=0, max=10.0, init=2.5 },
    { type="ao", pin=1, min=2.0, max=10.0, init=5.0, pulse=300 },
    { type="ao", pin=2, role="SpindleRef", max=100.0 },
]
[Outputs]
io = [
    { type="do", pin=1, init=true, name="init on" },
    { type="do", pin=2, inverted=true, name="inverted" },
    { type="do", pin=3, pulse=300, name="watchdog valve" },
    { type="do", pin=4, init=true, keep_estop=true, name="safety relay" },
    { type="do", pin=5, name="plain" },
    { type="do", pin=6, role="DoorLock" },
    { type="do", pin=10, role="BrakeOut1" },
]
"""


@pytest.fixture(scope="module")
def env(shm_prefix, tmp_path_factory):
    base = tmp_path_factory.mktemp("hal_process")
    cfg_dir = write_config(
        base / "config", axes=2, io=IO_TOML, hal={"stale_reads": STALE_READS},
        axis_files={1: axis_toml(1, brake=True, approach="Positive"), 2: axis_toml(2, rotary=True, homing="Absolute")},
    )
    run_dir = base / "run"
    hal = start_hal(shm_prefix, cfg_dir, run_dir, base)
    view = HalView(cfg_dir)
    rpc = CommandClient("rpc_hal", "hal_rpc")
    re_ = CommandClient("re_hal", "hal_re")
    inj = Injector(run_dir / "hal_sim_inject.json")
    rpc.wait_attached()
    re_.wait_attached()
    yield {"hal": hal, "view": view, "rpc": rpc, "re": re_, "inj": inj, "dir": cfg_dir}
    rpc.close()
    re_.close()
    view.close()
    assert hal.stop() == 0, hal.output()


@pytest.fixture
def view(env) -> HalView:
    return env["view"]


@pytest.fixture
def inj(env):
    yield env["inj"]
    env["inj"].clear()
    wait_for(lambda: env["view"].di(0) is False and env["view"].di(5) is False, what="injections cleared")


@pytest.fixture
def cu(env):
    c = FakeCu()
    wait_for(env["view"].cu_connected, what="HAL to see the CU")
    yield c
    c.close()
    wait_for(lambda: not env["view"].cu_connected(), what="HAL to drop the CU")


def test_without_cu_outputs_are_safe_and_feedback_published(view):
    assert not view.cu_connected()
    io = view.io()
    assert int(io["axis_count"]) == 2 and int(read(view.cu)["axis_count"]) == 2
    assert [view.axis(a)["active"] for a in (1, 2, 3)] == [1, 1, 0]
    assert view.axis(1)["drive_ready"] == 0 and view.axis(1)["torque_estimate"] == 0.0
    assert view.axis(2)["referenced"] == 1  # absolute encoder
    assert int(io["driver_state"][0]) == DriverState.READY and int(io["driver_state"][5]) == DriverState.OFFLINE
    assert int(io["hal_state"]) == DriverState.READY
    assert bytes(io["hal_message"]).startswith(b"simulated plant")  # the driver's health reason
    assert view.do(1) and view.do(4)  # init=true
    assert not view.do(2) and view.do_phys(2)  # inverted: logical off = physical on
    assert not view.do(5) and not view.do(10)  # brake engaged
    assert view.ao(0) == 2.5 and view.ao(1) == 5.0 and view.ao(2) == 0.0
    stats = read(view.mqt)["stats"]
    assert int(stats["cycle_count"]) > 0 and int(stats["cycle_time_ns"]) == 1_000_000
    assert int(read(view.rpc)["stats"]["cycle_count"]) > 0
    # the figures move with the beat commits (the compiled publish copies the loop's record into both)
    c0 = int(stats["cycle_count"])
    wait_for(lambda: int(read(view.mqt)["stats"]["cycle_count"]) > c0 + 30 and int(
        read(view.rpc)["stats"]["cycle_count"]) > c0 + 30, what="the HAL's cycle figures in hal_mqt and hal_rpc")


def test_no_nc_logic(view, inj):
    assert view.di(1) is True  # NO, wire closed
    assert view.di(2) is False  # NC, wire closed
    assert view.di(3) is True  # NC, wire open
    assert view.di(0) is False  # E-stop (NC) not pressed
    inj.set(di={1: False, 2: False})  # physical levels
    wait_for(lambda: view.di(1) is False and view.di(2) is True, what="NO/NC after the wires open")
    inj.set(di_logical={3: False})
    wait_for(lambda: view.di(3) is False, what="logical injection through NC")


def test_debounce_filters_glitches_and_accepts_stable_levels(view, inj):
    seen_slow = []

    def marker(value: bool):
        def check():
            seen_slow.append(view.di(4))
            return view.di(5) is value
        return check

    inj.set(di={4: True, 5: True})  # a glitch far shorter than pin 4's 1500 ms debounce
    wait_for(marker(True), what="undebounced marker on")
    inj.set(di={4: False, 5: False})
    wait_for(marker(False), what="undebounced marker off")
    assert not any(seen_slow), "the glitch passed the debounce filter"
    inj.set(di={4: True})
    wait_for(lambda: view.di(4) is True, timeout=10, what="stable level accepted after debounce")


def test_enable_pin_two_hand_and_enable_state(view, inj):
    inj.set(di={6: True, 7: True})
    wait_for(lambda: view.di(6) is True, what="both hands within the window")
    inj.set(di={6: False, 7: False})
    wait_for(lambda: view.di(6) is False and view.di(7) is False, what="released")
    inj.set(di={7: True})
    wait_for(lambda: view.di(7) is True, what="right hand first")
    hb = read(view.cu) is not None and view.cu.heartbeat
    wait_for(lambda: view.cu.heartbeat > hb + 600, what="600 HAL cycles (> enable_timeout 300 ms)")
    inj.set(di={6: True, 5: True})  # pin 5 marks that this injection has been applied
    wait_for(lambda: view.di(5) is True, what="marker")
    assert view.di(6) is False, "second hand outside enable_timeout must not enable"
    inj.set(di={6: False, 7: False, 5: False})
    wait_for(lambda: view.di(5) is False, what="released")
    inj.set(di={6: True, 7: True})
    wait_for(lambda: view.di(6) is True, what="re-armed after releasing both")
    # enable_state=false: pin 8 reads true only while pin 9 is off
    inj.set(di={8: True})
    wait_for(lambda: view.di(8) is True, what="enabled while pin 9 off")
    inj.set(di={9: True})
    wait_for(lambda: view.di(8) is False, what="disabled by pin 9")


def test_analog_curves_and_offset(view, inj):
    assert view.ai(0) == pytest.approx(6.0)  # sim value, linear
    inj.set(ai_raw={1: 0.5, 2: 0.5, 3: 0.5})
    wait_for(lambda: view.ai(1) == pytest.approx(5.5), what="linear + offset 0.5")
    assert view.ai(2) == pytest.approx(-10.0 + 20.0 * 0.25)  # quadratic
    assert view.ai(3) == pytest.approx(100.0 * (0.2 * 0.125 + 0.8 * 0.5))  # custom cubic
    inj.data.pop("ai_raw")
    inj.set(ai={3: 77.0})  # engineering value through the inverse curve
    wait_for(lambda: view.ai(3) == pytest.approx(77.0), what="engineering injection")


def test_analog_moving_average(view, inj):
    assert view.ai(4) == pytest.approx(0.0)
    inj.set(ai_raw={4: 1.0})
    wait_for(lambda: 2.0 < view.ai(4) < 8.0, what="1000-sample average on its way")
    wait_for(lambda: view.ai(4) == pytest.approx(10.0), what="average settled")


def test_cu_owns_role_pins_and_refusals_name_pin_and_role(view, env, cu):
    rpc = env["rpc"]
    cu.set_do(6, True)  # DoorLock
    cu.set_ao(2, 50.0)  # SpindleRef
    cu.set_do(5, True)  # role-less: the CU's bit is ignored
    cu.set_ao(0, 9.0)  # role-less: ignored
    wait_for(lambda: view.do(6) and view.ao(2) == 50.0, what="role outputs follow cu_hal")
    assert not view.do(5) and view.ao(0) == 2.5
    ack = rpc.call(HalCommand.SET_DO, pin=6, args=(1.0,))
    assert ack.result == ResultCode.IO_ROLE_OWNED and "pin 6" in ack.message and "DoorLock" in ack.message
    ack = env["re"].call(HalCommand.SET_AO, pin=2, args=(1.0,))
    assert ack.result == ResultCode.IO_ROLE_OWNED and "pin 2" in ack.message and "SpindleRef" in ack.message
    ack = rpc.call(HalCommand.SET_DO, pin=10, args=(1.0,))
    assert ack.result == ResultCode.IO_ROLE_OWNED and "BrakeOut1" in ack.message


def test_every_command_is_acked_once_with_a_reason(env, cu):
    rpc = env["rpc"]
    cases = [
        (HalCommand.SET_DO, 999, (1.0,), ResultCode.INVALID_ARGUMENT, "not configured"),
        (HalCommand.SET_DO, 2000, (1.0,), ResultCode.INVALID_ARGUMENT, "out of range"),
        (HalCommand.SET_DO, 5, (0.5,), ResultCode.INVALID_ARGUMENT, "0 or 1"),
        (HalCommand.SET_DO, 5, (math.nan,), ResultCode.INVALID_ARGUMENT, "finite"),
        (HalCommand.SET_AO, 0, (11.0,), ResultCode.INVALID_ARGUMENT, "outside [0, 10]"),
        (HalCommand.SET_AO, 0, (math.inf,), ResultCode.INVALID_ARGUMENT, "finite"),
        (HalCommand.PULSE_DO, 5, (0.0,), ResultCode.INVALID_ARGUMENT, "length"),
        (99, 0, (0.0,), ResultCode.UNKNOWN_COMMAND, "unknown HAL command code 99"),
        (HalCommand.NOP, 0, (0.0,), ResultCode.OK, ""),
        (HalCommand.SET_AO, 0, (2.5,), ResultCode.OK, "ao 0 = 2.5"),
    ]
    before = len(rpc.received)
    rids = [rpc.send(code, pin, args) for code, pin, args, _, _ in cases]  # all in flight at once
    wait_for(lambda: rpc.poll() is not None and len(rpc.received) - before >= len(cases), what="all acks")
    acks = {a.request_id: a for a in rpc.received[before:]}
    assert len(acks) == len(rpc.received) - before == len(cases)  # exactly one ack each
    for rid, (_, _, _, result, text) in zip(rids, cases):
        assert acks[rid].result == result, (rid, acks[rid])
        assert text in acks[rid].message


def test_roleless_outputs_persist_per_source_and_inversion(view, env, cu):
    ok(env["rpc"].call(HalCommand.SET_DO, pin=5, args=(1.0,)))
    ok(env["rpc"].call(HalCommand.SET_DO, pin=2, args=(1.0,)))
    ok(env["rpc"].call(HalCommand.SET_AO, pin=0, args=(7.5,)))
    wait_for(lambda: view.do(5) and view.do(2) and view.ao(0) == 7.5, what="role-less outputs applied")
    assert not view.do_phys(2)  # inverted: logical on = physical off
    cu.set_do(6, True)  # CU frames keep arriving; the RE/RPC values persist alongside
    wait_for(lambda: view.do(6), what="CU role pin")
    assert view.do(5) and view.ao(0) == 7.5
    ack = ok(env["re"].call(HalCommand.SET_DO, pin=5, args=(0.0,)))  # acked on hal_re
    assert ack.message == "do 5 = 0"
    wait_for(lambda: not view.do(5), what="RE switched it off")
    ok(env["rpc"].call(HalCommand.SET_DO, pin=2, args=(0.0,)))
    ok(env["rpc"].call(HalCommand.SET_AO, pin=0, args=(2.5,)))


def test_do_pulse_watchdog_and_pulse_command(view, env, cu):
    ok(env["rpc"].call(HalCommand.SET_DO, pin=3, args=(1.0,)))
    wait_for(lambda: view.do(3), what="valve on")
    wait_for(lambda: not view.do(3), what="valve off without refresh (pulse=300)")
    ok(env["re"].call(HalCommand.PULSE_DO, pin=5, args=(200.0,)))
    wait_for(lambda: view.do(5), what="pulse on")
    wait_for(lambda: not view.do(5), what="pulse over")


def test_ao_init_and_pulse(view, env, cu):
    assert view.ao(1) == 5.0
    ok(env["rpc"].call(HalCommand.SET_AO, pin=1, args=(8.0,)))
    wait_for(lambda: view.ao(1) == 8.0, what="ao set")
    wait_for(lambda: view.ao(1) == 2.0, what="ao back to 0 (clamped to min 2) without refresh")


def test_estop_resets_outputs_except_keep_estop(view, env, cu, inj):
    ok(env["rpc"].call(HalCommand.SET_DO, pin=5, args=(1.0,)))
    cu.set_do(6, True)
    wait_for(lambda: view.do(5) and view.do(6) and view.do(1) and view.do(4), what="outputs on")
    inj.set(di={0: False})  # NC E-stop circuit opens: pressed
    wait_for(lambda: view.di(0) is True, what="E-stop seen")
    wait_for(lambda: not view.do(5) and not view.do(6) and not view.do(1), what="outputs reset by E-stop")
    assert view.do(4), "keep_estop output must stay on"
    ack = env["rpc"].call(HalCommand.SET_DO, pin=5, args=(1.0,))
    assert ack.result == ResultCode.SAFETY and "E-stop" in ack.message
    inj.set(di={0: True})
    wait_for(lambda: view.di(0) is False, what="E-stop released")
    wait_for(lambda: view.do(6), what="CU role pin follows the CU again")
    assert not view.do(5) and not view.do(1), "reset outputs must not come back by themselves"
    assert view.do(4)


def test_commands_refused_while_cu_absent(view, env):
    assert not view.cu_connected()
    ack = env["rpc"].call(HalCommand.SET_DO, pin=5, args=(1.0,))
    assert ack.result == ResultCode.STATE_FORBIDS and "CU not connected" in ack.message


def test_cu_frozen_then_absent_gives_safe_outputs(view, env):
    cu = FakeCu()
    try:
        wait_for(view.cu_connected, what="CU seen")
        cu.set_axis(1, enable=1, brake_release=1)
        cu.set_do(10, True)  # BrakeOut1: release
        cu.set_do(6, True)
        cu.set_ao(2, 40.0)
        wait_for(lambda: view.axis(1)["drive_ready"] == 1 and view.do(10) and view.do(6) and view.ao(2) == 40.0,
                 what="axis enabled, brake released, outputs on")
        cu.freeze()
        frozen_hb = read(view.cu) is not None and view.cu.heartbeat
        wait_for(lambda: not view.cu_connected(), what="CU declared stale")
        assert view.cu.heartbeat - frozen_hb >= STALE_READS - 1  # never before the threshold
        assert view.axis(1)["drive_ready"] == 0 and view.axis(1)["torque_estimate"] == 0.0
        assert not view.do(10) and not view.do(6) and view.ao(2) == 0.0  # brake engaged, role outputs at init
        assert view.do(1) and view.do(4)  # init values
        cu.resume()
        wait_for(lambda: view.cu_connected() and view.do(10) and view.axis(1)["drive_ready"] == 1,
                 what="CU back: outputs follow it again")
    finally:
        cu.close()
    wait_for(lambda: not view.cu_connected(), what="CU gone")
    assert view.axis(1)["drive_ready"] == 0 and not view.do(10) and not view.do(6)


def test_drive_fault_injection_latches_until_disable(view, env, cu, inj):
    cu.set_axis(1, enable=1)
    wait_for(lambda: view.axis(1)["drive_ready"] == 1, what="drive ready")
    inj.set(axes={1: {"drive_fault": True, "drive_error_code": 0x7500}})
    wait_for(lambda: view.axis(1)["drive_fault"] == 1 and view.axis(1)["drive_ready"] == 0, what="fault")
    assert int(view.io()["driver_state"][0]) == DriverState.FAULT
    assert int(view.io()["drive_error_code"][0]) == 0x7500  # the drive's own code travels with the fault
    inj.clear()
    wait_for(lambda: view.di(5) is False, what="injection cleared")  # applied in the same poll
    assert view.axis(1)["drive_fault"] == 1, "fault must latch while enabled"
    assert int(view.io()["drive_error_code"][0]) == 0x7500
    cu.set_axis(1, enable=0)
    wait_for(lambda: view.axis(1)["drive_fault"] == 0, what="fault reset by disabling")
    assert int(view.io()["drive_error_code"][0]) == 0
    cu.set_axis(1, enable=1)
    wait_for(lambda: view.axis(1)["drive_ready"] == 1, what="ready again")


def test_sensors_follow_position(view, inj):
    ax = view.cfg.axis(1).kinematics
    travel = ax.max_pos - ax.min_pos
    inj.set(axes={1: {"set_position": ax.max_pos + 0.025 * travel}})
    wait_for(lambda: view.di(22) is True and view.di(21) is False, what="LimitMax1 reached")
    inj.set(axes={1: {"set_position": ax.min_pos - 0.025 * travel}})
    wait_for(lambda: view.di(21) is True and view.di(22) is False, what="LimitMin1 reached")
    inj.set(axes={1: {"set_position": 0.001}})  # just past the home edge at 0, approach Positive
    wait_for(lambda: view.di(23) is True and view.di(21) is False, what="home sensor")
    assert view.axis(1)["position"] == pytest.approx(0.001)
