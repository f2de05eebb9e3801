"""Vectorised axis control law: PID (filtered D, back-calculation anti-windup), feedforward,
disturbance observer, biquad notch, first-order low-pass and clamp — numpy arrays over all axes.

Each stage is off where its gain (or frequency) is 0. Output in % of rated torque.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .kernels import step as K
from .kernels.step import Store

try:  # the C entry point (np.count_nonzero's wrapper costs as much as the count)
    from numpy._core._multiarray_umath import count_nonzero as nz
except ImportError:  # pragma: no cover
    nz = np.count_nonzero


@dataclass(frozen=True)
class LawGains:
    """Per-axis gains as float64 arrays (the `[control]` keys of the axis files)."""

    kp: np.ndarray
    ki: np.ndarray
    kd: np.ndarray
    tf: np.ndarray
    tt: np.ndarray
    kvff: np.ndarray
    kaff: np.ndarray
    friction: np.ndarray
    jn: np.ndarray
    bn: np.ndarray
    gdob: np.ndarray
    f_notch: np.ndarray
    bw_notch: np.ndarray
    flp: np.ndarray
    out_max: np.ndarray

    @classmethod
    def from_controls(cls, controls: Sequence[object]) -> "LawGains":
        """From `[control]` sections (objects with the TOML key attributes); None = axis absent."""
        names = cls.__dataclass_fields__.keys()
        cols = {k: np.array([float(getattr(c, k)) if c is not None else 0.0 for c in controls]) for k in names}
        return cls(**cols)

    @classmethod
    def uniform(cls, n: int, **values: float) -> "LawGains":
        """n axes with the same gains (unnamed ones 0, out_max 100)."""
        base = {k: 0.0 for k in cls.__dataclass_fields__}
        base["out_max"] = 100.0
        base.update(values)
        return cls(**{k: np.full(n, float(v)) for k, v in base.items()})


def notch_coefficients(f0: float, bw: float, dt: float) -> tuple[float, float, float, float, float]:
    """Normalised biquad notch (RBJ cookbook): (b0, b1, b2, a1, a2) with a0 = 1; centre f0 Hz,
    -3 dB bandwidth bw Hz, sample period dt. Identity (1,0,0,0,0) when f0/bw is 0 or f0 is at or
    above Nyquist (a notch cannot be placed there)."""
    fs = 1.0 / dt
    if f0 <= 0.0 or bw <= 0.0 or f0 >= fs / 2.0:
        return 1.0, 0.0, 0.0, 0.0, 0.0
    w0 = 2.0 * math.pi * f0 / fs
    q = f0 / bw
    alpha = math.sin(w0) / (2.0 * q)
    c = math.cos(w0)
    a0 = 1.0 + alpha
    return 1.0 / a0, -2.0 * c / a0, 1.0 / a0, -2.0 * c / a0, (1.0 - alpha) / a0


class ControlLaw:
    """State and one step of the law for `n` axes. Every array is a row of the state blocks
    (`store`, shared with the compiled cycle) and is updated in place."""

    def __init__(self, gains: LawGains, dt: float, store: Store | None = None) -> None:
        self.dt = float(dt)
        self.n = n = len(gains.kp)
        self._store = st = store if store is not None else Store(n)
        self._si = st.si
        self.set_gains(gains)
        f, b = st.f, st.b
        self.integral, self.derivative = f[K.F_INTEGRAL], f[K.F_DERIVATIVE]
        self.dob, self.v_prev, self.u_prev = f[K.F_DOB], f[K.F_V_PREV], f[K.F_U_PREV]
        self.nx1, self.nx2, self.ny1, self.ny2 = f[K.F_NX1], f[K.F_NX2], f[K.F_NY1], f[K.F_NY2]
        self.lp = f[K.F_LP]
        self.error, self.feedforward, self.output, self.unclamped = (f[K.F_ERROR], f[K.F_FEEDFORWARD],
                                                                     f[K.F_OUTPUT], f[K.F_UNCLAMPED])
        self.first = b[K.B_FIRST]  # no previous sample yet (derivative, DOB)
        self.first.fill(True)
        self._act = f[K.F_ACT]
        self._was_active = b[K.B_WAS_ACTIVE]
        self._changed = b[K.B_CHANGED]
        self._u, self._t = f[K.F_W_U], f[K.F_W_T]

    @property
    def _all_active(self) -> bool:
        return bool(self._si[K.SI_LAW_ALL_ACTIVE])

    @_all_active.setter
    def _all_active(self, value: bool) -> None:
        self._si[K.SI_LAW_ALL_ACTIVE] = int(value)

    def set_gains(self, g: LawGains) -> None:
        """Precompute per-axis coefficients (also used after a config reload) into the coefficient
        block the compiled cycle reads."""
        dt = self.dt
        self.g = g
        lc = self._store.lc
        for row, v in ((K.LC_KP, g.kp), (K.LC_KVFF, g.kvff), (K.LC_KAFF, g.kaff), (K.LC_FRICTION, g.friction),
                       (K.LC_JN, g.jn), (K.LC_BN, g.bn), (K.LC_OUT_MAX, g.out_max)):
            lc[row] = v
        self.alpha_d = lc[K.LC_ALPHA_D]
        self.alpha_d[:] = dt / (g.tf + dt)  # tf = 0 -> 1: unfiltered derivative
        self.kd_alpha = lc[K.LC_KD_ALPHA]
        self.kd_alpha[:] = g.kd * self.alpha_d
        self.one_minus_alpha = lc[K.LC_ONE_MINUS_ALPHA]
        self.one_minus_alpha[:] = 1.0 - self.alpha_d
        self.ki_dt = lc[K.LC_KI_DT]
        self.ki_dt[:] = g.ki * dt
        self.tt_gain = lc[K.LC_TT_GAIN]
        self.tt_gain[:] = np.where(g.tt > 0.0, dt / np.where(g.tt > 0.0, g.tt, 1.0), 0.0)
        self.beta_dob = lc[K.LC_BETA_DOB]
        self.beta_dob[:] = np.where(g.gdob > 0.0, g.gdob * dt / (1.0 + g.gdob * dt), 0.0)
        coeffs = np.array([notch_coefficients(f, b, dt) for f, b in zip(g.f_notch, g.bw_notch)]).reshape(-1, 5)
        self.nb0, self.nb1, self.nb2, self.na1, self.na2 = (lc[r] for r in (K.LC_NB0, K.LC_NB1, K.LC_NB2,
                                                                            K.LC_NA1, K.LC_NA2))
        for i, row in enumerate((self.nb0, self.nb1, self.nb2, self.na1, self.na2)):
            row[:] = coeffs[:, i]
        self.notch_on = (self.nb1 != 0.0) | (self.na2 != 0.0)
        tau = np.where(g.flp > 0.0, 1.0 / (2.0 * math.pi * np.where(g.flp > 0.0, g.flp, 1.0)), 0.0)
        self.gamma_lp = lc[K.LC_GAMMA_LP]
        self.gamma_lp[:] = np.where(g.flp > 0.0, dt / (tau + dt), 1.0)
        # whole stages skipped when no axis uses them (same result: the stage is the identity)
        self.use_d = bool(g.kd.any())
        self.use_i = bool(g.ki.any())
        self.use_aw = bool(self.tt_gain.any()) and self.use_i
        self.use_ff_a = bool(g.kaff.any())
        self.use_ff_f = bool(g.friction.any())
        self.use_dob = bool(self.beta_dob.any())
        self.use_notch = bool(self.notch_on.any())
        self.use_lp = bool(g.flp.any())
        for row, on in ((K.SI_USE_D, self.use_d), (K.SI_USE_I, self.use_i), (K.SI_USE_AW, self.use_aw),
                        (K.SI_USE_FF_A, self.use_ff_a), (K.SI_USE_FF_F, self.use_ff_f), (K.SI_USE_DOB, self.use_dob),
                        (K.SI_USE_NOTCH, self.use_notch), (K.SI_USE_LP, self.use_lp)):
            self._si[row] = int(on)

    def reset(self, mask: np.ndarray) -> None:
        """Zero the controller state of the masked axes (power-on, re-engage)."""
        for a in (self.integral, self.derivative, self.dob, self.v_prev, self.u_prev,
                  self.nx1, self.nx2, self.ny1, self.ny2, self.lp, self.output, self.unclamped,
                  self.feedforward, self.error):
            a[mask] = 0.0
        self.first[mask] = True

    def step(
        self,
        sp_pos: np.ndarray,
        sp_vel: np.ndarray,
        sp_acc: np.ndarray,
        pos: np.ndarray,
        vel: np.ndarray,
        active: np.ndarray,
        limit: np.ndarray | None = None,
        ticks: int = 1,
        hold: bool = False,
    ) -> np.ndarray:
        """One cycle. `active` masks axes whose loop is closed (their inputs are zeroed so their
        state stays at rest; output 0); `limit` overrides out_max per axis (homing torque limit,
        SS2 holding torque). An axis entering `active` must be `reset()` first (bumpless start).

        The error derivative is taken from velocities (de/dt = sp_vel - vel): exact for the
        set-point and immune to the repeated or skipped position samples of two unsynchronised
        1 kHz loops. `ticks` > 1 when cycles were missed: the integral covers the elapsed time.

        `hold`: the feedback is too old to close the loop on (`[cu] feedback_hold_cycles`): no state
        moves (integrator, derivative, observer, filters) and the output stays at its last value —
        no torque build-up on a frozen position — still clamped to `limit` and zero for inactive
        axes. The loop resumes bumplessly from the held state when fresh feedback returns."""
        g = self.g
        if nz(np.not_equal(active, self._was_active, out=self._changed)):
            newly_off = self._was_active & ~active
            if nz(newly_off):
                self.reset(newly_off)
            self._was_active[:] = active
            np.copyto(self._act, active)
            self._all_active = nz(active) == self.n
        masked = not self._all_active
        act = self._act
        if hold:
            lim = g.out_max if limit is None else limit
            out = np.minimum(self.output, lim, out=self.output)
            np.maximum(out, np.negative(lim, out=self._t), out=out)
            if masked:
                out *= act
            return out
        e = np.subtract(sp_pos, pos, out=self.error)
        if masked:
            e *= act
        u = np.multiply(g.kp, e, out=self._u)
        if self.use_d:
            # D on de/dt = sp_vel - vel, low-passed: d += alpha*(kd*de - d)
            de = np.subtract(sp_vel, vel, out=self._t)
            if masked:
                de *= act
            de *= self.kd_alpha
            self.derivative *= self.one_minus_alpha
            self.derivative += de
            u += self.derivative
        if self.use_i:
            t = np.multiply(self.ki_dt, e, out=self._t)
            if ticks != 1:
                t *= ticks
            self.integral += t
            u += self.integral
        ff = np.multiply(g.kvff, sp_vel, out=self.feedforward)
        if self.use_ff_a:
            ff += np.multiply(g.kaff, sp_acc, out=self._t)
        if self.use_ff_f:
            ff += np.multiply(g.friction, np.sign(sp_vel, out=self._t), out=self._t)
        if masked:
            ff *= act
        u += ff
        if self.use_dob:
            # Disturbance observer: torque not explained by the nominal model jn*a + bn*v, low-passed
            first = self.first
            v = vel * act
            acc = (v - self.v_prev) / self.dt
            acc[first] = 0.0
            raw = self.u_prev - (g.jn * acc + g.bn * v)
            raw -= self.dob
            raw[first] = 0.0
            self.dob += self.beta_dob * raw
            self.v_prev[:] = v
            u += self.dob
            first[:] = False
        if self.use_notch:
            # Biquad notch (direct form I); identity coefficients where off
            y = self.nb0 * u + self.nb1 * self.nx1 + self.nb2 * self.nx2 - self.na1 * self.ny1 - self.na2 * self.ny2
            self.nx2[:] = self.nx1
            self.nx1[:] = u
            self.ny2[:] = self.ny1
            self.ny1[:] = y
            u[:] = y
        if self.use_lp:
            # First-order low-pass (gamma = 1 where off)
            self.lp += self.gamma_lp * (u - self.lp)
            u[:] = self.lp
        self.unclamped[:] = u
        lim = g.out_max if limit is None else limit
        out = np.minimum(u, lim, out=self.output)
        np.maximum(out, np.negative(lim, out=self._t), out=out)
        if self.use_aw:
            # Back-calculation anti-windup: bleed the integrator by what the clamp removed
            t = np.subtract(out, u, out=self._t)
            t *= self.tt_gain
            self.integral += t
        if masked:
            out *= act
        if self.use_dob:
            self.u_prev[:] = out
        return out
