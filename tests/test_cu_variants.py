"""The CU with the real simulated HAL on a test machine of 18 axes where axes 5..18 each carry one
variation: every homing method, every lag policy, a master/slave coupling, SS2 and STO stop
categories; plus gear change and reduced speed. Subprocesses, real segments.
"""
from __future__ import annotations

import pytest

from common.shm.commands import CuCommand as C
from common.shm.commands import ResultCode as R
from common.states import (
    AxisError,
    CouplingState,
    GearboxState,
    MachineError,
    MotionState,
    PowerState,
    SafeStopCategory,
    SafetyState,
)
from tests.helpers import wait_for
from tests.cu_support import CuClient, Machine, axis_errors, machine_test_config

CONTROL = """kp = 90.0
ki = 400.0
kd = 2.4
tf = 0.001
tt = 0.05
kvff = 0.02
kaff = 0.025
friction = 2.0
out_max = 100.0"""

HOMING = {5: ("HomeSensor", "Negative"), 6: ("LimitSwitch", "Negative"), 7: ("TorqueLimit", "Negative"),
          8: ("IndexPulse", "Positive"), 9: ("Absolute", "Positive"), 10: ("NoHoming", "Positive")}
LAG = {11: "Unwanted", 12: "Neutral", 13: "Desired", 14: "Critical"}
MASTER, SLAVE, SS2_AXIS, STO_AXIS = 15, 16, 17, 18


def axis_file(i: int, method: str = "NoHoming", direction: str = "Positive", lag_policy: str = "Unwanted",
              lag_limit: float = 25.0, category: str = "SS1", extra: str = "") -> str:
    return f"""[axis]
id = {i}
name = "A{i}"
type = "linear"

[kinematics]
max_velocity = 500.0
max_acceleration = 2000.0
safe_reduced_speed_limit = 50.0
min_pos = 0.0
max_pos = 100.0
in_position_window = 0.05

[control]
{CONTROL}
lag_error_limit = {lag_limit}
lag_policy = "{lag_policy}"

[safe_stop]
category = "{category}"
max_decel_safe = 3000.0
sto_brake_delay = 0.1
ss2_holding_torque = 30.0

[homing]
method = "{method}"
speed = 20.0
torque_limit = 30.0
timeout = 10.0
approach_direction = "{direction}"
{extra}"""


EXTRA_IO = """[VariantAxes]
name = "Sensors of the variant axes"
io = [
    { type="di", role="Ref5", pin=105, debounce=0, name="A5 home cam" },
    { type="di", role="LimitMin6", pin=106, logic="NC", debounce=0, sim=true, name="A6 limit -" },
    { type="di", role="LimitMax6", pin=107, logic="NC", debounce=0, sim=true, name="A6 limit +" },
    { type="di", role="Index8", pin=108, debounce=0, name="A8 encoder index" },
]"""


