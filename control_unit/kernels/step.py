"""The CU cycle as numba kernels over the core's preallocated state blocks: the state-block layout,
the constants the cycle uses, `gather_inputs` (set_inputs) and `cycle_step` (ControlCore.step).

Layout, constants and kernels live in this one file on purpose: numba's cache (`cache=True`) is
keyed on the source file of a kernel only, so a constant or helper imported from another file
could change without the cached machine code noticing. The numpy implementation (core.py and its
helpers) is the reference; `tests/test_cu_kernels.py` holds both to the same states and outputs.
Rare text work (log lines, `m.message`) is done by the caller from the event codes in `EV`.
"""
from __future__ import annotations

import math

import numpy as np

from common.consts import MAX_DI
from common.jit import Arg, Sig, kernel
from common.jit_table import TABLE_ARG, table_bytes
from common.shm.segments import CU_TO_RPC, HAL_AXIS_FEEDBACK
from common.states import (
    AxisError,
    CouplingState,
    GearboxState,
    LoadingState,
    MachineError,
    MachineState,
    MotionState,
    PowerState,
    SafeStopCategory,
    SafetyState,
)

# --- cycle constants (the numpy modules import these: one value for both engines) ---------------
MAX_CATCHUP_CYCLES = 50  # after a longer stall the set-point resumes instead of jumping
LAG_HISTORY = 128  # cycles of set-points kept to judge late feedback against its own cycle
STARTUP_SETTLE_S = 0.1  # Starting: HAL inputs (debounce filters) settle before safety inputs latch
UNREFERENCED_SPEED_FRACTION = 0.05  # an unreferenced axis moves at most 5 % of max_velocity
DRIVE_READY_TIMEOUT_S = 5.0
HOLD_CHECK_S = 0.05  # brake hold check after release
BRAKE_NO_DI_CONFIRM_S = 0.05  # brake without a BrakeIn role: assume released after this
PIN_FALSE = MAX_DI  # index of a constant False in the logical DI bit vector
PIN_TRUE = MAX_DI + 1  # ... and of a constant True
TORQUE_DETECT_FRACTION = 0.9  # TorqueLimit homing: at the stop when |torque| >= 90 % of torque_limit ...
TORQUE_DETECT_S = 0.03  # ... and the axis is still for this long
STILL_SPEED_FRACTION = 0.1  # "still": below 10 % of the homing speed
CREEP_FRACTION = 0.1  # final approach to a sensor edge at 10 % of the homing speed
GEAR_ASSIST_S = 0.05  # each half of the gear-assist wiggle
GEAR_ASSIST_SPEED = 0.01  # fraction of max_velocity
HOLD, POSITION, VELOCITY = 0, 1, 2  # trajectory modes
# params.Lag, params.HomingKind, homing.Phase, machines.OnPhase / OffPhase
LAG_CRITICAL, LAG_UNWANTED, LAG_NEUTRAL, LAG_DESIRED = 0, 1, 2, 3
HK_HOME_SENSOR, HK_LIMIT_SWITCH, HK_TORQUE_LIMIT, HK_INDEX_PULSE, HK_ABSOLUTE, HK_NO_HOMING = 0, 1, 2, 3, 4, 5
HP_IDLE, HP_CLEAR, HP_SEARCH, HP_SETTLE, HP_BACKOFF = 0, 1, 2, 3, 4
ON_WAIT_READY, ON_BRAKE_RELEASE, ON_HOLD_CHECK = 1, 2, 3
OFF_RAMP, OFF_BRAKE_ENGAGE = 1, 2

# HAL_AXIS_FEEDBACK as bytes (gather_inputs reads the records raw)
FB_SIZE = HAL_AXIS_FEEDBACK.itemsize
FB_POSITION, FB_VELOCITY, FB_TORQUE, FB_READY, FB_FAULT, FB_REFERENCED = (
    HAL_AXIS_FEEDBACK.fields[f][1] for f in ("position", "velocity", "torque_estimate", "drive_ready", "drive_fault",
                                             "referenced"))
assert FB_SIZE % 8 == 0 and FB_POSITION % 8 == 0 and FB_VELOCITY % 8 == 0 and FB_TORQUE % 8 == 0
assert all(HAL_AXIS_FEEDBACK.fields[f][0] == np.dtype(t) for f, t in (
    ("position", "<f8"), ("velocity", "<f8"), ("torque_estimate", "<f8"), ("drive_ready", "u1"), ("drive_fault", "u1"),
    ("referenced", "u1")))

# CU_STATUS (cu_rpc / cu_re status) as bytes: fill_status writes the header scalars and the axis records
_ST = CU_TO_RPC.fields["status"][0]
_ST_AX = _ST.fields["axes"][0].base
ST_AX_SIZE = _ST_AX.itemsize
ST_MACHINE_STATE, ST_SAFETY_STATE, ST_ESTOP, ST_REDUCED, ST_MANUAL_ALLOWED, ST_MACHINE_ERRORS, ST_HAL_HEARTBEAT, \
    ST_HAL_AGE = (_ST.fields[f][1] for f in ("machine_state", "safety_state", "estop", "reduced_speed", "manual_allowed",
                                             "machine_errors", "hal_heartbeat", "hal_age_cycles"))
STA_POSITION, STA_VELOCITY, STA_TARGET, STA_SP_POS, STA_SP_VEL, STA_LAG, STA_TORQUE, STA_ERRORS = (
    _ST_AX.fields[f][1] for f in ("position", "velocity", "target_position", "setpoint_position", "setpoint_velocity",
                                  "lag_error", "torque", "error_flags"))
(STA_POWER, STA_MOTION, STA_MODE, STA_COUPLING, STA_GEARBOX, STA_LOADING, STA_REFERENCED, STA_IN_POSITION,
 STA_ENABLED, STA_BRAKE, STA_LOCK, STA_SAFE_STOP, STA_HOMING_PHASE, STA_MASTER) = (
    _ST_AX.fields[f][1] for f in ("power", "motion", "mode", "coupling", "gearbox", "loading", "referenced",
                                  "in_position", "enabled", "brake_released", "lock_source", "safe_stop", "homing_phase",
                                  "master_axis"))
assert _ST.fields["axes"][1] % 8 == 0 and ST_AX_SIZE % 8 == 0
assert [_ST_AX.fields[f][0].str for f in ("position", "velocity", "target_position", "setpoint_position",
                                          "setpoint_velocity", "lag_error", "torque", "error_flags")] == ["<f8"] * 7 + ["<u8"]
assert _ST.fields["machine_errors"][0].str == "<u8" and _ST.fields["hal_heartbeat"][0].str == "<u8" \
    and _ST.fields["hal_age_cycles"][0].str == "<u4"
ST_AXES_OFF = _ST.fields["axes"][1]

# --- state blocks: one 2-D array per dtype, one row per per-axis array ---------------------------
_F_ROWS = (
    "pos", "vel", "torque_fb", "vmax_unref",  # core inputs
    "phase_t", "hold_ref", "off_delay", "safe_stop_t", "lag", "cmd_v", "cmd_a", "torque_limit",  # AxisStates
    "sp_pos", "sp_vel", "sp_acc", "target", "target_vel", "vmax", "amax", "dmax", "pmin", "pmax",  # Trajectory
    "w_vdes", "w_d", "w_t1", "w_dv", "w_vn",  # Trajectory work buffers (numpy engine)
    "integral", "derivative", "dob", "v_prev", "u_prev", "nx1", "nx2", "ny1", "ny2", "lp", "error",  # ControlLaw
    "feedforward", "output", "unclamped", "act", "w_u", "w_t",
    "h_t0", "h_t_still", "h_edge",  # HomingState
    "c_ratio", "c_offset", "g_t0", "g_origin",  # CouplingRuntime, GearRuntime
)
(F_POS, F_VEL, F_TORQUE_FB, F_VMAX_UNREF,
 F_PHASE_T, F_HOLD_REF, F_OFF_DELAY, F_SAFE_STOP_T, F_LAG, F_CMD_V, F_CMD_A, F_TORQUE_LIMIT,
 F_SP_POS, F_SP_VEL, F_SP_ACC, F_TARGET, F_TARGET_VEL, F_VMAX, F_AMAX, F_DMAX, F_PMIN, F_PMAX,
 F_W_VDES, F_W_D, F_W_T1, F_W_DV, F_W_VN,
 F_INTEGRAL, F_DERIVATIVE, F_DOB, F_V_PREV, F_U_PREV, F_NX1, F_NX2, F_NY1, F_NY2, F_LP, F_ERROR,
 F_FEEDFORWARD, F_OUTPUT, F_UNCLAMPED, F_ACT, F_W_U, F_W_T,
 F_H_T0, F_H_T_STILL, F_H_EDGE,
 F_C_RATIO, F_C_OFFSET, F_G_T0, F_G_ORIGIN) = range(len(_F_ROWS))

_B_ROWS = (
    "ready", "fault", "drive_ref", "lim_min", "lim_max", "ref_in", "brake_in", "guard_closed", "index_in",
    "ref_seen", "absolute",  # core
    "referenced", "enable", "brake_release", "ctrl_on", "stopping", "quick", "shifting", "lock_explicit",
    "in_position",  # AxisStates
    "done", "is_pos", "is_vel",  # Trajectory
    "first", "was_active", "changed",  # ControlLaw
    "h_creep", "c_manual_off",  # HomingState, CouplingRuntime
    "k_mask", "k_rest",  # kernel scratch
)
(B_READY, B_FAULT, B_DRIVE_REF, B_LIM_MIN, B_LIM_MAX, B_REF_IN, B_BRAKE_IN, B_GUARD_CLOSED, B_INDEX_IN,
 B_REF_SEEN, B_ABSOLUTE,
 B_REFERENCED, B_ENABLE, B_BRAKE_RELEASE, B_CTRL_ON, B_STOPPING, B_QUICK, B_SHIFTING, B_LOCK_EXPLICIT,
 B_IN_POSITION,
 B_DONE, B_IS_POS, B_IS_VEL,
 B_FIRST, B_WAS_ACTIVE, B_CHANGED,
 B_H_CREEP, B_C_MANUAL_OFF,
 B_K_MASK, B_K_REST) = range(len(_B_ROWS))

_U_ROWS = ("power", "motion", "mode", "coupling", "gearbox", "loading", "phase", "safe_stop", "homing_phase",
           "lock", "g_target", "g_stage")
(U_POWER, U_MOTION, U_MODE, U_COUPLING, U_GEARBOX, U_LOADING, U_PHASE, U_SAFE_STOP, U_HOMING_PHASE,
 U_LOCK, U_G_TARGET, U_G_STAGE) = range(len(_U_ROWS))

