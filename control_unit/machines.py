"""The CU's state machines in one place: MachineState, SafetyState and the six per-axis machines
(Power, Motion, OperationalMode, Coupling, Gearbox, Loading) as arrays, plus their transitions.

Power-on: safety ok -> drive enable -> drive_ready (5 s) -> brake release -> confirmation
(BrakeIn) -> hold check -> zero controller state -> Standby. Motion only when Power == Motion.
"""
from __future__ import annotations

import enum
from types import SimpleNamespace

import numpy as np

from common.states import (
    AxisError,
    CouplingState,
    GearboxState,
    LoadingState,
    MachineError,
    MachineState,
    MotionState,
    OperationalMode,
    PowerState,
    SafeStopCategory,
    SafetyState,
)

from .kernels import step as K
from .kernels.step import Store
from .params import (
    BRAKE_NO_DI_CONFIRM_S,
    DRIVE_READY_TIMEOUT_S,
    HOLD_CHECK_S,
    AxisParams,
)

try:  # the C entry point: np.count_nonzero's Python wrapper costs as much as the count itself
    from numpy._core._multiarray_umath import count_nonzero as nz
except ImportError:  # pragma: no cover - other numpy layouts
    nz = np.count_nonzero

# Plain-int views of the enums for the hot path (IntEnum attribute access is slow in 3.11).
PS = SimpleNamespace(**{m.name: int(m) for m in PowerState})
MS = SimpleNamespace(**{m.name: int(m) for m in MotionState})
SSC = SimpleNamespace(**{m.name: int(m) for m in SafeStopCategory})

__all__ = ["nz", "PS", "MS", "SSC", "AxisStates", "MachineStates", "OnPhase", "OffPhase", "BLOCKING_ERRORS",
           "power_step", "derive_motion", "derive_loading", "MachineState", "SafetyState", "PowerState",
           "MotionState"]

# Errors that stop an axis and block its motion until reset (LAG_WARNING / NOT_REFERENCED only inform).
BLOCKING_ERRORS = int(~(AxisError.LAG_WARNING | AxisError.NOT_REFERENCED) & ((1 << 64) - 1))
POWERED = (int(PS.STANDBY), int(PS.MOTION))


class OnPhase(enum.IntEnum):
    """Sub-steps of PoweringOn."""

    WAIT_READY = 1
    BRAKE_RELEASE = 2
    HOLD_CHECK = 3


class OffPhase(enum.IntEnum):
    """Sub-steps of PoweringOff (normal disable and SS1)."""

    RAMP = 1
    BRAKE_ENGAGE = 2


class AxisStates:
    """Per-axis runtime state (arrays of length n): rows of the core's state blocks (`store`)."""

    def __init__(self, n: int, store: Store | None = None) -> None:
        st = store if store is not None else Store(n)
        f, b, u = st.f, st.b, st.u8
        self.power = u[K.U_POWER]
        self.motion = u[K.U_MOTION]
        self.mode = u[K.U_MODE]
        self.coupling = u[K.U_COUPLING]
        self.gearbox = u[K.U_GEARBOX]
        self.loading = u[K.U_LOADING]
        self.phase = u[K.U_PHASE]  # OnPhase / OffPhase
        self.phase_t = f[K.F_PHASE_T]  # time the phase started
        self.hold_ref = f[K.F_HOLD_REF]  # position at the start of the hold check
        self.off_delay = f[K.F_OFF_DELAY]  # brake-engage wait of this power-off
        self.errors = st.errors
        self.referenced = b[K.B_REFERENCED]
        self.enable = b[K.B_ENABLE]
        self.brake_release = b[K.B_BRAKE_RELEASE]
        self.ctrl_on = b[K.B_CTRL_ON]  # position loop closed
        self.safe_stop = u[K.U_SAFE_STOP]  # category in force (kept until reset)
        self.safe_stop_t = f[K.F_SAFE_STOP_T]
        self.stopping = b[K.B_STOPPING]  # controlled/quick stop ramp in progress
        self.quick = b[K.B_QUICK]  # ramp at max_decel_safe
        self.homing_phase = u[K.U_HOMING_PHASE]
        self.shifting = b[K.B_SHIFTING]
        self.lock = u[K.U_LOCK]  # CommandSource
        self.lock_explicit = b[K.B_LOCK_EXPLICIT]  # ACQUIRE_LOCK (else released at standstill)
        self.in_position = b[K.B_IN_POSITION]
        self.lag = f[K.F_LAG]
        self.cmd_v = f[K.F_CMD_V]  # velocity asked for by the active command
        self.cmd_a = f[K.F_CMD_A]
        self.torque_limit = f[K.F_TORQUE_LIMIT]  # extra clamp (homing torque, SS2 hold)
        self.power.fill(PS.POWER_OFF)
        self.motion.fill(MS.STANDSTILL)
        self.mode.fill(OperationalMode.POSITION)
        self.coupling.fill(CouplingState.UNCOUPLED)
        self.gearbox.fill(GearboxState.NO_GEARBOX)
        self.loading.fill(LoadingState.READY_FOR_LOADING)
        self.safe_stop.fill(SSC.NONE)
        self.cmd_v.fill(np.inf)
        self.cmd_a.fill(np.inf)
        self.torque_limit.fill(np.inf)


