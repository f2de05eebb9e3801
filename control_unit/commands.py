"""Commands from RE and RPC: the per-path vocabularies, source locks (one commanding source per
axis; ACQUIRE_LOCK/RELEASE_LOCK or implicitly on the first motion command), preconditions, and
the ack (ResultCode + readable reason) of every command. The ring plumbing is common/shm/inbound.py.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from common.shm.commands import RE_TO_CU_ALLOWED, RPC_TO_CU_ALLOWED, CuCommand, ResultCode
from common.shm.rings import Command
from common.states import (
    CommandSource,
    axis_error_reasons,
    GearboxState,
    MachineError,
    MachineState,
    OperationalMode,
    PowerState,
    SafetyState,
)

from . import coupling, homing, safety
from .machines import BLOCKING_ERRORS, PS, blocking, start_power_off, start_power_on, torque_off
from .trajectory import HOLD, POSITION, VELOCITY

if TYPE_CHECKING:
    from .core import ControlCore

log = logging.getLogger(__name__)

# RE may take and give back its axis locks too (else an implicit RE lock could never be released
# short of the RE going away); the shared RE_TO_CU_ALLOWED lacks the two codes (lead informed).
ALLOWED = {CommandSource.RE: RE_TO_CU_ALLOWED | {CuCommand.ACQUIRE_LOCK, CuCommand.RELEASE_LOCK},
           CommandSource.RPC: RPC_TO_CU_ALLOWED}
JOG_DEFAULT_FRACTION = 0.1  # jog speed when none is given: 10 % of max_velocity
MOTION_STATES = (MachineState.IDLE, MachineState.ACTIVE, MachineState.MANUAL, MachineState.SERVICE)
C = CuCommand
LOCKED_CODES = frozenset({C.MOVE_ABSOLUTE, C.MOVE_RELATIVE, C.MOVE_VELOCITY, C.HOME, C.ENABLE_AXIS, C.DISABLE_AXIS,
                          C.SET_MODE, C.COUPLE, C.DECOUPLE, C.GEAR_CHANGE, C.JOG_POSITIVE, C.JOG_NEGATIVE,
                          C.JOG_STOP})
# which motion commands each OperationalMode admits
MODE_ALLOWS = {
    OperationalMode.POSITION: {C.MOVE_ABSOLUTE, C.MOVE_RELATIVE, C.MOVE_VELOCITY, C.JOG_POSITIVE, C.JOG_NEGATIVE,
                               C.HOME},
    OperationalMode.VELOCITY: {C.MOVE_VELOCITY, C.JOG_POSITIVE, C.JOG_NEGATIVE, C.HOME},
    OperationalMode.TORQUE: set(),
    OperationalMode.MANUAL: {C.MOVE_ABSOLUTE, C.MOVE_RELATIVE, C.JOG_POSITIVE, C.JOG_NEGATIVE, C.HOME},
    OperationalMode.TEST: {C.MOVE_ABSOLUTE, C.MOVE_RELATIVE, C.MOVE_VELOCITY, C.JOG_POSITIVE, C.JOG_NEGATIVE,
                           C.HOME},
}

Result = tuple[ResultCode, str]
OK = ResultCode.OK


def _name(e: object) -> str:
    return getattr(e, "name", str(e)).replace("_", " ").title().replace(" ", "")


def execute(core: "ControlCore", cmd: Command, source: CommandSource, now: float) -> Result:
    """Validate and execute one command from `source`; never raises for bad input."""
    try:
        code = CuCommand(cmd.code)
    except ValueError:
        return ResultCode.UNKNOWN_COMMAND, f"unknown command code {cmd.code}"
    if code not in ALLOWED[source]:
        return ResultCode.UNKNOWN_COMMAND, f"{code.name} is not accepted from {source.name}"
    if not all(math.isfinite(x) for x in cmd.args):
        return ResultCode.INVALID_ARGUMENT, "arguments must be finite numbers"
    if source == CommandSource.RPC and core.m.state == MachineState.MANUAL:
        core.m.manual_t = now
    handler = _HANDLERS[code]
    return handler(core, cmd, source, now)


# --- helpers ------------------------------------------------------------------------------------
def _axes(core: "ControlCore", cmd: Command, allow_all: bool) -> list[int] | Result:
    if cmd.axis == 0 and allow_all:
        return [int(s) for s in np.flatnonzero(core.p.configured)]
    s = cmd.axis - 1
    if not (0 <= s < core.n) or not core.p.configured[s]:
        return ResultCode.INVALID_ARGUMENT, f"unknown axis {cmd.axis}"
    return [s]


def _lock(core: "ControlCore", slots: list[int], source: CommandSource, take: bool = True,
          explicit: bool = False) -> Result | None:
    """LOCKED when another source holds one of the axes; else take the lock (`take`): implicitly
    (released when the axis is back at standstill) or explicitly (ACQUIRE_LOCK: until released)."""
    for s in slots:
        holder = core.ax.lock[s]
        if holder not in (CommandSource.NONE, source):
            return ResultCode.LOCKED, f"axis {s + 1} is locked by {CommandSource(int(holder)).name}"
    if take:
        for s in slots:
            core.ax.lock[s] = source
            core.ax.lock_explicit[s] = core.ax.lock_explicit[s] or explicit
    return None


def _machine_allows_motion(core: "ControlCore", source: CommandSource) -> Result | None:
    m = core.m
    if m.safety == SafetyState.SAFETY_STOP:
        return ResultCode.SAFETY, "safety stop active: reset required"
    if m.state not in MOTION_STATES:
        return ResultCode.STATE_FORBIDS, f"machine is {m.state.name}"
    if source == CommandSource.RE and m.state in (MachineState.MANUAL, MachineState.SERVICE):
        return ResultCode.STATE_FORBIDS, f"machine in {m.state.name}: recipe motion refused"
    return None


def _can_move(core: "ControlCore", s: int, code: CuCommand) -> Result | None:
    ax, p = core.ax, core.p
    if ax.power[s] not in (PS.STANDBY, PS.MOTION):
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} not enabled (power {PowerState(int(ax.power[s])).name})"
    if blocking(ax)[s]:
        reasons = axis_error_reasons(int(ax.errors[s]) & BLOCKING_ERRORS)
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} in error: " + "; ".join(reasons)
    if ax.safe_stop[s]:
        return ResultCode.SAFETY, f"axis {s + 1} safe stop in force: reset required"
    if not core.guard_closed[s] and not (core.m.state == MachineState.SERVICE and p.bypass[s]):
        return ResultCode.SAFETY, f"axis {s + 1}: guard open"
    if ax.homing_phase[s]:
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} is homing"
    if ax.shifting[s]:
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} is changing gear"
    if core.cpl.master[s] >= 0:
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} is coupled to axis {core.cpl.master[s] + 1}"
    mode = OperationalMode(int(ax.mode[s]))
    if code not in MODE_ALLOWS[mode]:
        return ResultCode.STATE_FORBIDS, f"{code.name} not available in {mode.name} mode"
    for sl in core.cpl.slaves_of(s):
        if ax.power[sl] not in (PS.STANDBY, PS.MOTION) or blocking(ax)[sl]:
            return ResultCode.STATE_FORBIDS, f"slave axis {sl + 1} not ready"
    return None


def _direction_ok(core: "ControlCore", s: int, direction: float) -> Result | None:
    if direction < 0 and core.lim_min[s]:
        return ResultCode.SAFETY, f"axis {s + 1}: minimum limit switch active"
    if direction > 0 and core.lim_max[s]:
        return ResultCode.SAFETY, f"axis {s + 1}: maximum limit switch active"
    return None


def _motion_prelude(core: "ControlCore", cmd: Command, source: CommandSource, code: CuCommand) -> int | Result:
    r = _machine_allows_motion(core, source)
    if r:
        return r
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    s = slots[0]
    r = _can_move(core, s, code) or _lock(core, slots, source)
    if r:
        return r
    if source == CommandSource.RE and core.m.state == MachineState.IDLE:
        core.m.state = MachineState.ACTIVE
    return s


def _start(core: "ControlCore", s: int, v: float, a: float) -> None:
    core.begin_motion(s)
    core.ax.cmd_v[s] = v if v > 0 else np.inf
    core.ax.cmd_a[s] = a if a > 0 else np.inf


# --- handlers -----------------------------------------------------------------------------------
def _nop(core, cmd, source, now) -> Result:
    return OK, "nop"


def _move_abs(core, cmd, source, now, relative: bool = False) -> Result:
    code = C.MOVE_RELATIVE if relative else C.MOVE_ABSOLUTE
    s = _motion_prelude(core, cmd, source, code)
    if isinstance(s, tuple):
        return s
    tr, p = core.traj, core.p
    if cmd.args[1] < 0 or cmd.args[2] < 0:
        return ResultCode.INVALID_ARGUMENT, "velocity and acceleration must be >= 0"
    base = tr.target[s] if (tr.mode[s] == POSITION and not tr.done[s]) else tr.pos[s]
    target = base + cmd.args[0] if relative else cmd.args[0]
    if target < p.pmin[s]:
        return ResultCode.INVALID_ARGUMENT, f"target {target:g} below soft limit min_pos {p.pmin[s]:g}"
    if target > p.pmax[s]:
        return ResultCode.INVALID_ARGUMENT, f"target {target:g} above soft limit max_pos {p.pmax[s]:g}"
    r = _direction_ok(core, s, target - core.pos[s])
    if r:
        return r
    _start(core, s, cmd.args[1], cmd.args[2])
    tr.mode[s] = POSITION
    tr.target[s] = target
    return OK, f"axis {s + 1}: move to {target:g} started"


def _move_rel(core, cmd, source, now) -> Result:
    return _move_abs(core, cmd, source, now, relative=True)


def _move_vel(core, cmd, source, now) -> Result:
    s = _motion_prelude(core, cmd, source, C.MOVE_VELOCITY)
    if isinstance(s, tuple):
        return s
    v = cmd.args[0]
    if cmd.args[1] < 0:
        return ResultCode.INVALID_ARGUMENT, "acceleration must be >= 0"
    r = _direction_ok(core, s, v)
    if r:
        return r
    _start(core, s, 0.0, cmd.args[1])
    core.traj.mode[s] = VELOCITY
    core.traj.target_vel[s] = v
    return OK, f"axis {s + 1}: velocity {v:g} started"


def _jog(core, cmd, source, now) -> Result:
    code = C(cmd.code)
    s = _motion_prelude(core, cmd, source, code)
    if isinstance(s, tuple):
        return s
    if cmd.args[0] < 0:
        return ResultCode.INVALID_ARGUMENT, "jog speed must be >= 0"
    direction = 1.0 if code == C.JOG_POSITIVE else -1.0
    r = _direction_ok(core, s, direction)
    if r:
        return r
    speed = cmd.args[0] if cmd.args[0] > 0 else JOG_DEFAULT_FRACTION * core.p.vmax[s]
    _start(core, s, 0.0, 0.0)
    core.traj.mode[s] = VELOCITY
    core.traj.target_vel[s] = direction * speed
    return OK, f"axis {s + 1}: jog {'+' if direction > 0 else '-'} at {speed:g}"


def _jog_stop(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    r = _lock(core, slots, source, take=False)
    if r:
        return r
    for s in slots:
        if core.traj.mode[s] == VELOCITY and core.ax.homing_phase[s] == 0 and not core.ax.shifting[s]:
            core.stop_axis(s)
    return OK, "jog stopped"


def _stop(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    for s in slots:
        if core.ax.power[s] in (PS.STANDBY, PS.MOTION):
            core.stop_axis(s)
    return OK, "stopping" if cmd.axis == 0 else f"axis {cmd.axis}: stopping"


def _estop(core, cmd, source, now) -> Result:
    safety.trigger_safety_stop(core, now, f"EmergencyStop command from {source.name}")
    return OK, "safety stop triggered"


def _enable(core, cmd, source, now) -> Result:
    m = core.m
    if m.safety == SafetyState.SAFETY_STOP:
        return ResultCode.SAFETY, "safety stop active: reset required"
    if m.state not in MOTION_STATES:
        return ResultCode.STATE_FORBIDS, f"machine is {m.state.name}"
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    ax = core.ax
    for s in slots:
        if not core.guard_closed[s] and not (m.state == MachineState.SERVICE and core.p.bypass[s]):
            return ResultCode.SAFETY, f"axis {s + 1}: guard open"
        if core.fault[s]:
            return ResultCode.STATE_FORBIDS, f"axis {s + 1}: drive fault"
        if blocking(ax)[s] or ax.power[s] in (PS.POWER_ERROR, PS.NO_BRAKE):
            return ResultCode.STATE_FORBIDS, f"axis {s + 1} in error: reset first"
        if ax.power[s] == PS.POWERING_OFF:
            return ResultCode.STATE_FORBIDS, f"axis {s + 1} is powering off"
    r = _lock(core, slots, source, take=False)
    if r:
        return r
    started = 0
    for s in slots:
        if ax.power[s] == PS.POWER_OFF:
            start_power_on(ax, s, now)
            started += 1
    return OK, f"power-on started ({started} axes)" if started else "already enabled"


def _disable(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    r = _lock(core, slots, source, take=False)
    if r:
        return r
    ax, p = core.ax, core.p
    for s in slots:
        for sl in core.cpl.slaves_of(s):
            coupling.decouple(core, int(sl), by_command=False)
        pw = ax.power[s]
        if pw == PS.POWERING_ON:
            torque_off(ax, s)
        elif pw in (PS.STANDBY, PS.MOTION):
            core.stop_axis(s)
            start_power_off(ax, s, now, float(p.sto_delay[s]) if p.has_brake[s] else 0.0)
    return OK, "power-off started"


def _set_mode(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    s = slots[0]
    try:
        mode = OperationalMode(cmd.pin)
    except ValueError:
        return ResultCode.INVALID_ARGUMENT, f"unknown mode {cmd.pin}"
    if not core.at_rest()[s] or core.ax.power[s] == PS.MOTION:
        return ResultCode.STATE_FORBIDS, "mode changes only at standstill"
    r = _lock(core, slots, source, take=False)
    if r:
        return r
    core.ax.mode[s] = mode
    return OK, f"axis {s + 1}: mode {mode.name}"


def _couple(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    s = slots[0]
    master = cmd.pin - 1 if cmd.pin else int(core.p.master[s])
    if master < 0 or master >= core.n:
        return ResultCode.INVALID_ARGUMENT, "no master axis given or configured"
    ratio = cmd.args[0] if cmd.args[0] != 0 else (float(core.p.ratio[s]) if core.p.master[s] >= 0 else 1.0)
    r = _lock(core, [s, master], source)
    if r:
        return r
    ok, msg = coupling.couple(core, s, master, ratio)
    return (OK if ok else ResultCode.STATE_FORBIDS), msg


def _decouple(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    r = _lock(core, slots, source)
    if r:
        return r
    ok, msg = coupling.decouple(core, slots[0])
    return (OK if ok else ResultCode.STATE_FORBIDS), msg


def _gear(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    s = slots[0]
    if not 0 <= cmd.pin <= 4:
        return ResultCode.INVALID_ARGUMENT, f"gear {cmd.pin} (expected 0 = neutral, 1..4)"
    r = _machine_allows_motion(core, source)
    if r:
        return r
    ax = core.ax
    if ax.power[s] != PS.STANDBY or not core.at_rest()[s]:
        return ResultCode.STATE_FORBIDS, "gear change only enabled and at standstill"
    if blocking(ax)[s] or ax.homing_phase[s] or ax.shifting[s] or core.cpl.master[s] >= 0:
        return ResultCode.STATE_FORBIDS, f"axis {s + 1} busy or in error"
    r = _lock(core, slots, source)
    if r:
        return r
    if ax.gearbox[s] == GearboxState.GEARBOX_ERROR:
        ax.gearbox[s] = GearboxState.UNKNOWN
    return OK, coupling.start_gear_change(core, s, cmd.pin, now)


def _allow_manual(core, cmd, source, now) -> Result:
    m = core.m
    m.manual_allowed = cmd.args[0] != 0
    m.manual_t = now
    if not m.manual_allowed and m.state == MachineState.MANUAL:
        for s in np.flatnonzero(core.p.configured):
            if core.ax.power[s] == PS.MOTION:
                core.stop_axis(int(s))
        m.state = MachineState.IDLE
    return OK, "manual mode allowed" if m.manual_allowed else "manual mode not allowed"


def _home(core, cmd, source, now) -> Result:
    s = _motion_prelude(core, cmd, source, C.HOME)
    if isinstance(s, tuple):
        return s
    ok, why = homing.can_home(core, s)
    if not ok:
        return ResultCode.STATE_FORBIDS, why
    return OK, f"axis {s + 1}: " + homing.start(core, s, now)


def _reset(core, cmd, source, now) -> Result:
    if cmd.axis == 0:
        ok, msg = safety.reset_machine(core, now)
        return (OK if ok else ResultCode.SAFETY), msg
    slots = _axes(core, cmd, allow_all=False)
    if isinstance(slots, tuple):
        return slots
    ok, msg = safety.reset_axis(core, slots[0])
    return (OK if ok else ResultCode.STATE_FORBIDS), f"axis {cmd.axis}: {msg}"


def _set_machine_state(core, cmd, source, now) -> Result:
    m = core.m
    try:
        want = MachineState(cmd.pin)
    except ValueError:
        return ResultCode.INVALID_ARGUMENT, f"unknown machine state {cmd.pin}"
    if want == m.state:
        return OK, f"machine already {want.name}"
    if want in (MachineState.STARTING, MachineState.SYSTEM_ERROR):
        return ResultCode.INVALID_ARGUMENT, f"{want.name} cannot be requested"
    if m.state in (MachineState.SYSTEM_ERROR, MachineState.STARTING):
        return ResultCode.STATE_FORBIDS, f"machine is {m.state.name}"
    if m.safety == SafetyState.SAFETY_STOP and want not in (MachineState.IDLE, MachineState.STOPPED):
        return ResultCode.SAFETY, "safety stop active: reset required"
    if not core.all_standstill():
        return ResultCode.STATE_FORBIDS, "machine state changes only at standstill"
    if want == MachineState.MANUAL:
        if not m.manual_allowed:
            return ResultCode.STATE_FORBIDS, "manual mode not allowed (AllowManualMode first)"
        m.manual_t = now
        m.errors &= ~MachineError.MANUAL_TIMEOUT
    if want in (MachineState.ACTIVE, MachineState.MANUAL, MachineState.SERVICE) and m.state != MachineState.IDLE:
        return ResultCode.STATE_FORBIDS, f"{want.name} only from IDLE (machine is {m.state.name})"
    if want == MachineState.STOPPED:
        for s in np.flatnonzero(core.p.configured):
            if core.ax.power[s] != PS.POWER_OFF:
                torque_off(core.ax, int(s)) if core.ax.power[s] == PS.POWERING_ON else \
                    start_power_off(core.ax, int(s), now, float(core.p.sto_delay[s]) if core.p.has_brake[s] else 0.0)
                core.traj.mode[s] = HOLD
    m.stopped_by_command = want == MachineState.STOPPED
    m.state = want
    return OK, f"machine {want.name}"


def _acquire(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    r = _lock(core, slots, source, explicit=True)
    return r or (OK, f"lock held by {source.name}")


def _release(core, cmd, source, now) -> Result:
    slots = _axes(core, cmd, allow_all=True)
    if isinstance(slots, tuple):
        return slots
    for s in slots:
        if core.ax.lock[s] not in (CommandSource.NONE, source):
            if cmd.axis != 0:
                return ResultCode.LOCKED, f"axis {s + 1} is locked by {CommandSource(int(core.ax.lock[s])).name}"
            continue
        core.ax.lock[s] = CommandSource.NONE
        core.ax.lock_explicit[s] = False
    return OK, "lock released"


def _reload_unsupported(core, cmd, source, now) -> Result:
    return ResultCode.INTERNAL, "reload is handled by the cycle runner"


_HANDLERS = {
    C.NOP: _nop, C.MOVE_ABSOLUTE: _move_abs, C.MOVE_RELATIVE: _move_rel, C.MOVE_VELOCITY: _move_vel,
    C.HOME: _home, C.STOP: _stop, C.EMERGENCY_STOP: _estop, C.ENABLE_AXIS: _enable, C.DISABLE_AXIS: _disable,
    C.SET_MODE: _set_mode, C.COUPLE: _couple, C.DECOUPLE: _decouple, C.GEAR_CHANGE: _gear,
    C.ALLOW_MANUAL_MODE: _allow_manual, C.JOG_POSITIVE: _jog, C.JOG_NEGATIVE: _jog, C.JOG_STOP: _jog_stop,
    C.RESET_ERROR: _reset, C.SET_MACHINE_STATE: _set_machine_state, C.ACQUIRE_LOCK: _acquire,
    C.RELEASE_LOCK: _release, C.RELOAD_CONFIG: _reload_unsupported,
}
