"""ControlCore: one CU cycle without shared memory — inputs in, state machines, trajectories,
control law, outputs out. The CycleRunner wraps it with segments; benchmarks call it directly.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from common.config import EvoConfig
from common.config import roles as R
from common.consts import MAX_DI
from common.shm.segments import HAL_AXIS_FEEDBACK
from common.states import (
    AxisError,
    CommandSource,
    MachineError,
    MachineState,
    SafetyState,
    machine_error_reasons,
)

from . import coupling, homing, kernels, safety
from .control_law import ControlLaw
from .events import announce
from .kernels import step as K
from .kernels.step import LAG_HISTORY, MAX_CATCHUP_CYCLES, STARTUP_SETTLE_S, Store
from .machines import (
    BLOCKING_ERRORS,
    float_slot,
    PS,
    SSC,
    AxisStates,
    MachineStates,
    derive_loading,
    derive_motion,
    nz,
    power_step,
)
from .params import PIN_TRUE, UNREFERENCED_SPEED_FRACTION, AxisParams
from .trajectory import HOLD, VELOCITY, Trajectory

log = logging.getLogger(__name__)
MST = SimpleNamespace(**{m.name: m for m in MachineState})  # fast member access on the hot path
SST = SimpleNamespace(**{m.name: m for m in SafetyState})
_BLOCKING = np.uint64(BLOCKING_ERRORS)
_ME_AXIS, _ME_SSTOP = int(MachineError.AXIS_ERROR), int(MachineError.SAFETY_STOP)
_ME_GUARD, _ME_RECOVERY = int(MachineError.GUARD_OPEN), int(MachineError.RECOVERY_REQUIRED)
_ME_KEEP = ~(_ME_AXIS | _ME_SSTOP | _ME_GUARD | _ME_RECOVERY)
ENGINES = ("compiled", "numpy")


def _si_field(index: int, kind: type, doc: str) -> property:
    """A core scalar kept in the int64 scalar block (read and written by the compiled cycle too)."""

    def get(self: "ControlCore"):
        return kind(self._si[index])

    def put(self: "ControlCore", value: object) -> None:
        self._si[index] = value

    return property(get, put, doc=doc)


class ControlCore:
    """All CU state for one configuration. Per cycle: `set_inputs(...)`, any number of
    `commands.execute(core, ...)`, then `step(now)`; outputs in `torque`, `ax.enable`,
    `ax.brake_release`, `traj.pos` / `traj.vel`.

    `engine`: "compiled" (the numba kernels of control_unit.kernels, what the CU runs) or "numpy"
    (the vectorised reference in this module and its helpers). Both work on the same state arrays:
    each is a row of the blocks in `store` (control_unit/kernels/step.py lays them out)."""

    hal_ok = _si_field(K.SI_HAL_OK, bool, "the HAL heartbeat is fresh")
    hal_seen = _si_field(K.SI_HAL_SEEN, bool, "the HAL heartbeat has advanced at least once")
    hal_missing = _si_field(K.SI_HAL_MISSING, bool, "the HAL segment is gone")
    fb_age = _si_field(K.SI_FB_AGE, int, "CU cycles since the HAL last published (0 = fresh)")
    # feedback older than this does not drive the control law (it holds: control_law.step)
    hold_cycles = _si_field(K.SI_HOLD_CYCLES, int, "[cu] feedback_hold_cycles")
    cycle = _si_field(K.SI_CYCLE, int, "cycles stepped")
    _steps = _si_field(K.SI_STEPS, int, "trajectory steps taken since _t0")
    _sp_i = _si_field(K.SI_SP_I, int, "slot of this cycle's set-point in _sp_hist")
    _prev_reset_btn = _si_field(K.SI_PREV_RESET_BTN, bool, "Reset button in the previous cycle")
    _bank_valid = _si_field(K.SI_BANK_VALID, bool, "_bank holds the last DI bank")
    now = float_slot(K.S_NOW, "time of the last step")
    _starting_t = float_slot(K.S_STARTING_T, "time the machine entered Starting")

    def __init__(self, cfg: EvoConfig, dt: float | None = None, engine: str = "compiled") -> None:
        if engine not in ENGINES:
            raise ValueError(f"ControlCore engine {engine!r}: expected one of {', '.join(ENGINES)}")
        self.cfg = cfg
        self.engine = engine
        self.dt = float(dt if dt is not None else cfg.system.cu.cycle_time_us * 1e-6)
        self.p = p = AxisParams.from_config(cfg)
        self.n = n = p.n
        self.store = st = Store(n)
        self._s, self._si = st.s, st.si
        self.ax = AxisStates(n, st)
        self.m = MachineStates(st)
        self.traj = Trajectory(n, self.dt, st)
        self.law = ControlLaw(p.gains, self.dt, st)
        f, b = st.f, st.b
        # inputs
        self.pos, self.vel, self.torque_fb = f[K.F_POS], f[K.F_VEL], f[K.F_TORQUE_FB]
        self.ready, self.fault, self.drive_ref = b[K.B_READY], b[K.B_FAULT], b[K.B_DRIVE_REF]
        self.bits = st.bits
        self.bits[PIN_TRUE] = True
        self.lim_min, self.lim_max, self.ref_in = b[K.B_LIM_MIN], b[K.B_LIM_MAX], b[K.B_REF_IN]
        self.brake_in, self.index_in = b[K.B_BRAKE_IN], b[K.B_INDEX_IN]
        self.guard_closed = b[K.B_GUARD_CLOSED]
        self.guard_closed.fill(True)
        self._s[K.S_DT] = self.dt
        self.hold_cycles = cfg.system.cu.feedback_hold_cycles
        # set-points of the last LAG_HISTORY cycles: a feedback `fb_age` cycles old is judged
        # against the set-point of its own cycle, so a late HAL frame is not a following error
        self._sp_hist = st.sp_hist
        # sequencer state
        self.home = homing.HomingState(n, st)
        self.cpl = coupling.CouplingRuntime(p, st)
        self.gear = coupling.GearRuntime(n, st)
        self.torque = self.law.output
        self._ref_seen = b[K.B_REF_SEEN]
        self._ref_seen[:] = ~self.ax.referenced  # forces the first NOT_REFERENCED refresh
        self._absolute = b[K.B_ABSOLUTE]
        self._absolute[:] = p.homing_kind == int(homing.HomingKind.ABSOLUTE)
        self._absolute_any = bool(nz(self._absolute))
        self._si[K.SI_ABSOLUTE_ANY] = int(self._absolute_any)
        self._vmax_unref = f[K.F_VMAX_UNREF]
        self._vmax_unref[:] = np.where(p.needs_ref, UNREFERENCED_SPEED_FRACTION * p.vmax, p.vmax)
        self._fb_obj: np.ndarray | None = None
        self._fb_views: tuple = ()
        self._bank = st.bank
        self._machine_pins = {r: cfg.io_registry.pin(r).pin for r in p.machine_roles}
        for role, row in ((R.ESTOP, K.SI_PIN_ESTOP), (R.SAFETY_GATE, K.SI_PIN_GATE), (R.RESET, K.SI_PIN_RESET),
                          (R.REDUCED_SPEED, K.SI_PIN_REDUCED), (R.GUARD_CLOSED, K.SI_PIN_GUARD_CLOSED)):
            self._si[row] = self._machine_pins.get(role, -1)
        gs = cfg.machine.global_safety
        self._si[K.SI_RECOVERY_AUTH] = int(gs.recovery_authorization_required)
        self._s[K.S_SAFETY_STOP_TIMEOUT] = gs.safety_stop_timeout
        self._s[K.S_MANUAL_TIMEOUT] = cfg.system.cu.manual_timeout_s
        self._s[K.S_SERVICE_V] = p.service_v
        st.pf[:], st.pi[:], st.pb[:] = p.pf, p.pi, p.pb  # the kernels' copy of the (immutable) parameters
        st.cpl_cfg[: len(self.cpl.configured)] = self.cpl.configured
        self._si[K.SI_CPL_CFG_N] = len(self.cpl.configured)
        self._kernels = kernels.load() if engine == "compiled" else None
        self._kargs = (st.arena, st.layout)
        self._arena, self._layout = st.arena, st.layout
        self._k_step = self._kernels.cycle_step if self._kernels is not None else None
        self._k_inputs = self._kernels.gather_inputs if self._kernels is not None else None
        self._fb_bytes: np.ndarray | None = None
        self._bank_obj: np.ndarray | None = None  # the DI bank array the compiled path has checked

    @property
    def _t0(self) -> float | None:
        """Time origin of the trajectory clock (None before the first step)."""
        return float(self._s[K.S_T0]) if self._si[K.SI_T0_SET] else None

    @_t0.setter
    def _t0(self, value: float | None) -> None:
        self._si[K.SI_T0_SET] = value is not None
        self._s[K.S_T0] = 0.0 if value is None else value

    # --- inputs ---------------------------------------------------------------------------------
    def set_inputs(self, axes_fb: np.ndarray | None, di_bank: np.ndarray | None, hal_ok: bool,
                   hal_missing: bool = False, fb_age: int = 0) -> None:
        """`axes_fb`: HAL_AXIS_FEEDBACK records (>= n); `di_bank`: the logical DI bank (u64[16],
        NC already inverted) or a bool[1024] of logical pins. Role inputs are re-gathered only
        when the bank changed. `fb_age`: CU cycles since the HAL's heartbeat last advanced."""
        if axes_fb is self._fb_obj and di_bank is self._bank_obj and self._fb_bytes is not None:
            self._k_inputs(self._fb_bytes, di_bank, self._arena, self._layout, int(fb_age), bool(hal_ok), bool(hal_missing))
            return
        si = self._si
        si[K.SI_FB_AGE] = fb_age
        si[K.SI_HAL_OK] = hal_ok
        si[K.SI_HAL_MISSING] = hal_missing
        if not hal_ok:
            return
        si[K.SI_HAL_SEEN] = 1
        if axes_fb is not None:
            if axes_fb is not self._fb_obj:  # field views made once per source array
                self._fb_obj = axes_fb
                fb = axes_fb[: self.n]
                self._fb_views = tuple(fb[f] for f in ("position", "velocity", "torque_estimate", "drive_ready",
                                                       "drive_fault", "referenced"))
                # the compiled path reads the records as bytes (contiguous HAL_AXIS_FEEDBACK records only)
                plain = axes_fb.dtype == HAL_AXIS_FEEDBACK and axes_fb.flags.c_contiguous and len(axes_fb) >= self.n
                self._fb_bytes = axes_fb.reshape(-1).view(np.uint8) if plain else None
            if self._k_inputs is not None and self._fb_bytes is not None and di_bank is not None \
                    and di_bank.dtype == np.uint64 and di_bank.flags.c_contiguous and di_bank.shape == (MAX_DI // 64,):
                self._bank_obj = di_bank  # the next calls with these two arrays go straight to the kernel
                self._k_inputs(self._fb_bytes, di_bank, self._arena, self._layout, int(fb_age), bool(hal_ok), bool(hal_missing))
                return
            pos, vel, tq, ready, fault, ref = self._fb_views
            self.pos[:] = pos
            self.vel[:] = vel
            self.torque_fb[:] = tq
            np.not_equal(ready, 0, out=self.ready)
            np.not_equal(fault, 0, out=self.fault)
            np.not_equal(ref, 0, out=self.drive_ref)
            if self._absolute_any:
                # absolute encoders: referenced whenever the drive says so
                self.ax.referenced[self._absolute] = self.drive_ref[self._absolute]
        if di_bank is not None:
            if di_bank.dtype == np.uint64:
                if self._bank_valid and not nz(di_bank != self._bank):
                    return
                self._bank[:] = di_bank
                self._bank_valid = True
                self.bits[:MAX_DI] = np.unpackbits(di_bank.view(np.uint8), bitorder="little").view(bool)
            else:
                self.bits[:MAX_DI] = di_bank
            p, bits = self.p, self.bits
            self.lim_min[:] = bits[p.pin_limit_min]
            self.lim_max[:] = bits[p.pin_limit_max]
            self.ref_in[:] = bits[p.pin_ref]
            self.brake_in[:] = bits[p.pin_brake_in]
            self.guard_closed[:] = bits[p.pin_guard]
            self.index_in[:] = bits[p.pin_index]

    def role(self, role: str, default: bool = False) -> bool:
        pin = self._machine_pins.get(role)
        return default if pin is None else bool(self.bits[pin])

    # --- helpers used by the sequencers and commands ------------------------------------------
    def at_rest(self) -> np.ndarray:
        return self.traj.done & (self.traj.vel == 0.0)

    def stop_axis(self, s: int, quick: bool = False) -> None:
        """Controlled stop (ramp at max_acceleration, or max_decel_safe when `quick`)."""
        self.traj.mode[s] = HOLD
        self.ax.stopping[s] = True
        self.ax.quick[s] = self.ax.quick[s] or quick
        self.home.cancel(self.ax, s)
        self.gear.cancel(self.ax, s)

    def begin_motion(self, s: int) -> None:
        ax = self.ax
        ax.power[s] = PS.MOTION
        ax.stopping[s] = False
        ax.quick[s] = False

    def set_error(self, s: int, err: AxisError, stop: bool = True) -> None:
        new = not (int(self.ax.errors[s]) & int(err))
        self.ax.errors[s] |= np.uint64(err)
        if new:
            log.warning("axis %d (%s): %s", s + 1, self.p.names[s], safety.axis_text(err))
            self.m.message = f"axis {s + 1}: {safety.axis_text(err)}"
        if stop and self.ax.power[s] in (PS.STANDBY, PS.MOTION):
            self.stop_axis(s, quick=True)

    def zero_controller(self, mask: np.ndarray) -> None:
        self.law.reset(mask)
        self.traj.reset_to(mask, self.pos)

    # --- one cycle ------------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """One cycle at time `now` (s) with the engine chosen at construction."""
        if self._k_step is not None:
            if self._k_step(self._arena, self._layout, now):
                self._announce()
        else:
            self.step_numpy(now)

    def _announce(self) -> None:
        """Log lines and messages for what the compiled cycle reported (rare: only on events)."""
        announce(self, self.store.ev[: int(self._si[K.SI_EV_N])], int(self._si[K.SI_EV_LOST]))

    def step_numpy(self, now: float) -> None:
        """One cycle, vectorised numpy (the reference the compiled cycle is held to)."""
        p, ax, m, tr = self.p, self.ax, self.m, self.traj
        self.cycle += 1
        self.now = now
        ticks = self._ticks(now)
        self._machine_progress(now)
        safety.evaluate(self, now)
        to_standby, _ = power_step(ax, p, now, self.pos, self.ready, self.brake_in, self.at_rest())
        if nz(to_standby):
            self.zero_controller(to_standby)
        homing.step(self, now)
        coupling.step_gear(self, now)
        safety.step_safe_stops(self, now)
        # limits of this cycle (unreferenced: 5 %; reduced speed; service speed of bypass axes)
        vlim = np.where(ax.referenced, p.vmax, self._vmax_unref)
        if m.safety is SST.SAFE_REDUCED_SPEED:
            np.minimum(vlim, p.reduced_v, out=vlim)
        if m.state is MST.SERVICE:
            vlim = np.where(p.bypass, np.minimum(vlim, p.service_v), vlim)
        np.minimum(vlim, ax.cmd_v, out=tr.vmax)
        np.minimum(p.amax, ax.cmd_a, out=tr.amax)
        if nz(ax.quick) or nz(ax.safe_stop):
            tr.dmax[:] = np.where(ax.quick | (ax.safe_stop != SSC.NONE), p.decel_safe, tr.amax)
        else:
            tr.dmax[:] = tr.amax
        # soft limits matter only for velocity moves (position targets are checked on command)
        soft_any = False
        if nz(tr.mode == VELOCITY):
            soft = ax.referenced & ~p.rotary & (ax.homing_phase == 0)
            soft_any = bool(nz(soft))
            if soft_any:
                tr.pmin[:] = np.where(soft, p.pmin, -np.inf)
                tr.pmax[:] = np.where(soft, p.pmax, np.inf)
        for _ in range(ticks):  # the set-point follows real time across missed cycles
            tr.step(soft_any)
        if nz(ax.ctrl_on) != self.n:
            tr.reset_to(~ax.ctrl_on, self.pos)
        coupling.follow(self)
        # end of motion
        rest = self.at_rest()
        idle = rest
        if nz(ax.homing_phase) or nz(ax.shifting):
            idle = rest & (ax.homing_phase == 0) & ~ax.shifting
        if nz(ax.stopping):
            ax.stopping[:] &= ~rest
        if nz(ax.quick):
            ax.quick[:] &= ~(rest & (ax.safe_stop == SSC.NONE))
        finished = (ax.power == PS.MOTION) & idle & (tr.mode != VELOCITY)
        if nz(finished):
            ax.power[finished] = PS.STANDBY
            ax.cmd_v[finished] = np.inf
            ax.cmd_a[finished] = np.inf
            ax.lock[finished & ~ax.lock_explicit] = CommandSource.NONE  # implicit locks end with motion
        # monitoring
        self._sp_i = i = (self._sp_i + 1) % LAG_HISTORY
        self._sp_hist[i] = tr.pos
        age = self.fb_age
        sp = tr.pos if age == 0 or age >= LAG_HISTORY else self._sp_hist[(i - age) % LAG_HISTORY]
        np.subtract(sp, self.pos, out=ax.lag)
        ax.lag *= ax.ctrl_on
        safety.monitor_lag(self)
        coupling.monitor_sync(self)
        np.less_equal(np.abs(tr.target - self.pos), p.window, out=ax.in_position)
        ax.in_position &= ax.ctrl_on & tr.done
        safety.hold_ss2(self, rest)
        # control law
        limit = np.minimum(p.gains.out_max, ax.torque_limit)
        self.law.step(tr.pos, tr.vel, tr.acc, self.pos, self.vel, ax.ctrl_on & self.ready & ax.enable, limit,
                      max(ticks, 1), self.fb_age > self.hold_cycles)
        # derived states and flags
        safety.refresh_reference_flags(self)
        derive_motion(ax, tr.vel, tr.acc, rest)
        if self.cycle % 10 == 0:  # status-only states at 100 Hz
            derive_loading(ax, m)
        self._machine_flags()

    def _ticks(self, now: float) -> int:
        """Trajectory steps due at `now`: 1 normally, more after missed cycles (bounded by
        MAX_CATCHUP_CYCLES; time beyond is dropped), 0 when woken early twice in one period."""
        if self._t0 is None:
            self._t0, self._steps = now - self.dt, 0
        due = int((now - self._t0) / self.dt + 0.5) - self._steps
        if due > MAX_CATCHUP_CYCLES:
            self._t0 += (due - MAX_CATCHUP_CYCLES) * self.dt
            due = MAX_CATCHUP_CYCLES
        due = max(due, 0)
        self._steps += due
        return due

    def _machine_progress(self, now: float) -> None:
        m = self.m
        if m.state == MST.STOPPED and self.hal_ok and not m.stopped_by_command:
            m.state = MST.STARTING
            self._starting_t = now
        elif m.state == MST.STARTING and self.hal_ok and now - self._starting_t >= STARTUP_SETTLE_S:
            m.state = MST.IDLE
            log.info("machine Idle (%d axes)", len(self.cfg.axes))
        if m.state == MST.MANUAL:
            if now - m.manual_t > self.cfg.system.cu.manual_timeout_s and self.all_standstill():
                m.state = MST.IDLE
                m.errors |= MachineError.MANUAL_TIMEOUT
                m.message = "manual mode timed out: back to Idle"
                log.warning(m.message)

    def all_standstill(self) -> bool:
        ax = self.ax
        return bool(np.all(self.at_rest() & (ax.power != PS.MOTION) & (ax.power != PS.POWERING_ON)
                           & (ax.power != PS.POWERING_OFF)))

    def _machine_flags(self) -> None:
        """Derived machine flags (plain ints: IntFlag arithmetic is slow on the hot path)."""
        m, ax = self.m, self.ax
        e = int(m.errors) & _ME_KEEP
        if nz(ax.errors & _BLOCKING):
            e |= _ME_AXIS
        if m.safety == SST.SAFETY_STOP:
            e |= _ME_SSTOP
            if (m.reset_required or self.cfg.machine.global_safety.recovery_authorization_required) \
                    and not safety.unhealthy(self):
                e |= _ME_RECOVERY
        if nz(self.guard_closed) != self.n or not self.role("GuardClosed", True):
            e |= _ME_GUARD
        m.errors = MachineError(e) if e != m.errors else m.errors

    def machine_reasons(self) -> list[str]:
        return machine_error_reasons(int(self.m.errors))

    def source_lost(self, source: CommandSource) -> list[int]:
        """A command source went away: its axes ramp to a stop and are unlocked. Returns their ids."""
        held = np.flatnonzero(self.ax.lock == source)
        for s in held:
            if self.ax.power[s] in (PS.STANDBY, PS.MOTION) and not self.at_rest()[s] \
                    or self.ax.power[s] == PS.MOTION:
                self.stop_axis(int(s))
            self.ax.lock[s] = CommandSource.NONE
            self.ax.lock_explicit[s] = False
        return [int(s) + 1 for s in held]

    def restore_latch(self, message: str) -> None:
        """Start in SafetyStop, cleared only by an operator reset: the previous CU left a latched
        SafetyStop, or did not exit cleanly (see control_unit/latch.py). Every axis is off anyway."""
        m = self.m
        m.safety = SafetyState.SAFETY_STOP
        m.reset_required = True
        m.message = message

    def adopt(self, old: "ControlCore") -> None:
        """Take over the runtime state of `old` after a config reload (at standstill): machine
        state, and per-axis power/errors/locks/references for the slots both have. Couplings
        restart from the new configuration; set-points restart at the actual positions."""
        self.m.copy_from(old.m)
        k = min(self.n, old.n)
        for name in ("power", "mode", "gearbox", "errors", "referenced", "enable", "brake_release", "ctrl_on",
                     "safe_stop", "lock", "lock_explicit", "torque_limit"):
            getattr(self.ax, name)[:k] = getattr(old.ax, name)[:k]
        for name in ("pos", "vel", "torque_fb", "ready", "fault", "drive_ref", "lim_min", "lim_max", "ref_in",
                     "brake_in", "guard_closed", "index_in"):
            getattr(self, name)[:k] = getattr(old, name)[:k]
        self.bits[:] = old.bits
        # late feedback after the reload is judged against the set-points of its own cycle, as before
        # (a zeroed history read as a lag of the whole position when the HAL frame was a cycle old)
        self._sp_hist[:, :k] = old._sp_hist[:, :k]
        self._sp_i, self.fb_age = old._sp_i, old.fb_age
        self.hal_ok, self.hal_missing, self.hal_seen = old.hal_ok, old.hal_missing, old.hal_seen
        self._prev_reset_btn = old._prev_reset_btn
        self.zero_controller(np.ones(self.n, dtype=bool))
