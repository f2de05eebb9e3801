"""Per-axis parameters of the CU as numpy arrays (slot = axis id - 1), built once from an
EvoConfig: kinematics, safe stop, homing, brake, guard, coupling, gains and role pins.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from common.config import EvoConfig, HomingMethod, LagPolicy
from common.config import roles as R
from common.states import SafeStopCategory

from .control_law import LawGains
from .kernels import step as K
from .kernels.step import (
    BRAKE_NO_DI_CONFIRM_S,
    DRIVE_READY_TIMEOUT_S,
    HOLD_CHECK_S,
    PIN_FALSE,
    PIN_TRUE,
    UNREFERENCED_SPEED_FRACTION,
)


class Lag(enum.IntEnum):
    CRITICAL = 0
    UNWANTED = 1
    NEUTRAL = 2
    DESIRED = 3


class HomingKind(enum.IntEnum):
    HOME_SENSOR = 0
    LIMIT_SWITCH = 1
    TORQUE_LIMIT = 2
    INDEX_PULSE = 3
    ABSOLUTE = 4
    NO_HOMING = 5


_LAG = {LagPolicy.CRITICAL: Lag.CRITICAL, LagPolicy.UNWANTED: Lag.UNWANTED,
        LagPolicy.NEUTRAL: Lag.NEUTRAL, LagPolicy.DESIRED: Lag.DESIRED}
_HOMING = {HomingMethod.HOME_SENSOR: HomingKind.HOME_SENSOR, HomingMethod.LIMIT_SWITCH: HomingKind.LIMIT_SWITCH,
           HomingMethod.TORQUE_LIMIT: HomingKind.TORQUE_LIMIT, HomingMethod.INDEX_PULSE: HomingKind.INDEX_PULSE,
           HomingMethod.ABSOLUTE: HomingKind.ABSOLUTE, HomingMethod.NO_HOMING: HomingKind.NO_HOMING}


def index_role(axis_id: int) -> str:
    """DI role of the encoder index mark of an axis (IndexPulse homing)."""
    return f"Index{axis_id}"


def stop_category(value: object) -> int:
    """Config SafeStopCategory (StrEnum) -> common.states.SafeStopCategory value."""
    return int(SafeStopCategory[str(value)])


@dataclass(frozen=True)
class AxisParams:
    """Everything the cycle needs about the axes, as arrays of length `n` (= highest axis id)."""

    n: int
    ids: tuple[int, ...]
    names: tuple[str, ...]
    configured: np.ndarray
    rotary: np.ndarray
    vmax: np.ndarray
    amax: np.ndarray
    reduced_v: np.ndarray
    pmin: np.ndarray
    pmax: np.ndarray
    window: np.ndarray
    lag_limit: np.ndarray
    lag_policy: np.ndarray
    stop_cat: np.ndarray
    decel_safe: np.ndarray
    sto_delay: np.ndarray
    ss2_torque: np.ndarray
    homing_kind: np.ndarray
    homing_speed: np.ndarray
    homing_torque: np.ndarray
    homing_timeout: np.ndarray
    homing_dir: np.ndarray
    needs_ref: np.ndarray
    has_brake: np.ndarray
    release_timeout: np.ndarray
    engage_timeout: np.ndarray
    guard_cat: np.ndarray
    master: np.ndarray  # configured master axis slot, -1 = none
    ratio: np.ndarray
    max_sync: np.ndarray
    bypass: np.ndarray  # service-bypass axes
    service_v: float
    gains: LawGains
    # logical-DI bit indices (PIN_FALSE/PIN_TRUE where the role is absent)
    pin_limit_min: np.ndarray
    pin_limit_max: np.ndarray
    pin_ref: np.ndarray
    pin_brake_in: np.ndarray
    pin_guard: np.ndarray
    pin_index: np.ndarray  # encoder index mark (DI role Index<N>) for IndexPulse homing
    has_brake_in: np.ndarray
    # BrakeOut role per axis: (slot, role) pairs
    brake_out: tuple[tuple[int, str], ...]
    # machine roles present
    machine_roles: frozenset[str]
    # the arrays above as rows of three blocks (kernels.step PF_/PI_/PB_ rows): what the kernels read
    pf: np.ndarray
    pi: np.ndarray
    pb: np.ndarray

    @classmethod
    def from_config(cls, cfg: EvoConfig) -> "AxisParams":
        n = max(a.id for a in cfg.axes)
        reg = cfg.io_registry
        slots = {a.id - 1: a for a in cfg.axes}
        f = lambda: np.zeros(n)
        b = lambda: np.zeros(n, dtype=bool)
        i = lambda fill=0: np.full(n, fill, dtype=np.int64)
        p = dict(
            configured=b(), rotary=b(), vmax=np.ones(n), amax=np.ones(n), reduced_v=f(), pmin=f(), pmax=f(),
            window=np.ones(n), lag_limit=np.full(n, np.inf), lag_policy=i(int(Lag.DESIRED)),
            stop_cat=i(int(SafeStopCategory.STO)), decel_safe=np.ones(n), sto_delay=f(), ss2_torque=f(),
            homing_kind=i(int(HomingKind.NO_HOMING)), homing_speed=f(), homing_torque=f(),
            homing_timeout=np.ones(n), homing_dir=np.ones(n), needs_ref=b(), has_brake=b(),
            release_timeout=np.ones(n), engage_timeout=np.ones(n), guard_cat=i(0), master=i(-1),
            ratio=np.ones(n), max_sync=np.full(n, np.inf), bypass=b(),
            pin_limit_min=i(PIN_FALSE), pin_limit_max=i(PIN_FALSE), pin_ref=i(PIN_FALSE),
            pin_brake_in=i(PIN_FALSE), pin_guard=i(PIN_TRUE), has_brake_in=b(), pin_index=i(PIN_FALSE),
        )

        def di_pin(role: str | None) -> int | None:
            if role is None or not reg.has(role):
                return None
            pt = reg.pin(role)
            return pt.pin if str(pt.type) == "di" else None

        brake_out: list[tuple[int, str]] = []
        bypass = set(cfg.machine.service_bypass.bypass_axes)
        for s, a in slots.items():
            k, c, ss, h = a.kinematics, a.control, a.safe_stop, a.homing
            p["configured"][s] = True
            p["rotary"][s] = str(a.type) == "rotary"
            p["vmax"][s] = k.max_velocity
            p["amax"][s] = k.max_acceleration if k.max_acceleration else 10.0 * k.max_velocity
            p["reduced_v"][s] = k.safe_reduced_speed_limit
            p["pmin"][s], p["pmax"][s] = k.min_pos, k.max_pos
            p["window"][s] = k.in_position_window
            p["lag_limit"][s] = c.lag_error_limit
            p["lag_policy"][s] = int(_LAG[c.lag_policy])
            p["stop_cat"][s] = stop_category(ss.category)
            p["decel_safe"][s] = ss.max_decel_safe
            p["sto_delay"][s] = ss.sto_brake_delay
            p["ss2_torque"][s] = ss.ss2_holding_torque if ss.ss2_holding_torque > 0 else c.out_max
            kind = _HOMING[h.method]
            p["homing_kind"][s] = int(kind)
            p["homing_speed"][s] = h.speed
            p["homing_torque"][s] = h.torque_limit
            p["homing_timeout"][s] = h.timeout
            p["homing_dir"][s] = -1.0 if str(h.approach_direction) == "Negative" else 1.0
            p["needs_ref"][s] = kind not in (HomingKind.NO_HOMING,)
            p["bypass"][s] = a.id in bypass
            for key, role in (("pin_limit_min", R.limit_min(a.id)), ("pin_limit_max", R.limit_max(a.id)),
                              ("pin_ref", R.ref(a.id)), ("pin_index", index_role(a.id))):
                pin = di_pin(role)
                if pin is not None:
                    p[key][s] = pin
            if a.brake is not None:
                p["has_brake"][s] = True
                p["release_timeout"][s] = a.brake.release_timeout
                p["engage_timeout"][s] = a.brake.engage_timeout
                pin = di_pin(a.brake.di_released)
                if pin is not None:
                    p["pin_brake_in"][s] = pin
                    p["has_brake_in"][s] = True
                if reg.has(a.brake.do_brake):
                    brake_out.append((s, a.brake.do_brake))
            guard_role = a.guard.di_guard if a.guard is not None else None
            if guard_role is not None:
                pin = di_pin(guard_role)
                if pin is not None:
                    p["pin_guard"][s] = pin
                    p["guard_cat"][s] = stop_category(a.guard.stop_on_open)
            if a.coupling is not None:
                p["master"][s] = a.coupling.master_axis - 1
                p["ratio"][s] = a.coupling.ratio
                p["max_sync"][s] = a.coupling.max_sync_error
        controls = [slots[s].control if s in slots else None for s in range(n)]
        blocks = {}
        for key, rows, dtype in (("pf", K.PF_ROWS, np.float64), ("pi", K.PI_ROWS, np.int64),
                                 ("pb", K.PB_ROWS, np.bool_)):
            block = np.stack([np.asarray(p[r], dtype=dtype) for r in rows])
            block.setflags(write=False)  # parameters: the compiled engine works on a copy made at start
            blocks[key] = block
            p.update({r: block[i] for i, r in enumerate(rows)})  # the fields are views of the block
        return cls(
            n=n,
            ids=tuple(range(1, n + 1)),
            names=tuple(slots[s].name if s in slots else "" for s in range(n)),
            service_v=float(cfg.machine.service_bypass.max_service_velocity),
            gains=LawGains.from_controls(controls),
            brake_out=tuple(brake_out),
            machine_roles=frozenset(r for r in (R.ESTOP, R.SAFETY_GATE, R.GUARD_CLOSED, R.REDUCED_SPEED, R.RESET)
                                    if di_pin(r) is not None),
            **p,
            **blocks,
        )