# control-law coefficients (ControlLaw.set_gains)
_LC_ROWS = ("kp", "kvff", "kaff", "friction", "jn", "bn", "out_max", "kd_alpha", "one_minus_alpha", "ki_dt",
            "tt_gain", "beta_dob", "nb0", "nb1", "nb2", "na1", "na2", "gamma_lp", "alpha_d")
(LC_KP, LC_KVFF, LC_KAFF, LC_FRICTION, LC_JN, LC_BN, LC_OUT_MAX, LC_KD_ALPHA, LC_ONE_MINUS_ALPHA, LC_KI_DT,
 LC_TT_GAIN, LC_BETA_DOB, LC_NB0, LC_NB1, LC_NB2, LC_NA1, LC_NA2, LC_GAMMA_LP, LC_ALPHA_D) = range(len(_LC_ROWS))

# axis parameters (AxisParams): float, int and bool blocks
PF_ROWS = ("vmax", "amax", "reduced_v", "pmin", "pmax", "window", "lag_limit", "decel_safe", "sto_delay",
           "ss2_torque", "homing_speed", "homing_torque", "homing_timeout", "homing_dir", "release_timeout",
           "engage_timeout", "ratio", "max_sync")
(PF_VMAX, PF_AMAX, PF_REDUCED_V, PF_PMIN, PF_PMAX, PF_WINDOW, PF_LAG_LIMIT, PF_DECEL_SAFE, PF_STO_DELAY,
 PF_SS2_TORQUE, PF_HOMING_SPEED, PF_HOMING_TORQUE, PF_HOMING_TIMEOUT, PF_HOMING_DIR, PF_RELEASE_TIMEOUT,
 PF_ENGAGE_TIMEOUT, PF_RATIO, PF_MAX_SYNC) = range(len(PF_ROWS))
PI_ROWS = ("lag_policy", "stop_cat", "homing_kind", "guard_cat", "master", "pin_limit_min", "pin_limit_max",
           "pin_ref", "pin_brake_in", "pin_guard", "pin_index")
(PI_LAG_POLICY, PI_STOP_CAT, PI_HOMING_KIND, PI_GUARD_CAT, PI_MASTER, PI_PIN_LIMIT_MIN, PI_PIN_LIMIT_MAX,
 PI_PIN_REF, PI_PIN_BRAKE_IN, PI_PIN_GUARD, PI_PIN_INDEX) = range(len(PI_ROWS))
PB_ROWS = ("configured", "rotary", "needs_ref", "has_brake", "bypass", "has_brake_in")
(PB_CONFIGURED, PB_ROTARY, PB_NEEDS_REF, PB_HAS_BRAKE, PB_BYPASS, PB_HAS_BRAKE_IN) = range(len(PB_ROWS))

# scalars: float64 S and int64 SI (machine state, core counters, config, law flags)
_S_ROWS = ("now", "dt", "starting_t", "t0", "manual_t", "safety_stop_t", "service_v", "manual_timeout",
           "safety_stop_timeout")
(S_NOW, S_DT, S_STARTING_T, S_T0, S_MANUAL_T, S_SAFETY_STOP_T, S_SERVICE_V, S_MANUAL_TIMEOUT,
 S_SAFETY_STOP_TIMEOUT) = range(len(_S_ROWS))
_SI_ROWS = (
    "cycle", "steps", "t0_set", "hal_ok", "hal_seen", "hal_missing", "fb_age", "hold_cycles", "sp_i",
    "prev_reset_btn", "bank_valid", "absolute_any", "recovery_auth", "cpl_active", "ev_n", "ev_lost",
    "m_state", "m_safety", "m_errors", "m_estop", "m_reduced", "m_manual_allowed", "m_force_sto",
    "m_stopped_by_command", "m_reset_required",
    "pin_estop", "pin_gate", "pin_reset", "pin_reduced", "pin_guard_closed",  # machine roles, -1 = absent
    "law_all_active", "use_d", "use_i", "use_aw", "use_ff_a", "use_ff_f", "use_dob", "use_notch", "use_lp",
    "cpl_cfg_n",
)
(SI_CYCLE, SI_STEPS, SI_T0_SET, SI_HAL_OK, SI_HAL_SEEN, SI_HAL_MISSING, SI_FB_AGE, SI_HOLD_CYCLES, SI_SP_I,
 SI_PREV_RESET_BTN, SI_BANK_VALID, SI_ABSOLUTE_ANY, SI_RECOVERY_AUTH, SI_CPL_ACTIVE, SI_EV_N, SI_EV_LOST,
 SI_M_STATE, SI_M_SAFETY, SI_M_ERRORS, SI_M_ESTOP, SI_M_REDUCED, SI_M_MANUAL_ALLOWED, SI_M_FORCE_STO,
 SI_M_STOPPED_BY_COMMAND, SI_M_RESET_REQUIRED,
 SI_PIN_ESTOP, SI_PIN_GATE, SI_PIN_RESET, SI_PIN_REDUCED, SI_PIN_GUARD_CLOSED,
 SI_LAW_ALL_ACTIVE, SI_USE_D, SI_USE_I, SI_USE_AW, SI_USE_FF_A, SI_USE_FF_F, SI_USE_DOB, SI_USE_NOTCH,
 SI_USE_LP, SI_CPL_CFG_N) = range(len(_SI_ROWS))

# events the kernel reports (EV rows: kind, a, b); the caller turns them into log lines / messages
EV_MAX = 1024
(EV_MACHINE_IDLE, EV_MANUAL_TIMEOUT, EV_HAL_LOST, EV_SAFETY_STOP, EV_AXIS_ERROR, EV_SAFETY_STOP_CLEARED,
 EV_RESET_AXIS_REFUSED, EV_RESET, EV_HOMED, EV_SAFE_STOP_LATE, EV_GEAR_ENGAGED, EV_COUPLED) = range(12)
# EV_SAFETY_STOP reasons (a) and EV_RESET results (a)
SR_HAL_LOST, SR_HAL_MISSING, SR_ESTOP, SR_GATE, SR_LAG = 0, 1, 2, 3, 4
RESET_REFUSED, RESET_DONE, RESET_DONE_FAULTED = 0, 1, 2
# unhealthy() reasons as bits; reset_axis() refusals
UH_HAL, UH_ESTOP, UH_GATE = 1, 2, 4
RA_OK, RA_SAFETY_STOP, RA_FAULT, RA_GUARD = 0, 1, 2, 3


# the blocks in one byte arena (A_* = block index in the layout array, LAY_N = its axis count): two
# array arguments carry the whole state into a kernel (numba's dispatch costs ~0.1-0.4 us per argument)
_BLOCKS = ("f", "b", "u8", "lc", "errors", "tmode", "master", "sp_hist", "bits", "bank", "s", "si", "ev", "pf", "pi",
           "pb", "cpl_cfg")
(A_F, A_B, A_U8, A_LC, A_ERRORS, A_TMODE, A_MASTER, A_SP_HIST, A_BITS, A_BANK, A_S, A_SI, A_EV, A_PF, A_PI, A_PB,
 A_CPL_CFG) = range(len(_BLOCKS))
LAY_N = 2 * len(_BLOCKS)


