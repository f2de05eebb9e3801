"""Unit tests of the vectorised control law and trajectory against their formulas (in-process).

Each stage is checked alone (others off by zero gains): P/I/D, filtered derivative, anti-windup,
feedforward, disturbance observer, notch, low-pass, clamp; plus the trapezoidal generator.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from control_unit.control_law import ControlLaw, LawGains, notch_coefficients
from control_unit.trajectory import HOLD, POSITION, VELOCITY, Trajectory

DT = 0.001


def law(n: int = 1, **gains: float) -> ControlLaw:
    return ControlLaw(LawGains.uniform(n, **gains), DT)


def run(c: ControlLaw, steps: int, e: float = 0.0, sp_vel: float = 0.0, sp_acc: float = 0.0, vel: float = 0.0,
        active: bool = True, limit: float | None = None) -> list[float]:
    n = c.n
    out = []
    for _ in range(steps):
        y = c.step(np.full(n, e), np.full(n, sp_vel), np.full(n, sp_acc), np.zeros(n), np.full(n, vel),
                   np.full(n, active), None if limit is None else np.full(n, limit))
        out.append(float(y[0]))
    return out


def test_proportional_step():
    assert run(law(kp=7.0), 3, e=2.0) == pytest.approx([14.0] * 3)


def test_integral_ramps_by_ki_e_dt():
    c = law(ki=50.0)
    y = run(c, 4, e=2.0)
    assert y == pytest.approx([50.0 * 2.0 * DT * k for k in range(1, 5)])
    # after missed cycles the integral covers the elapsed time
    y5 = c.step(np.full(1, 2.0), *[np.zeros(1)] * 4, np.ones(1, bool), ticks=3)[0]
    assert y5 == pytest.approx(50.0 * 2.0 * DT * 7)


def test_derivative_is_low_passed_with_alpha():
    """D acts on de/dt = sp_vel - vel (exact for the set-point, robust to repeated samples),
    filtered by alpha = dt/(tf+dt)."""
    kd, tf = 0.5, 0.004
    c = law(kd=kd, tf=tf)
    alpha = DT / (tf + DT)
    d = 0.0
    for _ in range(6):
        y = run(c, 1, sp_vel=3.0, vel=1.0)[0]
        d += alpha * (kd * (3.0 - 1.0) - d)
        assert y == pytest.approx(d)


def test_unfiltered_derivative_when_tf_zero():
    assert run(law(kd=0.2, tf=0.0), 1, sp_vel=0.0, vel=-4.0) == pytest.approx([0.2 * 4.0])


def test_clamp_and_back_calculation_anti_windup():
    ki, tt, out_max = 100.0, 0.05, 10.0
    c = law(kp=1.0, ki=ki, tt=tt, out_max=out_max)
    y = run(c, 500, e=50.0)  # far beyond the clamp
    assert max(abs(v) for v in y) == pytest.approx(out_max)
    # back-calculation: I' = I + ki*e*dt; u = kp*e + I'; I = I' + dt/tt*(out - u). At steady state
    # the two increments cancel: I' = out - kp*e + tt*ki*e, stored I = I' - ki*e*dt (bounded)
    i_ss = out_max - 50.0 + tt * ki * 50.0 - ki * 50.0 * DT
    assert c.integral[0] == pytest.approx(i_ss, rel=1e-3)
    # without anti-windup (tt = 0) the integrator keeps growing
    c2 = law(kp=1.0, ki=ki, tt=0.0, out_max=out_max)
    run(c2, 500, e=50.0)
    assert c2.integral[0] == pytest.approx(ki * 50.0 * DT * 500)


def test_feedforward_terms():
    c = law(kvff=0.02, kaff=0.025, friction=2.0)
    assert run(c, 1, sp_vel=100.0, sp_acc=400.0) == pytest.approx([0.02 * 100 + 0.025 * 400 + 2.0])
    assert run(c, 1, sp_vel=-100.0, sp_acc=0.0) == pytest.approx([-2.0 - 2.0])
    assert run(c, 1) == pytest.approx([0.0])  # sign(0) = 0: no friction term at rest


def test_disturbance_observer_estimates_unmodelled_torque():
    """With the axis at rest (a = v = 0) every applied torque is 'unexplained': the estimate
    follows u_prev through the first-order filter beta = g*dt/(1+g*dt)."""
    gdob = 200.0
    c = law(kp=10.0, gdob=gdob, jn=0.01, bn=0.001)
    beta = gdob * DT / (1 + gdob * DT)
    y = run(c, 3, e=1.0)
    d1 = 0.0  # first sample: no history
    d2 = d1 + beta * (y[0] - d1)
    assert c.dob[0] == pytest.approx(d2 + beta * (y[1] - d2))
    assert y[1] == pytest.approx(10.0 + d2)
    # a moving axis explained exactly by the nominal model leaves no estimate
    c = law(gdob=gdob, jn=0.01, bn=0.001)
    for k in range(50):
        v = 100.0 * k * DT  # constant acceleration 100
        c.step(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), np.array([v]), np.ones(1, bool))
        c.u_prev[:] = 0.01 * 100.0 + 0.001 * (v + 100.0 * DT)  # pretend it applied the nominal torque
    assert abs(c.dob[0]) < 0.05


def test_notch_coefficients_and_response():
    f0, bw = 100.0, 20.0
    b0, b1, b2, a1, a2 = notch_coefficients(f0, bw, DT)
    w0 = 2 * math.pi * f0 * DT
    alpha = math.sin(w0) / (2 * f0 / bw)
    assert b1 == pytest.approx(-2 * math.cos(w0) / (1 + alpha))
    assert a2 == pytest.approx((1 - alpha) / (1 + alpha))

    def gain(f: float) -> float:
        z = np.exp(-1j * 2 * math.pi * f * DT)
        return abs((b0 + b1 * z + b2 * z * z) / (1 + a1 * z + a2 * z * z))

    assert gain(f0) < 1e-9
    assert gain(0.0) == pytest.approx(1.0)
    assert gain(f0 - bw / 2) == pytest.approx(1 / math.sqrt(2), rel=0.15)
    # time domain: a sine at f0 through the law's notch stage dies out, DC passes
    c = law(kp=1.0, f_notch=f0, bw_notch=bw)
    ys = [float(c.step(np.array([math.sin(w0 * k)]), *[np.zeros(1)] * 4, np.ones(1, bool))[0]) for k in range(3000)]
    assert max(abs(v) for v in ys[-200:]) < 0.01
    c = law(kp=1.0, f_notch=f0, bw_notch=bw)
    assert run(c, 2000, e=1.0)[-1] == pytest.approx(1.0, abs=1e-6)


def test_notch_off_at_or_above_nyquist_and_when_zero():
    assert notch_coefficients(800.0, 50.0, DT) == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert notch_coefficients(0.0, 50.0, DT) == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert run(law(kp=1.0, f_notch=800.0, bw_notch=50.0), 2, e=1.0) == pytest.approx([1.0, 1.0])


def test_first_order_low_pass_step():
    flp = 50.0
    c = law(kp=1.0, flp=flp)
    tau = 1 / (2 * math.pi * flp)
    g = DT / (tau + DT)
    y = run(c, 20, e=1.0)
    assert y == pytest.approx([1 - (1 - g) ** k for k in range(1, 21)])


def test_inactive_axes_output_zero_and_reset():
    c = law(2, kp=1.0, ki=100.0)
    act = np.array([True, False])
    for _ in range(10):
        y = c.step(np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), act)
    assert y[1] == 0.0 and c.integral[1] == 0.0 and y[0] > 1.0
    c.step(np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.array([False, False]))
    assert c.integral[0] == 0.0 and c.output[0] == 0.0


def test_axes_are_independent():
    gains = LawGains.uniform(3, kp=1.0)
    gains.kp[:] = [1.0, 2.0, 3.0]
    c = ControlLaw(gains, DT)
    y = c.step(np.ones(3), *[np.zeros(3)] * 4, np.ones(3, bool))
    assert list(y) == [1.0, 2.0, 3.0]


# --- trajectory ---------------------------------------------------------------------------------
def traj(n: int = 1, vmax: float = 500.0, amax: float = 2000.0) -> Trajectory:
    t = Trajectory(n, DT)
    t.vmax[:], t.amax[:], t.dmax[:] = vmax, amax, amax
    return t


def test_trapezoid_respects_limits_and_lands_exactly():
    t = traj()
    t.mode[:] = POSITION
    t.target[:] = 300.0
    vs, acs = [], []
    for _ in range(5000):
        t.step()
        vs.append(t.vel[0])
        acs.append(t.acc[0])
        if t.done[0]:
            break
    assert t.pos[0] == 300.0 and t.vel[0] == 0.0
    assert max(vs) == pytest.approx(500.0)
    assert max(abs(a) for a in acs) <= 2000.0 + 1e-6
    # time-optimal: 300/500 + 500/2000 = 0.85 s (within 1 %: discrete-time landing)
    assert len(vs) == pytest.approx(850, rel=0.01)


def test_triangle_profile_for_short_move():
    t = traj()
    t.mode[:] = POSITION
    t.target[:] = -10.0
    peak = 0.0
    t.step()
    while not t.done[0]:
        t.step()
        peak = max(peak, abs(t.vel[0]))
    assert peak == pytest.approx(math.sqrt(2000 * 10), rel=0.02)


def test_velocity_mode_stops_at_soft_limit():
    t = traj()
    t.mode[:] = VELOCITY
    t.target_vel[:] = 400.0
    t.pmax[:] = 100.0
    for _ in range(2000):
        t.step()
    assert t.pos[0] == pytest.approx(100.0, abs=1e-6) and t.vel[0] == 0.0


def test_hold_decelerates_at_dmax():
    t = traj()
    t.vel[:] = 300.0
    t.mode[:] = HOLD
    t.dmax[:] = 3000.0
    steps = 0
    while t.vel[0] != 0.0:
        t.step()
        steps += 1
    assert steps == pytest.approx(100, abs=1)  # 300 / 3000 s
