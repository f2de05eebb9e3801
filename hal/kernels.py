"""The HAL's per-cycle work as compiled kernels: I/O processing (hal/io.py) and the simulated plant (hal/drivers/sim.py).

`load()` gives them before READY (common/jit.py: the module `python -m hal.kernels` builds ahead of time, else numba's JIT).
"""
from __future__ import annotations

import math
import sys

import numpy as np

from common.consts import BANK_WORDS, MAX_AI, MAX_AO, MAX_AXES, MAX_DI, MAX_DO, P2P_HEADER_SIZE
from common.jit import Arg, KernelSet, Loaded, Sig, kernel
from common.jit_table import TABLE_ARG, table_bytes
from common.shm.inbound_jit import MODE_LIVE, N_STATE, S_CHANGED, S_MODE, poll_ready, poll_segment
from common.shm.seqlock_jit import commit_spans, copy_bytes, load_u64
from common.states import DriverState

# Layout: the kernels work in place on the same arrays the numpy reference uses. Arrays of one dtype
# and width are rows of one matrix ("block"); the row indices below name them (the Python side
# binds the attribute names to the same rows), and all blocks of an object live in one byte arena,
# so a call passes two arrays for its whole state instead of fifty vectors (numba's dispatch costs
# ~0.15 us per array argument). Arrays the HAL shares with segments or the driver interface arrive
# as they are (contiguous where HalCycle makes them so; the strided feedback fields as "A").
# Every kernel has exactly one signature and compilation is disabled after `load()`: an argument
# of another type is a TypeError naming the types, never a compilation inside the cycle.

NEVER = np.iinfo(np.int64).max
KIND_LINEAR, KIND_QUADRATIC, KIND_CUBIC, KIND_CUSTOM = 0, 1, 2, 3
INDEX_PULSE_NS = 2_000_000  # sim: an encoder index mark reads true for 2 ms after it is crossed
_U1 = np.uint64(1)
IN_DI, IN_AI = 1, 2  # what IoProcessor's inputs rewrote this cycle (di_bank / ai_values)
OUT_DO, OUT_AO = 1, 2  # what its outputs rewrote (do_bank / ao_values)

# --- IoProcessor rows ------------------------------------------------------------------------
# scalars (int64 vector)
S_STARTED, S_PENDING_ANY, S_AI_QUIET, S_AI_K, S_DO_DIRTY, S_DO_NEXT, S_DO_KEY_VALID, S_AO_DIRTY, \
    S_AO_NEXT, S_AO_KEY_VALID, S_CONNECTED, S_ESTOP, S_ESTOP_PIN, S_AI_DEPTH, S_AO_ROLE_PULSE_ANY, \
    S_AO_ANY_LINEAR = range(16)
IO_SCALARS = 16
# DI, bool[1024]
DB_NC, DB_STATE, DB_PENDING, DB_LOGICAL = range(4)
DI_BOOL_ROWS = ("di_nc", "di_state", "di_pending", "di_logical")
# DI, int64[1024]
DI_DEBOUNCE, DI_SINCE = range(2)
DI_INT_ROWS = ("di_debounce_ns", "di_since")
# enable conditions, int64[n_en] / bool[n_en]
EN_PIN, EN_SRC, EN_TIMEOUT, EN_T_OWN, EN_T_SRC = range(5)
EN_INT_ROWS = ("en_pins", "en_src", "en_timeout_ns", "en_t_own", "en_t_src")
EN_STATE, EN_PREV_OWN, EN_PREV_SRC = range(3)
EN_BOOL_ROWS = ("en_state", "en_prev_own", "en_prev_src")
# AI, float64[1024] (curve coefficients from ai_curves, then state)
AI_A, AI_B, AI_C, AI_SPAN, AI_BASE, AI_LAST_RAW, AI_PREV_RAW, AI_SUM, AI_NF = range(9)
AI_FLOAT_ROWS = ("_ai_a", "_ai_b", "_ai_c", "_ai_span", "_ai_base", "_ai_last_raw", "_ai_prev_raw", "_ai_sum", "_ai_nf")
# AI, int64[1024]
AI_N, = range(1)
AI_INT_ROWS = ("ai_n",)
# DO words, uint64[16]
(W_ROLE, W_NOT_ROLE, W_INV, W_KEEP, W_KEEP_NOT_BRAKE, W_NOT_KEEP, W_SAFE_INIT, W_ROLE_PULSE, W_VALUE,
 W_LAPSED, W_OUT, W_CU, W_KEY) = range(13)
DO_WORD_ROWS = ("_w_role", "_w_not_role", "_w_inv", "_w_keep", "_w_keep_not_brake", "_w_not_keep", "_w_safe_init",
                "_w_role_pulse", "_w_value", "_w_lapsed", "do_out", "_w_cu", "_w_key")
# DO, bool[1024]
DOB_ROLE, DOB_KEEP, DOB_SAFE, DOB_VALUE = range(4)
DO_BOOL_ROWS = ("do_role", "do_keep_estop", "_do_safe_value", "do_value")
# DO, int64[1024]
DOI_PULSE, DOI_EXPIRY = range(2)
DO_INT_ROWS = ("do_pulse_ns", "do_expiry")
# AO, float64[1024]
(AO_LO, AO_HI, AO_INIT, AO_ZERO, AO_VALUE, AO_CU, AO_LAST, AO_NORM, AO_IA, AO_IB, AO_KEY, AO_C_LO, AO_C_SPAN,
 AO_C_OFF, AO_C_A, AO_C_B, AO_C_C, AO_C_VMIN, AO_C_VMAX, AO_C_END) = range(20)
AO_FLOAT_ROWS = ("ao_lo", "ao_hi", "ao_init", "ao_zero", "ao_value", "_ao_cu", "_ao_last", "ao_norm", "_ao_ia",
                 "_ao_ib", "_ao_key_values")  # the curve rows follow, copied from ao_curves
# AO, bool[1024]
AOB_ROLE, AOB_ROLE_PULSE, AOB_LINEAR, AOB_NONLINEAR, AOB_SCRATCH = range(5)
AO_BOOL_ROWS = ("ao_role", "ao_role_pulse", "_ao_linear", "_ao_nonlinear", "_ao_valid")
# AO, int64[1024]
AOI_PULSE, AOI_EXPIRY, AOI_KIND, AOI_SLOT = range(4)
AO_INT_ROWS = ("ao_pulse_ns", "ao_expiry")  # kind and custom slot follow, from ao_curves

# --- SimDriver rows --------------------------------------------------------------------------
# per axis, float64[64]
(X, V, G, D, C, CB, OUT_MAX, STOP_LO, STOP_HI, INDEX_SPACING, INDEX_COUNT, TELEPORT, LOAD) = range(13)
SIM_FLOAT_ROWS = ("x", "v", "g", "d", "c", "cb", "out_max", "stop_lo", "stop_hi", "index_spacing", "index_count",
                  "_teleport", "_load_torque")
# per axis, int64[64]
ENABLE_SINCE, BRAKE_CMD_SINCE, INDEX_UNTIL, BASE_STATE = range(4)
SIM_INT_ROWS = ("enable_since", "brake_cmd_since", "index_until", "_base_state")
# per axis, bool[64]
CONFIGURED, HAS_BRAKE, PREV_ENABLE, FAULT, BRAKE_CMD, BRAKE_RELEASED, INJ_FAULT, SCRATCH = range(8)
SIM_BOOL_ROWS = ("configured", "has_brake", "prev_enable", "fault", "brake_cmd", "brake_released", "_inj_fault")
# per axis, uint32[64]
FAULT_CODE, INJ_CODE = range(2)
SIM_CODE_ROWS = ("fault_code", "_inj_code")
# per pin, bool[1024] / float64[1024]
BASE_DI, INJ_DI_MASK, INJ_DI_VALUE, INJ_AI_MASK = range(4)
SIM_PIN_BOOL_ROWS = ("base_di", "_inj_di_mask", "_inj_di_value", "_inj_ai_mask")
BASE_AI, INJ_AI_VALUE = range(2)
SIM_PIN_FLOAT_ROWS = ("base_ai", "_inj_ai_value")
# the pin tables in one int64 matrix (each table's length in params): position sensors, index marks,
# brake feedback DIs, brake DOs, tailstock followers (with their state); the sensors' floats apart
(T_SENS_AXIS, T_SENS_PIN, T_SENS_NC, T_IDX_AXIS, T_IDX_PIN, T_IDX_NC, T_BIN_AXIS, T_BIN_PIN, T_BIN_NC, T_BOUT_AXIS,
 T_BOUT_PIN, T_BOUT_INV, T_FOL_DI, T_FOL_NC, T_FOL_DO, T_FOL_INV, T_FOL_STATE, T_FOL_CMD, T_FOL_SINCE) = range(19)
