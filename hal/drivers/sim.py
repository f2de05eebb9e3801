"""The simulated machine (`[hal] driver = "sim"`, the default): axis physics, drives, brakes, sensors.

Everything the CU and the tests can rely on is in SimDriver's docstring (constants below).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from common.config import AxisType, Direction, EvoConfig, HomingMethod, IoType
from common.config import roles as R
from common.consts import BANK_WORDS, MAX_AXES, MAX_DI
from common.states import DriverState

from ..engine import resolve_engine
from .base import Driver, DriverError, DriverHealth, DriverIO
from .sim_inject import Injection, InjectionFile

log = logging.getLogger(__name__)

# --- plant constants (documented in SimDriver) ---------------------------------------------------
TORQUE_GAIN_AT_100 = 2.0  # 100 % torque accelerates the bare axis at 2 x a_max
VISCOUS_PCT_AT_VMAX = 10.0  # viscous friction costs 10 % torque at max_velocity
COULOMB_PCT = 2.0  # dry friction: 2 % torque
BRAKE_HOLD_PCT = 150.0  # an engaged brake holds up to 150 % torque (slips, with that friction, above)
DEFAULT_AMAX_PER_VMAX = 10.0  # a_max = 10 x max_velocity when max_acceleration is not given
# --- sensor geometry, as fractions of the travel (max_pos - min_pos) ------------------------------
HOME_CAM_FRACTION = 0.01  # width of the home cam
LIMIT_FRACTION = 0.02  # limit switches this far beyond min_pos / max_pos
HARD_STOP_FRACTION = 0.03  # mechanical end stops (linear axes) this far beyond
START_FRACTION = 0.05  # first start without a state file: this far before the home cam
INDEX_PULSE_NS = 2_000_000  # an encoder index mark reads true for 2 ms after it is crossed
# --- driver_args defaults ------------------------------------------------------------------------
DEFAULT_ARGS: dict[str, Any] = {
    "ready_delay_ms": 200.0,  # enable -> drive_ready
    "brake_delay_ms": 30.0,  # brake command -> brake mechanically released / engaged (and BrakeIn)
    "follow_delay_ms": 100.0,  # tailstock clamp DO -> clamped DI
    "index_spacing": 10.0,  # linear axes: encoder index every 10 units (rotary: every 360 deg)
    "inject_file": "",  # default <run_dir>/hal_sim_inject.json; relative paths from the run dir
    "inject_poll_ms": 100.0,
}
INJECT_FILE_NAME = "hal_sim_inject.json"


def _args(raw: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(DEFAULT_ARGS))
    if unknown:
        raise DriverError(
            f"config.toml [hal.driver_args]: unknown option(s) {unknown} for the sim driver; "
            f"known: {', '.join(sorted(DEFAULT_ARGS))}"
        )
    out = dict(DEFAULT_ARGS)
    for k, v in raw.items():
        want = type(DEFAULT_ARGS[k])
        if want is float and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            out[k] = float(v)
        elif want is str and isinstance(v, str):
            out[k] = v
        else:
            raise DriverError(f"config.toml [hal.driver_args] {k}: expected a {'non-negative number' if want is float else 'string'}, got {v!r}")
    if out["index_spacing"] <= 0:
        raise DriverError("config.toml [hal.driver_args] index_spacing: must be > 0")
    return out


def _bits(bank: np.ndarray, pins: np.ndarray) -> np.ndarray:
    """Levels of `pins` in a bank of 64-bit words."""
    return ((bank[pins >> 6] >> (pins & 63).astype(np.uint64)) & np.uint64(1)).astype(np.bool_)


def inject_path(config: EvoConfig, args: Mapping[str, Any] | None = None) -> Path:
    """Where the sim driver looks for its injection file."""
    name = (args or config.system.hal.driver_args).get("inject_file", "") or INJECT_FILE_NAME
    p = Path(name)
    return p if p.is_absolute() else config.run_dir() / p


class SimDriver(Driver):
    """A simulated machine that behaves like a real one, for the CU, recipes, dashboards and tests.

    Plant, per configured axis (index = id - 1), integrated by semi-implicit Euler at the HAL
    cycle's dt (v += a*dt; x += v*dt):

        a_max = kinematics.max_acceleration, else 10 * max_velocity           [units/s^2]
        g     = 2 * a_max / 100            acceleration per % torque          [units/s^2 per %]
        d     = 10 * g / max_velocity      viscous friction (10 % torque at max_velocity) [1/s]
        c     = 2 * g                      dry (Coulomb) friction, 2 % torque [units/s^2]
        T     = clamp(calculated_torque + torque_offset, +-out_max)  when enable and drive_ready,
                else 0                                                       [%]
        a     = g * (T + load) - d * v - c * sign(v)       (load: injected load_torque, %)

    At standstill dry friction holds |g*(T+load)| <= c (no creep); friction never reverses v
    (a sign change of v stops the axis for that cycle). torque_estimate = T (what was applied).

    Brakes (axes with a [brake] section): the brake is commanded released when the axis's
    `brake_release` in cu_hal is 1 OR its `brake.do_brake` DO role is logically on; it follows
    the command after brake_delay_ms (30 ms). Engaged, it holds the axis up to 150 % torque (a
    holding friction of 150 % torque added to c; above that the axis slips). `brake.di_released`
    (BrakeIn<N>) reads the mechanical state.

    Drives: drive_ready = enable held for ready_delay_ms (200 ms) and no fault; enable low ->
    not ready at once. An injected drive_fault sets drive_fault, drops drive_ready and removes
    torque; it stays latched after the injection is cleared until enable goes low (fault reset).
    `referenced` is 1 only for axes homed by method "Absolute" (absolute encoder); the CU
    references the others itself. Positions are raw encoder positions, never wrapped.

    Sensors, derived from position (travel = max_pos - min_pos; roles from io.toml, read with
    the point's NC/NO wiring, so an NC switch reads physical 1 while not hit):
    - Ref<N> (home cam): edge at clamp(0, min_pos, max_pos); active from the edge over 1 % of the
      travel in the homing approach direction (rotary axes: every 360 deg).
    - LimitMin<N> / LimitMax<N>: active at or beyond min_pos / max_pos by 2 % of the travel.
    - Linear axes stop at mechanical end stops 3 % of the travel beyond min_pos / max_pos (v = 0
      there: hard-stop homing sees torque rise with no motion).
    - Index<N> (encoder index, give it debounce=0): true for 2 ms after the position crosses a
      multiple of index_spacing (10 units; rotary 360 deg).
    - tailstock.clamped_role follows tailstock.clamp_role after follow_delay_ms (100 ms).
    - Every other DI reads its io.toml `sim` value (physical level, default 0); AIs read `sim`
      (engineering value, converted to the raw 0..1 signal through the point's curve). DO/AO
      `sim` values are not used.
    First start without a state file: each axis 5 % of the travel before its home cam, inside
    [min_pos, max_pos] (axes homed by NoHoming/Absolute: at clamp(0, min_pos, max_pos)).

    Injection (for tests of any module): the JSON file `<run_dir>/hal_sim_inject.json`
    (driver_args.inject_file overrides; run_dir = [watchdog] run_dir, else $EVO_RUN_DIR, else
    /tmp/evo-<prefix>) is polled every 100 ms; write it atomically (sim_inject.write_injection).

        {"axes": {"1": {"drive_fault": true, "load_torque": 20.0, "set_position": 12.5}},
         "2": {"drive_fault": true},             # shorthand for axes."2"
         "di": {"0": false},                     # physical level of DI pin 0 (E-stop NC: pressed)
         "di_logical": {"10": true},             # logical value (NC/NO applied for you)
         "ai": {"0": 3.5},                       # engineering value of AI pin 0
         "ai_raw": {"1": 0.25}}                  # raw normalised 0..1 signal of AI pin 1

    Overrides hold while they are in the file; removing the file (or an empty one) clears them.
    `set_position` teleports the axis (v = 0) once, when its value changes. A malformed file is
    logged and ignored (the previous overrides stay).

    Engines (`engine=`, default $EVO_HAL_ENGINE else "compiled"): "compiled" runs cycle() as one
    numba kernel (hal.kernels.sim_cycle) on the same arrays; "numpy" is the reference below.
    """

    name = "sim"
    persists_positions = True
    uses_targets = False

    def __init__(self, config: EvoConfig, args: Mapping[str, Any], engine: str | None = None) -> None:
        super().__init__(config, args)
        self.engine = resolve_engine(engine)
        a = _args(args)
        self.ready_delay_ns = int(a["ready_delay_ms"] * 1e6)
        self.brake_delay_ns = int(a["brake_delay_ms"] * 1e6)
        self.follow_delay_ns = int(a["follow_delay_ms"] * 1e6)
        self.inject_poll_ns = int(max(a["inject_poll_ms"], 1.0) * 1e6)
        self.inject = InjectionFile(inject_path(config, a), config.io)
        self._injection = Injection()
        self._seen_set_position: dict[int, float] = {}
        self._next_poll = 0
        # cycle() polls the injection file itself; HalCycle turns this off and polls in its
        # housekeeping, after the cycle's commits (an injection then applies from the next cycle)
        self.poll_in_cycle = True
        self._build_axes(config, a["index_spacing"])
        self._build_io(config)
        self._k_tail: tuple | None = None
        self._health_value: DriverHealth | None = None
        if self.engine == "compiled":
            self._compiled_setup()

    def _compiled_setup(self) -> None:
        """Arrays regrouped into the kernel's matrices (same values, same attribute names);
        injections are copied into rows of them; the kernel compiled or loaded from cache."""
        from .. import kernels as K

        ks = K.load()
        n = MAX_AXES
        self._teleport = np.full(n, np.nan)  # set_position of the current injection, applied once
        self._load_torque = np.zeros(n)
        self._inj_fault = np.zeros(n, np.bool_)
        self._inj_code = np.zeros(n, np.uint32)
        self._inj_di_mask = np.zeros(MAX_DI, np.bool_)
        self._inj_di_value = np.zeros(MAX_DI, np.bool_)
        self._inj_ai_mask = np.zeros(MAX_DI, np.bool_)
        self._inj_ai_value = np.zeros(MAX_DI)
        self._base_state = self._base_state.astype(np.int64)
        # the pin tables: one int64 matrix, one row per column of each table; followers' state in it too
        cols = [(K.T_SENS_AXIS, self.sens_axis), (K.T_SENS_PIN, self.sens_pin), (K.T_SENS_NC, self.sens_nc),
                (K.T_IDX_AXIS, self.index[0]), (K.T_IDX_PIN, self.index[1]), (K.T_IDX_NC, self.index[2]),
                (K.T_BIN_AXIS, self.brake_in[0]), (K.T_BIN_PIN, self.brake_in[1]), (K.T_BIN_NC, self.brake_in[2]),
                (K.T_BOUT_AXIS, self.brake_out[0]), (K.T_BOUT_PIN, self.brake_out[1]),
                (K.T_BOUT_INV, self.brake_out[2]), (K.T_FOL_DI, self.follow_di), (K.T_FOL_NC, self.follow_nc),
                (K.T_FOL_DO, self.follow_do), (K.T_FOL_INV, self.follow_inv), (K.T_FOL_STATE, self.follow_state),
                (K.T_FOL_CMD, self.follow_cmd), (K.T_FOL_SINCE, self.follow_since)]
        tab = np.zeros((K.TABLE_ROWS, max([1] + [len(c) for _, c in cols])), np.int64)
        for row, col in cols:
            tab[row, : len(col)] = col
        nf = len(self.follow_di)
        sens_f = np.zeros((4, tab.shape[1]))
        for row, col in enumerate((self.sens_sign, self.sens_lo, self.sens_period, self.sens_width)):
            sens_f[row, : len(col)] = col
        params = np.zeros(K.SIM_PARAMS, np.int64)
        params[[K.P_READY_DELAY, K.P_BRAKE_DELAY, K.P_FOLLOW_DELAY, K.P_ANY_BRAKE, K.P_FULL]] = (
            self.ready_delay_ns, self.brake_delay_ns, self.follow_delay_ns, self.any_brake, 1)
        params[[K.P_N_SENS, K.P_N_IDX, K.P_N_BIN, K.P_N_BOUT, K.P_N_FOL]] = (
            len(self.sens_pin), len(self.index[0]), len(self.brake_in[0]), len(self.brake_out[0]), nf)
        self._params = params
        b = K.ArenaBuilder()
        b.slab(K.SB_PARAMS, self, ("_params",), np.int64, K.SIM_PARAMS)
        b.slab(K.SB_AF, self, K.SIM_FLOAT_ROWS, np.float64, n)
        b.slab(K.SB_AI, self, K.SIM_INT_ROWS, np.int64, n)
        b.slab(K.SB_AB, self, K.SIM_BOOL_ROWS, np.bool_, n, extra=1)
        b.slab(K.SB_CODES, self, K.SIM_CODE_ROWS, np.uint32, n)
        b.slab(K.SB_PB, self, K.SIM_PIN_BOOL_ROWS, np.bool_, MAX_DI)
        b.slab(K.SB_PF, self, K.SIM_PIN_FLOAT_ROWS, np.float64, MAX_DI)
        b.block(K.SB_TAB, tab)
        b.block(K.SB_SENS, sens_f)
        self._arena, self._lay = b.build()
        tab = b.views[K.SB_TAB]
        self.follow_state, self.follow_cmd = tab[K.T_FOL_STATE, :nf], tab[K.T_FOL_CMD, :nf]
        self.follow_since = tab[K.T_FOL_SINCE, :nf]
        self._p_full = K.P_FULL
        self._adopt(self._injection)
        self._k_cycle = ks.checked("sim_cycle")
        self._k_tail = (self._arena, self._lay)

    def _adopt(self, inj: Injection) -> None:
        """Compiled engine: the injection's arrays copied into the kernel's rows, and the injection
        bound to those rows (so a change made to it is seen); set_position queued for one cycle."""
        for name, row in (("di_mask", self._inj_di_mask), ("di_value", self._inj_di_value),
                          ("ai_mask", self._inj_ai_mask), ("ai_value", self._inj_ai_value),
                          ("drive_fault", self._inj_fault), ("load_torque", self._load_torque),
                          ("drive_error_code", self._inj_code)):
            row[:] = getattr(inj, name)
            setattr(inj, name, row)
        for axis_id, pos in inj.set_position.items():
            if 1 <= axis_id <= MAX_AXES:
                self._teleport[axis_id - 1] = pos
        inj.set_position = {}
        self._params[self._p_full] = 1  # levels and overrides rewritten next cycle

    # --- static tables ------------------------------------------------------------------------
    def _build_axes(self, config: EvoConfig, index_spacing: float) -> None:
        n = MAX_AXES
        self.configured = np.zeros(n, np.bool_)
        self.g = np.zeros(n)
        self.d = np.zeros(n)
        self.c = np.zeros(n)
        self.cb = np.zeros(n)  # brake holding friction (accel)
        self.out_max = np.zeros(n)
        self.has_brake = np.zeros(n, np.bool_)
        self.absolute = np.zeros(n, np.bool_)
        self.stop_lo = np.full(n, -np.inf)
        self.stop_hi = np.full(n, np.inf)
        self.limit_lo = np.full(n, -np.inf)
        self.limit_hi = np.full(n, np.inf)
        self.cam_edge = np.zeros(n)
        self.cam_dir = np.ones(n)
        self.cam_width = np.zeros(n)
        self.cam_period = np.full(n, np.inf)  # rotary: 360
        self.index_spacing = np.full(n, index_spacing)
        self.start = np.zeros(n)
        for ax in config.axes:
            i = ax.id - 1
            k = ax.kinematics
            vmax = k.max_velocity
            amax = k.max_acceleration or DEFAULT_AMAX_PER_VMAX * vmax
            g = TORQUE_GAIN_AT_100 * amax / 100.0
            travel = max(k.max_pos - k.min_pos, 1e-9)
            self.configured[i] = True
            self.g[i] = g
            self.d[i] = VISCOUS_PCT_AT_VMAX * g / vmax
            self.c[i] = COULOMB_PCT * g
            self.cb[i] = BRAKE_HOLD_PCT * g
            self.out_max[i] = ax.control.out_max
            self.has_brake[i] = ax.brake is not None
            self.absolute[i] = ax.homing.method is HomingMethod.ABSOLUTE
            self.limit_lo[i] = k.min_pos - LIMIT_FRACTION * travel
            self.limit_hi[i] = k.max_pos + LIMIT_FRACTION * travel
            rotary = ax.type is AxisType.ROTARY
            if not rotary:
                self.stop_lo[i] = k.min_pos - HARD_STOP_FRACTION * travel
                self.stop_hi[i] = k.max_pos + HARD_STOP_FRACTION * travel
            else:
                self.cam_period[i] = 360.0
                self.index_spacing[i] = 360.0
            edge = min(max(0.0, k.min_pos), k.max_pos)
            s = 1.0 if ax.homing.approach_direction is Direction.POSITIVE else -1.0
            self.cam_edge[i] = edge
            self.cam_dir[i] = s
            self.cam_width[i] = HOME_CAM_FRACTION * travel
            if ax.homing.method in (HomingMethod.NO_HOMING, HomingMethod.ABSOLUTE):
                self.start[i] = edge
            else:
                self.start[i] = min(max(edge - s * START_FRACTION * travel, k.min_pos), k.max_pos)
        self.axis_ids = np.flatnonzero(self.configured)
        # dynamic state
        self.x = self.start.copy()
        self.v = np.zeros(n)
        self.enable_since = np.zeros(n, np.int64)
        self.prev_enable = np.zeros(n, np.bool_)
        self.fault = np.zeros(n, np.bool_)
        self.fault_code = np.zeros(n, np.uint32)  # the code a latched fault reports
        self.brake_cmd = np.zeros(n, np.bool_)
        self.brake_cmd_since = np.zeros(n, np.int64)
        self.brake_released = np.zeros(n, np.bool_)
        self.index_count = np.floor(self.x / self.index_spacing)
        self.index_until = np.zeros(n, np.int64)

    def _build_io(self, config: EvoConfig) -> None:
        io = config.io
        reg = config.io_registry
        self.base_di = np.zeros(MAX_DI, np.bool_)
        for p in io.points_of(IoType.DI):
            self.base_di[p.pin] = bool(p.sim)
        self.base_ai = np.zeros(len(self.base_di))
        for p in io.points_of(IoType.AI):
            self.base_ai[p.pin] = float(p.from_engineering(p.sim if p.sim is not None else p.min))

        def di_role(role: str | None) -> tuple[int, bool] | None:
            p = reg.get(role) if role else None
            return (p.pin, p.is_nc) if p is not None and p.type is IoType.DI else None

        def do_role(role: str | None) -> tuple[int, bool] | None:
            p = reg.get(role) if role else None
            return (p.pin, p.inverted) if p is not None and p.type is IoType.DO else None

        # Position sensors in one table: active when mod(sign * x - lo, period) <= width
        # (mod by inf keeps non-negative values and maps negative ones to inf: inactive).
        sens: list[tuple[int, int, bool, float, float, float, float]] = []  # axis, pin, nc, sign, lo, period, width
        huge = 1e300
        for i in self.axis_ids:
            a = int(i) + 1
            hit = di_role(R.ref(a))
            if hit:
                s = self.cam_dir[i]
                sens.append((i, *hit, s, s * self.cam_edge[i], self.cam_period[i], self.cam_width[i]))
            hit = di_role(R.limit_min(a))
            if hit:
                sens.append((i, *hit, -1.0, -self.limit_lo[i], np.inf, huge))
            hit = di_role(R.limit_max(a))
            if hit:
                sens.append((i, *hit, 1.0, self.limit_hi[i], np.inf, huge))
        cols = list(zip(*sens)) if sens else [()] * 7
        self.sens_axis = np.array(cols[0], np.intp)
        self.sens_pin = np.array(cols[1], np.intp)
        self.sens_nc = np.array(cols[2], np.bool_)
        self.sens_sign = np.array(cols[3], np.float64)
        self.sens_lo = np.array(cols[4], np.float64)
        self.sens_period = np.array(cols[5], np.float64)
        self.sens_width = np.array(cols[6], np.float64)
        self._sens_y = np.zeros(len(sens))
        self._sens_b = np.zeros(len(sens), np.bool_)

        def table(role_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            axes, pins, flags = [], [], []
            for i in self.axis_ids:
                hit = role_of(int(i) + 1)
                if hit is not None:
                    axes.append(i)
                    pins.append(hit[0])
                    flags.append(hit[1])
            return np.array(axes, np.intp), np.array(pins, np.intp), np.array(flags, np.bool_)

        self.index = table(lambda a: di_role(f"Index{a}"))
        self.brake_in = table(lambda a: di_role(config.axis(a).brake.di_released if config.axis(a).brake else None))
        self.brake_out = table(lambda a: do_role(config.axis(a).brake.do_brake if config.axis(a).brake else None))
        self.any_brake = bool(self.has_brake.any())
        self._brake_do_mask = np.zeros(BANK_WORDS, np.uint64)  # bits of the brake DOs
        for pin in self.brake_out[1]:
            self._brake_do_mask[pin >> 6] |= np.uint64(1 << (int(pin) & 63))
        self._brake_words = np.zeros(BANK_WORDS, np.uint64)
        followers = []
        for ax in config.axes:
            t = ax.tailstock
            if t is not None and t.clamped_role:
                src, dst = do_role(t.clamp_role), di_role(t.clamped_role)
                if src is not None and dst is not None:
                    followers.append((dst[0], dst[1], src[0], src[1]))
        f = np.array(followers, dtype=np.int64).reshape(-1, 4)
        self.follow_di, self.follow_nc = f[:, 0].astype(np.intp), f[:, 1].astype(np.bool_)
        self.follow_do, self.follow_inv = f[:, 2].astype(np.intp), f[:, 3].astype(np.bool_)
        self.follow_state = np.zeros(len(f), np.bool_)
        self.follow_cmd = np.zeros(len(f), np.bool_)
        self.follow_since = np.zeros(len(f), np.int64)
        # per-cycle scratch
        n = MAX_AXES
        self._brake_cmd_new = np.zeros(n, np.bool_)
        self._b = np.zeros(n, np.bool_)
        self._b2 = np.zeros(n, np.bool_)
        self._t = np.zeros(n)
        self._fr = np.zeros(n)
        self._f2 = np.zeros(n)
        self._xc = np.zeros(n)
        self._cs = np.zeros(n)
        self._ready = np.zeros(n, np.bool_)
        self._ready_f = np.zeros(n)
        self._dt = 0.0
        self._set_dt(0.001)
        self._neg_out_max = -self.out_max
        self._enable_key = b""
        self._torque_key = b""
        self._plant_dirty = True
        self._brake_key = b""
        self._brake_settle_at = 0
        self._brakes_dirty = True
        self._moving = False
        self._sensors_dirty = True
        self._io_dirty = True  # base DI/AI levels or injections changed: rebuild all inputs
        self._waiting_ready = False
        self._fault_any = False
        self._base_state = np.where(self.configured, DriverState.READY, DriverState.OFFLINE).astype(np.uint8)

    # --- Driver -------------------------------------------------------------------------------
    def open(self, io: DriverIO) -> None:
        self._next_poll = 0
        self._poll_injection(0)
        io.referenced[:] = self.absolute
        io.drive_fault[:] = False
        self._drives(io, self._injection, 0, b"")
        self._read(io, 0)

    def restore_positions(self, positions: Mapping[int, float], referenced: Mapping[int, bool]) -> None:
        for axis_id, pos in positions.items():
            i = axis_id - 1
            if 0 <= i < MAX_AXES and self.configured[i] and math.isfinite(pos):
                self.x[i] = min(max(pos, self.stop_lo[i]), self.stop_hi[i])
        self.index_count[:] = np.floor(self.x / self.index_spacing)

    def kernel_state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The compiled plant's (arena, layout) for a caller that runs it inside its own kernel
        (hal.kernels.hal_step: HalCycle with the compiled engine), else None. That caller calls
        `poll(now_ns)` before each of those cycles instead of `cycle()`."""
        return (self._arena, self._lay) if self._k_tail is not None else None

    def poll(self, now_ns: int) -> None:
        """The part of `cycle()` that is not the plant: the injection file, every inject_poll_ms."""
        if now_ns >= self._next_poll:
            self._poll_injection(now_ns)

    def cycle(self, io: DriverIO, now_ns: int, dt_s: float) -> None:
        if self.poll_in_cycle:
            self.poll(now_ns)
        if self._k_tail is not None:
            self._k_cycle(io.enable, io.brake_release, io.torque, io.do_bank, io.position, io.velocity,
                          io.torque_estimate, io.drive_ready, io.drive_fault, io.axis_state, io.drive_error_code,
                          io.di, io.ai, now_ns, float(dt_s), *self._k_tail)
            return
        inj = self._injection
        enable = io.enable
        key = enable.tobytes()
        if key != self._enable_key or self._waiting_ready or self._fault_any or inj.any_fault:
            self._drives(io, inj, now_ns, key)
        if dt_s != self._dt:
            self._set_dt(dt_s)
        csdt = self._brakes(io, now_ns) if self.any_brake else self._cdt
        # plant (see the class docstring); at rest under an unchanged command nothing can change
        tkey = io.torque.tobytes()
        if not self._moving and tkey == self._torque_key and not self._plant_dirty and not inj.any_load:
            self._finish(io, now_ns, inj)
            return
        self._torque_key = tkey
        self._plant_dirty = False
        t = self._t
        if math.isfinite(float(np.add.reduce(io.torque))):
            np.minimum(io.torque, self.out_max, out=t)
            np.maximum(t, self._neg_out_max, out=t)
        else:  # a non-finite command applies no torque on that axis
            b = self._b
            np.isfinite(io.torque, out=b)
            np.fmin(io.torque, self.out_max, out=t)
            np.fmax(t, self._neg_out_max, out=t)
            t[~b] = 0.0
        t *= self._ready_f
        vn, tmp = self._f2, self._fr
        if inj.any_load:
            np.add(t, inj.load_torque, out=vn)
            vn *= self._gdt
        else:
            np.multiply(t, self._gdt, out=vn)  # velocity gained from torque this step
        v = self.v
        if not (self._moving or np.count_nonzero(vn)):
            # at rest with no force: nothing can move (skip the integration)
            io.torque_estimate[:] = t
            self._finish(io, now_ns, inj)
            return
        np.multiply(v, self._k1, out=tmp)  # viscous decay
        vn += tmp
        # dry friction as an implicit step: |v| shrinks by cs*dt, never through zero (stiction);
        # v - clip(v, -cs*dt, cs*dt) == sign(v) * max(|v| - cs*dt, 0)
        np.minimum(vn, csdt, out=tmp)
        np.maximum(tmp, np.negative(csdt, out=v), out=tmp)
        np.subtract(vn, tmp, out=v)
        x = self.x
        np.multiply(v, dt_s, out=tmp)
        x += tmp
        xc, b2 = self._xc, self._b2
        np.fmax(x, self.stop_lo, out=xc)
        np.fmin(xc, self.stop_hi, out=xc)
        np.not_equal(xc, x, out=b2)
        if np.count_nonzero(b2):  # at a mechanical end stop: held there, v = 0
            v[b2] = 0.0
            x[:] = xc
        # an axis that came to rest this step (friction stopped it at a sign change) is integrated
        # again from rest next step: the shortcut above holds only for a rest reached from rest
        self._plant_dirty = self._moving
        self._moving = bool(np.count_nonzero(v))
        self._sensors_dirty = True
        io.torque_estimate[:] = t
        self._finish(io, now_ns, inj)

    def _set_dt(self, dt_s: float) -> None:
        """Per-step coefficients of the integration for this dt (cached: dt rarely changes)."""
        self._dt = dt_s
        self._gdt = self.g * dt_s
        self._k1 = 1.0 - self.d * dt_s
        self._cdt = self.c * dt_s
        self._cbdt = self.cb * dt_s
        self._brake_key = b""  # the cached brake friction depends on dt
        self._plant_dirty = True

    def _finish(self, io: DriverIO, now_ns: int, inj: Injection) -> None:
        x, v = self.x, self.v
        if inj.set_position:
            for axis_id, pos in inj.set_position.items():
                i = axis_id - 1
                if self.configured[i]:
                    x[i] = min(max(pos, self.stop_lo[i]), self.stop_hi[i])
                    v[i] = 0.0
            inj.set_position = {}
            self.index_count[:] = np.floor(x / self.index_spacing)
            self._plant_dirty = True
            self._sensors_dirty = True
        if self.follow_di.size:
            self._followers(io, now_ns)
        self._read(io, now_ns)

    def _drives(self, io: DriverIO, inj: Injection, now_ns: int, key: bytes) -> None:
        """Ready once enable has been held for ready_delay; faults latch until enable drops."""
        self._enable_key = key
        enable, ready, b = io.enable, self._ready, self._b
        np.greater(enable, self.prev_enable, out=b)  # rising edges
        self.enable_since[b] = now_ns
        self.prev_enable[:] = enable
        np.less_equal(self.enable_since, now_ns - self.ready_delay_ns, out=ready)
        ready &= enable
        if self._fault_any or inj.any_fault:
            np.bitwise_or(enable, inj.drive_fault, out=b)
            new = inj.drive_fault & ~self.fault
            self.fault_code[new] = inj.drive_error_code[new]
            self.fault |= inj.drive_fault
            self.fault &= b
            self._fault_any = bool(np.count_nonzero(self.fault))
            np.greater(ready, self.fault, out=ready)
            io.drive_fault[:] = self.fault
            np.multiply(self.fault_code, self.fault, out=io.drive_error_code)
        self._waiting_ready = bool(np.count_nonzero(enable ^ ready))
        self._ready_f[:] = ready
        self._plant_dirty = True
        io.drive_ready[:] = ready
        state = io.axis_state
        state[:] = self._base_state
        state[enable] = DriverState.INIT
        state[ready] = DriverState.ENABLED
        if self._fault_any:
            state[self.fault] = DriverState.FAULT

    def _brakes(self, io: DriverIO, now_ns: int) -> np.ndarray:
        """Brake command = brake_release OR the brake DO; the mechanics follow after brake_delay.
        Returns the friction per step (Coulomb + holding brake where engaged) times dt."""
        w = self._brake_words
        np.bitwise_and(io.do_bank, self._brake_do_mask, out=w)
        key = io.brake_release.tobytes() + w.tobytes()
        if key == self._brake_key and now_ns < self._brake_settle_at:
            return self._cs
        cmd = self._brake_cmd_new
        np.bitwise_and(io.brake_release, self.has_brake, out=cmd)
        bo_axes, bo_pins, bo_inv = self.brake_out
        if bo_axes.size:
            cmd[bo_axes] |= _bits(io.do_bank, bo_pins) ^ bo_inv
        self._brake_key = key
        b = self._b2
        np.not_equal(cmd, self.brake_cmd, out=b)
        np.copyto(self.brake_cmd_since, now_ns, where=b)
        self.brake_cmd[:] = cmd
        np.less_equal(self.brake_cmd_since, now_ns - self.brake_delay_ns, out=b)
        if np.count_nonzero(b) == MAX_AXES:
            self._brake_settle_at = 1 << 62  # settled: nothing changes until the command does
        else:  # the next axis to settle: the earliest command still within its delay
            self._brake_settle_at = int(self.brake_cmd_since[~b].min()) + self.brake_delay_ns
        changed = not np.array_equal(self.brake_released[b], cmd[b])
        np.copyto(self.brake_released, cmd, where=b)
        self._brakes_dirty |= changed
        self._plant_dirty |= changed
        np.greater(self.has_brake, self.brake_released, out=b)  # engaged
        cs = self._cs
        np.multiply(self._cbdt, b, out=cs)
        cs += self._cdt
        return cs


    def _followers(self, io: DriverIO, now_ns: int) -> None:
        cmd = _bits(io.do_bank, self.follow_do) ^ self.follow_inv
        changed = cmd != self.follow_cmd
        self.follow_since[changed] = now_ns
        self.follow_cmd[:] = cmd
        settled = now_ns - self.follow_since >= self.follow_delay_ns
        np.copyto(self.follow_state, cmd, where=settled)

    def _read(self, io: DriverIO, now_ns: int) -> None:
        """Status side: feedback, then the physical DI levels and raw AI signals (only the parts
        whose sources changed are rewritten; `io.di` / `io.ai` persist between cycles)."""
        x = self.x
        io.position[:] = x
        io.velocity[:] = self.v
        di = io.di
        inj = self._injection
        full = self._io_dirty
        if full:
            self._io_dirty = False
            np.copyto(di, self.base_di)
            np.copyto(io.ai, self.base_ai)
            if inj.any_ai:
                np.copyto(io.ai, inj.ai_value, where=inj.ai_mask)
        touched = full
        if self.sens_pin.size and (full or self._sensors_dirty):
            hit = self._sens_b
            y = x[self.sens_axis]
            y *= self.sens_sign
            y -= self.sens_lo
            np.mod(y, self.sens_period, out=y)
            np.less_equal(y, self.sens_width, out=hit)
            hit ^= self.sens_nc
            di[self.sens_pin] = hit
            touched = True
        self._sensors_dirty = False
        axes, pins, nc = self.index
        if axes.size:
            count = np.floor(x / self.index_spacing)
            crossed = count != self.index_count
            self.index_count[:] = count
            self.index_until[crossed] = now_ns + INDEX_PULSE_NS
            di[pins] = (now_ns < self.index_until[axes]) ^ nc
            touched = True
        axes, pins, nc = self.brake_in
        if axes.size and (full or self._brakes_dirty):
            di[pins] = self.brake_released[axes] ^ nc
            touched = True
        self._brakes_dirty = False
        if self.follow_di.size:
            di[self.follow_di] = self.follow_state ^ self.follow_nc
            touched = True
        if touched and inj.any_di:
            np.copyto(di, inj.di_value, where=inj.di_mask)

    def _poll_injection(self, now_ns: int) -> None:
        self._next_poll = now_ns + self.inject_poll_ns
        new = self.inject.poll()
        if new is None:
            return
        # set_position is one-shot: an axis's value applies when it appears or changes
        seen, self._seen_set_position = self._seen_set_position, dict(new.set_position)
        new.set_position = {a: p for a, p in new.set_position.items() if seen.get(a) != p}
        new.drive_fault &= self.configured
        self._injection = new.summarise()
        if self._k_tail is not None:
            self._adopt(self._injection)
        self._io_dirty = True
        self._plant_dirty = True

    def close(self) -> None:
        self.v[:] = 0.0

    def health(self) -> DriverHealth:
        h = self._health_value
        if h is None:  # the plant's health never changes: built once, not every 100 ms in the cycle
            h = self._health_value = DriverHealth(DriverState.READY, f"simulated plant, {int(self.configured.sum())} axes")
        return h

    @property
    def injection(self) -> Injection:
        return self._injection