@pytest.fixture(scope="module")
def machine(shm_prefix, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cu_variants")
    cfg = machine_test_config(tmp, extra_io=EXTRA_IO)
    for i, (method, direction) in HOMING.items():
        (cfg / f"axis_{i:02d}_a{i}.toml").write_text(axis_file(i, method, direction))
    for i, policy in LAG.items():
        (cfg / f"axis_{i:02d}_a{i}.toml").write_text(axis_file(i, lag_policy=policy, lag_limit=0.01))
    (cfg / f"axis_{MASTER:02d}_master.toml").write_text(axis_file(MASTER))
    (cfg / f"axis_{SLAVE:02d}_slave.toml").write_text(axis_file(
        SLAVE, extra=f"\n[coupling]\nmaster_axis = {MASTER}\nratio = 0.5\nmax_sync_error = 1.0\n"))
    (cfg / f"axis_{SS2_AXIS:02d}_ss2.toml").write_text(axis_file(SS2_AXIS, category="SS2"))
    (cfg / f"axis_{STO_AXIS:02d}_sto.toml").write_text(axis_file(STO_AXIS, category="STO"))
    m = Machine(shm_prefix, cfg, tmp / "run")
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture
def rpc(machine) -> CuClient:
    yield machine.rpc
    print(machine.logs())  # shown by pytest only when the test failed


def enable(c: CuClient, *axes: int) -> None:
    for a in axes:
        c.cmd(C.ENABLE_AXIS, a)
    wait_for(lambda: all(int(c.axis(a)["power"]) == PowerState.STANDBY for a in axes), 10,
             what=f"axes {axes} in Standby")


def settled(c: CuClient, a: int) -> bool:
    ax = c.axis(a)
    return bool(ax["in_position"]) and int(ax["power"]) == PowerState.STANDBY


@pytest.mark.parametrize("axis", sorted(HOMING), ids=[HOMING[a][0] for a in sorted(HOMING)])
def test_homing_method(rpc, axis):
    method = HOMING[axis][0]
    enable(rpc, axis)
    if method == "Absolute":
        assert rpc.axis(axis)["referenced"] == 1  # the drive's absolute encoder
        assert "absolute" in rpc.cmd(C.HOME, axis).message
        return
    if method == "NoHoming":
        assert "nothing to do" in rpc.cmd(C.HOME, axis).message
        assert not axis_errors(rpc, axis) & AxisError.NOT_REFERENCED
        rpc.cmd(C.JOG_POSITIVE, axis, args=(200.0,))  # no 5 % limit: nothing to reference
        wait_for(lambda: rpc.axis(axis)["setpoint_velocity"] == pytest.approx(200.0), 5, what="full speed")
        rpc.cmd(C.JOG_STOP, axis)
        wait_for(lambda: rpc.axis(axis)["motion"] == MotionState.STANDSTILL, 5, what="stopped")
        return
    assert rpc.axis(axis)["referenced"] == 0
    assert axis_errors(rpc, axis) & AxisError.NOT_REFERENCED
    rpc.cmd(C.HOME, axis)
    wait_for(lambda: rpc.axis(axis)["motion"] == MotionState.HOMING or rpc.axis(axis)["referenced"], 5,
             what="homing")
    wait_for(lambda: rpc.axis(axis)["referenced"] == 1 and rpc.axis(axis)["motion"] == MotionState.STANDSTILL,
             15, what=f"{method} homing done")
    pos = float(rpc.axis(axis)["position"])
    # the sim's reference geometry (hal/drivers/sim.py): cam edge at 0, limit switch 2 % of the
    # travel beyond min_pos, hard stop 3 % beyond, index marks every 10 units (the first one
    # ahead of the start position, which the sim clamps into [min_pos, max_pos])
    expected = {"HomeSensor": (0.0, 0.3), "LimitSwitch": (-2.0, 0.5), "TorqueLimit": (-3.0, 0.3),
                "IndexPulse": (round(pos / 10.0) * 10.0, 0.5)}[method]
    assert abs(pos - expected[0]) <= expected[1], (method, pos)
    assert axis_errors(rpc, axis) == 0, hex(axis_errors(rpc, axis))
    # referenced: soft limits apply and full speed is allowed
    rpc.cmd(C.MOVE_ABSOLUTE, axis, args=(30.0,))
    wait_for(lambda: settled(rpc, axis) and abs(rpc.axis(axis)["position"] - 30.0) <= 0.05, 10, what="move")
    rpc.cmd(C.MOVE_ABSOLUTE, axis, args=(-1.0,), expect=R.INVALID_ARGUMENT)


def test_lag_policies(rpc):
    axes = sorted(LAG)
    enable(rpc, *axes)
    unwanted, neutral, desired, critical = axes
    # Unwanted: axis error, the axis stops (the machine carries on)
    rpc.cmd(C.MOVE_ABSOLUTE, unwanted, args=(80.0,))
    wait_for(lambda: axis_errors(rpc, unwanted) & AxisError.LAG_ERROR, 5, what="LAG_ERROR")
    wait_for(lambda: rpc.axis(unwanted)["motion"] == MotionState.MOTION_ERROR
             and rpc.axis(unwanted)["setpoint_velocity"] == 0.0, 5, what="stopped in error")
    assert rpc.axis(unwanted)["position"] < 79.0
    assert rpc.status()["safety_state"] == SafetyState.SAFE
    rpc.cmd(C.MOVE_ABSOLUTE, unwanted, args=(10.0,), expect=R.STATE_FORBIDS)
    rpc.cmd(C.RESET_ERROR, unwanted)
    # Neutral: warning flag only, the move completes
    rpc.cmd(C.MOVE_ABSOLUTE, neutral, args=(80.0,))
    wait_for(lambda: settled(rpc, neutral) and abs(rpc.axis(neutral)["position"] - 80.0) <= 0.05, 10,
             what="neutral move done")
    assert axis_errors(rpc, neutral) & AxisError.LAG_WARNING
    assert not axis_errors(rpc, neutral) & AxisError.LAG_ERROR
    # Desired: ignored
    rpc.cmd(C.MOVE_ABSOLUTE, desired, args=(80.0,))
    wait_for(lambda: settled(rpc, desired) and abs(rpc.axis(desired)["position"] - 80.0) <= 0.05, 10,
             what="desired move done")
    assert axis_errors(rpc, desired) & (AxisError.LAG_ERROR | AxisError.LAG_WARNING) == 0
    # Critical: safety stop of the whole machine
    rpc.cmd(C.MOVE_ABSOLUTE, critical, args=(80.0,))
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFETY_STOP, 5, what="safety stop")
    assert int(rpc.status()["machine_errors"]) & MachineError.LAG_CRITICAL
    assert axis_errors(rpc, critical) & AxisError.LAG_ERROR
    wait_for(lambda: all(int(rpc.axis(a)["power"]) == PowerState.POWER_OFF for a in axes), 5, what="all SS1 off")
    rpc.cmd(C.RESET_ERROR, 0)
    assert rpc.status()["safety_state"] == SafetyState.SAFE
    assert axis_errors(rpc, critical) == 0