def _scalar(index: int, kind: type, doc: str) -> property:
    """A MachineStates field kept in the core's int64 scalar block (the kernels read and write it)."""

    def get(self: "MachineStates"):
        return kind(int(self._si[index]))

    def put(self: "MachineStates", value: object) -> None:
        self._si[index] = int(value)  # type: ignore[call-overload]

    return property(get, put, doc=doc)


def _enum_scalar(index: int, members: tuple, doc: str) -> property:
    def get(self: "MachineStates"):
        return members[self._si[index]]

    def put(self: "MachineStates", value: object) -> None:
        self._si[index] = int(value)  # type: ignore[call-overload]

    return property(get, put, doc=doc)


def float_slot(index: int, doc: str) -> property:
    """A float kept in slot `index` of the float scalar block `self._s` (the core's and the machine's)."""

    def get(self: object) -> float:
        return float(self._s[index])

    def put(self: object, value: float) -> None:
        self._s[index] = value

    return property(get, put, doc=doc)


class MachineStates:
    """Machine-wide state, kept in the core's scalar blocks (`store.si` / `store.s`) so the
    compiled cycle reads and writes the same values; only the message text is Python-only."""

    state = _enum_scalar(K.SI_M_STATE, tuple(MachineState), "MachineState")
    safety = _enum_scalar(K.SI_M_SAFETY, tuple(SafetyState), "SafetyState")
    errors = _scalar(K.SI_M_ERRORS, MachineError, "MachineError flags")
    estop = _scalar(K.SI_M_ESTOP, bool, "E-stop input active")
    reduced = _scalar(K.SI_M_REDUCED, bool, "reduced-speed input active")
    manual_allowed = _scalar(K.SI_M_MANUAL_ALLOWED, bool, "AllowManualMode given")
    force_sto = _scalar(K.SI_M_FORCE_STO, bool, "HAL lost: every axis STO")
    stopped_by_command = _scalar(K.SI_M_STOPPED_BY_COMMAND, bool, "SetMachineState(Stopped): stay there")
    # a SafetyStop carried over a CU restart (control_unit/latch.py): only an operator reset
    # clears it, whatever recovery_authorization_required says
    reset_required = _scalar(K.SI_M_RESET_REQUIRED, bool, "SafetyStop latched over a restart")
    manual_t = float_slot(K.S_MANUAL_T, "last operator activity in Manual")
    safety_stop_t = float_slot(K.S_SAFETY_STOP_T, "time of the last SafetyStop")

    def __init__(self, store: Store | None = None) -> None:
        st = store if store is not None else Store(1)
        self._si, self._s = st.si, st.s
        self.state = MachineState.STOPPED
        self.safety = SafetyState.SAFE
        self.errors = MachineError.NONE
        self.message = ""

    def copy_from(self, other: "MachineStates") -> None:
        """Take over every field of `other` (a config reload keeps the machine state)."""
        for name in ("state", "safety", "errors", "estop", "reduced", "manual_allowed", "force_sto",
                     "stopped_by_command", "reset_required", "manual_t", "safety_stop_t", "message"):
            setattr(self, name, getattr(other, name))


def _errors_any(errors: np.ndarray) -> np.ndarray:
    return (errors & np.uint64(BLOCKING_ERRORS)) != 0


def blocking(ax: AxisStates) -> np.ndarray:
    """Axes with an error that blocks motion."""
    return _errors_any(ax.errors)


