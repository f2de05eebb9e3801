"""io.toml semantics, vectorised over all 1024 pins of each type: what the HAL does to every point.

IoProcessor's docstring states every convention and every semantic choice the CU, RE and RPC rely on.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from common.config import IoConfig, IoType
from common.config import roles as R
from common.config.registry import IoRegistry
from common.consts import BANK_WORDS, MAX_AI, MAX_AO, MAX_DI, MAX_DO

from .engine import resolve_engine

NEVER = np.iinfo(np.int64).max  # expiry time of outputs without a pulse watchdog
_KIND_LINEAR, _KIND_QUADRATIC, _KIND_CUBIC, _KIND_CUSTOM = 0, 1, 2, 3
_KINDS = {"linear": _KIND_LINEAR, "quadratic": _KIND_QUADRATIC, "cubic": _KIND_CUBIC}
_INVERSE_SAMPLES = 4097  # custom curves: tabulated inverse + one Newton step


_count = np.count_nonzero  # the cheapest "any()" on a bool vector


def _out(given: np.ndarray | None, size: int, dtype: type) -> np.ndarray:
    if given is None:
        return np.zeros(size, dtype)
    if given.shape != (size,) or given.dtype != np.dtype(dtype):
        raise ValueError(f"output array must be {dtype.__name__}[{size}], got {given.dtype}{list(given.shape)}")
    given[...] = 0
    return given


def _bank(bits: np.ndarray) -> np.ndarray:
    out = np.zeros(BANK_WORDS, np.uint64)
    out.view(np.uint8)[:] = np.packbits(bits, bitorder="little")
    return out


def _ms_to_ns(ms: float) -> int:
    return int(round(ms * 1_000_000))


class _Curves:
    """Per-pin analog curves as coefficient arrays, with a vectorised inverse (eng -> 0..1)."""

    def __init__(self, points: Iterable, size: int) -> None:
        self.lo = np.zeros(size)
        self.span = np.zeros(size)
        self.off = np.zeros(size)
        self.a = np.zeros(size)
        self.b = np.zeros(size)
        self.c = np.zeros(size)
        self.vmin = np.zeros(size)  # engineering range reachable by the curve
        self.vmax = np.zeros(size)
        self.kind = np.zeros(size, np.int8)
        custom: list[int] = []
        for p in points:
            cv = p.curve
            i = p.pin
            self.lo[i], self.span[i], self.off[i] = cv.min, cv.max - cv.min, cv.offset
            self.a[i], self.b[i], self.c[i] = cv.a, cv.b, cv.c
            ends = (cv.to_engineering(0.0), cv.to_engineering(1.0))
            self.vmin[i], self.vmax[i] = min(ends), max(ends)
            self.kind[i] = _KINDS.get(cv.preset, _KIND_CUSTOM)
            if self.kind[i] == _KIND_CUSTOM:
                custom.append(i)
        self.base = self.lo + self.off
        # custom curves: s(n) = shape(n)/shape(1) is increasing 0..1; stack the tables with an
        # offset of 2 per pin so one np.interp inverts any subset
        self.custom_pins = np.array(custom, np.intp)
        self.custom_slot = np.full(size, -1, np.intp)
        self.custom_slot[self.custom_pins] = np.arange(len(custom))
        grid = np.linspace(0.0, 1.0, _INVERSE_SAMPLES)
        if custom:
            ci = self.custom_pins
            shape = ((self.a[ci, None] * grid + self.b[ci, None]) * grid + self.c[ci, None]) * grid
            self.end = shape[:, -1].copy()
            s = shape / self.end[:, None] + 2.0 * np.arange(len(custom))[:, None]
            self.table_x = s.ravel()
            self.table_n = np.tile(grid, len(custom))

    def to_engineering(self, n: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
        """out = lo + span * ((a n + b) n + c) n + offset, for all pins (no allocation)."""
        np.multiply(self.a, n, out=tmp)
        tmp += self.b
        tmp *= n
        tmp += self.c
        tmp *= n
        tmp *= self.span
        np.add(tmp, self.base, out=out)
        return out

    def normalise(self, pins: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Raw 0..1 signals that produce `values` (engineering) on `pins` (clamped to the curve)."""
        lo, span, off = self.lo[pins], self.span[pins], self.off[pins]
        v = np.clip(values, self.vmin[pins], self.vmax[pins])
        safe_span = np.where(span != 0.0, span, 1.0)
        y = (v - off - lo) / safe_span  # target shape value
        kind = self.kind[pins]
        n = np.zeros(len(pins))
        m = kind == _KIND_LINEAR
        if m.any():
            n[m] = y[m] / np.where(self.c[pins[m]] != 0.0, self.c[pins[m]], 1.0)
        m = kind == _KIND_QUADRATIC
        if m.any():
            n[m] = np.sqrt(np.maximum(y[m] / self.b[pins[m]], 0.0))
        m = kind == _KIND_CUBIC
        if m.any():
            n[m] = np.cbrt(y[m] / self.a[pins[m]])
        m = kind == _KIND_CUSTOM
        if m.any():
            cp = pins[m]
            slot = self.custom_slot[cp]
            end = self.end[slot]
            q = y[m] / end + 2.0 * slot
            nn = np.interp(q, self.table_x, self.table_n)
            a, b, c = self.a[cp], self.b[cp], self.c[cp]
            f = ((a * nn + b) * nn + c) * nn - y[m]
            df = (3.0 * a * nn + 2.0 * b) * nn + c
            step = np.divide(f, df, out=np.zeros_like(f), where=df != 0.0)
            n[m] = nn - step
        return np.clip(n, 0.0, 1.0)


