"""Master/slave coupling (slave set-point = ratio * master set-point + offset captured at
coupling, sync error watched against max_sync_error) and gearbox changes with gear-assist motion.

Configured couplings ([coupling] in the axis file) engage when both axes are in Standby.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from common.states import AxisError, CouplingState, GearboxState

from .kernels import step as K
from .kernels.step import (  # wiggle half-period, fraction of vmax
    GEAR_ASSIST_S,
    GEAR_ASSIST_SPEED,
    Store,
)
from .machines import PS, blocking, nz
from .params import AxisParams
from .trajectory import HOLD, POSITION, VELOCITY

if TYPE_CHECKING:
    from .core import ControlCore
    from .machines import AxisStates

log = logging.getLogger(__name__)

_POWERED = (PS.STANDBY, PS.MOTION)


class CouplingRuntime:
    """Active couplings: master slot (-1 none), ratio and offset per slave slot."""

    def __init__(self, p: AxisParams, store: Store | None = None) -> None:
        st = store if store is not None else Store(p.n)
        self.master = st.master
        self.ratio = st.f[K.F_C_RATIO]
        self.ratio.fill(1.0)
        self.offset = st.f[K.F_C_OFFSET]
        self.manual_off = st.b[K.B_C_MANUAL_OFF]  # decoupled by command: no auto-coupling
        self.configured = np.flatnonzero(p.master >= 0)
        self._si = st.si

    @property
    def active(self) -> int:
        """Number of coupled slaves."""
        return int(self._si[K.SI_CPL_ACTIVE])

    @active.setter
    def active(self, value: int) -> None:
        self._si[K.SI_CPL_ACTIVE] = value

    def slaves_of(self, m: int) -> np.ndarray:
        return np.flatnonzero(self.master == m)

    def reset_axis(self, core: "ControlCore", s: int) -> None:
        if core.ax.coupling[s] == CouplingState.SYNC_LOST:
            core.ax.coupling[s] = CouplingState.SYNCHRONIZED


def couple(core: "ControlCore", slave: int, master: int, ratio: float) -> tuple[bool, str]:
    ax, cpl = core.ax, core.cpl
    if slave == master:
        return False, "an axis cannot follow itself"
    if not core.p.configured[master]:
        return False, f"master axis {master + 1} is not configured"
    if cpl.master[master] >= 0:
        return False, f"axis {master + 1} is itself a slave"
    if cpl.slaves_of(slave).size:
        return False, f"axis {slave + 1} is a master of other axes"
    for s in (slave, master):
        if ax.power[s] != PS.STANDBY or not core.at_rest()[s]:
            return False, f"axis {s + 1} must be enabled and at standstill"
    cpl.master[slave] = master
    cpl.active = int(nz(cpl.master >= 0))
    cpl.ratio[slave] = ratio
    cpl.offset[slave] = core.traj.pos[slave] - ratio * core.traj.pos[master]
    cpl.manual_off[slave] = False
    ax.coupling[slave] = CouplingState.SYNCHRONIZED
    ax.coupling[master] = CouplingState.MASTER
    log.info("axis %d coupled to master %d (ratio %g)", slave + 1, master + 1, ratio)
    return True, f"axis {slave + 1} coupled to axis {master + 1} (ratio {ratio:g})"


def decouple(core: "ControlCore", slave: int, by_command: bool = True) -> tuple[bool, str]:
    ax, cpl = core.ax, core.cpl
    m = int(cpl.master[slave])
    if m < 0:
        return True, f"axis {slave + 1} was not coupled"
    if by_command and not (core.at_rest()[slave] and core.at_rest()[m]):
        return False, "decouple only at standstill"
    cpl.master[slave] = -1
    cpl.active = int(nz(cpl.master >= 0))
    cpl.manual_off[slave] = by_command
    ax.coupling[slave] = CouplingState.UNCOUPLED
    core.traj.target[slave] = core.traj.pos[slave]
    core.traj.mode[slave] = HOLD
    if cpl.slaves_of(m).size == 0:
        ax.coupling[m] = CouplingState.UNCOUPLED
    return True, f"axis {slave + 1} decoupled"


def follow(core: "ControlCore") -> None:
    """Slaves take the master's set-point (after the trajectory step); auto-couple configured
    pairs; a master that loses power or errs takes its slaves down with a flag."""
    cpl, ax, tr, p = core.cpl, core.ax, core.traj, core.p
    for s in cpl.configured:
        if cpl.master[s] < 0 and not cpl.manual_off[s]:
            m = int(p.master[s])
            if ax.power[s] == PS.STANDBY and ax.power[m] == PS.STANDBY \
                    and core.at_rest()[s] and core.at_rest()[m] and ax.homing_phase[s] == 0:
                couple(core, int(s), m, float(p.ratio[s]))
    if not cpl.active:
        return
    slaves = np.flatnonzero(cpl.master >= 0)
    ms = cpl.master[slaves]
    r = cpl.ratio[slaves]
    tr.pos[slaves] = r * tr.pos[ms] + cpl.offset[slaves]
    tr.vel[slaves] = r * tr.vel[ms]
    tr.acc[slaves] = r * tr.acc[ms]
    tr.target[slaves] = r * tr.target[ms] + cpl.offset[slaves]
    tr.done[slaves] = tr.done[ms]
    tr.mode[slaves] = HOLD
    for s, m in zip(slaves, ms):
        s, m = int(s), int(m)
        if ax.power[m] not in _POWERED or ax.power[s] not in _POWERED:
            bad = m if ax.power[m] not in _POWERED else s
            if ax.power[m] in _POWERED:
                core.stop_axis(m, quick=True)
            if bad == m:
                core.set_error(s, AxisError.MASTER_FAULT, stop=False)
            decouple(core, s, by_command=False)
            cpl.manual_off[s] = True
            continue
        # slave power mirrors the master's motion
        ax.power[s] = PS.MOTION if ax.power[m] == PS.MOTION else PS.STANDBY


def monitor_sync(core: "ControlCore") -> None:
    cpl, ax = core.cpl, core.ax
    if not cpl.active:
        return
    slaves = np.flatnonzero(cpl.master >= 0)
    ms = cpl.master[slaves]
    err = np.abs(core.pos[slaves] - (cpl.ratio[slaves] * core.pos[ms] + cpl.offset[slaves]))
    bad = err > core.p.max_sync[slaves]
    for s, m, b in zip(slaves, ms, bad):
        if b and ax.coupling[s] != CouplingState.SYNC_LOST:
            ax.coupling[s] = CouplingState.SYNC_LOST
            core.set_error(int(s), AxisError.SYNC_ERROR, stop=False)
            core.stop_axis(int(m), quick=True)
    # an error on a slave stops its master
    blk = blocking(ax)
    for s, m in zip(slaves, ms):
        if blk[s] and ax.power[m] == PS.MOTION:
            core.stop_axis(int(m), quick=True)


class GearRuntime:
    """A gear change in progress: wiggle forward/back at low speed, return to the origin, done."""

    def __init__(self, n: int, store: Store | None = None) -> None:
        st = store if store is not None else Store(n)
        self.target = st.u8[K.U_G_TARGET]
        self.t0 = st.f[K.F_G_T0]
        self.origin = st.f[K.F_G_ORIGIN]
        self.stage = st.u8[K.U_G_STAGE]

    def cancel(self, ax: "AxisStates", s: int) -> None:
        if ax.shifting[s]:
            ax.shifting[s] = False
            ax.gearbox[s] = GearboxState.GEARBOX_ERROR
            ax.errors[s] |= np.uint64(AxisError.GEAR_CHANGE_FAILED)


def start_gear_change(core: "ControlCore", s: int, gear: int, now: float) -> str:
    g = core.gear
    core.ax.shifting[s] = True
    core.ax.gearbox[s] = GearboxState.SHIFTING
    g.target[s] = GearboxState.NEUTRAL if gear == 0 else gear
    g.t0[s] = now
    g.origin[s] = core.traj.pos[s]
    g.stage[s] = 1
    core.begin_motion(s)
    core.traj.mode[s] = VELOCITY
    core.traj.target_vel[s] = GEAR_ASSIST_SPEED * core.p.vmax[s]
    return f"gear change to {GearboxState(int(g.target[s])).name} started"


def step_gear(core: "ControlCore", now: float) -> None:
    ax = core.ax
    if not nz(ax.shifting):
        return
    active = np.flatnonzero(ax.shifting)
    g, tr = core.gear, core.traj
    for s in active:
        s = int(s)
        if ax.power[s] not in _POWERED:
            g.cancel(ax, s)
            continue
        el = now - g.t0[s]
        if g.stage[s] == 1 and el >= GEAR_ASSIST_S:
            g.stage[s] = 2
            tr.target_vel[s] = -GEAR_ASSIST_SPEED * core.p.vmax[s]
        elif g.stage[s] == 2 and el >= 2 * GEAR_ASSIST_S:
            g.stage[s] = 3
            tr.mode[s] = POSITION
            tr.target[s] = g.origin[s]
        elif g.stage[s] == 3 and tr.done[s]:
            ax.shifting[s] = False
            ax.gearbox[s] = g.target[s]
            log.info("axis %d: gear %s engaged", s + 1, GearboxState(int(g.target[s])).name)