def power_step(ax: AxisStates, p: AxisParams, now: float, pos: np.ndarray, ready: np.ndarray,
               brake_in: np.ndarray, traj_at_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Advance PoweringOn / PoweringOff by their conditions and timers. Returns the masks of axes
    that just reached Standby (controller state to zero) and that just lost their loop."""
    to_standby = np.zeros(p.n, dtype=bool)
    to_off = np.zeros(p.n, dtype=bool)
    if not nz(ax.phase):  # nobody powering on or off
        return to_standby, to_off
    pw = ax.power
    on = np.flatnonzero(pw == PS.POWERING_ON)
    off = np.flatnonzero(pw == PS.POWERING_OFF)
    for s in on:
        ph, t0 = ax.phase[s], ax.phase_t[s]
        if ph == OnPhase.WAIT_READY:
            if ready[s]:
                ax.phase[s], ax.phase_t[s] = OnPhase.BRAKE_RELEASE, now
                ax.ctrl_on[s] = True  # hold the axis while the brake opens
                ax.brake_release[s] = bool(p.has_brake[s])
                to_standby[s] = True  # (re)zero controller and set-point at the actual position
            elif now - t0 > DRIVE_READY_TIMEOUT_S:
                _fail(ax, s, AxisError.DRIVE_NOT_READY_TIMEOUT)
                to_off[s] = True
        elif ph == OnPhase.BRAKE_RELEASE:
            if not p.has_brake[s]:
                confirmed = True
            elif p.has_brake_in[s]:
                confirmed = bool(brake_in[s])
            else:
                confirmed = now - t0 >= min(BRAKE_NO_DI_CONFIRM_S, p.release_timeout[s])
            if confirmed:
                ax.phase[s], ax.phase_t[s] = OnPhase.HOLD_CHECK, now
                ax.hold_ref[s] = pos[s]
            elif now - t0 > p.release_timeout[s]:
                _fail(ax, s, AxisError.BRAKE_RELEASE_TIMEOUT)
                to_off[s] = True
        elif ph == OnPhase.HOLD_CHECK:
            tol = min(p.lag_limit[s], max(10.0 * p.window[s], 1e-9))
            if abs(pos[s] - ax.hold_ref[s]) > tol:
                _fail(ax, s, AxisError.HOLD_CHECK_FAILED)
                to_off[s] = True
            elif now - t0 >= HOLD_CHECK_S:
                ax.power[s] = PS.STANDBY
                ax.phase[s] = 0
                to_standby[s] = True
    for s in off:
        ph, t0 = ax.phase[s], ax.phase_t[s]
        if ph == OffPhase.RAMP:
            if traj_at_rest[s]:
                ax.phase[s], ax.phase_t[s] = OffPhase.BRAKE_ENGAGE, now
                ax.brake_release[s] = False
        elif ph == OffPhase.BRAKE_ENGAGE:
            if p.has_brake_in[s] and ax.safe_stop[s] == SSC.NONE:
                done = not brake_in[s]
                if not done and now - t0 > p.engage_timeout[s]:
                    ax.errors[s] |= np.uint64(AxisError.BRAKE_ENGAGE_TIMEOUT)
                    done = True
            else:
                done = now - t0 >= ax.off_delay[s]
            if done:
                torque_off(ax, s)
                to_off[s] = True
                if ax.errors[s] & np.uint64(AxisError.BRAKE_ENGAGE_TIMEOUT):
                    ax.power[s] = PS.NO_BRAKE
    return to_standby, to_off


def _fail(ax: AxisStates, s: int, err: AxisError) -> None:
    ax.errors[s] |= np.uint64(err)
    torque_off(ax, s)
    ax.power[s] = PS.POWER_ERROR


def torque_off(ax: AxisStates, s: int | np.ndarray) -> None:
    """STO for axis slot(s): drive disabled, brake engaged, loop open -> PowerOff."""
    ax.enable[s] = False
    ax.brake_release[s] = False
    ax.ctrl_on[s] = False
    ax.power[s] = PS.POWER_OFF
    ax.phase[s] = 0
    ax.homing_phase[s] = 0
    ax.shifting[s] = False
    ax.stopping[s] = False


def start_power_on(ax: AxisStates, s: int, now: float) -> None:
    ax.power[s] = PS.POWERING_ON
    ax.phase[s], ax.phase_t[s] = OnPhase.WAIT_READY, now
    ax.enable[s] = True
    ax.brake_release[s] = False
    ax.ctrl_on[s] = False


def start_power_off(ax: AxisStates, s: int, now: float, delay: float) -> None:
    """Ramp to rest (the caller sets the trajectory to HOLD), engage the brake, wait `delay`
    (or the BrakeIn confirmation), then torque off."""
    ax.power[s] = PS.POWERING_OFF
    ax.phase[s], ax.phase_t[s] = OffPhase.RAMP, now
    ax.off_delay[s] = delay


def derive_motion(ax: AxisStates, vel: np.ndarray, acc: np.ndarray, at_rest: np.ndarray) -> None:
    """MotionState from the set-point and the activities in progress (vectorised)."""
    m = ax.motion
    if nz(at_rest) == len(at_rest):
        m.fill(MS.STANDSTILL)
    else:
        av = acc * vel
        m[:] = np.where(av > 0.0, MS.ACCELERATING, np.where(av < 0.0, MS.DECELERATING, MS.CONSTANT_VELOCITY))
        m[at_rest] = MS.STANDSTILL
        if nz(ax.stopping):
            m[ax.stopping & ~at_rest] = MS.STOPPING
    if nz(ax.shifting):
        m[ax.shifting] = MS.GEAR_ASSIST_MOTION
    if nz(ax.homing_phase):
        m[ax.homing_phase > 0] = MS.HOMING
    if nz(ax.safe_stop):
        m[(ax.safe_stop != SSC.NONE) & ~at_rest] = MS.EMERGENCY_STOP
    if nz(ax.errors):
        m[blocking(ax)] = MS.MOTION_ERROR


_LS = SimpleNamespace(**{m.name: int(m) for m in LoadingState})


def derive_loading(ax: AxisStates, machine: MachineStates) -> None:
    """Loading: blocked under a safety stop; production while moving; otherwise ready (manual
    loading allowed in Manual)."""
    if machine.safety == SafetyState.SAFETY_STOP:
        ax.loading.fill(_LS.LOADING_BLOCKED)
        return
    idle = _LS.LOADING_MANUAL_ALLOWED if machine.state == MachineState.MANUAL else _LS.READY_FOR_LOADING
    ax.loading.fill(idle)
    moving = (ax.motion != MS.STANDSTILL) | (ax.power == PS.MOTION)
    ax.loading[moving] = _LS.PRODUCTION