TABLE_ROWS = 19
SEN_SIGN, SEN_LO, SEN_PERIOD, SEN_WIDTH = range(4)
# params, int64: delays, flags, table lengths; P_FULL: rewrite every DI/AI level this cycle (set by the
# Python side when an injection changed, cleared by the kernel)
(P_READY_DELAY, P_BRAKE_DELAY, P_FOLLOW_DELAY, P_ANY_BRAKE, P_FULL, P_N_SENS, P_N_IDX, P_N_BIN, P_N_BOUT,
 P_N_FOL) = range(10)
SIM_PARAMS = 10
# driver states (common.states.DriverState values, as constants of the compiled code)
ST_INIT, ST_ENABLED, ST_FAULT = int(DriverState.INIT), int(DriverState.ENABLED), int(DriverState.FAULT)

# --- types: "c" C-contiguous, "ro" read-only accepted (a writable array converts), plain = any layout
b1 = Arg("bool", 1, "A")
b1c = Arg("bool")
b1cro = Arg("bool", readonly=True)
f1 = Arg("float64", 1, "A")
f1c = Arg("float64")
f1cro = Arg("float64", readonly=True)
i1c = Arg("int64")
u8_1c = Arg("uint64")
u8_1cro = Arg("uint64", readonly=True)
u4_1c = Arg("uint32")
u1_1c = Arg("uint8")
I64, F64, BOOL = Arg("int64", 0), Arg("float64", 0), Arg("bool", 0)

_jit = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


# --- the byte arena: every matrix of one engine object in one uint8 array -----------------------
# (a call passes two arrays for all its state: numba's dispatch cost per array argument dominated a
# cycle). `lay` holds (start, end, rows, width) per block; the kernels take typed views of them.
IB_S, IB_DB, IB_DI_I, IB_EN_I, IB_EN_B, IB_AF, IB_AI_I, IB_AI_SINGLE, IB_HIST, IB_W, IB_DOB, IB_DOI, IB_PINS, \
    IB_AOF, IB_AOB, IB_AOI, IB_TABLES = range(17)
SB_PARAMS, SB_AF, SB_AI, SB_AB, SB_CODES, SB_PB, SB_PF, SB_TAB, SB_SENS = range(9)