class IoProcessor:
    """All per-cycle I/O work. Call `inputs()` with the driver's physical DI / raw AI, and
    `outputs()` with the CU's frame; read the results from the public arrays.

    Conventions (the same as common.config.IoRegistry, so `registry.read_di(role, bank)` works on
    every bank the HAL publishes):
    - DI banks carry the *physical-equivalent* level of the processed input: final logical value
      (after debounce and enable_pin) XOR NC. DO banks carry the physical level applied
      (logical XOR inverted). The CU writes physical DO bits too (IoRegistry.write_do).
    - AI/AO values are engineering units. Drivers see AIs/AOs as normalised raw signals 0..1;
      `to_engineering(n) = min + (max-min)*(a n^3 + b n^2 + c n) + offset` (common.config.AnalogCurve).

    Semantics chosen where io.toml is terse (documented for the CU, RE and RPC authors):
    - debounce: a changed level is accepted after it has been stable for `debounce` ms.
    - enable_pin: the point reads true only while its own (debounced) value is true AND the enable
      pin's debounced logical value equals enable_state; with enable_timeout > 0 both must also
      have become true within enable_timeout ms of each other (two-hand control: releasing either
      drops it, and re-arming needs both pressed again within the window).
    - averaging: moving mean of the last `average` engineering values (a non-finite raw sample
      repeats the last good one).
    - DO pulse (watchdog): the output turns off unless refreshed within `pulse` ms. Role pins are
      refreshed by every new cu_hal frame with the bit set; role-less pins by SET_DO 1. PULSE_DO
      switches a role-less DO on for an explicit time.
    - AO pulse: the output resets to 0 (clamped into [min, max]) unless refreshed within `pulse` ms
      (role pins: every new cu_hal frame; role-less pins: SET_AO).
    - E-stop (the `EStop` role reads true): every DO without keep_estop is forced off, and the
      role-less values stored for them are reset (they stay off after the E-stop is released).
    - Safe state (cu_hal absent or stale): every DO goes to its `init` value, except keep_estop
      ones, which keep their last value, and brake outputs (brake.do_brake roles), which are
      forced off (brake engaged); every AO goes to `init`. Stored role-less values are reset the
      same way, so nothing switches back on by itself when the CU returns.

    Engines (`engine=`, default $EVO_HAL_ENGINE else "compiled"): "compiled" runs inputs() and
    outputs() as the numba kernels of hal/kernels.py on the same arrays (rows of a few matrices,
    same attribute names); "numpy" is the vectorised reference below. Both give the same results.
    """

    def __init__(
        self,
        io: IoConfig,
        registry: IoRegistry,
        brake_do_roles: Iterable[str] = (),
        *,
        di_bank: np.ndarray | None = None,
        do_bank: np.ndarray | None = None,
        ai_values: np.ndarray | None = None,
        ao_values: np.ndarray | None = None,
        engine: str | None = None,
    ) -> None:
        """The four published arrays may be passed in (views on a segment payload: zero copy)."""
        self.engine = resolve_engine(engine)
        self.io = io
        self.registry = registry
        di_pts = io.points_of(IoType.DI)
        do_pts = io.points_of(IoType.DO)
        ai_pts = io.points_of(IoType.AI)
        ao_pts = io.points_of(IoType.AO)
        # --- DI ---
        self.di_nc = np.zeros(MAX_DI, np.bool_)
        self.di_debounce_ns = np.zeros(MAX_DI, np.int64)
        for p in di_pts:
            self.di_nc[p.pin] = p.is_nc
            self.di_debounce_ns[p.pin] = _ms_to_ns(p.debounce_ms)
        self.di_state = np.zeros(MAX_DI, np.bool_)  # debounced logical
        self.di_pending = np.zeros(MAX_DI, np.bool_)
        self.di_since = np.zeros(MAX_DI, np.int64)
        self._di_pending_any = False
        self.di_bank = _out(di_bank, BANK_WORDS, np.uint64)  # physical-equivalent, published
        self._di_raw = np.zeros(MAX_DI, np.bool_)
        self._di_diff = np.zeros(MAX_DI, np.bool_)
        self._di_tmp = np.zeros(MAX_DI, np.bool_)
        en = [p for p in di_pts if p.enable_pin is not None]
        self.en_pins = np.array([p.pin for p in en], np.intp)
        self.en_src = np.array([p.enable_pin for p in en], np.intp)
        self.en_state = np.array([p.enable_state for p in en], np.bool_)
        self.en_timeout_ns = np.array([_ms_to_ns(p.enable_timeout_ms) for p in en], np.int64)
        self.en_t_own = np.zeros(len(en), np.int64)
        self.en_t_src = np.zeros(len(en), np.int64)
        self.en_prev_own = np.zeros(len(en), np.bool_)
        self.en_prev_src = np.zeros(len(en), np.bool_)
        estop = registry.get(R.ESTOP)
        self.estop_pin = estop.pin if estop is not None and estop.type is IoType.DI else -1
        # final logical values (after enable_pin); the debounced state itself when no point has one
        self.di_logical = np.zeros(MAX_DI, np.bool_) if en else self.di_state
        # --- AI ---
        self.ai_curves = _Curves(ai_pts, MAX_AI)
        self.ai_n = np.ones(MAX_AI, np.int64)
        for p in ai_pts:
            self.ai_n[p.pin] = p.average
        self.ai_avg_depth = int(self.ai_n.max())
        self.ai_single = self.ai_n == 1
        self.ai_values = _out(ai_values, MAX_AI, np.float64)  # engineering, published
        self._ai_last_raw = np.zeros(MAX_AI)
        self._ai_eng = np.zeros(MAX_AI)
        self._ai_tmp = np.zeros(MAX_AI)
        self._ai_old = np.zeros(MAX_AI)
        self._ai_sum = np.zeros(MAX_AI)
        self._ai_nf = self.ai_n.astype(np.float64)
        self._ai_prev_raw = np.full(MAX_AI, np.nan)
        self._ai_same = np.zeros(MAX_AI, np.bool_)
        self._ai_quiet = 0
        if self.ai_avg_depth > 1:
            self._ai_hist = np.zeros((self.ai_avg_depth, MAX_AI))
            total = self.ai_avg_depth * MAX_AI
            self._ai_hist_flat = self._ai_hist.reshape(-1)
            self._ai_hist_total = total
            # flat index of the sample leaving each pin's window at k=0; add k*MAX_AI (mod total)
            self._ai_old_base = (-self.ai_n * MAX_AI + np.arange(MAX_AI)) % total
            self._ai_idx = np.zeros(MAX_AI, np.int64)
        self._ai_k = 0
        # --- DO (merged and applied on 64-bit words: pin p = bit p % 64 of word p // 64) ---
        do_role = np.zeros(MAX_DO, np.bool_)
        do_inv = np.zeros(MAX_DO, np.bool_)
        do_init = np.zeros(MAX_DO, np.bool_)
        do_keep = np.zeros(MAX_DO, np.bool_)
        do_brake = np.zeros(MAX_DO, np.bool_)
        self.do_pulse_ns = np.zeros(MAX_DO, np.int64)
        self.do_keep_estop = do_keep
        for p in do_pts:
            i = p.pin
            do_role[i] = p.role is not None
            do_inv[i] = p.inverted
            do_init[i] = bool(p.init)
            do_keep[i] = p.keep_estop
            self.do_pulse_ns[i] = _ms_to_ns(p.pulse_ms)
        for role in brake_do_roles:
            p = registry.get(role)
            if p is not None and p.type is IoType.DO:
                do_brake[p.pin] = True
        self.do_role = do_role
        self.do_role_pulse_pins = np.flatnonzero(do_role & (self.do_pulse_ns > 0))
        self._w_role = _bank(do_role)
        self._w_not_role = ~self._w_role
        self._w_inv = _bank(do_inv)
        self._w_keep = _bank(do_keep)
        self._w_keep_not_brake = _bank(do_keep & ~do_brake)
        self._w_not_keep = ~self._w_keep
        self._w_safe_init = _bank(do_init & ~do_brake)
        self._w_role_pulse = _bank(do_role & (self.do_pulse_ns > 0))
        self._do_safe_value = do_init & ~do_brake & ~do_role  # role-less values after a reset
        self.do_value = do_init & ~do_role  # role-less values set by RE / RPC (bool per pin)
        self._w_value = _bank(self.do_value)
        self.do_expiry = np.full(MAX_DO, NEVER, np.int64)
        self._w_lapsed = np.zeros(BANK_WORDS, np.uint64)  # role pulse pins whose watchdog ran out
        self.do_out = self._w_safe_init.copy()  # logical bank, applied
        self.do_bank = _out(do_bank, BANK_WORDS, np.uint64)  # physical bank: published + driver
        np.bitwise_xor(self.do_out, self._w_inv, out=self.do_bank)
        self._w_cu = np.zeros(BANK_WORDS, np.uint64)  # the CU's logical bank
        self._w_tmp = np.zeros(BANK_WORDS, np.uint64)
        self._do_live = np.zeros(MAX_DO, np.bool_)
        self._do_key = b""
        self._do_dirty = False
        self._do_next_expiry = NEVER
        self._connected = False
        self._estop = False
        # --- AO ---
        self.ao_curves = _Curves(ao_pts, MAX_AO)
        self.ao_configured = np.zeros(MAX_AO, np.bool_)
        self.ao_role = np.zeros(MAX_AO, np.bool_)
        self.ao_lo = np.zeros(MAX_AO)
        self.ao_hi = np.zeros(MAX_AO)
        self.ao_init = np.zeros(MAX_AO)
        self.ao_pulse_ns = np.zeros(MAX_AO, np.int64)
        for p in ao_pts:
            i = p.pin
            self.ao_configured[i] = True
            self.ao_role[i] = p.role is not None
            self.ao_lo[i], self.ao_hi[i] = p.min, p.max
            self.ao_init[i] = float(p.init)
            self.ao_pulse_ns[i] = _ms_to_ns(p.pulse_ms)
        self.ao_zero = np.clip(0.0, self.ao_lo, self.ao_hi)  # value after a pulse expires
        self.ao_role_pulse = self.ao_role & (self.ao_pulse_ns > 0)
        self.ao_value = np.where(self.ao_role, 0.0, self.ao_init)  # role-less values (RE / RPC)
        self.ao_expiry = np.full(MAX_AO, NEVER, np.int64)
        self.ao_values = _out(ao_values, MAX_AO, np.float64)  # engineering, applied and published
        self.ao_values[:] = self.ao_init
        self._ao_cu = self.ao_init.copy()  # last valid CU value per pin
        self._ao_tmp = np.zeros(MAX_AO)
        self._ao_valid = np.zeros(MAX_AO, np.bool_)
        self._ao_last = np.full(MAX_AO, np.nan)
        self.ao_norm = np.zeros(MAX_AO)  # to the driver
        c = self.ao_curves
        self._ao_linear = self.ao_configured & (c.kind == _KIND_LINEAR) & (c.span * c.c != 0.0)
        self._ao_nonlinear = self.ao_configured & ~self._ao_linear
        self._ao_any_linear = bool(self._ao_linear.any())
        scale = np.where(self._ao_linear, c.span * c.c, 1.0)
        self._ao_ia = np.where(self._ao_linear, 1.0 / scale, 0.0)
        self._ao_ib = np.where(self._ao_linear, -(c.lo + c.off) / scale, 0.0)
        self._ao_key = b""
        self._ao_dirty = False
        self._ao_next_expiry = NEVER
        self._ao_role_pulse_any = bool(self.ao_role_pulse.any())
        self._update_ao_norm()
        self._started = False
        self._s: np.ndarray | None = None  # the compiled engine's scalar state
        if self.engine == "compiled":
            self._compiled_setup()

    def _compiled_setup(self) -> None:
        """Arrays regrouped into the kernels' matrices (same values, same attribute names) and the
        scalar state into one int64 vector; kernels compiled or loaded from cache (before READY)."""
        from . import kernels as K

        ks = K.load()
        c = self.ai_curves
        self._ai_a, self._ai_b, self._ai_c, self._ai_span, self._ai_base = c.a, c.b, c.c, c.span, c.base
        depth = self.ai_avg_depth
        self._ai_hist = np.zeros((MAX_AI, max(depth, 1)))  # pin-major here (see kernels._analog_inputs)
        self._w_key = np.zeros(BANK_WORDS, np.uint64)
        self._ao_key_values = np.zeros(MAX_AO)
        ao = self.ao_curves
        end = np.ones(MAX_AO)
        if len(ao.custom_pins):
            end[ao.custom_pins] = ao.end
        s = np.zeros(K.IO_SCALARS, np.int64)
        s[K.S_STARTED] = self._started
        s[K.S_PENDING_ANY] = self._di_pending_any
        s[K.S_AI_QUIET] = self._ai_quiet
        s[K.S_AI_K] = self._ai_k
        s[K.S_DO_DIRTY] = self._do_dirty
        s[K.S_DO_NEXT] = self._do_next_expiry
        s[K.S_AO_DIRTY] = self._ao_dirty
        s[K.S_AO_NEXT] = self._ao_next_expiry
        s[K.S_CONNECTED] = self._connected
        s[K.S_ESTOP] = self._estop
        s[K.S_ESTOP_PIN] = self.estop_pin
        s[K.S_AI_DEPTH] = depth
        s[K.S_AO_ROLE_PULSE_ANY] = self._ao_role_pulse_any
        s[K.S_AO_ANY_LINEAR] = self._ao_any_linear
        self._s = s
        self._role_pulse_pins = self.do_role_pulse_pins
        n_en = len(self.en_pins)
        table_x = getattr(ao, "table_x", np.zeros(0))
        b = K.ArenaBuilder()
        b.slab(K.IB_S, self, ("_s",), np.int64, K.IO_SCALARS)
        b.slab(K.IB_DB, self, K.DI_BOOL_ROWS, np.bool_, MAX_DI)
        b.slab(K.IB_DI_I, self, K.DI_INT_ROWS, np.int64, MAX_DI)
        b.slab(K.IB_EN_I, self, K.EN_INT_ROWS, np.int64, n_en)
        b.slab(K.IB_EN_B, self, K.EN_BOOL_ROWS, np.bool_, n_en)
        b.slab(K.IB_AF, self, K.AI_FLOAT_ROWS, np.float64, MAX_AI)
        b.slab(K.IB_AI_I, self, K.AI_INT_ROWS, np.int64, MAX_AI)
        b.slab(K.IB_AI_SINGLE, self, ("ai_single",), np.bool_, MAX_AI)
        b.block(K.IB_HIST, self._ai_hist)
        b.slab(K.IB_W, self, K.DO_WORD_ROWS, np.uint64, BANK_WORDS)
        b.slab(K.IB_DOB, self, K.DO_BOOL_ROWS, np.bool_, MAX_DO)
        b.slab(K.IB_DOI, self, K.DO_INT_ROWS, np.int64, MAX_DO)
        b.slab(K.IB_PINS, self, ("_role_pulse_pins",), np.int64, len(self.do_role_pulse_pins))
        b.block(K.IB_AOF, np.vstack([np.vstack([getattr(self, n) for n in K.AO_FLOAT_ROWS]),
                                     ao.lo, ao.span, ao.off, ao.a, ao.b, ao.c, ao.vmin, ao.vmax, end]))
        b.slab(K.IB_AOB, self, K.AO_BOOL_ROWS, np.bool_, MAX_AO)
        b.block(K.IB_AOI, np.vstack([self.ao_pulse_ns, self.ao_expiry, ao.kind, ao.custom_slot]).astype(np.int64))
        b.block(K.IB_TABLES, np.vstack([table_x, getattr(ao, "table_n", np.zeros(0))]).astype(np.float64))
        arena, lay = b.build()
        self._s = b.views[K.IB_S][0]
        self._ai_hist = b.views[K.IB_HIST]
        for k, name in enumerate(K.AO_FLOAT_ROWS):  # blocks copied whole: bind their rows by hand
            setattr(self, name, b.views[K.IB_AOF][k])
        self.ao_pulse_ns, self.ao_expiry = b.views[K.IB_AOI][0], b.views[K.IB_AOI][1]
        self._arena, self._lay = arena, lay
        self._k_in = ks.checked("io_inputs")
        self._k_in_tail = (arena, lay, self.di_bank, self.ai_values)
        self._k_out = ks.checked("io_outputs")
        self._k_out_tail = (arena, lay, self.do_bank, self.ao_values)
        self._no_bank = np.zeros(BANK_WORDS, np.uint64)  # passed while the CU is absent (not read)
        self._no_ao = np.zeros(MAX_AO)

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _pack(bits: np.ndarray, bank: np.ndarray) -> None:
        bank.view(np.uint8)[:] = np.packbits(bits, bitorder="little")

    @property
    def estop(self) -> bool:
        """The EStop role reads true (pressed), after debounce."""
        return self.estop_pin >= 0 and bool(self.di_logical[self.estop_pin])

    # --- inputs -------------------------------------------------------------------------------
    def inputs(self, di_phys: np.ndarray, ai_raw: np.ndarray, now_ns: int) -> None:
        """Physical DI levels and raw AI signals (0..1) from the driver -> di_logical, di_bank,
        ai_values. Steady inputs cost a handful of vector operations."""
        if self._s is not None:
            self._k_in(di_phys, ai_raw, now_ns, *self._k_in_tail)
            return
        raw, diff, tmp = self._di_raw, self._di_diff, self._di_tmp
        state = self.di_state
        np.not_equal(di_phys, self.di_nc, out=raw)  # logical level of the wire
        changed = not self._started
        if changed:
            state[:] = raw  # the first reading is taken as settled
        np.not_equal(raw, state, out=diff)
        if self._di_pending_any or _count(diff):
            np.greater(diff, self.di_pending, out=tmp)  # newly differing: start the clock
            np.copyto(self.di_since, now_ns, where=tmp)
            self.di_pending[:] = diff
            np.less_equal(self.di_since, now_ns - self.di_debounce_ns, out=tmp)
            tmp &= diff  # stable for the debounce time: accept
            if _count(tmp):
                state ^= tmp
                self.di_pending ^= tmp
                changed = True
            self._di_pending_any = bool(_count(self.di_pending))
        if changed and self.en_pins.size:  # enable conditions move only on input edges
            self.di_logical[:] = state
            self._enable_conditions(now_ns)
        if changed:
            np.not_equal(self.di_logical, self.di_nc, out=tmp)
            self._pack(tmp, self.di_bank)
        self._analog_inputs(ai_raw)
        self._started = True

    def _enable_conditions(self, now_ns: int) -> None:
        own = self.di_state[self.en_pins]
        src = self.di_state[self.en_src] == self.en_state
        self.en_t_own[own & ~self.en_prev_own] = now_ns
        self.en_t_src[src & ~self.en_prev_src] = now_ns
        self.en_prev_own[:] = own
        self.en_prev_src[:] = src
        in_window = (self.en_timeout_ns == 0) | (np.abs(self.en_t_own - self.en_t_src) <= self.en_timeout_ns)
        self.di_logical[self.en_pins] = own & src & in_window

    def _analog_inputs(self, ai_raw: np.ndarray) -> None:
        # unchanged raw signals for longer than the deepest window: the values are settled
        same = self._ai_same
        np.equal(ai_raw, self._ai_prev_raw, out=same)
        if self._started and _count(same) == MAX_AI:
            if self._ai_quiet > self.ai_avg_depth:
                return
            self._ai_quiet += 1
        else:
            self._ai_quiet = 0
            np.copyto(self._ai_prev_raw, ai_raw)
        last = self._ai_last_raw
        if not self._started:
            last[:] = 0.0
        np.isfinite(ai_raw, out=same)
        np.copyto(last, ai_raw, where=same)  # a non-finite sample repeats the last good one
        eng = self.ai_curves.to_engineering(last, self._ai_eng, self._ai_tmp)
        if self.ai_avg_depth <= 1:
            self.ai_values[:] = eng
            return
        hist, total = self._ai_hist, self._ai_hist_total
        k = self._ai_k
        if not self._started:
            hist[:] = eng
            np.multiply(eng, self._ai_nf, out=self._ai_sum)
        else:
            idx = self._ai_idx
            np.add(self._ai_old_base, (k * MAX_AI) % total, out=idx)
            np.remainder(idx, total, out=idx)
            self._ai_hist_flat.take(idx, out=self._ai_old)  # the sample leaving each window
            np.subtract(eng, self._ai_old, out=self._ai_tmp)
            self._ai_sum += self._ai_tmp
            hist[k % self.ai_avg_depth] = eng
        self._ai_k = k + 1
        np.divide(self._ai_sum, self._ai_nf, out=self.ai_values)
        np.copyto(self.ai_values, eng, where=self.ai_single)

    # --- outputs ------------------------------------------------------------------------------
    def outputs(
        self,
        cu_do_bank: np.ndarray | None,
        cu_ao: np.ndarray | None,
        now_ns: int,
        cu_fresh: bool,
    ) -> None:
        """Merge the CU's role pins (cu_do_bank physical, cu_ao engineering; None = CU absent or
        stale: safe state) with the role-less values, then pulses and E-stop -> do_out (logical
        bank), do_bank (physical bank), ao_values, ao_norm. Recomputed only when an input of the merge changed."""
        if self._s is not None:
            if cu_do_bank is None or cu_ao is None:
                self._k_out(self._no_bank, self._no_ao, False, False, now_ns, *self._k_out_tail)
            else:
                self._k_out(cu_do_bank, cu_ao, True, bool(cu_fresh), now_ns, *self._k_out_tail)
            return
        connected = cu_do_bank is not None
        estop = self.estop
        mode_changed = connected != self._connected or estop != self._estop
        self._connected = connected
        self._estop = estop
        self._digital_outputs(cu_do_bank, now_ns, cu_fresh, mode_changed)
        self._analog_outputs(cu_ao, now_ns, cu_fresh, mode_changed)

    def _digital_outputs(self, cu_bank: np.ndarray | None, now_ns: int, fresh: bool, force: bool) -> None:
        cu = self._w_cu
        recompute = force or self._do_dirty or now_ns >= self._do_next_expiry
        if cu_bank is not None:
            key = cu_bank.tobytes()
            if key != self._do_key:
                self._do_key = key
                np.bitwise_xor(cu_bank, self._w_inv, out=cu)  # the CU's logical values
                recompute = True
            if fresh and self.do_role_pulse_pins.size:
                # watchdog refresh: every new frame with the bit on; a pin that is off cannot lapse
                pins = self.do_role_pulse_pins
                on = (cu[pins >> 6] >> (pins & 63).astype(np.uint64)) & np.uint64(1)
                self.do_expiry[pins] = np.where(on != 0, now_ns + self.do_pulse_ns[pins], NEVER)
                self._w_lapsed &= ~self._w_role_pulse
                self._do_next_expiry = int(self.do_expiry.min())
        if not recompute:
            return
        self._do_dirty = False
        out, tmp = self.do_out, self._w_tmp
        if cu_bank is not None:
            np.bitwise_and(cu, self._w_role, out=out)
            np.bitwise_and(self._w_value, self._w_not_role, out=tmp)
            out |= tmp
        else:  # safe state: init values; keep_estop outputs keep theirs; brakes engaged
            out &= self._w_keep_not_brake
            np.bitwise_and(self._w_safe_init, self._w_not_keep, out=tmp)
            out |= tmp
            np.copyto(self.do_value, self._do_safe_value, where=~self.do_keep_estop)
            self.do_value &= ~self.do_role
            self._pack(self.do_value, self._w_value)
            self.do_expiry[:] = NEVER
            self._do_next_expiry = NEVER
            self._w_lapsed[:] = 0
            self._do_key = b""
        if now_ns >= self._do_next_expiry:
            self._expire_do(now_ns)
            out &= ~self._w_lapsed
        if self._estop:
            out &= self._w_keep
            if np.count_nonzero(self._w_value & self._w_not_keep):
                self.do_value &= self.do_keep_estop
                self._pack(self.do_value, self._w_value)
        np.bitwise_xor(out, self._w_inv, out=self.do_bank)

    def _expire_do(self, now_ns: int) -> None:
        """Pulse watchdogs that ran out: role-less values switch off; role pins lapse until the
        CU refreshes them."""
        live = self._do_live
        np.less(now_ns, self.do_expiry, out=live)
        dead = ~live
        gone = self.do_value & dead
        if gone.any():
            self.do_value &= live
            self._pack(self.do_value, self._w_value)
            self.do_expiry[gone] = NEVER
            self.do_out &= self._w_role  # role-less bits again from the stored values
            self.do_out |= self._w_value & self._w_not_role
        self._pack(dead & self.do_role, self._w_lapsed)
        nxt = int(self.do_expiry.min())
        self._do_next_expiry = nxt if nxt > now_ns else now_ns + 1  # lapsed role pins: look again

    def _analog_outputs(self, cu_ao: np.ndarray | None, now_ns: int, fresh: bool, force: bool) -> None:
        recompute = force or self._ao_dirty or now_ns >= self._ao_next_expiry
        if cu_ao is not None:
            key = cu_ao.tobytes()
            if key != self._ao_key:
                self._ao_key = key
                valid = self._ao_valid
                np.isfinite(cu_ao, out=valid)
                valid &= self.ao_role
                np.minimum(cu_ao, self.ao_hi, out=self._ao_tmp, where=valid)
                np.maximum(self._ao_tmp, self.ao_lo, out=self._ao_tmp, where=valid)
                np.copyto(self._ao_cu, self._ao_tmp, where=valid)  # invalid: keep the last value
                recompute = True
            if fresh and self._ao_role_pulse_any:
                np.copyto(self.ao_expiry, now_ns + self.ao_pulse_ns, where=self.ao_role_pulse)
                self._ao_next_expiry = int(self.ao_expiry.min())
        if not recompute:
            return
        self._ao_dirty = False
        vals = self.ao_values
        if cu_ao is not None:
            np.copyto(vals, self.ao_value)
            np.copyto(vals, self._ao_cu, where=self.ao_role)
        else:
            np.copyto(vals, self.ao_init)
            np.copyto(self.ao_value, self.ao_init, where=~self.ao_role)
            np.copyto(self._ao_cu, self.ao_init)
            self.ao_expiry[:] = NEVER
            self._ao_next_expiry = NEVER
            self._ao_key = b""
        if now_ns >= self._ao_next_expiry:
            expired = now_ns >= self.ao_expiry
            np.copyto(vals, self.ao_zero, where=expired)
            lapsed = expired & ~self.ao_role
            np.copyto(self.ao_value, self.ao_zero, where=lapsed)
            self.ao_expiry[lapsed] = NEVER
            self._ao_next_expiry = int(self.ao_expiry.min())
            if self._ao_next_expiry <= now_ns:
                self._ao_next_expiry = now_ns + 1
        self._update_ao_norm()

    def _update_ao_norm(self) -> None:
        vals, ne = self.ao_values, self._ao_valid
        np.not_equal(vals, self._ao_last, out=ne)
        if not _count(ne):
            return
        np.copyto(self._ao_last, vals)
        if self._ao_any_linear:  # closed form for every linear pin at once: n = v * ia + ib
            t = self._ao_tmp
            np.multiply(vals, self._ao_ia, out=t)
            t += self._ao_ib
            np.minimum(t, 1.0, out=t)
            np.maximum(t, 0.0, out=t)
            np.copyto(self.ao_norm, t, where=self._ao_linear)
        ne &= self._ao_nonlinear
        if _count(ne):
            pins = np.flatnonzero(ne)
            self.ao_norm[pins] = self.ao_curves.normalise(pins, vals[pins])

    # --- role-less writes (RE / RPC commands, validated by the caller) -------------------------
    def set_do(self, pin: int, value: bool, now_ns: int) -> None:
        self.do_value[pin] = value
        pulse = int(self.do_pulse_ns[pin])
        self._set_do_expiry(pin, now_ns + pulse if value and pulse > 0 else NEVER)

    def pulse_do(self, pin: int, length_ns: int, now_ns: int) -> None:
        self.do_value[pin] = True
        self._set_do_expiry(pin, now_ns + length_ns)

    def _set_do_expiry(self, pin: int, expiry: int) -> None:
        self._pack(self.do_value, self._w_value)
        self.do_expiry[pin] = expiry
        if self._s is not None:
            from .kernels import S_DO_DIRTY, S_DO_NEXT

            self._s[S_DO_NEXT] = min(int(self._s[S_DO_NEXT]), expiry)
            self._s[S_DO_DIRTY] = 1
            return
        self._do_next_expiry = min(self._do_next_expiry, expiry)
        self._do_dirty = True

    def set_ao(self, pin: int, value: float, now_ns: int) -> None:
        self.ao_value[pin] = value
        pulse = int(self.ao_pulse_ns[pin])
        expiry = now_ns + pulse if pulse > 0 else NEVER
        self.ao_expiry[pin] = expiry
        if self._s is not None:
            from .kernels import S_AO_DIRTY, S_AO_NEXT

            self._s[S_AO_NEXT] = min(int(self._s[S_AO_NEXT]), expiry)
            self._s[S_AO_DIRTY] = 1
            return
        self._ao_next_expiry = min(self._ao_next_expiry, expiry)
        self._ao_dirty = True
