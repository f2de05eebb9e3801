"""Vectorised online trapezoidal set-point generator: position, velocity and hold (stop) moves
within per-axis velocity / acceleration limits and soft limits, one cycle at a time.

Time-optimal for the discrete cycle: each step picks the largest velocity from which the rest
of the distance can still be stopped at the deceleration limit, so no overshoot and no chatter.
"""
from __future__ import annotations

import numpy as np

try:  # the C entry point (np.count_nonzero's wrapper costs as much as the count)
    from numpy._core._multiarray_umath import count_nonzero as nz
except ImportError:  # pragma: no cover
    nz = np.count_nonzero

from .kernels import step as K
from .kernels.step import Store

HOLD = K.HOLD  # decelerate to standstill and stay there
POSITION = K.POSITION  # go to `target`
VELOCITY = K.VELOCITY  # run at `target_vel` (signed) until told otherwise


class Trajectory:
    """Set-points (`pos`, `vel`, `acc`) of `n` axes. Set per-axis `mode`, `target`, `target_vel`,
    `vmax`, `amax`, `dmax`, `pmin`, `pmax` (±inf = no soft limit) and call `step()` once a cycle."""

    def __init__(self, n: int, dt: float, store: Store | None = None) -> None:
        self.n, self.dt = n, float(dt)
        st = store if store is not None else Store(n)
        f, b = st.f, st.b  # every array is a row of the state blocks (the compiled cycle's view)
        self.pos, self.vel, self.acc = f[K.F_SP_POS], f[K.F_SP_VEL], f[K.F_SP_ACC]
        self.mode = st.tmode
        self.target, self.target_vel = f[K.F_TARGET], f[K.F_TARGET_VEL]
        self.vmax, self.amax, self.dmax = f[K.F_VMAX], f[K.F_AMAX], f[K.F_DMAX]
        self.pmin, self.pmax = f[K.F_PMIN], f[K.F_PMAX]
        self.done = b[K.B_DONE]  # POSITION reached / HOLD at rest / never for VELOCITY
        for a, v in ((self.vmax, 1.0), (self.amax, 1.0), (self.dmax, 1.0), (self.pmin, -np.inf),
                     (self.pmax, np.inf), (self.done, True)):
            a.fill(v)
        # preallocated work buffers of step()
        self._is_pos, self._is_vel = b[K.B_IS_POS], b[K.B_IS_VEL]
        self._v_des, self._d, self._t1, self._dv, self._vn = (f[r] for r in (K.F_W_VDES, K.F_W_D, K.F_W_T1,
                                                                            K.F_W_DV, K.F_W_VN))

    def reset_to(self, mask: np.ndarray, actual: np.ndarray) -> None:
        """Set-point := actual position at rest, mode HOLD (power-on, loop not closed)."""
        self.pos[mask] = actual[mask]
        self.vel[mask] = 0.0
        self.acc[mask] = 0.0
        self.target[mask] = actual[mask]
        self.mode[mask] = HOLD
        self.done[mask] = True

    def _vstop(self, dist: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Largest speed v such that after one step at v the rest (dist - v*dt) can still be
        stopped at deceleration a:  v = a*(-dt + sqrt(dt^2 + 2*dist/a)), dist >= 0."""
        dt = self.dt
        return a * (np.sqrt(dt * dt + 2.0 * np.maximum(dist, 0.0) / a) - dt)

    def _vstop_inplace(self, dist: np.ndarray, a: np.ndarray) -> np.ndarray:
        """_vstop overwriting `dist` (dist >= 0 already): no temporaries on the hot path."""
        dt = self.dt
        dist *= 2.0
        dist /= a
        dist += dt * dt
        np.sqrt(dist, out=dist)
        dist -= dt
        dist *= a
        return dist

    def step(self, soft_limits: bool = True) -> None:
        """One cycle. `soft_limits=False` skips the pmin/pmax clamp (the caller knows no axis in
        VELOCITY mode has one; position targets are checked when commanded)."""
        pos, vel, mode = self.pos, self.vel, self.mode
        if not nz(mode) and not nz(vel):  # every axis holding at rest: nothing moves
            self.acc.fill(0.0)
            self.done.fill(True)
            return
        n, dt = self.n, self.dt
        vmax, amax, dmax, target = self.vmax, self.amax, self.dmax, self.target
        is_pos = np.equal(mode, POSITION, out=self._is_pos)
        is_vel = np.equal(mode, VELOCITY, out=self._is_vel)
        n_pos, n_vel = nz(is_pos), nz(is_vel)
        v_des = self._v_des
        if n_pos:
            d = np.subtract(target, pos, out=self._d)
            v_pos = self._vstop_inplace(np.abs(d, out=self._t1), dmax)
            np.minimum(v_pos, vmax, out=v_pos)
            np.copysign(v_pos, d, out=v_pos)
            if n_pos == n:
                v_des = v_pos
            else:
                v_des.fill(0.0)
                np.copyto(v_des, v_pos, where=is_pos)
        else:
            v_des.fill(0.0)
        if n_vel:
            v_vel = np.minimum(self.target_vel, vmax)
            np.maximum(v_vel, -vmax, out=v_vel)
            np.copyto(v_des, v_vel, where=is_vel)
        if soft_limits:
            # soft limits: never commanded past them (stop in time at dmax)
            np.minimum(v_des, self._vstop(self.pmax - pos, dmax), out=v_des)
            np.maximum(v_des, -self._vstop(pos - self.pmin, dmax), out=v_des)
        # acceleration limit: amax while speeding up, dmax while slowing down
        dv = np.subtract(v_des, vel, out=self._dv)
        if nz(amax != dmax):
            speeding_up = (dv * vel >= 0.0) & (np.abs(v_des) > np.abs(vel))
            lim = np.where(speeding_up, amax, dmax)
        else:
            lim = amax.copy()
        lim *= dt
        np.minimum(dv, lim, out=dv)
        np.negative(lim, out=lim)
        np.maximum(dv, lim, out=dv)
        v_new = np.add(vel, dv, out=self._vn)
        new_pos = np.multiply(v_new, dt, out=self._t1)
        new_pos += pos
        if n_pos:
            # land exactly on the target once within reach of one step
            tol = np.abs(target) * 1e-12
            tol += 1e-9
            near = np.abs(target - new_pos) <= tol
            near &= np.abs(v_new) <= dmax * dt
            near &= is_pos
            if nz(near):
                np.copyto(new_pos, target, where=near)
                v_new[near] = 0.0
        np.subtract(v_new, vel, out=self.acc)
        self.acc *= 1.0 / dt
        vel[:] = v_new
        pos[:] = new_pos
        done = np.equal(v_new, 0.0, out=self.done)
        if n_vel:
            done &= ~is_vel
        if n_pos:
            done &= ~is_pos | (pos == target)
