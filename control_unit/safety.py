"""Safety: E-stop, safety gate, guards, limit switches, reduced speed, drive faults, HAL
heartbeat, lag-error policies, and the per-axis safe stops STO / SS1 / SS2 with brake timing.

SafetyStop is left only by an operator reset (RESET_ERROR or the Reset button) with healthy inputs.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from common.config import roles as R
from common.states import (
    AXIS_ERROR_TEXT,
    AxisError,
    MachineError,
    MachineState,
    SafetyState,
)

from .machines import nz, PS, SSC, start_power_off, torque_off
from .params import Lag

MST = SimpleNamespace(**{m.name: m for m in MachineState})  # fast member access (hot path)
SST = SimpleNamespace(**{m.name: m for m in SafetyState})
from .trajectory import HOLD

if TYPE_CHECKING:
    from .core import ControlCore

log = logging.getLogger(__name__)
_STO, _SS1, _SS2 = int(SSC.STO), int(SSC.SS1), int(SSC.SS2)
_U64 = np.uint64


def axis_text(err: AxisError) -> str:
    return AXIS_ERROR_TEXT.get(err, err.name or str(int(err)))


def unhealthy(core: "ControlCore") -> list[str]:
    """Reasons a SafetyStop cannot be reset now (empty = inputs healthy)."""
    out = []
    if not core.hal_ok:
        out.append("HAL segment missing" if core.hal_missing else "HAL heartbeat stale")
    if core.role(R.ESTOP):
        out.append("E-stop still pressed")
    if core.role(R.SAFETY_GATE):
        out.append("safety gate interrupted")
    return out


def evaluate(core: "ControlCore", now: float) -> None:
    """Read the safety inputs of this cycle and trigger stops; edge-triggered where latched."""
    m, ax, p = core.m, core.ax, core.p
    if not core.hal_ok and not core.hal_seen:
        return  # the HAL has not started cycling yet: stay Stopped, nothing to protect
    if not core.hal_ok:
        flag = MachineError.HAL_MISSING if core.hal_missing else MachineError.HAL_STALE
        if not m.errors & flag:
            m.errors |= flag
            log.error("%s: safety stop, all axes torque off", "HAL segment missing" if core.hal_missing
                      else "HAL heartbeat stale")
        m.force_sto = True
        if m.state not in (MST.STOPPED,):
            m.state = MST.SYSTEM_ERROR
        trigger_safety_stop(core, now, "HAL lost" if not core.hal_missing else "HAL missing")
        return
    estop = core.role(R.ESTOP)
    m.estop = estop
    if m.state == MST.STARTING or (m.state == MST.STOPPED and not core.hal_seen):
        return  # inputs still settling; no axis can be powered before Idle
    if estop and not m.errors & MachineError.ESTOP:
        m.errors |= MachineError.ESTOP
        trigger_safety_stop(core, now, "E-stop pressed")
    if core.role(R.SAFETY_GATE):
        trigger_safety_stop(core, now, "safety gate interrupted")
    reset_btn = core.role(R.RESET)
    if reset_btn and not core._prev_reset_btn:
        ok, msg = reset_machine(core, now)
        log.info("Reset button: %s", msg)
    core._prev_reset_btn = reset_btn
    m.reduced = core.role(R.REDUCED_SPEED)
    if m.safety != SST.SAFETY_STOP:
        m.safety = SST.SAFE_REDUCED_SPEED if m.reduced else SST.SAFE
    # auto-recovery when no authorization is required
    if m.safety == SST.SAFETY_STOP and not core.cfg.machine.global_safety.recovery_authorization_required \
            and not m.reset_required and not unhealthy(core) and core.all_standstill():
        _clear_safety_stop(core)
    # drive faults: STO of the axis (each rare path below is skipped by one count)
    if nz(core.fault):
        powered = (ax.power != PS.POWER_OFF) & (ax.power != PS.POWER_ERROR)
        faulted = core.fault & p.configured
        new_fault = faulted & ((ax.errors & _U64(AxisError.DRIVE_FAULT)) == 0)
        for s in np.flatnonzero(new_fault | (faulted & powered)):
            core.set_error(int(s), AxisError.DRIVE_FAULT, stop=False)
            torque_off(ax, int(s))
            ax.power[s] = PS.POWER_ERROR
    # guards (service mode bypasses the guards of bypass axes, at service speed)
    if nz(core.guard_closed) != len(core.guard_closed):
        open_ = ~core.guard_closed & ~((m.state == MST.SERVICE) & p.bypass)
        moving = (ax.power == PS.MOTION) | ~core.at_rest() | (ax.power == PS.POWERING_ON)
        for s in np.flatnonzero(open_ & moving & p.configured):
            core.set_error(int(s), AxisError.GUARD_OPEN, stop=False)
            apply_safe_stop(core, int(s), int(p.guard_cat[s]) or _SS1, now)
    # limit switches: moving toward an active one (or reaching it) stops the axis
    if nz(core.lim_min) or nz(core.lim_max):
        homing_lim = (ax.homing_phase > 0) & (p.homing_kind == 1)
        vel = core.traj.vel
        hit_min = core.lim_min & (vel < 0.0) & ~(homing_lim & (p.homing_dir < 0)) & ax.ctrl_on
        hit_max = core.lim_max & (vel > 0.0) & ~(homing_lim & (p.homing_dir > 0)) & ax.ctrl_on
        for s in np.flatnonzero(hit_min):
            core.set_error(int(s), AxisError.LIMIT_MIN)
            core.stop_axis(int(s), quick=True)
        for s in np.flatnonzero(hit_max):
            core.set_error(int(s), AxisError.LIMIT_MAX)
            core.stop_axis(int(s), quick=True)


def refresh_reference_flags(core: "ControlCore") -> None:
    """NOT_REFERENCED (informational) follows `referenced`; recomputed only when that changes."""
    ax, p = core.ax, core.p
    if nz(ax.referenced != core._ref_seen):
        core._ref_seen[:] = ax.referenced
        nref = p.needs_ref & ~ax.referenced & p.configured
        ax.errors[:] = np.where(nref, ax.errors | _U64(AxisError.NOT_REFERENCED),
                                ax.errors & _U64(~int(AxisError.NOT_REFERENCED) & ((1 << 64) - 1)))


def trigger_safety_stop(core: "ControlCore", now: float, reason: str) -> None:
    """Machine-wide SafetyStop: every axis executes its configured stop category (STO when the
    HAL is lost: no feedback to ramp on)."""
    m = core.m
    first = m.safety != SST.SAFETY_STOP
    if first:
        m.safety = SST.SAFETY_STOP
        m.safety_stop_t = now
        m.message = f"safety stop: {reason}"
        log.warning("SAFETY STOP: %s", reason)
    p = core.p
    for s in np.flatnonzero(p.configured):
        cat = _STO if m.force_sto else int(p.stop_cat[s])
        apply_safe_stop(core, int(s), cat, now)


def apply_safe_stop(core: "ControlCore", s: int, cat: int, now: float) -> None:
    """Start safe stop `cat` on axis slot s unless a stronger one is already in force
    (STO > SS1 > SS2)."""
    ax = core.ax
    cur = int(ax.safe_stop[s])
    if cur != 0 and cur <= cat:
        return
    ax.safe_stop[s] = cat
    ax.safe_stop_t[s] = now
    core.home.cancel(ax, s)
    core.gear.cancel(ax, s)
    pw = ax.power[s]
    if pw in (PS.POWER_OFF, PS.POWER_ERROR, PS.NO_BRAKE):
        return
    if cat == _STO or pw == PS.POWERING_ON or not core.hal_ok:
        torque_off(ax, s)
        return
    core.traj.mode[s] = HOLD
    ax.quick[s] = True
    ax.stopping[s] = True
    if cat == _SS1:
        if pw != PS.POWERING_OFF:
            start_power_off(ax, s, now, float(core.p.sto_delay[s]))
        else:
            ax.off_delay[s] = float(core.p.sto_delay[s])
    elif pw == PS.MOTION:
        ax.power[s] = PS.STANDBY


def step_safe_stops(core: "ControlCore", now: float) -> None:
    """STO for any axis whose safe-stop ramp is not at rest after safety_stop_timeout."""
    ax = core.ax
    if not nz(ax.safe_stop):
        return
    active = ax.safe_stop != 0
    rest = core.at_rest()
    timeout = core.cfg.machine.global_safety.safety_stop_timeout
    late = active & ~rest & (now - ax.safe_stop_t > timeout) & ax.ctrl_on
    for s in np.flatnonzero(late):
        log.error("axis %d: safe stop not at rest after %.1f s: STO", s + 1, timeout)
        ax.safe_stop[s] = _STO
        torque_off(ax, int(s))


def hold_ss2(core: "ControlCore", rest: np.ndarray) -> None:
    """SS2 axes at rest hold their position with at most ss2_holding_torque."""
    ax = core.ax
    if nz(ax.safe_stop):
        ss2 = (ax.safe_stop == _SS2) & rest
        ax.torque_limit[ss2] = core.p.ss2_torque[ss2]


def monitor_lag(core: "ControlCore") -> None:
    """Lag error beyond lag_error_limit acts by lag_policy (Critical: safety stop; Unwanted: axis
    error and stop; Neutral: warning flag; Desired: ignored)."""
    ax, p = core.ax, core.p
    over = np.abs(ax.lag) > p.lag_limit
    if not nz(over):
        return
    watched = ax.ctrl_on & ((ax.power == PS.STANDBY) | (ax.power == PS.MOTION)) \
        & ~((ax.homing_phase > 0) & (p.homing_kind == 2))
    over &= watched & (p.lag_policy != Lag.DESIRED)
    if not nz(over):
        return
    for s in np.flatnonzero(over):
        s = int(s)
        pol = int(p.lag_policy[s])
        if pol == Lag.NEUTRAL:
            if not int(ax.errors[s]) & AxisError.LAG_WARNING:
                core.set_error(s, AxisError.LAG_WARNING, stop=False)
            continue
        if int(ax.errors[s]) & AxisError.LAG_ERROR:
            continue
        core.set_error(s, AxisError.LAG_ERROR, stop=pol == Lag.UNWANTED)
        if pol == Lag.CRITICAL:
            core.m.errors |= MachineError.LAG_CRITICAL
            trigger_safety_stop(core, core.now, f"critical lag error on axis {s + 1}")


def _clear_safety_stop(core: "ControlCore") -> None:
    m, ax = core.m, core.ax
    m.safety = SST.SAFE_REDUCED_SPEED if m.reduced else SST.SAFE
    m.force_sto = False
    m.reset_required = False
    m.errors &= ~(MachineError.ESTOP | MachineError.HAL_STALE | MachineError.HAL_MISSING | MachineError.LAG_CRITICAL)
    ax.safe_stop[:] = 0
    ax.torque_limit[:] = np.inf
    ax.quick[:] = False
    if m.state == MST.SYSTEM_ERROR:
        m.state = MST.IDLE
    m.message = "safety stop reset"
    log.info("safety stop reset")


def reset_machine(core: "ControlCore", now: float) -> tuple[bool, str]:
    """Operator reset of the machine and every axis. Refused while inputs are unhealthy."""
    m = core.m
    bad = unhealthy(core)
    if bad:
        return False, "reset refused: " + "; ".join(bad)
    if m.safety == SST.SAFETY_STOP:
        _clear_safety_stop(core)
    if m.state == MST.SYSTEM_ERROR:
        m.state = MST.IDLE
    m.errors &= ~(MachineError.CYCLE_OVERRUN | MachineError.CONFIG_RELOAD_FAILED | MachineError.MANUAL_TIMEOUT
                  | MachineError.RE_LOST | MachineError.LAG_CRITICAL)
    refused = []
    for s in np.flatnonzero(core.p.configured):
        ok, why = reset_axis(core, int(s))
        if not ok:
            refused.append(f"axis {s + 1}: {why}")
    if refused:
        return True, "reset done; still faulted: " + "; ".join(refused)
    m.message = "reset done"
    return True, "reset done"


def reset_axis(core: "ControlCore", s: int) -> tuple[bool, str]:
    """Clear the latched errors of one axis; PowerError/NoBrake -> PowerOff when the drive is ok."""
    ax = core.ax
    if core.m.safety == SST.SAFETY_STOP:
        return False, "safety stop active: reset the machine (axis 0)"
    if core.fault[s]:
        return False, "drive still reports a fault"
    if not core.guard_closed[s]:
        return False, "guard still open"
    ax.errors[s] = ax.errors[s] & _U64(int(AxisError.NOT_REFERENCED))
    ax.safe_stop[s] = 0
    ax.torque_limit[s] = np.inf
    if ax.power[s] in (PS.POWER_ERROR, PS.NO_BRAKE):
        ax.power[s] = PS.POWER_OFF
    core.cpl.reset_axis(core, s)
    return True, "axis reset"
