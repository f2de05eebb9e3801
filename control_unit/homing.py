"""Homing sequencer: HomeSensor, LimitSwitch, TorqueLimit (HardStop), IndexPulse, Absolute and
NoHoming, with approach direction, speed and timeout. Runs only for axes that are homing.

The reference is the HAL's coordinate frame: homing finds the reference event and marks the
axis referenced (the CU applies no offset of its own).
"""
from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import numpy as np

from common.states import AxisError

from .kernels import step as K

# TorqueLimit: at the stop when |torque| >= TORQUE_DETECT_FRACTION of torque_limit and the axis is
# still (below STILL_SPEED_FRACTION of the homing speed) for TORQUE_DETECT_S; sensor edges are met
# at CREEP_FRACTION of the homing speed (accuracy). Values shared with the compiled cycle.
from .kernels.step import (
    CREEP_FRACTION,
    STILL_SPEED_FRACTION,
    TORQUE_DETECT_FRACTION,
    TORQUE_DETECT_S,
    Store,
)
from .machines import PS, nz
from .params import UNREFERENCED_SPEED_FRACTION, HomingKind
from .trajectory import HOLD, POSITION, VELOCITY

if TYPE_CHECKING:
    from .core import ControlCore
    from .machines import AxisStates

log = logging.getLogger(__name__)



class Phase(enum.IntEnum):
    IDLE = 0
    CLEAR = 1  # move off a sensor that is already active
    SEARCH = 2  # approach until the reference event
    SETTLE = 3  # stop, go back to the edge / stay at the stop
    BACKOFF = 4  # LimitSwitch: leave the switch slowly


class HomingState:
    def __init__(self, n: int, store: Store | None = None) -> None:
        st = store if store is not None else Store(n)
        self.creep = st.b[K.B_H_CREEP]  # second, slow approach in progress
        self.t0 = st.f[K.F_H_T0]
        self.t_still = st.f[K.F_H_T_STILL]
        self.edge = st.f[K.F_H_EDGE]

    def cancel(self, ax: "AxisStates", s: int) -> None:
        ax.homing_phase[s] = Phase.IDLE


def can_home(core: "ControlCore", s: int) -> tuple[bool, str]:
    """Whether the HOME command can run (inputs present); the reason when not."""
    p = core.p
    kind = HomingKind(int(p.homing_kind[s]))
    if kind == HomingKind.HOME_SENSOR and p.pin_ref[s] >= 1024:
        return False, f"HomeSensor homing needs di role Ref{s + 1} in io.toml"
    if kind == HomingKind.LIMIT_SWITCH:
        pin = p.pin_limit_min[s] if p.homing_dir[s] < 0 else p.pin_limit_max[s]
        if pin >= 1024:
            return False, f"LimitSwitch homing needs di role Limit{'Min' if p.homing_dir[s] < 0 else 'Max'}{s + 1}"
    if kind == HomingKind.INDEX_PULSE and p.pin_index[s] >= 1024:
        return False, f"IndexPulse homing needs di role Index{s + 1} (encoder index) in io.toml"
    if kind == HomingKind.ABSOLUTE and not core.drive_ref[s]:
        return False, "absolute encoder reports no valid position"
    if p.homing_speed[s] <= 0 and kind not in (HomingKind.ABSOLUTE, HomingKind.NO_HOMING):
        return False, "homing speed is 0"
    return True, ""


def start(core: "ControlCore", s: int, now: float) -> str:
    """Begin homing axis slot s (the caller checked power, errors and locks). Returns the ack text."""
    p, ax = core.p, core.ax
    kind = HomingKind(int(p.homing_kind[s]))
    if kind == HomingKind.NO_HOMING:
        return "axis has no homing (NoHoming): nothing to do"
    if kind == HomingKind.ABSOLUTE:
        return "absolute encoder: axis referenced"
    ax.referenced[s] = False
    core.home.t0[s] = now
    core.home.t_still[s] = now
    core.home.creep[s] = False
    core.begin_motion(s)
    ax.cmd_v[s] = np.inf
    ax.cmd_a[s] = np.inf
    sensor_active = (kind == HomingKind.HOME_SENSOR and core.ref_in[s]) or (
        kind == HomingKind.LIMIT_SWITCH and (core.lim_min[s] if p.homing_dir[s] < 0 else core.lim_max[s]))
    if sensor_active:
        _velocity(core, s, -p.homing_dir[s])
        ax.homing_phase[s] = Phase.CLEAR
    else:
        _velocity(core, s, p.homing_dir[s])
        ax.homing_phase[s] = Phase.SEARCH
    if kind == HomingKind.TORQUE_LIMIT:
        ax.torque_limit[s] = p.homing_torque[s]
    return f"homing ({kind.name}) started"