def test_coupled_axis_follows_master(rpc):
    enable(rpc, MASTER, SLAVE)
    wait_for(lambda: rpc.axis(SLAVE)["coupling"] == CouplingState.SYNCHRONIZED, 5, what="auto-coupled")
    assert rpc.axis(MASTER)["coupling"] == CouplingState.MASTER
    assert rpc.axis(SLAVE)["master_axis"] == MASTER
    m0, s0 = float(rpc.axis(MASTER)["setpoint_position"]), float(rpc.axis(SLAVE)["setpoint_position"])
    ack = rpc.cmd(C.MOVE_ABSOLUTE, SLAVE, args=(10.0,), expect=R.STATE_FORBIDS)
    assert "coupled" in ack.message
    rpc.cmd(C.MOVE_ABSOLUTE, MASTER, args=(60.0,))
    wait_for(lambda: settled(rpc, MASTER) and abs(rpc.axis(MASTER)["position"] - 60.0) <= 0.05, 10,
             what="master in position")
    want = s0 + 0.5 * (60.0 - m0)
    assert float(rpc.axis(SLAVE)["setpoint_position"]) == pytest.approx(want)
    wait_for(lambda: abs(float(rpc.axis(SLAVE)["position"]) - want) <= 0.05, 5, what="slave followed at ratio 0.5")
    assert axis_errors(rpc, SLAVE) == 0
    rpc.cmd(C.DECOUPLE, SLAVE, expect=R.UNKNOWN_COMMAND)  # RE's vocabulary; RPC cannot
    rpc.cmd(C.DISABLE_AXIS, MASTER)
    wait_for(lambda: rpc.axis(SLAVE)["coupling"] == CouplingState.UNCOUPLED, 5, what="decoupled on disable")
    assert axis_errors(rpc, SLAVE) == 0


def test_gear_change_and_reduced_speed(machine, rpc):
    a = 10
    enable(rpc, a)
    rpc.cmd(C.GEAR_CHANGE, a, pin=2)
    wait_for(lambda: rpc.axis(a)["gearbox"] == GearboxState.GEAR2, 5, what="gear 2")
    rpc.cmd(C.GEAR_CHANGE, a, pin=7, expect=R.INVALID_ARGUMENT)
    rpc.cmd(C.MOVE_ABSOLUTE, a, args=(0.0,))  # NoHoming: no soft limits, so leave room to jog
    wait_for(lambda: settled(rpc, a), 10, what="at 0")
    machine.inject({"di": {"2": True}})  # ReducedSpeed key switch
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFE_REDUCED_SPEED, 5, what="reduced speed")
    rpc.cmd(C.JOG_POSITIVE, a, args=(100.0,))
    wait_for(lambda: rpc.axis(a)["setpoint_velocity"] > 0, 5, what="jogging")
    assert rpc.axis(a)["setpoint_velocity"] <= 50.0  # safe_reduced_speed_limit
    wait_for(lambda: rpc.axis(a)["setpoint_velocity"] == pytest.approx(50.0), 5, what="at 50/s")
    machine.inject({})
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFE, 5, what="safe again")
    wait_for(lambda: rpc.axis(a)["setpoint_velocity"] == pytest.approx(100.0), 5, what="back to 100/s")
    rpc.cmd(C.JOG_STOP, a)
    wait_for(lambda: rpc.axis(a)["motion"] == MotionState.STANDSTILL, 5, what="stopped")


def test_estop_stop_categories_ss2_holds_sto_cuts(machine, rpc):
    enable(rpc, SS2_AXIS, STO_AXIS)
    for a in (SS2_AXIS, STO_AXIS):
        rpc.cmd(C.JOG_POSITIVE, a, args=(100.0,))
    wait_for(lambda: all(rpc.axis(a)["velocity"] > 50.0 for a in (SS2_AXIS, STO_AXIS)), 5, what="both moving")
    machine.inject({"di": {"0": False}})  # E-stop
    wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFETY_STOP, 5, what="safety stop")
    sto = rpc.axis(STO_AXIS)
    assert sto["safe_stop"] == SafeStopCategory.STO and sto["enabled"] == 0
    assert int(sto["power"]) == PowerState.POWER_OFF
    # SS2: ramp to rest, then hold with the drive enabled at ss2_holding_torque
    wait_for(lambda: rpc.axis(SS2_AXIS)["motion"] == MotionState.STANDSTILL, 5, what="SS2 at rest")
    ss2 = rpc.axis(SS2_AXIS)
    assert ss2["safe_stop"] == SafeStopCategory.SS2 and ss2["enabled"] == 1
    assert int(ss2["power"]) == PowerState.STANDBY and abs(ss2["torque"]) <= 30.0
    rpc.cmd(C.JOG_POSITIVE, SS2_AXIS, expect=R.SAFETY)
    machine.inject({})
    wait_for(lambda: not rpc.status()["estop"], 5, what="E-stop released")
    rpc.cmd(C.RESET_ERROR, 0)
    assert rpc.axis(SS2_AXIS)["safe_stop"] == SafeStopCategory.NONE
    rpc.cmd(C.MOVE_ABSOLUTE, SS2_AXIS, args=(20.0,))  # SS2 kept it powered: moves without re-enable
    wait_for(lambda: settled(rpc, SS2_AXIS) and abs(rpc.axis(SS2_AXIS)["position"] - 20.0) <= 0.05, 10,
             what="SS2 axis moves again")