def _block_shapes(n: int) -> tuple[tuple[type, tuple[int, ...]], ...]:
    return ((np.float64, (len(_F_ROWS), n)), (np.bool_, (len(_B_ROWS), n)), (np.uint8, (len(_U_ROWS), n)),
            (np.float64, (len(_LC_ROWS), n)), (np.uint64, (n,)), (np.int8, (n,)), (np.int64, (n,)),
            (np.float64, (LAG_HISTORY, n)), (np.bool_, (MAX_DI + 2,)), (np.uint64, (MAX_DI // 64,)),
            (np.float64, (len(_S_ROWS),)), (np.int64, (len(_SI_ROWS),)), (np.int64, (EV_MAX, 3)),
            (np.float64, (len(PF_ROWS), n)), (np.int64, (len(PI_ROWS), n)), (np.bool_, (len(PB_ROWS), n)),
            (np.int64, (n,)))


class Store:
    """The state blocks of one ControlCore (or of a standalone Trajectory / ControlLaw), laid out in
    one byte arena: every per-axis state array of the core is a row view into one of them, so a
    kernel gets the whole state in two arguments (`arena`, `layout`) and both engines work on the
    very same memory. `pf`/`pi`/`pb` hold a copy of the axis parameters, `cpl_cfg` the configured
    coupling slaves (their count in si[SI_CPL_CFG_N])."""

    def __init__(self, n: int) -> None:
        self.n = n
        shapes = _block_shapes(n)
        spans, off = [], 0
        for dtype, shape in shapes:
            off = -(-off // 64) * 64  # every block on its own cache line
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            spans.append((off, off + size))
            off += size
        self.arena = np.zeros(off, dtype=np.uint8)
        self.layout = np.array([x for span in spans for x in span] + [n], dtype=np.int64)
        for name, (dtype, shape), (a, b) in zip(_BLOCKS, shapes, spans):
            setattr(self, name, self.arena[a:b].view(dtype).reshape(shape))
        self.master.fill(-1)
        self.si[SI_PIN_ESTOP:SI_PIN_GUARD_CLOSED + 1] = -1


# --- enum values as plain ints (frozen into the machine code) ----------------------------------
_PS_OFF, _PS_ON, _PS_STANDBY, _PS_MOTION = int(PowerState.POWER_OFF), int(PowerState.POWERING_ON), \
    int(PowerState.STANDBY), int(PowerState.MOTION)
_PS_POWERING_OFF, _PS_NO_BRAKE, _PS_ERROR = int(PowerState.POWERING_OFF), int(PowerState.NO_BRAKE), \
    int(PowerState.POWER_ERROR)
_MS_STANDSTILL, _MS_ACC, _MS_CONST, _MS_DEC = int(MotionState.STANDSTILL), int(MotionState.ACCELERATING), \
    int(MotionState.CONSTANT_VELOCITY), int(MotionState.DECELERATING)
_MS_STOPPING, _MS_ESTOP, _MS_HOMING = int(MotionState.STOPPING), int(MotionState.EMERGENCY_STOP), \
    int(MotionState.HOMING)
_MS_GEAR, _MS_ERROR = int(MotionState.GEAR_ASSIST_MOTION), int(MotionState.MOTION_ERROR)
_SSC_NONE, _SSC_STO, _SSC_SS1, _SSC_SS2 = int(SafeStopCategory.NONE), int(SafeStopCategory.STO), \
    int(SafeStopCategory.SS1), int(SafeStopCategory.SS2)
_MST_STOPPED, _MST_STARTING, _MST_IDLE = int(MachineState.STOPPED), int(MachineState.STARTING), \
    int(MachineState.IDLE)
_MST_MANUAL, _MST_SERVICE, _MST_SYSERR = int(MachineState.MANUAL), int(MachineState.SERVICE), \
    int(MachineState.SYSTEM_ERROR)
_SST_SAFE, _SST_REDUCED, _SST_STOP = int(SafetyState.SAFE), int(SafetyState.SAFE_REDUCED_SPEED), \
    int(SafetyState.SAFETY_STOP)
_CS_UNCOUPLED, _CS_MASTER, _CS_SYNC, _CS_SYNC_LOST = int(CouplingState.UNCOUPLED), int(CouplingState.MASTER), \
    int(CouplingState.SYNCHRONIZED), int(CouplingState.SYNC_LOST)
_GB_ERROR = int(GearboxState.GEARBOX_ERROR)
_LS_PRODUCTION, _LS_READY, _LS_BLOCKED, _LS_MANUAL = int(LoadingState.PRODUCTION), \
    int(LoadingState.READY_FOR_LOADING), int(LoadingState.LOADING_BLOCKED), int(LoadingState.LOADING_MANUAL_ALLOWED)
_AE = {e.name: np.uint64(int(e)) for e in AxisError if e.name}
_AE_LAG_ERROR, _AE_DRIVE_FAULT, _AE_NOT_READY = _AE["LAG_ERROR"], _AE["DRIVE_FAULT"], _AE["DRIVE_NOT_READY_TIMEOUT"]
_AE_BRAKE_RELEASE, _AE_BRAKE_ENGAGE = _AE["BRAKE_RELEASE_TIMEOUT"], _AE["BRAKE_ENGAGE_TIMEOUT"]
_AE_LIMIT_MIN, _AE_LIMIT_MAX, _AE_HOMING_TIMEOUT = _AE["LIMIT_MIN"], _AE["LIMIT_MAX"], _AE["HOMING_TIMEOUT"]
_AE_SYNC, _AE_GEAR, _AE_HOLD_CHECK, _AE_GUARD = _AE["SYNC_ERROR"], _AE["GEAR_CHANGE_FAILED"], \
    _AE["HOLD_CHECK_FAILED"], _AE["GUARD_OPEN"]
_AE_NOT_REF, _AE_LAG_WARNING, _AE_MASTER = _AE["NOT_REFERENCED"], _AE["LAG_WARNING"], _AE["MASTER_FAULT"]
_AE_BLOCKING = np.uint64(int(~(AxisError.LAG_WARNING | AxisError.NOT_REFERENCED) & ((1 << 64) - 1)))
_ME_ESTOP, _ME_HAL_STALE, _ME_HAL_MISSING = int(MachineError.ESTOP), int(MachineError.HAL_STALE), \
    int(MachineError.HAL_MISSING)
_ME_CYCLE_OVERRUN, _ME_AXIS, _ME_SSTOP = int(MachineError.CYCLE_OVERRUN), int(MachineError.AXIS_ERROR), \
    int(MachineError.SAFETY_STOP)
_ME_GUARD, _ME_LAG_CRITICAL, _ME_RELOAD = int(MachineError.GUARD_OPEN), int(MachineError.LAG_CRITICAL), \
    int(MachineError.CONFIG_RELOAD_FAILED)
_ME_MANUAL_TIMEOUT, _ME_RE_LOST, _ME_RECOVERY = int(MachineError.MANUAL_TIMEOUT), int(MachineError.RE_LOST), \
    int(MachineError.RECOVERY_REQUIRED)
_ME_KEEP = ~(_ME_AXIS | _ME_SSTOP | _ME_GUARD | _ME_RECOVERY)
_ME_RESET_CLEARS = _ME_CYCLE_OVERRUN | _ME_RELOAD | _ME_MANUAL_TIMEOUT | _ME_RE_LOST | _ME_LAG_CRITICAL
_ME_SS_CLEARS = _ME_ESTOP | _ME_HAL_STALE | _ME_HAL_MISSING | _ME_LAG_CRITICAL
_INF = math.inf

_JIT = dict(cache=True, nogil=True)


# --- small helpers (inlined into the kernels) ---------------------------------------------------
@kernel(**_JIT)
def _event(SI, EV, kind, a, b):
    k = SI[SI_EV_N]
    if k < EV_MAX:
        EV[k, 0] = kind
        EV[k, 1] = a
        EV[k, 2] = b
        SI[SI_EV_N] = k + 1
    else:
        SI[SI_EV_LOST] += 1


@kernel(**_JIT)
def _at_rest(F, B, s):
    return B[B_DONE, s] and F[F_SP_VEL, s] == 0.0


@kernel(**_JIT)
def _role(bits, SI, which, default):
    pin = SI[which]
    return default if pin < 0 else bits[pin]


@kernel(**_JIT)
def _fmin(a, b):  # np.minimum: NaN wins
    if math.isnan(a) or math.isnan(b):
        return a + b
    return a if a <= b else b


@kernel(**_JIT)
def _fmax(a, b):  # np.maximum: NaN wins
    if math.isnan(a) or math.isnan(b):
        return a + b
    return a if a >= b else b


@kernel(**_JIT)
def _all_standstill(F, B, U8):
    for s in range(F.shape[1]):
        pw = U8[U_POWER, s]
        if not _at_rest(F, B, s) or pw == _PS_MOTION or pw == _PS_ON or pw == _PS_POWERING_OFF:
            return False
    return True


@kernel(**_JIT)
def _unhealthy(bits, SI):
    bad = 0
    if SI[SI_HAL_OK] == 0:
        bad |= UH_HAL
    if _role(bits, SI, SI_PIN_ESTOP, False):
        bad |= UH_ESTOP
    if _role(bits, SI, SI_PIN_GATE, False):
        bad |= UH_GATE
    return bad


@kernel(**_JIT)
def _torque_off(B, U8, s):
    B[B_ENABLE, s] = False
    B[B_BRAKE_RELEASE, s] = False
    B[B_CTRL_ON, s] = False
    U8[U_POWER, s] = _PS_OFF
    U8[U_PHASE, s] = 0
    U8[U_HOMING_PHASE, s] = 0
    B[B_SHIFTING, s] = False
    B[B_STOPPING, s] = False


@kernel(**_JIT)
def _start_power_off(F, U8, s, now, delay):
    U8[U_POWER, s] = _PS_POWERING_OFF
    U8[U_PHASE, s] = OFF_RAMP
    F[F_PHASE_T, s] = now
    F[F_OFF_DELAY, s] = delay


@kernel(**_JIT)
def _gear_cancel(B, U8, errors, s):
    if B[B_SHIFTING, s]:
        B[B_SHIFTING, s] = False
        U8[U_GEARBOX, s] = _GB_ERROR
        errors[s] |= _AE_GEAR


@kernel(**_JIT)
def _stop_axis(B, U8, errors, tmode, s, quick):
    tmode[s] = HOLD
    B[B_STOPPING, s] = True
    B[B_QUICK, s] = B[B_QUICK, s] or quick
    U8[U_HOMING_PHASE, s] = HP_IDLE
    _gear_cancel(B, U8, errors, s)


@kernel(**_JIT)
def _set_error(B, U8, errors, tmode, SI, EV, s, err, stop):
    new = (errors[s] & err) == 0
    errors[s] |= err
    if new:
        _event(SI, EV, EV_AXIS_ERROR, s, np.int64(err))
    pw = U8[U_POWER, s]
    if stop and (pw == _PS_STANDBY or pw == _PS_MOTION):
        _stop_axis(B, U8, errors, tmode, s, True)


@kernel(**_JIT)
def _law_reset(F, B, s):
    for r in (F_INTEGRAL, F_DERIVATIVE, F_DOB, F_V_PREV, F_U_PREV, F_NX1, F_NX2, F_NY1, F_NY2, F_LP, F_OUTPUT,
              F_UNCLAMPED, F_FEEDFORWARD, F_ERROR):
        F[r, s] = 0.0
    B[B_FIRST, s] = True


@kernel(**_JIT)
def _traj_reset_to(F, B, tmode, s):
    F[F_SP_POS, s] = F[F_POS, s]
    F[F_SP_VEL, s] = 0.0
    F[F_SP_ACC, s] = 0.0
    F[F_TARGET, s] = F[F_POS, s]
    tmode[s] = HOLD
    B[B_DONE, s] = True


@kernel(**_JIT)
def _zero_controller(F, B, tmode, s):
    _law_reset(F, B, s)
    _traj_reset_to(F, B, tmode, s)


# --- safety --------------------------------------------------------------------------------------
@kernel(**_JIT)
def _apply_safe_stop(F, B, U8, errors, tmode, PF, SI, s, cat, now):
    cur = U8[U_SAFE_STOP, s]
    if cur != 0 and cur <= cat:
        return
    U8[U_SAFE_STOP, s] = cat
    F[F_SAFE_STOP_T, s] = now
    U8[U_HOMING_PHASE, s] = HP_IDLE
    _gear_cancel(B, U8, errors, s)
    pw = U8[U_POWER, s]
    if pw == _PS_OFF or pw == _PS_ERROR or pw == _PS_NO_BRAKE:
        return
    if cat == _SSC_STO or pw == _PS_ON or SI[SI_HAL_OK] == 0:
        _torque_off(B, U8, s)
        return
    tmode[s] = HOLD
    B[B_QUICK, s] = True
    B[B_STOPPING, s] = True
    if cat == _SSC_SS1:
        if pw != _PS_POWERING_OFF:
            _start_power_off(F, U8, s, now, PF[PF_STO_DELAY, s])
        else:
            F[F_OFF_DELAY, s] = PF[PF_STO_DELAY, s]
    elif pw == _PS_MOTION:
        U8[U_POWER, s] = _PS_STANDBY


@kernel(**_JIT)
def _trigger_safety_stop(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now, reason, axis):
    if SI[SI_M_SAFETY] != _SST_STOP:
        SI[SI_M_SAFETY] = _SST_STOP
        S[S_SAFETY_STOP_T] = now
        _event(SI, EV, EV_SAFETY_STOP, reason, axis)
    for s in range(F.shape[1]):
        if PB[PB_CONFIGURED, s]:
            cat = _SSC_STO if SI[SI_M_FORCE_STO] else PI[PI_STOP_CAT, s]
            _apply_safe_stop(F, B, U8, errors, tmode, PF, SI, s, cat, now)


@kernel(**_JIT)
def _clear_safety_stop(F, B, U8, SI, EV):
    SI[SI_M_SAFETY] = _SST_REDUCED if SI[SI_M_REDUCED] else _SST_SAFE
    SI[SI_M_FORCE_STO] = 0
    SI[SI_M_RESET_REQUIRED] = 0
    SI[SI_M_ERRORS] &= ~_ME_SS_CLEARS
    for s in range(F.shape[1]):
        U8[U_SAFE_STOP, s] = 0
        F[F_TORQUE_LIMIT, s] = _INF
        B[B_QUICK, s] = False
    if SI[SI_M_STATE] == _MST_SYSERR:
        SI[SI_M_STATE] = _MST_IDLE
    _event(SI, EV, EV_SAFETY_STOP_CLEARED, 0, 0)


@kernel(**_JIT)
def _reset_axis(F, B, U8, errors, SI, s):
    if SI[SI_M_SAFETY] == _SST_STOP:
        return RA_SAFETY_STOP
    if B[B_FAULT, s]:
        return RA_FAULT
    if not B[B_GUARD_CLOSED, s]:
        return RA_GUARD
    errors[s] = errors[s] & _AE_NOT_REF
    U8[U_SAFE_STOP, s] = 0
    F[F_TORQUE_LIMIT, s] = _INF
    if U8[U_POWER, s] == _PS_ERROR or U8[U_POWER, s] == _PS_NO_BRAKE:
        U8[U_POWER, s] = _PS_OFF
    if U8[U_COUPLING, s] == _CS_SYNC_LOST:
        U8[U_COUPLING, s] = _CS_SYNC
    return RA_OK


@kernel(**_JIT)
def _reset_machine(F, B, U8, errors, PB, bits, SI, EV):
    """The Reset button (safety.reset_machine)."""
    bad = _unhealthy(bits, SI)
    if bad:
        _event(SI, EV, EV_RESET, RESET_REFUSED, bad)
        return
    if SI[SI_M_SAFETY] == _SST_STOP:
        _clear_safety_stop(F, B, U8, SI, EV)
    if SI[SI_M_STATE] == _MST_SYSERR:
        SI[SI_M_STATE] = _MST_IDLE
    SI[SI_M_ERRORS] &= ~_ME_RESET_CLEARS
    refused = 0
    for s in range(F.shape[1]):
        if PB[PB_CONFIGURED, s]:
            why = _reset_axis(F, B, U8, errors, SI, s)
            if why != RA_OK:
                _event(SI, EV, EV_RESET_AXIS_REFUSED, s, why)
                refused += 1
    _event(SI, EV, EV_RESET, RESET_DONE_FAULTED if refused else RESET_DONE, 0)


@kernel(**_JIT)
def _evaluate(F, B, U8, errors, tmode, PF, PI, PB, bits, S, SI, EV, now):
    """safety.evaluate"""
    n = F.shape[1]
    if SI[SI_HAL_OK] == 0 and SI[SI_HAL_SEEN] == 0:
        return
    if SI[SI_HAL_OK] == 0:
        flag = _ME_HAL_MISSING if SI[SI_HAL_MISSING] else _ME_HAL_STALE
        if not SI[SI_M_ERRORS] & flag:
            SI[SI_M_ERRORS] |= flag
            _event(SI, EV, EV_HAL_LOST, SI[SI_HAL_MISSING], 0)
        SI[SI_M_FORCE_STO] = 1
        if SI[SI_M_STATE] != _MST_STOPPED:
            SI[SI_M_STATE] = _MST_SYSERR
        _trigger_safety_stop(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now,
                             SR_HAL_MISSING if SI[SI_HAL_MISSING] else SR_HAL_LOST, -1)
        return
    estop = _role(bits, SI, SI_PIN_ESTOP, False)
    SI[SI_M_ESTOP] = estop
    st = SI[SI_M_STATE]
    if st == _MST_STARTING or (st == _MST_STOPPED and SI[SI_HAL_SEEN] == 0):
        return
    if estop and not SI[SI_M_ERRORS] & _ME_ESTOP:
        SI[SI_M_ERRORS] |= _ME_ESTOP
        _trigger_safety_stop(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now, SR_ESTOP, -1)
    if _role(bits, SI, SI_PIN_GATE, False):
        _trigger_safety_stop(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now, SR_GATE, -1)
    reset_btn = _role(bits, SI, SI_PIN_RESET, False)
    if reset_btn and not SI[SI_PREV_RESET_BTN]:
        _reset_machine(F, B, U8, errors, PB, bits, SI, EV)
    SI[SI_PREV_RESET_BTN] = reset_btn
    SI[SI_M_REDUCED] = _role(bits, SI, SI_PIN_REDUCED, False)
    if SI[SI_M_SAFETY] != _SST_STOP:
        SI[SI_M_SAFETY] = _SST_REDUCED if SI[SI_M_REDUCED] else _SST_SAFE
    if SI[SI_M_SAFETY] == _SST_STOP and not SI[SI_RECOVERY_AUTH] and not SI[SI_M_RESET_REQUIRED] \
            and _unhealthy(bits, SI) == 0 and _all_standstill(F, B, U8):
        _clear_safety_stop(F, B, U8, SI, EV)
    # drive faults: STO of the axis
    for s in range(n):
        if B[B_FAULT, s] and PB[PB_CONFIGURED, s]:
            pw = U8[U_POWER, s]
            powered = pw != _PS_OFF and pw != _PS_ERROR
            if (errors[s] & _AE_DRIVE_FAULT) == 0 or powered:
                _set_error(B, U8, errors, tmode, SI, EV, s, _AE_DRIVE_FAULT, False)
                _torque_off(B, U8, s)
                U8[U_POWER, s] = _PS_ERROR
    # guards (service mode bypasses the guards of bypass axes)
    service = SI[SI_M_STATE] == _MST_SERVICE
    for s in range(n):
        if not B[B_GUARD_CLOSED, s] and not (service and PB[PB_BYPASS, s]) and PB[PB_CONFIGURED, s]:
            pw = U8[U_POWER, s]
            if pw == _PS_MOTION or not _at_rest(F, B, s) or pw == _PS_ON:
                _set_error(B, U8, errors, tmode, SI, EV, s, _AE_GUARD, False)
                cat = PI[PI_GUARD_CAT, s]
                _apply_safe_stop(F, B, U8, errors, tmode, PF, SI, s, cat if cat != 0 else _SSC_SS1, now)
    # limit switches: moving toward an active one (or reaching it) stops the axis
    for s in range(n):
        if B[B_LIM_MIN, s] and F[F_SP_VEL, s] < 0.0 and B[B_CTRL_ON, s] and not (
                U8[U_HOMING_PHASE, s] > 0 and PI[PI_HOMING_KIND, s] == HK_LIMIT_SWITCH and PF[PF_HOMING_DIR, s] < 0):
            _set_error(B, U8, errors, tmode, SI, EV, s, _AE_LIMIT_MIN, True)
            _stop_axis(B, U8, errors, tmode, s, True)
    for s in range(n):
        if B[B_LIM_MAX, s] and F[F_SP_VEL, s] > 0.0 and B[B_CTRL_ON, s] and not (
                U8[U_HOMING_PHASE, s] > 0 and PI[PI_HOMING_KIND, s] == HK_LIMIT_SWITCH and PF[PF_HOMING_DIR, s] > 0):
            _set_error(B, U8, errors, tmode, SI, EV, s, _AE_LIMIT_MAX, True)
            _stop_axis(B, U8, errors, tmode, s, True)


# --- power sequences (machines.power_step) ------------------------------------------------------
@kernel(**_JIT)
def _power_fail(B, U8, errors, s, err):
    errors[s] |= err
    _torque_off(B, U8, s)
    U8[U_POWER, s] = _PS_ERROR


@kernel(**_JIT)
def _power_step(F, B, U8, errors, tmode, PF, PB, now):
    n = F.shape[1]
    any_phase = False
    for s in range(n):
        if U8[U_PHASE, s] != 0:
            any_phase = True
            break
    if not any_phase:
        return
    for s in range(n):  # the at-rest mask of the PoweringOff ramps is taken before anything moves
        B[B_K_REST, s] = _at_rest(F, B, s)
        B[B_K_MASK, s] = False  # to Standby: controller state to zero
    for s in range(n):
        if U8[U_POWER, s] != _PS_ON:
            continue
        ph, t0 = U8[U_PHASE, s], F[F_PHASE_T, s]
        if ph == ON_WAIT_READY:
            if B[B_READY, s]:
                U8[U_PHASE, s] = ON_BRAKE_RELEASE
                F[F_PHASE_T, s] = now
                B[B_CTRL_ON, s] = True
                B[B_BRAKE_RELEASE, s] = PB[PB_HAS_BRAKE, s]
                B[B_K_MASK, s] = True
            elif now - t0 > DRIVE_READY_TIMEOUT_S:
                _power_fail(B, U8, errors, s, _AE_NOT_READY)
        elif ph == ON_BRAKE_RELEASE:
            if not PB[PB_HAS_BRAKE, s]:
                confirmed = True
            elif PB[PB_HAS_BRAKE_IN, s]:
                confirmed = B[B_BRAKE_IN, s]
            else:
                confirmed = now - t0 >= min(BRAKE_NO_DI_CONFIRM_S, PF[PF_RELEASE_TIMEOUT, s])
            if confirmed:
                U8[U_PHASE, s] = ON_HOLD_CHECK
                F[F_PHASE_T, s] = now
                F[F_HOLD_REF, s] = F[F_POS, s]
            elif now - t0 > PF[PF_RELEASE_TIMEOUT, s]:
                _power_fail(B, U8, errors, s, _AE_BRAKE_RELEASE)
        elif ph == ON_HOLD_CHECK:
            tol = min(PF[PF_LAG_LIMIT, s], max(10.0 * PF[PF_WINDOW, s], 1e-9))
            if abs(F[F_POS, s] - F[F_HOLD_REF, s]) > tol:
                _power_fail(B, U8, errors, s, _AE_HOLD_CHECK)
            elif now - t0 >= HOLD_CHECK_S:
                U8[U_POWER, s] = _PS_STANDBY
                U8[U_PHASE, s] = 0
                B[B_K_MASK, s] = True
    for s in range(n):
        if U8[U_POWER, s] != _PS_POWERING_OFF:
            continue
        ph, t0 = U8[U_PHASE, s], F[F_PHASE_T, s]
        if ph == OFF_RAMP:
            if B[B_K_REST, s]:
                U8[U_PHASE, s] = OFF_BRAKE_ENGAGE
                F[F_PHASE_T, s] = now
                B[B_BRAKE_RELEASE, s] = False
        elif ph == OFF_BRAKE_ENGAGE:
            if PB[PB_HAS_BRAKE_IN, s] and U8[U_SAFE_STOP, s] == _SSC_NONE:
                done = not B[B_BRAKE_IN, s]
                if not done and now - t0 > PF[PF_ENGAGE_TIMEOUT, s]:
                    errors[s] |= _AE_BRAKE_ENGAGE
                    done = True
            else:
                done = now - t0 >= F[F_OFF_DELAY, s]
            if done:
                _torque_off(B, U8, s)
                if errors[s] & _AE_BRAKE_ENGAGE:
                    U8[U_POWER, s] = _PS_NO_BRAKE
    for s in range(n):
        if B[B_K_MASK, s]:
            _zero_controller(F, B, tmode, s)


# --- homing and gear changes ---------------------------------------------------------------------
@kernel(**_JIT)
def _homing_speed(PF, s):
    return min(PF[PF_HOMING_SPEED, s], UNREFERENCED_SPEED_FRACTION * PF[PF_VMAX, s])


@kernel(**_JIT)
def _homing_velocity(F, tmode, PF, s, direction, fraction):
    tmode[s] = VELOCITY
    F[F_TARGET_VEL, s] = direction * _homing_speed(PF, s) * fraction


@kernel(**_JIT)
def _homing_finish(F, U8, tmode, s, to_pos, target):
    U8[U_HOMING_PHASE, s] = HP_SETTLE
    if to_pos:
        tmode[s] = POSITION
        F[F_TARGET, s] = target
    else:
        tmode[s] = HOLD


@kernel(**_JIT)
def _homing_step(F, B, U8, errors, tmode, PF, PI, SI, EV, now):
    for s in range(F.shape[1]):
        if U8[U_HOMING_PHASE, s] == 0:
            continue
        pw = U8[U_POWER, s]
        if pw != _PS_STANDBY and pw != _PS_MOTION:
            U8[U_HOMING_PHASE, s] = HP_IDLE
            continue
        kind = PI[PI_HOMING_KIND, s]
        ph = U8[U_HOMING_PHASE, s]
        d = PF[PF_HOMING_DIR, s]
        if now - F[F_H_T0, s] > PF[PF_HOMING_TIMEOUT, s]:
            F[F_TORQUE_LIMIT, s] = _INF
            _set_error(B, U8, errors, tmode, SI, EV, s, _AE_HOMING_TIMEOUT, True)
            continue
        if kind == HK_HOME_SENSOR:
            ref = B[B_REF_IN, s]
            if ph == HP_CLEAR and not ref:
                U8[U_HOMING_PHASE, s] = HP_SEARCH
                _homing_velocity(F, tmode, PF, s, d, CREEP_FRACTION if B[B_H_CREEP, s] else 1.0)
            elif ph == HP_SEARCH and ref:
                if B[B_H_CREEP, s]:
                    F[F_H_EDGE, s] = F[F_POS, s]
                    _homing_finish(F, U8, tmode, s, True, F[F_POS, s])
                else:
                    B[B_H_CREEP, s] = True
                    U8[U_HOMING_PHASE, s] = HP_CLEAR
                    _homing_velocity(F, tmode, PF, s, -d, CREEP_FRACTION)
        elif kind == HK_LIMIT_SWITCH:
            on = B[B_LIM_MIN, s] if d < 0 else B[B_LIM_MAX, s]
            if ph == HP_CLEAR and not on:
                U8[U_HOMING_PHASE, s] = HP_SEARCH
                _homing_velocity(F, tmode, PF, s, d, 1.0)
            elif ph == HP_SEARCH and on:
                U8[U_HOMING_PHASE, s] = HP_BACKOFF
                _homing_velocity(F, tmode, PF, s, -d, CREEP_FRACTION)
            elif ph == HP_BACKOFF and not on:
                F[F_H_EDGE, s] = F[F_POS, s]
                _homing_finish(F, U8, tmode, s, False, 0.0)
        elif kind == HK_TORQUE_LIMIT:
            if ph == HP_SEARCH:
                still = abs(F[F_VEL, s]) < STILL_SPEED_FRACTION * max(_homing_speed(PF, s), 1e-9)
                pushing = abs(F[F_OUTPUT, s]) >= TORQUE_DETECT_FRACTION * PF[PF_HOMING_TORQUE, s]
                if not (still and pushing):
                    F[F_H_T_STILL, s] = now
                elif now - F[F_H_T_STILL, s] >= TORQUE_DETECT_S:
                    F[F_H_EDGE, s] = F[F_POS, s]
                    _zero_controller(F, B, tmode, s)
                    F[F_TORQUE_LIMIT, s] = _INF
                    _homing_finish(F, U8, tmode, s, False, 0.0)
        elif kind == HK_INDEX_PULSE:
            if ph == HP_SEARCH and B[B_INDEX_IN, s]:
                F[F_H_EDGE, s] = F[F_POS, s]
                _homing_finish(F, U8, tmode, s, False, 0.0)
        if U8[U_HOMING_PHASE, s] == HP_SETTLE and B[B_DONE, s] and F[F_SP_VEL, s] == 0.0:
            U8[U_HOMING_PHASE, s] = HP_IDLE
            B[B_REFERENCED, s] = True
            _event(SI, EV, EV_HOMED, s, kind)


@kernel(**_JIT)
def _gear_step(F, B, U8, errors, tmode, PF, SI, EV, now):
    for s in range(F.shape[1]):
        if not B[B_SHIFTING, s]:
            continue
        pw = U8[U_POWER, s]
        if pw != _PS_STANDBY and pw != _PS_MOTION:
            _gear_cancel(B, U8, errors, s)
            continue
        el = now - F[F_G_T0, s]
        stage = U8[U_G_STAGE, s]
        if stage == 1 and el >= GEAR_ASSIST_S:
            U8[U_G_STAGE, s] = 2
            F[F_TARGET_VEL, s] = -GEAR_ASSIST_SPEED * PF[PF_VMAX, s]
        elif stage == 2 and el >= 2 * GEAR_ASSIST_S:
            U8[U_G_STAGE, s] = 3
            tmode[s] = POSITION
            F[F_TARGET, s] = F[F_G_ORIGIN, s]
        elif stage == 3 and B[B_DONE, s]:
            B[B_SHIFTING, s] = False
            U8[U_GEARBOX, s] = U8[U_G_TARGET, s]
            _event(SI, EV, EV_GEAR_ENGAGED, s, U8[U_G_TARGET, s])


@kernel(**_JIT)
def _step_safe_stops(F, B, U8, S, SI, EV, now):
    timeout = S[S_SAFETY_STOP_TIMEOUT]
    for s in range(F.shape[1]):
        if U8[U_SAFE_STOP, s] != 0 and not _at_rest(F, B, s) and now - F[F_SAFE_STOP_T, s] > timeout \
                and B[B_CTRL_ON, s]:
            _event(SI, EV, EV_SAFE_STOP_LATE, s, 0)
            U8[U_SAFE_STOP, s] = _SSC_STO
            _torque_off(B, U8, s)


# --- trajectory ------------------------------------------------------------------------------------
@kernel(**_JIT)
def _vstop(dist, a, dt):
    return a * (math.sqrt(dt * dt + 2.0 * max(dist, 0.0) / a) - dt)


@kernel(**_JIT)
def traj_step(F, B, tmode, dt, soft_limits):
    """Trajectory.step for every axis (see trajectory.py for the method)."""
    n = F.shape[1]
    moving = False
    for s in range(n):
        if tmode[s] != 0 or F[F_SP_VEL, s] != 0.0:
            moving = True
            break
    if not moving:
        for s in range(n):
            F[F_SP_ACC, s] = 0.0
            B[B_DONE, s] = True
        return
    inv_dt = 1.0 / dt
    for s in range(n):
        mode = tmode[s]
        pos, vel = F[F_SP_POS, s], F[F_SP_VEL, s]
        vmax, amax, dmax, target = F[F_VMAX, s], F[F_AMAX, s], F[F_DMAX, s], F[F_TARGET, s]
        if mode == POSITION:
            d = target - pos
            v = abs(d) * 2.0
            v /= dmax
            v += dt * dt
            v = math.sqrt(v)
            v -= dt
            v *= dmax
            v = _fmin(v, vmax)
            v_des = math.copysign(v, d)
        elif mode == VELOCITY:
            v_des = _fmax(_fmin(F[F_TARGET_VEL, s], vmax), -vmax)
        else:
            v_des = 0.0
        if soft_limits:
            v_des = _fmin(v_des, _vstop(F[F_PMAX, s] - pos, dmax, dt))
            v_des = _fmax(v_des, -_vstop(pos - F[F_PMIN, s], dmax, dt))
        dv = v_des - vel
        if dv * vel >= 0.0 and abs(v_des) > abs(vel):
            lim = amax * dt
        else:
            lim = dmax * dt
        dv = _fmax(_fmin(dv, lim), -lim)
        v_new = vel + dv
        new_pos = v_new * dt
        new_pos += pos
        if mode == POSITION:
            tol = abs(target) * 1e-12
            tol += 1e-9
            if abs(target - new_pos) <= tol and abs(v_new) <= dmax * dt:
                new_pos = target
                v_new = 0.0
        F[F_SP_ACC, s] = (v_new - vel) * inv_dt
        F[F_SP_VEL, s] = v_new
        F[F_SP_POS, s] = new_pos
        done = v_new == 0.0
        if mode == VELOCITY:
            done = False
        elif mode == POSITION:
            done = done and new_pos == target
        B[B_DONE, s] = done


# --- coupling --------------------------------------------------------------------------------------
@kernel(**_JIT)
def _count_slaves(master):
    k = 0
    for s in range(master.shape[0]):
        if master[s] >= 0:
            k += 1
    return k


@kernel(**_JIT)
def _couple(F, B, U8, master, PB, SI, EV, slave, m, ratio):
    n = master.shape[0]
    if slave == m or not PB[PB_CONFIGURED, m] or master[m] >= 0:
        return
    for s in range(n):
        if master[s] == slave:
            return
    for s in (slave, m):
        if U8[U_POWER, s] != _PS_STANDBY or not _at_rest(F, B, s):
            return
    master[slave] = m
    SI[SI_CPL_ACTIVE] = _count_slaves(master)
    F[F_C_RATIO, slave] = ratio
    F[F_C_OFFSET, slave] = F[F_SP_POS, slave] - ratio * F[F_SP_POS, m]
    B[B_C_MANUAL_OFF, slave] = False
    U8[U_COUPLING, slave] = _CS_SYNC
    U8[U_COUPLING, m] = _CS_MASTER
    _event(SI, EV, EV_COUPLED, slave, m)


@kernel(**_JIT)
def _decouple(F, U8, master, tmode, SI, slave):
    m = master[slave]
    if m < 0:
        return
    master[slave] = -1
    SI[SI_CPL_ACTIVE] = _count_slaves(master)
    U8[U_COUPLING, slave] = _CS_UNCOUPLED
    F[F_TARGET, slave] = F[F_SP_POS, slave]
    tmode[slave] = HOLD
    for s in range(master.shape[0]):
        if master[s] == m:
            return
    U8[U_COUPLING, m] = _CS_UNCOUPLED


@kernel(**_JIT)
def _follow(F, B, U8, errors, tmode, master, PF, PI, PB, cpl_cfg, SI, EV):
    """coupling.follow"""
    for k in range(SI[SI_CPL_CFG_N]):
        s = cpl_cfg[k]
        if master[s] < 0 and not B[B_C_MANUAL_OFF, s]:
            m = PI[PI_MASTER, s]
            if U8[U_POWER, s] == _PS_STANDBY and U8[U_POWER, m] == _PS_STANDBY and _at_rest(F, B, s) \
                    and _at_rest(F, B, m) and U8[U_HOMING_PHASE, s] == 0:
                _couple(F, B, U8, master, PB, SI, EV, s, m, PF[PF_RATIO, s])
    if SI[SI_CPL_ACTIVE] == 0:
        return
    n = master.shape[0]
    for s in range(n):
        m = master[s]
        if m >= 0:
            r = F[F_C_RATIO, s]
            F[F_SP_POS, s] = r * F[F_SP_POS, m] + F[F_C_OFFSET, s]
            F[F_SP_VEL, s] = r * F[F_SP_VEL, m]
            F[F_SP_ACC, s] = r * F[F_SP_ACC, m]
            F[F_TARGET, s] = r * F[F_TARGET, m] + F[F_C_OFFSET, s]
            B[B_DONE, s] = B[B_DONE, m]
            tmode[s] = HOLD
    for s in range(n):
        m = master[s]
        if m < 0:
            continue
        pm, ps = U8[U_POWER, m], U8[U_POWER, s]
        m_ok = pm == _PS_STANDBY or pm == _PS_MOTION
        s_ok = ps == _PS_STANDBY or ps == _PS_MOTION
        if not m_ok or not s_ok:
            if m_ok:
                _stop_axis(B, U8, errors, tmode, m, True)
            if not m_ok:
                _set_error(B, U8, errors, tmode, SI, EV, s, _AE_MASTER, False)
            _decouple(F, U8, master, tmode, SI, s)
            B[B_C_MANUAL_OFF, s] = True
            continue
        U8[U_POWER, s] = _PS_MOTION if pm == _PS_MOTION else _PS_STANDBY


@kernel(**_JIT)
def _monitor_sync(F, B, U8, errors, tmode, master, PF, SI, EV):
    if SI[SI_CPL_ACTIVE] == 0:
        return
    n = master.shape[0]
    for s in range(n):
        m = master[s]
        if m < 0:
            continue
        err = abs(F[F_POS, s] - (F[F_C_RATIO, s] * F[F_POS, m] + F[F_C_OFFSET, s]))
        if err > PF[PF_MAX_SYNC, s] and U8[U_COUPLING, s] != _CS_SYNC_LOST:
            U8[U_COUPLING, s] = _CS_SYNC_LOST
            _set_error(B, U8, errors, tmode, SI, EV, s, _AE_SYNC, False)
            _stop_axis(B, U8, errors, tmode, m, True)
    for s in range(n):  # an error on a slave stops its master
        m = master[s]
        if m >= 0 and (errors[s] & _AE_BLOCKING) != 0 and U8[U_POWER, m] == _PS_MOTION:
            _stop_axis(B, U8, errors, tmode, m, True)


# --- lag ---------------------------------------------------------------------------------------------
@kernel(**_JIT)
def _monitor_lag(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now):
    n = F.shape[1]
    hit = False
    for s in range(n):  # the mask is taken first: a critical lag error changes other axes' power
        pw = U8[U_POWER, s]
        over = abs(F[F_LAG, s]) > PF[PF_LAG_LIMIT, s] and B[B_CTRL_ON, s] \
            and (pw == _PS_STANDBY or pw == _PS_MOTION) \
            and not (U8[U_HOMING_PHASE, s] > 0 and PI[PI_HOMING_KIND, s] == HK_TORQUE_LIMIT) \
            and PI[PI_LAG_POLICY, s] != LAG_DESIRED
        B[B_K_MASK, s] = over
        hit = hit or over
    if not hit:
        return
    for s in range(n):
        if not B[B_K_MASK, s]:
            continue
        pol = PI[PI_LAG_POLICY, s]
        if pol == LAG_NEUTRAL:
            if (errors[s] & _AE_LAG_WARNING) == 0:
                _set_error(B, U8, errors, tmode, SI, EV, s, _AE_LAG_WARNING, False)
            continue
        if errors[s] & _AE_LAG_ERROR:
            continue
        _set_error(B, U8, errors, tmode, SI, EV, s, _AE_LAG_ERROR, pol == LAG_UNWANTED)
        if pol == LAG_CRITICAL:
            SI[SI_M_ERRORS] |= _ME_LAG_CRITICAL
            _trigger_safety_stop(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now, SR_LAG, s)


# --- control law ------------------------------------------------------------------------------------
@kernel(**_JIT)
def law_step(F, B, LC, SI, dt, ticks, hold):
    """ControlLaw.step on the core's rows: set-point (sp_pos/sp_vel/sp_acc), feedback (pos/vel),
    `act` and the per-axis limit already in place (see control_law.py for the method)."""
    n = F.shape[1]
    all_active = SI[SI_LAW_ALL_ACTIVE] != 0
    masked = not all_active
    use_d, use_i, use_aw = SI[SI_USE_D] != 0, SI[SI_USE_I] != 0, SI[SI_USE_AW] != 0
    use_ff_a, use_ff_f, use_dob = SI[SI_USE_FF_A] != 0, SI[SI_USE_FF_F] != 0, SI[SI_USE_DOB] != 0
    use_notch, use_lp = SI[SI_USE_NOTCH] != 0, SI[SI_USE_LP] != 0
    for s in range(n):
        act = F[F_ACT, s]
        lim = F[F_W_T, s]  # the limit of this cycle (set by the caller)
        if hold:
            out = _fmax(_fmin(F[F_OUTPUT, s], lim), -lim)
            if masked:
                out *= act
            F[F_OUTPUT, s] = out
            continue
        e = F[F_SP_POS, s] - F[F_POS, s]
        if masked:
            e *= act
        F[F_ERROR, s] = e
        u = LC[LC_KP, s] * e
        if use_d:
            de = F[F_SP_VEL, s] - F[F_VEL, s]
            if masked:
                de *= act
            de *= LC[LC_KD_ALPHA, s]
            d = F[F_DERIVATIVE, s] * LC[LC_ONE_MINUS_ALPHA, s]
            d += de
            F[F_DERIVATIVE, s] = d
            u += d
        if use_i:
            t = LC[LC_KI_DT, s] * e
            if ticks != 1:
                t *= ticks
            F[F_INTEGRAL, s] += t
            u += F[F_INTEGRAL, s]
        sp_vel = F[F_SP_VEL, s]
        ff = LC[LC_KVFF, s] * sp_vel
        if use_ff_a:
            ff += LC[LC_KAFF, s] * F[F_SP_ACC, s]
        if use_ff_f:
            ff += LC[LC_FRICTION, s] * np.sign(sp_vel)
        if masked:
            ff *= act
        F[F_FEEDFORWARD, s] = ff
        u += ff
        if use_dob:
            first = B[B_FIRST, s]
            v = F[F_VEL, s] * act
            acc = (v - F[F_V_PREV, s]) / dt
            if first:
                acc = 0.0
            raw = F[F_U_PREV, s] - (LC[LC_JN, s] * acc + LC[LC_BN, s] * v)
            raw -= F[F_DOB, s]
            if first:
                raw = 0.0
            F[F_DOB, s] += LC[LC_BETA_DOB, s] * raw
            F[F_V_PREV, s] = v
            u += F[F_DOB, s]
            B[B_FIRST, s] = False
        if use_notch:
            y = LC[LC_NB0, s] * u + LC[LC_NB1, s] * F[F_NX1, s] + LC[LC_NB2, s] * F[F_NX2, s] \
                - LC[LC_NA1, s] * F[F_NY1, s] - LC[LC_NA2, s] * F[F_NY2, s]
            F[F_NX2, s] = F[F_NX1, s]
            F[F_NX1, s] = u
            F[F_NY2, s] = F[F_NY1, s]
            F[F_NY1, s] = y
            u = y
        if use_lp:
            F[F_LP, s] += LC[LC_GAMMA_LP, s] * (u - F[F_LP, s])
            u = F[F_LP, s]
        F[F_UNCLAMPED, s] = u
        out = _fmax(_fmin(u, lim), -lim)
        if use_aw:
            F[F_INTEGRAL, s] += (out - u) * LC[LC_TT_GAIN, s]
        if masked:
            out *= act
        F[F_OUTPUT, s] = out
        if use_dob:
            F[F_U_PREV, s] = out


@kernel(**_JIT)
def law_activate(F, B, SI):
    """The active mask (B_K_MASK) changed? Reset the axes that just lost their loop and refresh
    `act` (ControlLaw.step's prologue)."""
    n = F.shape[1]
    changed = False
    for s in range(n):
        if B[B_K_MASK, s] != B[B_WAS_ACTIVE, s]:
            changed = True
            break
    if not changed:
        return
    k = 0
    for s in range(n):
        a = B[B_K_MASK, s]
        if B[B_WAS_ACTIVE, s] and not a:
            _law_reset(F, B, s)
        B[B_WAS_ACTIVE, s] = a
        F[F_ACT, s] = 1.0 if a else 0.0
        if a:
            k += 1
    SI[SI_LAW_ALL_ACTIVE] = 1 if k == n else 0


# --- inputs -----------------------------------------------------------------------------------------
@kernel(**_JIT)
def _gather(fb, bank, F, B, bits, saved_bank, PI, SI):
    """set_inputs with the HAL feedback records (raw bytes: HAL_AXIS_FEEDBACK) and a logical DI bank."""
    n = F.shape[1]
    fbf = fb[: n * FB_SIZE].view(np.float64)
    w = FB_SIZE // 8
    for s in range(n):
        F[F_POS, s] = fbf[s * w + FB_POSITION // 8]
        F[F_VEL, s] = fbf[s * w + FB_VELOCITY // 8]
        F[F_TORQUE_FB, s] = fbf[s * w + FB_TORQUE // 8]
        B[B_READY, s] = fb[s * FB_SIZE + FB_READY] != 0
        B[B_FAULT, s] = fb[s * FB_SIZE + FB_FAULT] != 0
        B[B_DRIVE_REF, s] = fb[s * FB_SIZE + FB_REFERENCED] != 0
    if SI[SI_ABSOLUTE_ANY]:
        for s in range(n):
            if B[B_ABSOLUTE, s]:
                B[B_REFERENCED, s] = B[B_DRIVE_REF, s]
    if SI[SI_BANK_VALID]:
        same = True
        for w in range(bank.shape[0]):
            if bank[w] != saved_bank[w]:
                same = False
                break
        if same:
            return
    for w in range(bank.shape[0]):
        word = bank[w]
        saved_bank[w] = word
        for b in range(64):
            bits[w * 64 + b] = ((word >> np.uint64(b)) & np.uint64(1)) != 0
    SI[SI_BANK_VALID] = 1
    for s in range(n):
        B[B_LIM_MIN, s] = bits[PI[PI_PIN_LIMIT_MIN, s]]
        B[B_LIM_MAX, s] = bits[PI[PI_PIN_LIMIT_MAX, s]]
        B[B_REF_IN, s] = bits[PI[PI_PIN_REF, s]]
        B[B_BRAKE_IN, s] = bits[PI[PI_PIN_BRAKE_IN, s]]
        B[B_GUARD_CLOSED, s] = bits[PI[PI_PIN_GUARD, s]]
        B[B_INDEX_IN, s] = bits[PI[PI_PIN_INDEX, s]]


# --- one cycle ---------------------------------------------------------------------------------------
@kernel(**_JIT)
def _ticks(S, SI, now):
    dt = S[S_DT]
    if SI[SI_T0_SET] == 0:
        S[S_T0] = now - dt
        SI[SI_STEPS] = 0
        SI[SI_T0_SET] = 1
    due = int((now - S[S_T0]) / dt + 0.5) - SI[SI_STEPS]
    if due > MAX_CATCHUP_CYCLES:
        S[S_T0] += (due - MAX_CATCHUP_CYCLES) * dt
        due = MAX_CATCHUP_CYCLES
    due = max(due, 0)
    SI[SI_STEPS] += due
    return due


@kernel(**_JIT)
def _machine_progress(F, B, U8, S, SI, EV, now):
    st = SI[SI_M_STATE]
    if st == _MST_STOPPED and SI[SI_HAL_OK] and not SI[SI_M_STOPPED_BY_COMMAND]:
        SI[SI_M_STATE] = _MST_STARTING
        S[S_STARTING_T] = now
    elif st == _MST_STARTING and SI[SI_HAL_OK] and now - S[S_STARTING_T] >= STARTUP_SETTLE_S:
        SI[SI_M_STATE] = _MST_IDLE
        _event(SI, EV, EV_MACHINE_IDLE, 0, 0)
    if SI[SI_M_STATE] == _MST_MANUAL:
        if now - S[S_MANUAL_T] > S[S_MANUAL_TIMEOUT] and _all_standstill(F, B, U8):
            SI[SI_M_STATE] = _MST_IDLE
            SI[SI_M_ERRORS] |= _ME_MANUAL_TIMEOUT
            _event(SI, EV, EV_MANUAL_TIMEOUT, 0, 0)


@kernel(**_JIT)
def _cycle(F, B, U8, errors, tmode, master, sp_hist, bits, LC, PF, PI, PB, cpl_cfg, S, SI, EV, now):
    n = F.shape[1]
    SI[SI_EV_N] = 0
    SI[SI_EV_LOST] = 0
    SI[SI_CYCLE] += 1
    S[S_NOW] = now
    ticks = _ticks(S, SI, now)
    _machine_progress(F, B, U8, S, SI, EV, now)
    _evaluate(F, B, U8, errors, tmode, PF, PI, PB, bits, S, SI, EV, now)
    _power_step(F, B, U8, errors, tmode, PF, PB, now)
    _homing_step(F, B, U8, errors, tmode, PF, PI, SI, EV, now)
    _gear_step(F, B, U8, errors, tmode, PF, SI, EV, now)
    _step_safe_stops(F, B, U8, S, SI, EV, now)
    # limits of this cycle (unreferenced: 5 %; reduced speed; service speed of bypass axes)
    reduced = SI[SI_M_SAFETY] == _SST_REDUCED
    service = SI[SI_M_STATE] == _MST_SERVICE
    any_vel = False
    for s in range(n):
        vlim = PF[PF_VMAX, s] if B[B_REFERENCED, s] else F[F_VMAX_UNREF, s]
        if reduced:
            vlim = _fmin(vlim, PF[PF_REDUCED_V, s])
        if service and PB[PB_BYPASS, s]:
            vlim = _fmin(vlim, S[S_SERVICE_V])
        F[F_VMAX, s] = _fmin(vlim, F[F_CMD_V, s])
        amax = _fmin(PF[PF_AMAX, s], F[F_CMD_A, s])
        F[F_AMAX, s] = amax
        F[F_DMAX, s] = PF[PF_DECEL_SAFE, s] if (B[B_QUICK, s] or U8[U_SAFE_STOP, s] != _SSC_NONE) else amax
        any_vel = any_vel or tmode[s] == VELOCITY
    # soft limits matter only for velocity moves (position targets are checked on command)
    soft_any = False
    if any_vel:
        for s in range(n):
            soft = B[B_REFERENCED, s] and not PB[PB_ROTARY, s] and U8[U_HOMING_PHASE, s] == 0
            B[B_K_MASK, s] = soft
            soft_any = soft_any or soft
        if soft_any:
            for s in range(n):
                F[F_PMIN, s] = PF[PF_PMIN, s] if B[B_K_MASK, s] else -_INF
                F[F_PMAX, s] = PF[PF_PMAX, s] if B[B_K_MASK, s] else _INF
    dt = S[S_DT]
    for _ in range(ticks):  # the set-point follows real time across missed cycles
        traj_step(F, B, tmode, dt, soft_any)
    for s in range(n):
        if not B[B_CTRL_ON, s]:
            _traj_reset_to(F, B, tmode, s)
    _follow(F, B, U8, errors, tmode, master, PF, PI, PB, cpl_cfg, SI, EV)
    # end of motion
    for s in range(n):
        rest = _at_rest(F, B, s)
        B[B_K_REST, s] = rest
        idle = rest and U8[U_HOMING_PHASE, s] == 0 and not B[B_SHIFTING, s]
        if rest:
            B[B_STOPPING, s] = False
            if U8[U_SAFE_STOP, s] == _SSC_NONE:
                B[B_QUICK, s] = False
        if U8[U_POWER, s] == _PS_MOTION and idle and tmode[s] != VELOCITY:
            U8[U_POWER, s] = _PS_STANDBY
            F[F_CMD_V, s] = _INF
            F[F_CMD_A, s] = _INF
            if not B[B_LOCK_EXPLICIT, s]:
                U8[U_LOCK, s] = 0  # implicit locks end with motion
    # monitoring
    i = (SI[SI_SP_I] + 1) % LAG_HISTORY
    SI[SI_SP_I] = i
    age = SI[SI_FB_AGE]
    j = i if age == 0 or age >= LAG_HISTORY else (i - age) % LAG_HISTORY
    for s in range(n):
        sp_hist[i, s] = F[F_SP_POS, s]
    for s in range(n):
        F[F_LAG, s] = (sp_hist[j, s] - F[F_POS, s]) * (1.0 if B[B_CTRL_ON, s] else 0.0)
    _monitor_lag(F, B, U8, errors, tmode, PF, PI, PB, S, SI, EV, now)
    _monitor_sync(F, B, U8, errors, tmode, master, PF, SI, EV)
    for s in range(n):
        B[B_IN_POSITION, s] = abs(F[F_TARGET, s] - F[F_POS, s]) <= PF[PF_WINDOW, s] and B[B_CTRL_ON, s] \
            and B[B_DONE, s]
        if U8[U_SAFE_STOP, s] == _SSC_SS2 and B[B_K_REST, s]:  # SS2 at rest holds with ss2_holding_torque
            F[F_TORQUE_LIMIT, s] = PF[PF_SS2_TORQUE, s]
    # control law
    for s in range(n):
        F[F_W_T, s] = _fmin(LC[LC_OUT_MAX, s], F[F_TORQUE_LIMIT, s])
        B[B_K_MASK, s] = B[B_CTRL_ON, s] and B[B_READY, s] and B[B_ENABLE, s]
    law_activate(F, B, SI)
    law_step(F, B, LC, SI, dt, max(ticks, 1), SI[SI_FB_AGE] > SI[SI_HOLD_CYCLES])
    # derived states and flags
    ref_changed = False
    for s in range(n):
        if B[B_REFERENCED, s] != B[B_REF_SEEN, s]:
            ref_changed = True
            break
    if ref_changed:
        for s in range(n):
            B[B_REF_SEEN, s] = B[B_REFERENCED, s]
            if PB[PB_NEEDS_REF, s] and not B[B_REFERENCED, s] and PB[PB_CONFIGURED, s]:
                errors[s] |= _AE_NOT_REF
            else:
                errors[s] &= ~_AE_NOT_REF
    blocking_any = False
    for s in range(n):
        rest = B[B_K_REST, s]
        if rest:
            mo = _MS_STANDSTILL
        else:
            av = F[F_SP_ACC, s] * F[F_SP_VEL, s]
            mo = _MS_ACC if av > 0.0 else (_MS_DEC if av < 0.0 else _MS_CONST)
            if B[B_STOPPING, s]:
                mo = _MS_STOPPING
        if B[B_SHIFTING, s]:
            mo = _MS_GEAR
        if U8[U_HOMING_PHASE, s] > 0:
            mo = _MS_HOMING
        if U8[U_SAFE_STOP, s] != _SSC_NONE and not rest:
            mo = _MS_ESTOP
        if (errors[s] & _AE_BLOCKING) != 0:
            mo = _MS_ERROR
            blocking_any = True
        U8[U_MOTION, s] = mo
    safety_stop = SI[SI_M_SAFETY] == _SST_STOP
    if SI[SI_CYCLE] % 10 == 0:  # status-only states at 100 Hz
        idle_ls = _LS_MANUAL if SI[SI_M_STATE] == _MST_MANUAL else _LS_READY
        for s in range(n):
            if safety_stop:
                U8[U_LOADING, s] = _LS_BLOCKED
            elif U8[U_MOTION, s] != _MS_STANDSTILL or U8[U_POWER, s] == _PS_MOTION:
                U8[U_LOADING, s] = _LS_PRODUCTION
            else:
                U8[U_LOADING, s] = idle_ls
    # machine flags
    e = SI[SI_M_ERRORS] & _ME_KEEP
    if blocking_any:
        e |= _ME_AXIS
    if safety_stop:
        e |= _ME_SSTOP
        if (SI[SI_M_RESET_REQUIRED] or SI[SI_RECOVERY_AUTH]) and _unhealthy(bits, SI) == 0:
            e |= _ME_RECOVERY
    guard_open = not _role(bits, SI, SI_PIN_GUARD_CLOSED, True)
    for s in range(n):
        if not B[B_GUARD_CLOSED, s]:
            guard_open = True
            break
    if guard_open:
        e |= _ME_GUARD
    SI[SI_M_ERRORS] = e
    return SI[SI_EV_N]


# --- the entry points and the exact signatures used at run time ----------------------------------------
@kernel(**_JIT)
def _block(arena, lay, k):
    return arena[lay[2 * k]:lay[2 * k + 1]]


@kernel(**_JIT)
def cycle_step(arena, lay, now):
    """ControlCore.step: one CU cycle in place on a Store's arena. Returns the number of events in
    EV (0 = nothing for the caller to log or announce)."""
    n = lay[LAY_N]
    F = _block(arena, lay, A_F).view(np.float64).reshape((len(_F_ROWS), n))
    B = _block(arena, lay, A_B).view(np.bool_).reshape((len(_B_ROWS), n))
    U8 = _block(arena, lay, A_U8).reshape((len(_U_ROWS), n))
    LC = _block(arena, lay, A_LC).view(np.float64).reshape((len(_LC_ROWS), n))
    errors = _block(arena, lay, A_ERRORS).view(np.uint64)
    tmode = _block(arena, lay, A_TMODE).view(np.int8)
    master = _block(arena, lay, A_MASTER).view(np.int64)
    sp_hist = _block(arena, lay, A_SP_HIST).view(np.float64).reshape((LAG_HISTORY, n))
    bits = _block(arena, lay, A_BITS).view(np.bool_)
    S = _block(arena, lay, A_S).view(np.float64)
    SI = _block(arena, lay, A_SI).view(np.int64)
    EV = _block(arena, lay, A_EV).view(np.int64).reshape((EV_MAX, 3))
    PF = _block(arena, lay, A_PF).view(np.float64).reshape((len(PF_ROWS), n))
    PI = _block(arena, lay, A_PI).view(np.int64).reshape((len(PI_ROWS), n))
    PB = _block(arena, lay, A_PB).view(np.bool_).reshape((len(PB_ROWS), n))
    cpl_cfg = _block(arena, lay, A_CPL_CFG).view(np.int64)
    return _cycle(F, B, U8, errors, tmode, master, sp_hist, bits, LC, PF, PI, PB, cpl_cfg, S, SI, EV, now)


@kernel(**_JIT)
def gather_inputs(fb, bank, arena, lay, fb_age, hal_ok, hal_missing):
    """ControlCore.set_inputs on a Store's arena: `fb` the HAL_AXIS_FEEDBACK records as bytes,
    `bank` the logical DI bank (u64 words), the HAL's liveness and the feedback's age."""
    n = lay[LAY_N]
    SI = _block(arena, lay, A_SI).view(np.int64)
    SI[SI_FB_AGE] = fb_age
    SI[SI_HAL_OK] = hal_ok
    SI[SI_HAL_MISSING] = hal_missing
    if not hal_ok:
        return
    SI[SI_HAL_SEEN] = 1
    F = _block(arena, lay, A_F).view(np.float64).reshape((len(_F_ROWS), n))
    B = _block(arena, lay, A_B).view(np.bool_).reshape((len(_B_ROWS), n))
    bits = _block(arena, lay, A_BITS).view(np.bool_)
    saved = _block(arena, lay, A_BANK).view(np.uint64)
    PI = _block(arena, lay, A_PI).view(np.int64).reshape((len(PI_ROWS), n))
    _gather(fb, bank, F, B, bits, saved, PI, SI)


# gather_feedback's arrays: one common/jit_table.py table (CycleRunner, made again when the HAL frame's
# array or the core changes), in this order — the frame's axis records as bytes, its di_bank, the NC mask,
# the logical bank it fills, the core's arena and layout
FB_AXES, FB_PHYS, FB_NC, FB_LOGICAL, FB_ARENA, FB_LAY = range(6)


@kernel(**_JIT)
def gather_feedback(tab, fb_age):
    """_gather_feedback over the arrays of `tab` (FB_*): one array argument for numba's entry point."""
    _gather_feedback(table_bytes(tab, FB_AXES), table_bytes(tab, FB_PHYS).view(np.uint64),
                     table_bytes(tab, FB_NC).view(np.uint64), table_bytes(tab, FB_LOGICAL).view(np.uint64),
                     table_bytes(tab, FB_ARENA), table_bytes(tab, FB_LAY).view(np.int64), fb_age)


@kernel(**_JIT)
def _gather_feedback(fb, phys_bank, nc_mask, logical, arena, lay, fb_age):
    """The cycle runner's set_inputs for a live HAL frame in one call: the logical DI bank
    (`logical` = `phys_bank` XOR `nc_mask`, the NC contacts inverted) and then gather_inputs."""
    for w in range(logical.shape[0]):
        logical[w] = phys_bank[w] ^ nc_mask[w]
    gather_inputs(fb, logical, arena, lay, fb_age, True, False)


@kernel(**_JIT)
def _put_u8(out, i, v):
    """out[i] = v; True when the byte changed."""
    old = out[i]
    out[i] = v
    return out[i] != old


@kernel(**_JIT)
def _put_f8(of, o64, w, v):
    """Word w of `of` (f64) = v; True when its bits changed (a NaN that stays NaN is no change)."""
    old = o64[w]
    of[w] = v
    return o64[w] != old


@kernel(**_JIT)
def fill_status(out, arena, lay, hal_heartbeat, hal_age):
    """diagnostics.StatusWriter.fill on a CU_STATUS record as bytes (`out`), the message excepted.
    Returns True when a byte other than hal_heartbeat / hal_age_cycles (which move every cycle and
    mean nothing to the status readers) changed: the change test of the published status comes
    with the fill, touching only the bytes it writes."""
    n = lay[LAY_N]
    F = _block(arena, lay, A_F).view(np.float64).reshape((len(_F_ROWS), n))
    B = _block(arena, lay, A_B).view(np.bool_).reshape((len(_B_ROWS), n))
    U8 = _block(arena, lay, A_U8).reshape((len(_U_ROWS), n))
    errors = _block(arena, lay, A_ERRORS).view(np.uint64)
    master = _block(arena, lay, A_MASTER).view(np.int64)
    SI = _block(arena, lay, A_SI).view(np.int64)
    ch = _put_u8(out, ST_MACHINE_STATE, SI[SI_M_STATE])
    ch |= _put_u8(out, ST_SAFETY_STATE, SI[SI_M_SAFETY])
    ch |= _put_u8(out, ST_ESTOP, SI[SI_M_ESTOP] != 0)
    ch |= _put_u8(out, ST_REDUCED, SI[SI_M_REDUCED] != 0)
    ch |= _put_u8(out, ST_MANUAL_ALLOWED, SI[SI_M_MANUAL_ALLOWED] != 0)
    o64 = out.view(np.uint64)
    old = o64[ST_MACHINE_ERRORS // 8]
    o64[ST_MACHINE_ERRORS // 8] = SI[SI_M_ERRORS]
    ch |= o64[ST_MACHINE_ERRORS // 8] != old
    o64[ST_HAL_HEARTBEAT // 8] = np.uint64(hal_heartbeat)
    out[ST_HAL_AGE:ST_HAL_AGE + 4].view(np.uint32)[0] = min(hal_age, 0xFFFFFFFF)
    of = out.view(np.float64)
    for s in range(n):
        base = ST_AXES_OFF + s * ST_AX_SIZE
        w = base // 8
        ch |= _put_f8(of, o64, w + STA_POSITION // 8, F[F_POS, s])
        ch |= _put_f8(of, o64, w + STA_VELOCITY // 8, F[F_VEL, s])
        ch |= _put_f8(of, o64, w + STA_TARGET // 8, F[F_TARGET, s])
        ch |= _put_f8(of, o64, w + STA_SP_POS // 8, F[F_SP_POS, s])
        ch |= _put_f8(of, o64, w + STA_SP_VEL // 8, F[F_SP_VEL, s])
        ch |= _put_f8(of, o64, w + STA_LAG // 8, F[F_LAG, s])
        ch |= _put_f8(of, o64, w + STA_TORQUE // 8, F[F_OUTPUT, s])
        old = o64[w + STA_ERRORS // 8]
        o64[w + STA_ERRORS // 8] = errors[s]
        ch |= o64[w + STA_ERRORS // 8] != old
        ch |= _put_u8(out, base + STA_POWER, U8[U_POWER, s])
        ch |= _put_u8(out, base + STA_MOTION, U8[U_MOTION, s])
        ch |= _put_u8(out, base + STA_MODE, U8[U_MODE, s])
        ch |= _put_u8(out, base + STA_COUPLING, U8[U_COUPLING, s])
        ch |= _put_u8(out, base + STA_GEARBOX, U8[U_GEARBOX, s])
        ch |= _put_u8(out, base + STA_LOADING, U8[U_LOADING, s])
        ch |= _put_u8(out, base + STA_REFERENCED, B[B_REFERENCED, s])
        ch |= _put_u8(out, base + STA_IN_POSITION, B[B_IN_POSITION, s])
        ch |= _put_u8(out, base + STA_ENABLED, B[B_ENABLE, s])
        ch |= _put_u8(out, base + STA_BRAKE, B[B_BRAKE_RELEASE, s])
        ch |= _put_u8(out, base + STA_LOCK, U8[U_LOCK, s])
        ch |= _put_u8(out, base + STA_SAFE_STOP, U8[U_SAFE_STOP, s])
        ch |= _put_u8(out, base + STA_HOMING_PHASE, U8[U_HOMING_PHASE, s])
        ch |= _put_u8(out, base + STA_MASTER, master[s] + 1)
    return ch


_U1, _I1, _Q1 = Arg("uint8"), Arg("int64"), Arg("uint64")
_I, _F, _B = Arg("int64", 0), Arg("float64", 0), Arg("bool", 0)
CYCLE_STEP_SIG = Sig("int64", (_U1, _I1, _F))
GATHER_INPUTS_SIG = Sig("void", (_U1, _Q1, _U1, _I1, _I, _B, _B))
GATHER_FEEDBACK_SIG = Sig("void", (TABLE_ARG, _I))
FILL_STATUS_SIG = Sig("bool", (_U1, _U1, _I1, _I, _I))