class ArenaBuilder:
    """Collects the blocks of one object's state, then lays them out in one byte array (64-byte
    aligned) and binds the named attributes to rows of their block's view (values kept)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[np.dtype, int, int, list[np.ndarray | None]]] = []
        self._bind: list[tuple[object, str, int, int]] = []
        self.views: list[np.ndarray] = []

    def slab(self, index: int, owner: object, names: tuple[str, ...], dtype: type, width: int, extra: int = 0) -> None:
        """Block `index`: one row per named attribute of `owner` (copied in), plus `extra` zero rows."""
        rows = [getattr(owner, n) for n in names] + [None] * extra
        self._bind += [(owner, n, index, k) for k, n in enumerate(names)]
        self._add(index, dtype, width, rows)

    def block(self, index: int, matrix: np.ndarray) -> None:
        """Block `index`: a copy of a 2-D matrix."""
        self._add(index, matrix.dtype, matrix.shape[1], list(matrix))

    def _add(self, index: int, dtype, width: int, rows: list) -> None:
        if index != len(self._blocks):
            raise AssertionError(f"arena block {index} added as block {len(self._blocks)}")
        self._blocks.append((np.dtype(dtype), len(rows), width, rows))

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        lay = np.zeros(4 * len(self._blocks), np.int64)
        off = 0
        for k, (dt, n, w, _rows) in enumerate(self._blocks):
            size = n * w * dt.itemsize
            lay[4 * k: 4 * k + 4] = off, off + size, n, w
            off = -(-(off + size) // 64) * 64
        arena = np.zeros(max(off, 64), np.uint8)
        for k, (dt, n, w, rows) in enumerate(self._blocks):
            v = arena[lay[4 * k]: lay[4 * k + 1]].view(dt).reshape(n, w)
            for r, row in enumerate(rows):
                if row is not None:
                    v[r] = row
            self.views.append(v)
        for owner, name, k, r in self._bind:
            setattr(owner, name, self.views[k][r])
        return arena, lay


@kernel(**_jit)
def _f8(arena, lay, k):
    return arena[lay[4 * k]:lay[4 * k + 1]].view(np.float64).reshape((lay[4 * k + 2], lay[4 * k + 3]))


@kernel(**_jit)
def _i8(arena, lay, k):
    return arena[lay[4 * k]:lay[4 * k + 1]].view(np.int64).reshape((lay[4 * k + 2], lay[4 * k + 3]))


@kernel(**_jit)
def _u8(arena, lay, k):
    return arena[lay[4 * k]:lay[4 * k + 1]].view(np.uint64).reshape((lay[4 * k + 2], lay[4 * k + 3]))


@kernel(**_jit)
def _u4(arena, lay, k):
    return arena[lay[4 * k]:lay[4 * k + 1]].view(np.uint32).reshape((lay[4 * k + 2], lay[4 * k + 3]))


@kernel(**_jit)
def _b(arena, lay, k):
    return arena[lay[4 * k]:lay[4 * k + 1]].view(np.bool_).reshape((lay[4 * k + 2], lay[4 * k + 3]))


# --- helpers (inlined into the kernels) -------------------------------------------------------
@kernel(**_jit)
def _pack(bits, words):
    """bits[64*w + b] -> bit b of words[w] (np.packbits(bitorder="little") viewed as uint64)."""
    for w in range(words.shape[0]):
        word = np.uint64(0)
        base = w * 64
        for b in range(64):
            if bits[base + b]:
                word |= _U1 << np.uint64(b)
        words[w] = word


@kernel(**_jit)
def _bit(words, pin):
    return ((words[pin >> 6] >> np.uint64(pin & 63)) & _U1) != 0


@kernel(**_jit)
def _interp(x, xp, fp):
    """np.interp for one value (numpy's formula, including its non-finite fallbacks)."""
    n = xp.shape[0]
    if x > xp[n - 1]:
        return fp[n - 1]
    if x < xp[0]:
        return fp[0]
    lo, hi = 0, n  # largest j with xp[j] <= x
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    j = lo
    if j == n - 1 or xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    r = slope * (x - xp[j]) + fp[j]
    if r != r:
        r = slope * (x - xp[j + 1]) + fp[j + 1]
        if r != r and fp[j] == fp[j + 1]:
            r = fp[j]
    return r


@kernel(**_jit)
def _normalise(i, value, af, ai, table_x, table_n):
    """_Curves.normalise for one AO pin: the raw 0..1 signal that produces `value`."""
    lo, span, off = af[AO_C_LO, i], af[AO_C_SPAN, i], af[AO_C_OFF, i]
    v = value
    vmin, vmax = af[AO_C_VMIN, i], af[AO_C_VMAX, i]
    if v < vmin:
        v = vmin
    if v > vmax:
        v = vmax
    safe_span = span if span != 0.0 else 1.0
    y = (v - off - lo) / safe_span
    a, b, c = af[AO_C_A, i], af[AO_C_B, i], af[AO_C_C, i]
    kind = ai[AOI_KIND, i]
    if kind == KIND_LINEAR:
        n = y / (c if c != 0.0 else 1.0)
    elif kind == KIND_QUADRATIC:
        q = y / b
        if q < 0.0:
            q = 0.0
        n = math.sqrt(q)
    elif kind == KIND_CUBIC:
        n = np.cbrt(y / a)
    else:
        slot = ai[AOI_SLOT, i]
        q = y / af[AO_C_END, i] + 2.0 * slot
        nn = _interp(q, table_x, table_n)
        f = ((a * nn + b) * nn + c) * nn - y
        df = (3.0 * a * nn + 2.0 * b) * nn + c
        n = nn - (f / df if df != 0.0 else 0.0)
    if n < 0.0:
        n = 0.0
    if n > 1.0:
        n = 1.0
    return n


# --- I/O processing --------------------------------------------------------------------------
IO_INPUTS_SIG = Sig("void", (b1cro, f1cro, I64, u1_1c, i1c, u8_1c, f1c))


@kernel(**_jit)
def io_inputs(di_phys, ai_raw, now, arena, lay, di_bank, ai_values):
    """IoProcessor.inputs: NC/NO, debounce, enable conditions, DI bank; AI curves and averaging."""
    _inputs(di_phys, ai_raw, now, _i8(arena, lay, IB_S)[0], _b(arena, lay, IB_DB), _i8(arena, lay, IB_DI_I),
            _i8(arena, lay, IB_EN_I), _b(arena, lay, IB_EN_B), _f8(arena, lay, IB_AF), _i8(arena, lay, IB_AI_I),
            _b(arena, lay, IB_AI_SINGLE)[0], _f8(arena, lay, IB_HIST), di_bank, ai_values)


@kernel(**_jit)
def _inputs(di_phys, ai_raw, now, s, db, di_i, en_i, en_b, af, ai_i, ai_single, hist, di_bank, ai_values):
    nc, state, pending, logical = db[DB_NC], db[DB_STATE], db[DB_PENDING], db[DB_LOGICAL]
    debounce, since = di_i[DI_DEBOUNCE], di_i[DI_SINCE]
    started = s[S_STARTED] != 0
    if started and s[S_PENDING_ANY] == 0:
        # nothing pending: every pin's debounced state equals its last level; if no level differs
        # from it now, the DI side cannot change this cycle (a branch-free OR over all pins)
        differs = False
        for i in range(MAX_DI):
            differs |= (di_phys[i] != nc[i]) != state[i]
        if not differs:
            return IN_AI if _analog_inputs(ai_raw, s, af, ai_i, ai_single, hist, ai_values, started) else 0
    changed = not started
    pending_any = False
    for i in range(MAX_DI):
        raw = di_phys[i] != nc[i]
        if not started:
            state[i] = raw
        diff = raw != state[i]
        if diff and not pending[i]:
            since[i] = now  # newly differing: start the clock
        pending[i] = diff
        if diff and since[i] <= now - debounce[i]:  # stable for the debounce time: accept
            state[i] = raw
            pending[i] = False
            changed = True
        pending_any |= pending[i]
    s[S_PENDING_ANY] = pending_any
    if changed:
        for i in range(MAX_DI):
            logical[i] = state[i]
        t_own, t_src = en_i[EN_T_OWN], en_i[EN_T_SRC]
        for k in range(en_i.shape[1]):  # enable conditions move only on input edges
            own = state[en_i[EN_PIN, k]]
            src = state[en_i[EN_SRC, k]] == en_b[EN_STATE, k]
            if own and not en_b[EN_PREV_OWN, k]:
                t_own[k] = now
            if src and not en_b[EN_PREV_SRC, k]:
                t_src[k] = now
            en_b[EN_PREV_OWN, k] = own
            en_b[EN_PREV_SRC, k] = src
            timeout = en_i[EN_TIMEOUT, k]
            in_window = timeout == 0 or abs(t_own[k] - t_src[k]) <= timeout
            logical[en_i[EN_PIN, k]] = own and src and in_window
        for w in range(BANK_WORDS):
            word = np.uint64(0)
            for b in range(64):
                if logical[w * 64 + b] != nc[w * 64 + b]:
                    word |= _U1 << np.uint64(b)
            di_bank[w] = word
    wrote = IN_DI if changed else 0
    if _analog_inputs(ai_raw, s, af, ai_i, ai_single, hist, ai_values, started):
        wrote |= IN_AI
    s[S_STARTED] = 1
    return wrote


@kernel(**_jit)
def _analog_inputs(ai_raw, s, af, ai_i, ai_single, hist, ai_values, started):
    prev = af[AI_PREV_RAW]
    depth = s[S_AI_DEPTH]
    same = True
    for i in range(MAX_AI):
        if ai_raw[i] != prev[i]:
            same = False
            break
    if started and same:  # unchanged for longer than the deepest window: settled
        if s[S_AI_QUIET] > depth:
            return False
        s[S_AI_QUIET] += 1
    else:
        s[S_AI_QUIET] = 0
        for i in range(MAX_AI):
            prev[i] = ai_raw[i]
    last, sums, nf = af[AI_LAST_RAW], af[AI_SUM], af[AI_NF]
    a, b, c, span, base = af[AI_A], af[AI_B], af[AI_C], af[AI_SPAN], af[AI_BASE]
    # hist is pin-major (hist[pin, slot], a ring of `depth` slots shared by all pins): a pin's window
    # sits in one or two cache lines (slot-major rows 8 KiB apart stalled on 4K aliasing, 4x slower)
    k = s[S_AI_K]
    row = k % depth if depth > 0 else 0
    n_of = ai_i[AI_N]
    for i in range(MAX_AI):
        if not started:
            last[i] = 0.0
        r = ai_raw[i]
        if math.isfinite(r):  # a non-finite sample repeats the last good one
            last[i] = r
        n = last[i]
        eng = ((a[i] * n + b[i]) * n + c[i]) * n * span[i] + base[i]
        if depth <= 1:
            ai_values[i] = eng
            continue
        if not started:
            for j in range(depth):
                hist[i, j] = eng
            sums[i] = eng * nf[i]
        else:
            j = row - n_of[i]  # the slot of the sample leaving the window: (k - n) mod depth
            old = hist[i, j + depth if j < 0 else j]
            sums[i] += eng - old
            hist[i, row] = eng
        ai_values[i] = eng if ai_single[i] else sums[i] / nf[i]
    if depth > 1:
        s[S_AI_K] = k + 1
    return True


IO_OUTPUTS_SIG = Sig("void", (u8_1cro, f1cro, BOOL, BOOL, I64, u1_1c, i1c, u8_1c, f1c))


@kernel(**_jit)
def io_outputs(cu_bank, cu_ao, connected, fresh, now, arena, lay, do_bank, ao_values):
    """IoProcessor.outputs: DO merge, pulse watchdogs, E-stop, safe state; AO merge, clamp, pulses, curves."""
    tables = _f8(arena, lay, IB_TABLES)
    _outputs(cu_bank, cu_ao, connected, fresh, now, _i8(arena, lay, IB_S)[0], _b(arena, lay, IB_DB)[DB_LOGICAL],
             _u8(arena, lay, IB_W), _b(arena, lay, IB_DOB), _i8(arena, lay, IB_DOI), _i8(arena, lay, IB_PINS)[0],
             _f8(arena, lay, IB_AOF), _b(arena, lay, IB_AOB), _i8(arena, lay, IB_AOI), tables[0], tables[1],
             do_bank, ao_values)


@kernel(**_jit)
def _outputs(cu_bank, cu_ao, connected, fresh, now, s, di_logical, w, dob, doi, role_pulse_pins, af, ab, ai,
             table_x, table_n, do_bank, ao_values):
    pin = s[S_ESTOP_PIN]
    estop = pin >= 0 and di_logical[pin]
    force = connected != (s[S_CONNECTED] != 0) or estop != (s[S_ESTOP] != 0)
    s[S_CONNECTED] = connected
    s[S_ESTOP] = estop
    wrote = OUT_DO if _digital_outputs(cu_bank, connected, fresh, now, force, estop, s, w, dob, doi,
                                       role_pulse_pins, do_bank) else 0
    if _analog_outputs(cu_ao, connected, fresh, now, force, s, af, ab, ai, table_x, table_n, ao_values):
        wrote |= OUT_AO
    return wrote


@kernel(**_jit)
def _digital_outputs(cu_bank, connected, fresh, now, force, estop, s, w, dob, doi, role_pulse_pins, do_bank):
    recompute = force or s[S_DO_DIRTY] != 0 or now >= s[S_DO_NEXT]
    cu, out, value_w, lapsed = w[W_CU], w[W_OUT], w[W_VALUE], w[W_LAPSED]
    expiry, value = doi[DOI_EXPIRY], dob[DOB_VALUE]
    if connected:
        differs = s[S_DO_KEY_VALID] == 0
        for k in range(BANK_WORDS):
            differs |= cu_bank[k] != w[W_KEY, k]
        if differs:
            for k in range(BANK_WORDS):
                w[W_KEY, k] = cu_bank[k]
                cu[k] = cu_bank[k] ^ w[W_INV, k]  # the CU's logical values
            s[S_DO_KEY_VALID] = 1
            recompute = True
        if fresh and role_pulse_pins.shape[0]:
            # watchdog refresh: every new frame with the bit on; a pin that is off cannot lapse
            for p in role_pulse_pins:
                expiry[p] = now + doi[DOI_PULSE, p] if _bit(cu, p) else NEVER
            for k in range(BANK_WORDS):
                lapsed[k] &= ~w[W_ROLE_PULSE, k]
            s[S_DO_NEXT] = expiry.min()
    if not recompute:
        return False
    s[S_DO_DIRTY] = 0
    if connected:
        for k in range(BANK_WORDS):
            out[k] = (cu[k] & w[W_ROLE, k]) | (value_w[k] & w[W_NOT_ROLE, k])
    else:  # safe state: init values; keep_estop outputs keep theirs; brakes engaged
        for k in range(BANK_WORDS):
            out[k] = (out[k] & w[W_KEEP_NOT_BRAKE, k]) | (w[W_SAFE_INIT, k] & w[W_NOT_KEEP, k])
            lapsed[k] = 0
        for i in range(MAX_DO):
            if not dob[DOB_KEEP, i]:
                value[i] = dob[DOB_SAFE, i]
            if dob[DOB_ROLE, i]:
                value[i] = False
            expiry[i] = NEVER
        _pack(value, value_w)
        s[S_DO_NEXT] = NEVER
        s[S_DO_KEY_VALID] = 0
    if now >= s[S_DO_NEXT]:
        _expire_do(now, s, w, dob, doi)
        for k in range(BANK_WORDS):
            out[k] &= ~lapsed[k]
    if estop:
        stored = False
        for k in range(BANK_WORDS):
            out[k] &= w[W_KEEP, k]
            stored |= (value_w[k] & w[W_NOT_KEEP, k]) != 0
        if stored:
            for i in range(MAX_DO):
                value[i] = value[i] and dob[DOB_KEEP, i]
            _pack(value, value_w)
    for k in range(BANK_WORDS):
        do_bank[k] = out[k] ^ w[W_INV, k]
    return True


@kernel(**_jit)
def _expire_do(now, s, w, dob, doi):
    """Pulse watchdogs that ran out: role-less values switch off; role pins lapse until the CU refreshes them."""
    expiry, value, role = doi[DOI_EXPIRY], dob[DOB_VALUE], dob[DOB_ROLE]
    lapsed = w[W_LAPSED]
    for k in range(BANK_WORDS):
        lapsed[k] = 0
    gone = False
    for i in range(MAX_DO):
        if now >= expiry[i]:
            if role[i]:
                lapsed[i >> 6] |= _U1 << np.uint64(i & 63)
            if value[i]:
                value[i] = False
                expiry[i] = NEVER
                gone = True
    if gone:
        _pack(value, w[W_VALUE])
        for k in range(BANK_WORDS):  # role-less bits again from the stored values
            w[W_OUT, k] = (w[W_OUT, k] & w[W_ROLE, k]) | (w[W_VALUE, k] & w[W_NOT_ROLE, k])
    nxt = expiry.min()
    s[S_DO_NEXT] = nxt if nxt > now else now + 1  # lapsed role pins: look again


@kernel(**_jit)
def _analog_outputs(cu_ao, connected, fresh, now, force, s, af, ab, ai, table_x, table_n, vals):
    recompute = force or s[S_AO_DIRTY] != 0 or now >= s[S_AO_NEXT]
    role, expiry = ab[AOB_ROLE], ai[AOI_EXPIRY]
    value, cu, key = af[AO_VALUE], af[AO_CU], af[AO_KEY]
    if connected:
        # only role pins take the CU's value: the others' bytes in cu_hal are neither compared nor read
        # (a recompute is idempotent, so skipping one for an ignored byte changes no output)
        differs = s[S_AO_KEY_VALID] == 0
        if not differs:
            for i in range(MAX_AO):
                if role[i]:
                    x, y = cu_ao[i], key[i]
                    if x != y and not (x != x and y != y):
                        differs = True
                        break
        if differs:
            for i in range(MAX_AO):
                if role[i]:
                    x = cu_ao[i]
                    key[i] = x
                    if math.isfinite(x):  # invalid: keep the last value
                        t = x if x < af[AO_HI, i] else af[AO_HI, i]
                        cu[i] = t if t > af[AO_LO, i] else af[AO_LO, i]
            s[S_AO_KEY_VALID] = 1
            recompute = True
        if fresh and s[S_AO_ROLE_PULSE_ANY]:
            for i in range(MAX_AO):
                if ab[AOB_ROLE_PULSE, i]:
                    expiry[i] = now + ai[AOI_PULSE, i]
            s[S_AO_NEXT] = expiry.min()
    if not recompute:
        return False
    s[S_AO_DIRTY] = 0
    if connected:
        for i in range(MAX_AO):
            vals[i] = cu[i] if role[i] else value[i]
    else:
        for i in range(MAX_AO):
            init = af[AO_INIT, i]
            vals[i] = init
            if not role[i]:
                value[i] = init
            cu[i] = init
            expiry[i] = NEVER
        s[S_AO_NEXT] = NEVER
        s[S_AO_KEY_VALID] = 0
    if now >= s[S_AO_NEXT]:
        for i in range(MAX_AO):
            if now >= expiry[i]:
                vals[i] = af[AO_ZERO, i]
                if not role[i]:
                    value[i] = af[AO_ZERO, i]
                    expiry[i] = NEVER
        nxt = expiry.min()
        s[S_AO_NEXT] = nxt if nxt > now else now + 1
    _update_ao_norm(vals, s, af, ab, ai, table_x, table_n)
    return True


@kernel(**_jit)
def _update_ao_norm(vals, s, af, ab, ai, table_x, table_n):
    last, norm, ne = af[AO_LAST], af[AO_NORM], ab[AOB_SCRATCH]
    any_ne = False
    for i in range(MAX_AO):
        ne[i] = vals[i] != last[i]
        any_ne |= ne[i]
    if not any_ne:
        return
    linear = s[S_AO_ANY_LINEAR] != 0
    for i in range(MAX_AO):
        last[i] = vals[i]
        if linear and ab[AOB_LINEAR, i]:  # closed form: n = v * ia + ib
            t = vals[i] * af[AO_IA, i] + af[AO_IB, i]
            if t > 1.0:
                t = 1.0
            if t < 0.0:
                t = 0.0
            norm[i] = t
        elif ne[i] and ab[AOB_NONLINEAR, i]:
            norm[i] = _normalise(i, vals[i], af, ai, table_x, table_n)


# --- the simulated plant ---------------------------------------------------------------------
SIM_CYCLE_SIG = Sig("void", (
    # DriverIO: commands (C-contiguous, as HalCycle and DriverIO make them), then status (feedback
    # fields are strided views on the hal_mqt payload)
    b1cro, b1cro, f1cro, u8_1cro, f1, f1, f1, b1, b1, u1_1c, u4_1c, b1c, f1c,
    I64, F64, u1_1c, i1c,  # now, dt, the driver's arena and its layout
))


@kernel(**_jit)
def sim_cycle(enable, brake_release, torque, do_bank, position, velocity, torque_estimate, drive_ready, drive_fault,
              axis_state, drive_error_code, di, ai, now, dt, arena, lay):
    """SimDriver.cycle: drives, brakes, plant integration, end stops, followers, sensors, injection."""
    _sim(enable, brake_release, torque, do_bank, position, velocity, torque_estimate, drive_ready, drive_fault,
         axis_state, drive_error_code, di, ai, now, dt, _i8(arena, lay, SB_PARAMS)[0], _f8(arena, lay, SB_AF),
         _i8(arena, lay, SB_AI), _b(arena, lay, SB_AB), _u4(arena, lay, SB_CODES), _b(arena, lay, SB_PB),
         _f8(arena, lay, SB_PF), _i8(arena, lay, SB_TAB), _f8(arena, lay, SB_SENS))


@kernel(**_jit)
def _sim(enable, brake_release, torque, do_bank, position, velocity, torque_estimate, drive_ready, drive_fault,
         axis_state, drive_error_code, di, ai, now, dt, params, af, ai_, ab, codes, pb, pf, tab, sens_f):
    x, v = af[X], af[V]
    # drives: ready once enable has been held for ready_delay; faults latch until enable drops
    ready_delay = params[P_READY_DELAY]
    since = ai_[ENABLE_SINCE]
    fault = ab[FAULT]
    for i in range(MAX_AXES):
        en = enable[i]
        if en and not ab[PREV_ENABLE, i]:
            since[i] = now
        ab[PREV_ENABLE, i] = en
        inj = ab[INJ_FAULT, i]
        if inj and not fault[i]:
            codes[FAULT_CODE, i] = codes[INJ_CODE, i]
        fault[i] = (fault[i] or inj) and (en or inj)
        ready = since[i] <= now - ready_delay and en and not fault[i]
        drive_ready[i] = ready
        drive_fault[i] = fault[i]
        drive_error_code[i] = codes[FAULT_CODE, i] if fault[i] else 0
        st = ai_[BASE_STATE, i]
        if en:
            st = ST_INIT
        if ready:
            st = ST_ENABLED
        if fault[i]:
            st = ST_FAULT
        axis_state[i] = st
    # brakes: command = brake_release OR the brake DO; the mechanics follow after brake_delay
    if params[P_ANY_BRAKE]:
        cmd_since = ai_[BRAKE_CMD_SINCE]
        cmd = ab[BRAKE_CMD]
        for i in range(MAX_AXES):
            ab[SCRATCH, i] = brake_release[i] and ab[HAS_BRAKE, i]
        for k in range(params[P_N_BOUT]):
            if _bit(do_bank, tab[T_BOUT_PIN, k]) != (tab[T_BOUT_INV, k] != 0):
                ab[SCRATCH, tab[T_BOUT_AXIS, k]] = True
        for i in range(MAX_AXES):
            c = ab[SCRATCH, i]
            if c != cmd[i]:
                cmd_since[i] = now
            cmd[i] = c
            if cmd_since[i] <= now - params[P_BRAKE_DELAY]:
                ab[BRAKE_RELEASED, i] = c
    # plant (semi-implicit Euler, dry friction as an implicit step that never reverses v)
    teleported = False
    for i in range(MAX_AXES):
        tq = torque[i]
        om = af[OUT_MAX, i]
        if math.isfinite(tq):
            t = tq if tq < om else om
            t = t if t > -om else -om
        else:  # a non-finite command applies no torque on that axis
            t = 0.0
        t *= 1.0 if drive_ready[i] else 0.0
        torque_estimate[i] = t
        vn = (t + af[LOAD, i]) * (af[G, i] * dt)
        vn += v[i] * (1.0 - af[D, i] * dt)
        csdt = af[C, i] * dt
        if ab[HAS_BRAKE, i] and not ab[BRAKE_RELEASED, i]:
            csdt = af[CB, i] * dt + csdt
        fr = vn if vn < csdt else csdt
        fr = fr if fr > -csdt else -csdt
        v[i] = vn - fr
        x[i] += v[i] * dt
        xc = x[i] if x[i] > af[STOP_LO, i] else af[STOP_LO, i]
        xc = xc if xc < af[STOP_HI, i] else af[STOP_HI, i]
        if xc != x[i]:  # at a mechanical end stop: held there, v = 0
            v[i] = 0.0
            x[i] = xc
        tp = af[TELEPORT, i]
        if tp == tp:  # injected set_position: teleport once, v = 0
            if ab[CONFIGURED, i]:
                x[i] = tp if tp > af[STOP_LO, i] else af[STOP_LO, i]
                x[i] = x[i] if x[i] < af[STOP_HI, i] else af[STOP_HI, i]
                v[i] = 0.0
            af[TELEPORT, i] = math.nan
            teleported = True
    if teleported:  # no index mark for the jump
        for i in range(MAX_AXES):
            af[INDEX_COUNT, i] = math.floor(x[i] / af[INDEX_SPACING, i])
    # followers (tailstock clamp DO -> clamped DI after follow_delay)
    for k in range(params[P_N_FOL]):
        c = 1 if _bit(do_bank, tab[T_FOL_DO, k]) != (tab[T_FOL_INV, k] != 0) else 0
        if c != tab[T_FOL_CMD, k]:
            tab[T_FOL_SINCE, k] = now
        tab[T_FOL_CMD, k] = c
        if now - tab[T_FOL_SINCE, k] >= params[P_FOLLOW_DELAY]:
            tab[T_FOL_STATE, k] = c
    # status: feedback; base levels and overrides when they changed; then the levels that follow the
    # plant (position sensors, index marks, brake feedback, followers), except pins held by an override
    for i in range(MAX_AXES):
        position[i] = x[i]
        velocity[i] = v[i]
    held = pb[INJ_DI_MASK]
    if params[P_FULL]:
        params[P_FULL] = 0
        for p in range(MAX_DI):
            di[p] = pb[INJ_DI_VALUE, p] if held[p] else pb[BASE_DI, p]
            ai[p] = pf[INJ_AI_VALUE, p] if pb[INJ_AI_MASK, p] else pf[BASE_AI, p]
    for k in range(params[P_N_SENS]):
        y = x[tab[T_SENS_AXIS, k]] * sens_f[SEN_SIGN, k] - sens_f[SEN_LO, k]
        period = sens_f[SEN_PERIOD, k]
        if period == math.inf:  # np.mod(y, inf) without the libm call: y, or inf below zero
            m = math.inf if y < 0.0 else y
        else:  # np.mod: fmod, then the sign of the divisor
            m = np.fmod(y, period)
            if m != 0.0 and (period < 0.0) != (m < 0.0):
                m += period
        p = tab[T_SENS_PIN, k]
        if not held[p]:
            di[p] = (m <= sens_f[SEN_WIDTH, k]) != (tab[T_SENS_NC, k] != 0)
    if params[P_N_IDX]:
        until = ai_[INDEX_UNTIL]
        for i in range(MAX_AXES):
            count = math.floor(x[i] / af[INDEX_SPACING, i])
            if count != af[INDEX_COUNT, i]:
                until[i] = now + INDEX_PULSE_NS
            af[INDEX_COUNT, i] = count
        for k in range(params[P_N_IDX]):
            p = tab[T_IDX_PIN, k]
            if not held[p]:
                di[p] = (now < until[tab[T_IDX_AXIS, k]]) != (tab[T_IDX_NC, k] != 0)
    for k in range(params[P_N_BIN]):
        p = tab[T_BIN_PIN, k]
        if not held[p]:
            di[p] = ab[BRAKE_RELEASED, tab[T_BIN_AXIS, k]] != (tab[T_BIN_NC, k] != 0)
    for k in range(params[P_N_FOL]):
        p = tab[T_FOL_DI, k]
        if not held[p]:
            di[p] = (tab[T_FOL_STATE, k] != 0) != (tab[T_FOL_NC, k] != 0)


# --- the whole HAL cycle in one call -----------------------------------------------------------
# HalCycle's own state (hal/cycle.py FusedStep): the driver-command and raw-input arrays of DriverIO,
# the change test's copy of the status payload and the byte offsets of every field the cycle touches
# in its three payloads, in one arena. The payloads themselves arrive as flat byte arrays (the
# cu_hal reader's copy, the hal_mqt and hal_cu writers' `local`); their fields are typed views
# taken here. The commits are compiled too once every writer has made its first (whole) commit in
# Python (FL_COMMIT; hal_publish): common/shm/seqlock_jit.py's commit, p2p.py's stores in p2p.py's
# order. So are the polls of the three inbound segments (cu_hal, re_hal, rpc_hal: FL_POLL) while their
# Inbounds' shared rows say a poll needs nothing else (common/shm/inbound_jit.py; the copies through HB_SCRATCH).
HB_F, HB_B, HB_DI, HB_AI, HB_PREV, HB_OFF, HB_SPANS, HB_PUB, HB_SCRATCH = range(9)
HF_TORQUE, HF_TARGET_POSITION, HF_TARGET_VELOCITY = range(3)  # float64[64] rows of HB_F
HB_ENABLE, HB_BRAKE_RELEASE, HB_CONFIGURED = range(3)  # bool[64] rows of HB_B
# byte offsets and sizes (HB_OFF, one int64 row): cu_hal's axis fields (stride = one CuAxisCommand),
# banks and values; hal_mqt's (HAL_IO) axis feedback fields and arrays; what hal_cu copies of it
(O_CU_AXES, O_CU_STRIDE, O_CU_TPOS, O_CU_TVEL, O_CU_TORQUE, O_CU_OFFSET, O_CU_ENABLE, O_CU_BRAKE, O_CU_DO, O_CU_AO,
 O_AXES, O_STRIDE, O_POS, O_VEL, O_TQ, O_READY, O_FAULT, O_DI_BANK, O_DO_BANK, O_AI, O_AO, O_STATE, O_ERR,
 O_CONNECTED, O_N_IO, O_HEAD, O_OUT_AI, O_N_AI, O_TARGETS, O_TAIL, O_FORCE, O_OUTPUTS_WROTE) = range(32)
N_OFFSETS = 32  # O_FORCE, O_OUTPUTS_WROTE: state (compare every region once; PHASE_PRE's result for PHASE_POST)
# HB_SPANS (int64[4, 64]), per R_* mask: the byte span [lo, hi) of hal_cu's payload and of the status
# payload (HAL_IO) that the changed regions cover (hal/fused.py spans)
SP_CU_LO, SP_CU_HI, SP_IO_LO, SP_IO_HI = range(4)
# HB_PUB (int64[1, 16]): hal_publish's constants (where the status payload ends in the three status
# segments, the segments' ends, where hal_rpc's / hal_re's ACK_RING is) and state (the ack counts seen)
U_TAIL, U_MQT_END, U_RPC_END, U_RE_END, U_RPC_SEEN, U_RE_SEEN, U_RPC_RING, U_RE_RING = range(8)
# ... and where the loop's figures (a CYCLE_STATS record, T_REC) go in hal_mqt's and hal_rpc's payloads, their size
U_STATS_MQT, U_STATS_RPC, U_REC_N = 8, 9, 10
# ... the status segments' next beat (ns) and its period, "the status changed since HalCycle's last state-file
# offer", and where re_hal's / rpc_hal's COMMAND_RING is in their payloads (FL_POLL's command test)
U_NEXT_BEAT, U_BEAT_NS, U_IO_SINCE, U_RE_CMD, U_RPC_CMD = 11, 12, 13, 14, 15
CMD_EPOCH, CMD_COUNT = 0, 8  # COMMAND_RING's epoch and count (byte offsets; hal/fused.py checks them)
ACK_SEEN, ACK_CONSUMED = 8, 16  # ACK_RING's cmd_epoch_seen and consumed
ACK_HEAD_WORDS = 4  # ACK_RING's epoch, cmd_epoch_seen, consumed, count: its slots change only with count
ACK_COUNT = 8 * (ACK_HEAD_WORDS - 1)  # the count's byte offset in ACK_RING
N_PUB = 16
WAKE_MQT, WAKE_RPC, WAKE_RE = 1, 2, 4  # hal_publish's result: whose wake to post
WAKE_ALL = WAKE_MQT | WAKE_RPC | WAKE_RE
WAKE_SHIFT = 6  # with FL_PUBLISH, hal_step's result carries them from this bit (above the R_* bits)
WAKE_BITS = WAKE_ALL << WAKE_SHIFT
# with FL_POLL, hal_step's result when it stopped for Python: NEED_PYTHON (it touched nothing: a poll needs
# Python's Inbound.poll) or CMD_RE / CMD_RPC (it polled all three; commands wait in re_hal / rpc_hal)
NEED_PYTHON, CMD_RE, CMD_RPC = 1 << 9, 1 << 10, 1 << 11
TO_PYTHON = NEED_PYTHON | CMD_RE | CMD_RPC
# hal_step's result: the regions of the status payload (HAL_IO) that changed since its last call
R_AXES, R_DI, R_DO, R_AI, R_AO, R_TAIL = 1, 2, 4, 8, 16, 32  # axes | di_bank | do_bank | ai | ao | the rest
R_ALL = 63
PHASE_ALL, PHASE_PRE, PHASE_POST = 0, 1, 2  # sim in the kernel / before a Python driver / after it
PHASE_OUT = 3  # between cycles, after a command: the outputs again (no new CU frame), DO/AO regions compared
FL_CONNECTED, FL_FRESH = 1, 2  # `flags`: the CU is LIVE / its heartbeat moved on this poll
FL_COMMIT = 4  # `flags`: commit hal_cu (cu_seg) at the end of PHASE_ALL / PHASE_POST
FL_POLL = 8  # `flags`: poll cu_hal, re_hal, rpc_hal first (PHASE_ALL / PHASE_PRE): FL_CONNECTED, FL_FRESH found there
FL_PUBLISH = 16  # `flags`: end PHASE_ALL / PHASE_POST (after FL_COMMIT's commit) with hal_publish's commits
FL_ACKED = 64  # `flags`: ... and a command was acked this cycle (else, with no change and no beat, nothing is due)
# the polls' rows (T_POLL) and the sources table (hal_step's `src`: the readers' mappings): cu_hal, re_hal, rpc_hal
P_CU, P_RE, P_RPC = range(3)
N_POLLS = 3
# `lays`: the three arenas' layouts end to end (HalCycle's, the IoProcessor's, the SimDriver's)
N_HAL_BLOCKS, N_IO_BLOCKS, N_SIM_BLOCKS = HB_SCRATCH + 1, IB_TABLES + 1, SB_SENS + 1
LAY_IO = 4 * N_HAL_BLOCKS
LAY_SIM = LAY_IO + 4 * N_IO_BLOCKS
N_LAYS = LAY_SIM + 4 * N_SIM_BLOCKS

# the arrays hal_step and hal_publish work on, the same on every call: one common/jit_table.py table
# (hal/fused.py FusedStep.bind) in this order: the cu_hal reader's payload copy, hal_mqt's / hal_cu's
# payloads, HalCycle's arena, the three layouts, the IoProcessor's and the SimDriver's arenas, hal_cu's
# mapping; hal_rpc's / hal_re's payloads, the hal_mqt / hal_rpc / hal_re mappings, the loop's figures record;
# the three polls' rows (int64[N_POLLS, N_STATE]), the re_hal / rpc_hal readers' payload copies
(T_CU, T_HAL, T_OUT, T_H, T_LAYS, T_IO, T_SIM, T_CU_SEG, T_RPC, T_RE, T_MQT_SEG, T_RPC_SEG, T_RE_SEG,
 T_REC, T_POLL, T_RE_IN, T_RPC_IN) = range(17)
N_TABLE = 17
HAL_STEP_SIG = Sig("int64", (I64, I64, I64, F64, TABLE_ARG, TABLE_ARG))


@kernel(**_jit)
def hal_step(phase, flags, now, dt, tab, src):
    """_hal_step over the arrays of `tab` (T_*) and the readers' mappings `src` (P_*, read only): two array
    arguments for numba's entry point to convert."""
    return _hal_step(phase, flags, now, dt, table_bytes(tab, T_CU), table_bytes(tab, T_HAL),
                     table_bytes(tab, T_OUT), table_bytes(tab, T_H), table_bytes(tab, T_LAYS).view(np.int64),
                     table_bytes(tab, T_IO), table_bytes(tab, T_SIM), table_bytes(tab, T_CU_SEG), tab, src)


@kernel(**_jit)
def _polls(now, cu, h_arena, hl, tab, src):
    """The three inbound polls of FL_POLL, all or none: NEED_PYTHON when one of them needs Python's
    Inbound.poll (or cu_hal's writer is not LIVE: the CU's liveness edges are Python's) — nothing touched;
    else each polled as Inbound.poll would (cu_hal's new commit copied into `cu`), then CMD_RE / CMD_RPC for
    the command segments whose rings hold commands not taken yet, 0 for none."""
    st = table_bytes(tab, T_POLL).view(np.int64).reshape((N_POLLS, N_STATE))
    m_cu, m_re, m_rpc = table_bytes(src, P_CU), table_bytes(src, P_RE), table_bytes(src, P_RPC)
    if not (st[P_CU, S_MODE] == MODE_LIVE and poll_ready(st[P_CU], m_cu, now) and poll_ready(st[P_RE], m_re, now)
            and poll_ready(st[P_RPC], m_rpc, now)):
        return NEED_PYTHON
    scratch = h_arena[hl[4 * HB_SCRATCH]:hl[4 * HB_SCRATCH + 1]]
    poll_segment(st[P_CU], m_cu, cu, scratch, now)
    u = _i8(h_arena, hl, HB_PUB)[0]
    waiting = 0
    re_in, rpc_in = table_bytes(tab, T_RE_IN), table_bytes(tab, T_RPC_IN)
    if poll_segment(st[P_RE], m_re, re_in, scratch, now) and _commands_wait(re_in, u[U_RE_CMD], table_bytes(tab, T_RE),
                                                                            u[U_RE_RING]):
        waiting |= CMD_RE
    if poll_segment(st[P_RPC], m_rpc, rpc_in, scratch, now) and _commands_wait(
            rpc_in, u[U_RPC_CMD], table_bytes(tab, T_RPC), u[U_RPC_RING]):
        waiting |= CMD_RPC
    return waiting


@kernel(**_jit)
def _commands_wait(cmd, ring, acks, ack_ring):
    """CommandInbox.pending()'s test: the ring in `cmd` (a command segment's payload copy) holds commands our
    ACK_RING in `acks` has not consumed, or a new epoch it has not seen."""
    return (load_u64(cmd, ring + CMD_COUNT) != load_u64(acks, ack_ring + ACK_CONSUMED)
            or load_u64(cmd, ring + CMD_EPOCH) != load_u64(acks, ack_ring + ACK_SEEN))


@kernel(**_jit)
def _hal_step(phase, flags, now, dt, cu, hal, out, h_arena, lays, io_arena, sim_arena, cu_seg, tab, src):
    """HalCycle.step's numerics: cu_hal -> drive commands, IoProcessor.outputs, SimDriver.cycle,
    IoProcessor.inputs, the hal_cu payload, cu_connected, and the change test of the status
    payload: returns the R_* regions that changed since the last call (0: none; its copy is kept in
    HB_PREV). PHASE_PRE stops after the outputs and PHASE_POST starts at the inputs, for drivers
    whose cycle is Python. PHASE_OUT (a command taken between cycles) runs the outputs alone on the
    CU frame of the last cycle and returns R_DO / R_AO when those regions changed: the status
    committed with the command's ack shows its effect. With FL_COMMIT, PHASE_ALL / PHASE_POST end with
    the commit of hal_cu's changed span into `cu_seg` (the writer's mapping). With FL_POLL, PHASE_ALL /
    PHASE_PRE start with the polls of cu_hal, re_hal and rpc_hal (`_polls`: FL_CONNECTED and FL_FRESH come
    from there) and return at once, nothing else done, when one needs Python (NEED_PYTHON) or commands
    wait (CMD_RE / CMD_RPC: Python takes them, then calls again without FL_POLL). With FL_PUBLISH,
    PHASE_ALL / PHASE_POST end with hal_publish's commits of the status segments when the status changed,
    their beat (U_NEXT_BEAT) is due or a command was acked (FL_ACKED); the result carries the WAKE_* bits
    from WAKE_SHIFT."""
    hl, il, sl = lays[:LAY_IO], lays[LAY_IO:LAY_SIM], lays[LAY_SIM:N_LAYS]
    if flags & FL_POLL and phase != PHASE_POST and phase != PHASE_OUT:
        stop = _polls(now, cu, h_arena, hl, tab, src)
        if stop:
            return stop
        flags |= FL_CONNECTED
        if table_bytes(tab, T_POLL).view(np.int64)[P_CU * N_STATE + S_CHANGED]:
            flags |= FL_FRESH
    o = _i8(h_arena, hl, HB_OFF)[0]
    hf, hb = _f8(h_arena, hl, HB_F), _b(h_arena, hl, HB_B)
    enable, brake_release, torque = hb[HB_ENABLE], hb[HB_BRAKE_RELEASE], hf[HF_TORQUE]
    di, ai = _b(h_arena, hl, HB_DI)[0], _f8(h_arena, hl, HB_AI)[0]
    connected = (flags & FL_CONNECTED) != 0
    n = MAX_AXES
    do_bank = hal[o[O_DO_BANK]:o[O_DO_BANK] + 8 * BANK_WORDS].view(np.uint64)
    if phase != PHASE_POST:
        cs = o[O_CU_STRIDE]
        cu_ax = cu[o[O_CU_AXES]:o[O_CU_AXES] + n * cs]
        if phase == PHASE_OUT:
            pass  # the drive commands are the last cycle's: the CU frame has not been read again
        elif connected:
            cf = cu_ax.view(np.float64).reshape((n, cs // 8))
            cb = cu_ax.reshape((n, cs))
            conf = hb[HB_CONFIGURED]
            # the offsets in locals: `o` shares the arena with the rows written here, so the compiler
            # would load them again on every iteration
            en, br, tq, off = o[O_CU_ENABLE], o[O_CU_BRAKE], o[O_CU_TORQUE] >> 3, o[O_CU_OFFSET] >> 3
            for i in range(n):
                enable[i] = cb[i, en] != 0 and conf[i]
                brake_release[i] = cb[i, br] != 0 and conf[i]
                torque[i] = cf[i, tq] + cf[i, off]
            if o[O_TARGETS]:
                tp, tv = o[O_CU_TPOS] >> 3, o[O_CU_TVEL] >> 3
                for i in range(n):
                    hf[HF_TARGET_POSITION, i] = cf[i, tp]
                    hf[HF_TARGET_VELOCITY, i] = cf[i, tv]
        else:  # CU absent or stale: drives disabled, brakes engaged (IoProcessor: outputs safe)
            for i in range(n):
                enable[i] = False
                brake_release[i] = False
                torque[i] = 0.0
        tables = _f8(io_arena, il, IB_TABLES)
        o[O_OUTPUTS_WROTE] = _outputs(cu[o[O_CU_DO]:o[O_CU_DO] + 8 * BANK_WORDS].view(np.uint64),
                 cu[o[O_CU_AO]:o[O_CU_AO] + 8 * MAX_AO].view(np.float64),
                 connected, connected and (flags & FL_FRESH) != 0, now, _i8(io_arena, il, IB_S)[0],
                 _b(io_arena, il, IB_DB)[DB_LOGICAL], _u8(io_arena, il, IB_W), _b(io_arena, il, IB_DOB),
                 _i8(io_arena, il, IB_DOI), _i8(io_arena, il, IB_PINS)[0], _f8(io_arena, il, IB_AOF),
                 _b(io_arena, il, IB_AOB), _i8(io_arena, il, IB_AOI), tables[0], tables[1], do_bank,
                 hal[o[O_AO]:o[O_AO] + 8 * MAX_AO].view(np.float64))
        if phase == PHASE_PRE:
            return 0
        if phase == PHASE_OUT:
            wrote_out = o[O_OUTPUTS_WROTE]
            o[O_OUTPUTS_WROTE] = 0
            return _outputs_changed(hal[:o[O_N_IO]].view(np.uint64), _u8(h_arena, hl, HB_PREV)[0], o, wrote_out, False)
    if phase == PHASE_ALL:
        st = o[O_STRIDE]
        ax = hal[o[O_AXES]:o[O_AXES] + n * st]
        fb = ax.view(np.float64).reshape((n, st // 8))
        fl = ax.view(np.bool_).reshape((n, st))
        _sim(enable, brake_release, torque, do_bank, fb[:, o[O_POS] >> 3], fb[:, o[O_VEL] >> 3],
             fb[:, o[O_TQ] >> 3], fl[:, o[O_READY]], fl[:, o[O_FAULT]], hal[o[O_STATE]:o[O_STATE] + n],
             hal[o[O_ERR]:o[O_ERR] + 4 * n].view(np.uint32), di, ai, now, dt, _i8(sim_arena, sl, SB_PARAMS)[0],
             _f8(sim_arena, sl, SB_AF), _i8(sim_arena, sl, SB_AI), _b(sim_arena, sl, SB_AB),
             _u4(sim_arena, sl, SB_CODES), _b(sim_arena, sl, SB_PB), _f8(sim_arena, sl, SB_PF),
             _i8(sim_arena, sl, SB_TAB), _f8(sim_arena, sl, SB_SENS))
    wrote_in = _inputs(
        di, ai, now, _i8(io_arena, il, IB_S)[0], _b(io_arena, il, IB_DB), _i8(io_arena, il, IB_DI_I),
        _i8(io_arena, il, IB_EN_I), _b(io_arena, il, IB_EN_B), _f8(io_arena, il, IB_AF), _i8(io_arena, il, IB_AI_I),
        _b(io_arena, il, IB_AI_SINGLE)[0], _f8(io_arena, il, IB_HIST),
        hal[o[O_DI_BANK]:o[O_DI_BANK] + 8 * BANK_WORDS].view(np.uint64), hal[o[O_AI]:o[O_AI] + 8 * MAX_AI].view(np.float64))
    hal[o[O_CONNECTED]] = 1 if connected else 0
    # the change test, per region of the status payload: the axes and the tail (driver and HAL state,
    # cu_connected, the message: written by the plant, a Python driver or the HAL's health) every cycle,
    # a bank or a value array only when the stage that writes it did (or once, O_FORCE)
    src = hal[:o[O_N_IO]].view(np.uint64)
    prev = _u8(h_arena, hl, HB_PREV)[0]
    force = o[O_FORCE] != 0
    o[O_FORCE] = 0
    di_w, ai_w = o[O_DI_BANK] >> 3, o[O_AI] >> 3
    mask = _outputs_changed(src, prev, o, o[O_OUTPUTS_WROTE], force)
    if _sync(src, prev, 0, di_w):
        mask |= R_AXES
    if (force or wrote_in & IN_DI) and _sync(src, prev, di_w, di_w + BANK_WORDS):
        mask |= R_DI
    if (force or wrote_in & IN_AI) and _sync(src, prev, ai_w, ai_w + MAX_AI):
        mask |= R_AI
    if _sync(src, prev, o[O_TAIL] >> 3, src.shape[0]):
        mask |= R_TAIL
    # hal_cu (upstream's layout) = HAL_IO's axes + di_bank, then ai_values: copied where they changed
    if mask & (R_AXES | R_DI):
        copy_bytes(out, 0, hal, 0, o[O_HEAD])
    if mask & R_AI:
        copy_bytes(out, o[O_OUT_AI], hal, o[O_AI], o[O_N_AI])
    if flags & FL_COMMIT:
        sp = _i8(h_arena, hl, HB_SPANS)
        commit_spans(cu_seg, out, sp[SP_CU_LO, mask], sp[SP_CU_HI, mask], 0, 0)
    if flags & FL_PUBLISH:
        u = _i8(h_arena, hl, HB_PUB)[0]
        if mask:
            u[U_IO_SINCE] = 1
        beat = now >= u[U_NEXT_BEAT]
        if beat:
            u[U_NEXT_BEAT] = now + u[U_BEAT_NS]
        if mask or beat or flags & FL_ACKED:
            return mask | hal_publish(mask, beat, tab) << WAKE_SHIFT
    return mask


HAL_PUBLISH_SIG = Sig("int64", (I64, BOOL, TABLE_ARG))


@kernel(**_jit)
def hal_publish(changed, beat, tab):
    """_hal_publish over the arrays of `tab` (T_*, as hal_step's)."""
    return _hal_publish(changed, beat, table_bytes(tab, T_HAL), table_bytes(tab, T_RPC), table_bytes(tab, T_RE),
                        table_bytes(tab, T_MQT_SEG), table_bytes(tab, T_RPC_SEG), table_bytes(tab, T_RE_SEG),
                        table_bytes(tab, T_H), table_bytes(tab, T_LAYS).view(np.int64), table_bytes(tab, T_REC))


@kernel(**_jit)
def _hal_publish(changed, beat, hal, rpc, re, mqt_seg, rpc_seg, re_seg, h_arena, lays, rec):
    """HalCycle._publish_status's commits, compiled: hal_mqt / hal_rpc / hal_re committed when the status
    payload changed (`changed`: its R_* regions; `hal` = hal_mqt's payload, filled in place) or their
    beat is due; hal_rpc / hal_re also when they carry a new ack. Each commit copies the span of the
    changed regions and what follows the status payload: the loop's figures, and the ack ring when its
    head differs from the segment's (4 words compared; 4.4 KiB not copied on every commit); before any
    commit the loop's figures (`rec`, the CycleTimer's record, current since its wait()) go into the two
    payloads that show them. Returns the WAKE_* bits of the readers to wake (a change or an ack)."""
    hl = lays[:LAY_IO]
    sp = _i8(h_arena, hl, HB_SPANS)
    u = _i8(h_arena, hl, HB_PUB)[0]
    lo, hi, tail = sp[SP_IO_LO, changed], sp[SP_IO_HI, changed], u[U_TAIL]
    wake = 0
    n_rpc, n_re = load_u64(rpc, u[U_RPC_RING] + ACK_COUNT), load_u64(re, u[U_RE_RING] + ACK_COUNT)
    if changed or beat or n_rpc != u[U_RPC_SEEN] or n_re != u[U_RE_SEEN]:
        copy_bytes(hal, u[U_STATS_MQT], rec, 0, u[U_REC_N])
        copy_bytes(rpc, u[U_STATS_RPC], rec, 0, u[U_REC_N])
    if changed:
        commit_spans(mqt_seg, hal, lo, hi, tail, u[U_MQT_END])
        wake |= WAKE_MQT
    elif beat:
        commit_spans(mqt_seg, hal, 0, 0, tail, u[U_MQT_END])
    for k in range(2):
        dst = rpc if k == 0 else re
        n = n_rpc if k == 0 else n_re
        acked = n != u[U_RPC_SEEN + k]
        if changed or acked or beat:
            if hi > lo:
                copy_bytes(dst, lo, hal, lo, hi - lo)
            seg = rpc_seg if k == 0 else re_seg
            ring, end = u[U_RPC_RING + k], u[U_RPC_END + k]
            same = True
            for w in range(ACK_HEAD_WORDS):
                same &= load_u64(dst, ring + 8 * w) == load_u64(seg, P2P_HEADER_SIZE + ring + 8 * w)
            if same:
                end = ring  # the ring as committed last: the figures alone (hal_re has none)
            commit_spans(seg, dst, lo, hi, tail, end)
            if changed or acked:
                u[U_RPC_SEEN + k] = n
                wake |= WAKE_RPC if k == 0 else WAKE_RE
    return wake


@kernel(**_jit)
def _outputs_changed(src, prev, o, wrote_out, force):
    """R_DO / R_AO: the banks' words compared (and remembered) only when the output stage wrote them
    (`wrote_out`: OUT_* bits) or `force`."""
    do_w, ao_w = o[O_DO_BANK] >> 3, o[O_AO] >> 3
    mask = 0
    if (force or wrote_out & OUT_DO) and _sync(src, prev, do_w, do_w + BANK_WORDS):
        mask |= R_DO
    if (force or wrote_out & OUT_AO) and _sync(src, prev, ao_w, ao_w + MAX_AO):
        mask |= R_AO
    return mask


@kernel(**_jit)
def _sync(src, prev, lo, hi):
    """Did words [lo, hi) change since the last call? (an OR of XORs without an early exit: vectorised,
    ~4x a compare loop); if so, remember them."""
    acc = np.uint64(0)
    for k in range(lo, hi):
        acc |= src[k] ^ prev[k]
    if acc == 0:
        return False
    copy_bytes(prev, lo * 8, src, lo * 8, (hi - lo) * 8)
    return True


# --- loading ---------------------------------------------------------------------------------
KERNELS = KernelSet(
    "hal", "hal._kernels_aot", ("hal.kernels", "common.shm.seqlock_jit", "common.shm.inbound_jit", "common.jit_table"),
    {"io_inputs": ("hal.kernels", "io_inputs", IO_INPUTS_SIG), "io_outputs": ("hal.kernels", "io_outputs", IO_OUTPUTS_SIG),
     "sim_cycle": ("hal.kernels", "sim_cycle", SIM_CYCLE_SIG), "hal_step": ("hal.kernels", "hal_step", HAL_STEP_SIG),
     "hal_publish": ("hal.kernels", "hal_publish", HAL_PUBLISH_SIG)},
    ("hal/kernels.py", "common/consts.py", "common/states.py", "common/shm/seqlock_jit.py", "common/shm/inbound_jit.py",
     "common/jit_table.py"))


def load(backend: str | None = None) -> Loaded:
    """Every kernel ready for its one signature (common/jit.py: the AOT module when fresh, else numba's
    JIT). Idempotent and cheap once done; called by the compiled engines' constructors (before READY)."""
    return KERNELS.load(backend)


def main() -> int:
    """`python -m hal.kernels`: fill numba's cache, build the AOT module, run a few cycles on each."""
    from common.jit import build_main

    return build_main(KERNELS, lambda loaded: _smoke(loaded.backend))


def _smoke(backend: str) -> None:
    """One I/O processor and one sim driver of a small synthetic machine, a few cycles each, on `backend`."""
    import os
    import tempfile
    from pathlib import Path
    from unittest import mock

    from common.config import load_config
    from common.jit import ENV_BACKEND
    from hal.drivers.base import DriverIO
    from hal.drivers.sim import SimDriver
    from hal.io import IoProcessor
    from hal.synthetic_config import write_config

    # $EVO_KERNELS: what the engines' constructors load
    with mock.patch.dict(os.environ, {ENV_BACKEND: backend}), tempfile.TemporaryDirectory() as td:
        os.environ.setdefault("EVO_RUN_DIR", str(Path(td) / "run"))
        cfg = load_config(write_config(Path(td) / "cfg", axes=2, points=16, brakes=(1,)))
        proc = IoProcessor(cfg.io, cfg.io_registry, ["BrakeOut1"], engine="compiled")
        drv = SimDriver(cfg, {}, engine="compiled")
        dio = DriverIO(do_bank=proc.do_bank, ao=proc.ao_norm)
        drv.open(dio)
        for k in range(1, 4):
            now = k * 1_000_000
            proc.outputs(np.zeros(BANK_WORDS, np.uint64), np.zeros(MAX_AO), now, True)
            drv.cycle(dio, now, 0.001)
            proc.inputs(dio.di, dio.ai, now)
        # the fused cycle over payload arrays of the segments' layouts (no segment needed)
        from common.shm.segments import SEGMENTS
        from hal.fused import FusedStep

        from types import SimpleNamespace

        from common.consts import P2P_HEADER_SIZE

        # the writers' mappings as plain arrays (header + payload): what the compiled commits write
        writers = {k: SimpleNamespace(local=np.zeros((), SEGMENTS[k].dtype),
                                      segment=np.zeros(P2P_HEADER_SIZE + SEGMENTS[k].dtype.itemsize, np.uint8))
                   for k in ("hal_cu", "hal_mqt", "hal_rpc", "hal_re")}
        fused = FusedStep(np.ones(MAX_AXES, np.bool_), False, np.zeros((), SEGMENTS["cu_hal"].dtype),
                          writers["hal_mqt"].local, writers["hal_cu"].local)
        fused.bind(proc._arena, proc._lay, drv.kernel_state(), tuple(writers.values()))
        for k in range(4, 7):
            changed = fused.run(PHASE_ALL, FL_CONNECTED | FL_FRESH | FL_COMMIT, k * 1_000_000, 0.001) & R_ALL
            fused.publish(changed, True, *fused.publish_tail)


if __name__ == "__main__":
    sys.exit(main())