def _speed(core: "ControlCore", s: int) -> float:
    p = core.p
    return float(min(p.homing_speed[s], UNREFERENCED_SPEED_FRACTION * p.vmax[s]))


def _velocity(core: "ControlCore", s: int, direction: float, fraction: float = 1.0) -> None:
    tr = core.traj
    tr.mode[s] = VELOCITY
    tr.target_vel[s] = direction * _speed(core, s) * fraction


def _finish(core: "ControlCore", s: int, target: float | None) -> None:
    ax, tr = core.ax, core.traj
    ax.homing_phase[s] = Phase.SETTLE
    if target is None:
        tr.mode[s] = HOLD
    else:
        tr.mode[s] = POSITION
        tr.target[s] = target


def _fail(core: "ControlCore", s: int, err: AxisError) -> None:
    core.ax.torque_limit[s] = np.inf
    core.set_error(s, err)  # stops the axis and cancels homing


def step(core: "ControlCore", now: float) -> None:
    ax = core.ax
    if not nz(ax.homing_phase):
        return
    active = np.flatnonzero(ax.homing_phase)
    p, tr, st = core.p, core.traj, core.home
    for s in active:
        s = int(s)
        if ax.power[s] not in (PS.STANDBY, PS.MOTION):
            ax.homing_phase[s] = Phase.IDLE
            continue
        kind = int(p.homing_kind[s])
        ph = int(ax.homing_phase[s])
        d = p.homing_dir[s]
        if now - st.t0[s] > p.homing_timeout[s]:
            _fail(core, s, AxisError.HOMING_TIMEOUT)
            continue
        if kind == HomingKind.HOME_SENSOR:
            # fast approach to the cam, back off it, then creep onto its edge for accuracy
            if ph == Phase.CLEAR and not core.ref_in[s]:
                ax.homing_phase[s] = Phase.SEARCH
                _velocity(core, s, d, CREEP_FRACTION if st.creep[s] else 1.0)
            elif ph == Phase.SEARCH and core.ref_in[s]:
                if st.creep[s]:
                    st.edge[s] = core.pos[s]
                    _finish(core, s, float(core.pos[s]))
                else:
                    st.creep[s] = True
                    ax.homing_phase[s] = Phase.CLEAR
                    _velocity(core, s, -d, CREEP_FRACTION)
        elif kind == HomingKind.LIMIT_SWITCH:
            on = core.lim_min[s] if d < 0 else core.lim_max[s]
            if ph == Phase.CLEAR and not on:
                ax.homing_phase[s] = Phase.SEARCH
                _velocity(core, s, d)
            elif ph == Phase.SEARCH and on:
                ax.homing_phase[s] = Phase.BACKOFF
                _velocity(core, s, -d, CREEP_FRACTION)
            elif ph == Phase.BACKOFF and not on:
                st.edge[s] = core.pos[s]
                _finish(core, s, None)
        elif kind == HomingKind.TORQUE_LIMIT:
            if ph == Phase.SEARCH:
                still = abs(core.vel[s]) < STILL_SPEED_FRACTION * max(_speed(core, s), 1e-9)
                pushing = abs(core.torque[s]) >= TORQUE_DETECT_FRACTION * p.homing_torque[s]
                if not (still and pushing):
                    st.t_still[s] = now
                elif now - st.t_still[s] >= TORQUE_DETECT_S:
                    st.edge[s] = core.pos[s]
                    core.zero_controller(_mask(core.n, s))  # set-point := the stop, no wind-up
                    ax.torque_limit[s] = np.inf
                    _finish(core, s, None)
        elif kind == HomingKind.INDEX_PULSE:
            if ph == Phase.SEARCH and core.index_in[s]:
                st.edge[s] = core.pos[s]
                _finish(core, s, None)
        if int(ax.homing_phase[s]) == Phase.SETTLE and tr.done[s] and tr.vel[s] == 0.0:
            ax.homing_phase[s] = Phase.IDLE
            ax.referenced[s] = True
            log.info("axis %d homed (%s) at %.4f", s + 1, HomingKind(kind).name, st.edge[s])


def _mask(n: int, s: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[s] = True
    return m
