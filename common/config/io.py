"""io.toml: I/O points (IoPoint), their groups (IoGroup, IoConfig) and analog scaling (AnalogCurve).

Parsed strictly: each point type (di/do/ai/ao) accepts only its own keys, see config/io.toml.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.consts import (
    IO_ANALOG_RANGE_BOUNDS,
    IO_AVERAGE_BOUNDS,
    IO_CURVE_COEFF_BOUNDS,
    IO_DEBOUNCE_MS_BOUNDS,
    IO_ENABLE_TIMEOUT_MS_BOUNDS,
    IO_PULSE_MS_BOUNDS,
    MAX_AI,
    MAX_AO,
    MAX_DI,
    MAX_DO,
)

from .enums import IoType, Logic, parse_enum
from .errors import fmt_num
from .parsing import Collector, Ctx, check_keys, parse_table, spec, type_name

__all__ = ["AnalogCurve", "CURVE_PRESETS", "IoPoint", "IoGroup", "IoConfig", "parse_io",
           "PIN_LIMIT"]

PIN_LIMIT: dict[IoType, int] = {IoType.DI: MAX_DI, IoType.DO: MAX_DO, IoType.AI: MAX_AI,
                                IoType.AO: MAX_AO}

# preset name -> (a, b, c)
CURVE_PRESETS: dict[str, tuple[float, float, float]] = {
    "linear": (0.0, 0.0, 1.0),
    "quadratic": (0.0, 1.0, 0.0),
    "cubic": (1.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class AnalogCurve:
    """Scaling between a normalised signal n (0..1 over the raw range of the channel) and
    engineering units:

        shape(n)            = a·n³ + b·n² + c·n
        to_engineering(n)   = min + (max - min)·shape(n) + offset
        from_engineering(v) = n in [0, 1] with to_engineering(n) == v (v clamped to the curve's
                              range first), closed form for the presets, bisection otherwise.

    `offset` is in engineering units (io.toml: "Output offset added after curve"); on a 0..1
    range this is exactly upstream's f(n) = a·n³ + b·n² + c·n + offset. The loader only accepts
    curves strictly monotonic on [0, 1] (increasing or decreasing), so the inverse is unique.
    Functions accept floats or numpy arrays.
    """

    a: float = 0.0
    b: float = 0.0
    c: float = 1.0
    min: float = 0.0
    max: float = 1.0
    offset: float = 0.0
    preset: str = "linear"  # "linear" | "quadratic" | "cubic" | "custom"

    @staticmethod
    def make(curve: str | tuple[float, float, float], lo: float = 0.0, hi: float = 1.0,
             offset: float = 0.0) -> AnalogCurve:
        if isinstance(curve, str):
            a, b, c = CURVE_PRESETS[curve]
            return AnalogCurve(a, b, c, lo, hi, offset, curve)
        a, b, c = (float(x) for x in curve)
        return AnalogCurve(a, b, c, lo, hi, offset, "custom")

    @property
    def coefficients(self) -> tuple[float, float, float]:
        return (self.a, self.b, self.c)

    def shape(self, n: Any) -> Any:
        return ((self.a * n + self.b) * n + self.c) * n

    def slope(self, n: float) -> float:
        return (3.0 * self.a * n + 2.0 * self.b) * n + self.c

    def is_monotonic(self) -> bool:
        """Strictly monotonic on [0, 1]: the derivative keeps one sign (zeros only at isolated
        points) and shape(1) != shape(0)."""
        pts = [0.0, 1.0]
        if self.a != 0.0:
            v = -self.b / (3.0 * self.a)
            if 0.0 < v < 1.0:
                pts.append(v)
        d = [self.slope(p) for p in pts]
        end = self.shape(1.0)
        return (min(d) >= 0.0 and end > 0.0) or (max(d) <= 0.0 and end < 0.0)

    def to_engineering(self, normalized: Any) -> Any:
        return self.min + (self.max - self.min) * self.shape(normalized) + self.offset

    def from_engineering(self, value: Any) -> Any:
        scalar = np.ndim(value) == 0
        span = self.max - self.min
        y = (np.asarray(value, dtype=np.float64) - self.offset - self.min) / span
        end = self.shape(1.0)
        y = np.clip(y, min(0.0, end), max(0.0, end))
        a, b, c = self.a, self.b, self.c
        if a == 0.0 and b == 0.0:
            n = y / c
        elif a == 0.0 and c == 0.0:
            n = np.sqrt(y / b)
        elif b == 0.0 and c == 0.0:
            n = np.cbrt(y / a)
        else:
            lo = np.zeros_like(y)
            hi = np.ones_like(y)
            sign = 1.0 if end > 0.0 else -1.0
            for _ in range(52):  # float64 resolution on [0, 1]
                mid = 0.5 * (lo + hi)
                below = sign * self.shape(mid) < sign * y
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            n = 0.5 * (lo + hi)
        n = np.clip(n, 0.0, 1.0)
        return float(n) if scalar else n


@dataclass(frozen=True, kw_only=True)
class IoPoint:
    """One I/O pin. Fields that do not apply to its type keep neutral defaults.

    DI: logical value = physical level XOR (logic is NC). `sim` is the simulated *physical*
    level (di/do: bool; ai/ao: engineering value); None = the simulator's default (0).
    DO: physical level = logical value XOR inverted; `init` is the logical initial value.
    AI/AO: values in the shared-memory segments are engineering units; `curve` converts from/to
    the normalised raw signal of a real channel.
    """

    group: str
    type: IoType
    pin: int
    role: str | None = None
    name: str = ""
    # di
    logic: Logic = Logic.NO
    debounce_ms: int = 0
    enable_pin: int | None = None
    enable_state: bool = True
    enable_timeout_ms: int = 0
    # do / ao (do: bool, ao: float)
    init: bool | float = False
    inverted: bool = False
    pulse_ms: int = 0
    keep_estop: bool = False
    # ai / ao
    min: float = 0.0
    max: float = 1.0
    unit: str = ""
    average: int = 1
    curve: AnalogCurve = field(default_factory=AnalogCurve)
    offset: float = 0.0
    sim: bool | float | None = None

    @property
    def label(self) -> str:
        return self.name or self.role or f"{self.type.value}{self.pin}"

    @property
    def is_nc(self) -> bool:
        return self.logic is Logic.NC

    @property
    def inverts_logic(self) -> bool:
        """Whether the bank's physical level is the inverse of the logical value: an NC input or
        an inverted output. Logical = physical XOR this (what operators must be shown)."""
        if self.type is IoType.DI:
            return self.logic is Logic.NC
        if self.type is IoType.DO:
            return bool(self.inverted)
        return False

    def to_engineering(self, normalized: Any) -> Any:
        return self.curve.to_engineering(normalized)

    def from_engineering(self, value: Any) -> Any:
        return self.curve.from_engineering(value)


@dataclass(frozen=True)
class IoGroup:
    key: str  # the TOML table name, e.g. "Safety"
    name: str  # display name (defaults to key)
    points: tuple[IoPoint, ...]


@dataclass(frozen=True)
class IoConfig:
    """Parsed io.toml. Lookups are precomputed."""

    groups: tuple[IoGroup, ...] = ()
    _by_type: dict[IoType, tuple[IoPoint, ...]] = field(init=False, repr=False, compare=False)
    _by_pin: dict[tuple[IoType, int], IoPoint] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_type: dict[IoType, list[IoPoint]] = {t: [] for t in IoType}
        by_pin: dict[tuple[IoType, int], IoPoint] = {}
        for g in self.groups:
            for p in g.points:
                by_type[p.type].append(p)
                by_pin[(p.type, p.pin)] = p
        object.__setattr__(self, "_by_type",
                           {t: tuple(sorted(v, key=lambda p: p.pin)) for t, v in by_type.items()})
        object.__setattr__(self, "_by_pin", by_pin)

    @property
    def points(self) -> tuple[IoPoint, ...]:
        return tuple(p for g in self.groups for p in g.points)

    def points_of(self, io_type: IoType | str) -> tuple[IoPoint, ...]:
        """Points of one type, sorted by pin."""
        return self._by_type[IoType(io_type)]

    def point(self, io_type: IoType | str, pin: int) -> IoPoint | None:
        return self._by_pin.get((IoType(io_type), pin))

    def group(self, key: str) -> IoGroup:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)


# --- parsing ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _Common:
    type: str = spec(custom=True)
    pin: int = spec()
    role: str | None = spec(None, role=True)
    name: str = spec("")
    sim: float | None = spec(None, custom=True)


@dataclass(frozen=True, kw_only=True)
class _Di(_Common):
    logic: Logic = spec(Logic.NO)
    debounce: int = spec(15, bounds=IO_DEBOUNCE_MS_BOUNDS)
    enable_pin: int | None = spec(None)
    enable_state: bool = spec(True)
    enable_timeout: int = spec(0, bounds=IO_ENABLE_TIMEOUT_MS_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class _Do(_Common):
    init: bool = spec(False)
    inverted: bool = spec(False)
    pulse: int = spec(0, bounds=IO_PULSE_MS_BOUNDS)
    keep_estop: bool = spec(False)


@dataclass(frozen=True, kw_only=True)
class _Analog(_Common):
    min: float = spec(0.0, bounds=IO_ANALOG_RANGE_BOUNDS)
    max: float = spec(bounds=IO_ANALOG_RANGE_BOUNDS)
    unit: str = spec("V")
    curve: str = spec("linear", custom=True)
    offset: float = spec(0.0, bounds=IO_ANALOG_RANGE_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class _Ai(_Analog):
    average: int = spec(5, bounds=IO_AVERAGE_BOUNDS)


@dataclass(frozen=True, kw_only=True)
class _Ao(_Analog):
    init: float = spec(0.0, bounds=IO_ANALOG_RANGE_BOUNDS)
    pulse: int = spec(0, bounds=IO_PULSE_MS_BOUNDS)


_SPEC: dict[IoType, type] = {IoType.DI: _Di, IoType.DO: _Do, IoType.AI: _Ai, IoType.AO: _Ao}


def _parse_sim(raw: Any, t: IoType, ctx: Ctx) -> bool | float | None:
    if t in (IoType.DI, IoType.DO):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, (int, float)) and raw in (0, 1):
            return bool(raw)
        ctx.parse_error("sim", f"expected bool (or 0/1) for {t.value}, got {type_name(raw)} {raw!r}")
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
        return float(raw)
    ctx.parse_error("sim", f"expected a number for {t.value}, got {type_name(raw)} {raw!r}")
    return None


def _parse_curve(raw: Any, lo: float, hi: float, offset: float, ctx: Ctx) -> AnalogCurve | None:
    if isinstance(raw, str):
        if raw not in CURVE_PRESETS:
            ctx.invalid("curve", f"{raw!r} is not one of " + ", ".join(f'"{k}"' for k in CURVE_PRESETS)
                        + " or an array [a, b, c]")
            return None
        return AnalogCurve.make(raw, lo, hi, offset)
    if (not isinstance(raw, list) or len(raw) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw)):
        ctx.parse_error("curve", f"expected a preset string or an array of 3 numbers, got {raw!r}")
        return None
    clo, chi = IO_CURVE_COEFF_BOUNDS
    if not all(clo <= x <= chi for x in raw):
        ctx.invalid("curve", f"coefficients {raw} out of range [{fmt_num(clo)}, {fmt_num(chi)}]")
        return None
    curve = AnalogCurve.make((raw[0], raw[1], raw[2]), lo, hi, offset)
    if not curve.is_monotonic():
        ctx.invalid("curve", f"custom curve {raw} is not strictly monotonic on 0..1 "
                             "(cannot be inverted)")
        return None
    return curve


def _parse_point(raw: Any, group: str, idx: int, col: Collector, file: str) -> IoPoint | None:
    ctx = Ctx(col, file, group, f"io[{idx}].")
    if not isinstance(raw, dict):
        ctx.parse_error(None, f"expected an inline table {{type=..., pin=...}}, got {type_name(raw)}")
        return None
    if "type" not in raw:
        # unknown keys are still worth reporting against the union of all keys
        ctx.parse_error("type", 'missing mandatory field ("di", "do", "ai" or "ao")')
        return None
    try:
        t = parse_enum(IoType, raw["type"]) if isinstance(raw["type"], str) else None
    except ValueError as e:
        ctx.invalid("type", str(e))
        return None
    if t is None:
        ctx.parse_error("type", f"expected string, got {type_name(raw['type'])}")
        return None
    n0 = len(col.errors)
    kw = parse_table(_SPEC[t], raw, ctx)
    sim = _parse_sim(raw["sim"], t, ctx) if "sim" in raw else None
    if kw is None or len(col.errors) != n0:
        return None
    limit = PIN_LIMIT[t]
    if not 0 <= kw["pin"] < limit:
        ctx.invalid("pin", f"{kw['pin']} out of range [0, {limit - 1}] for {t.value}")
        return None
    out: dict[str, Any] = dict(group=group, type=t, pin=kw["pin"], role=kw["role"],
                               name=kw["name"], sim=sim)
    if t is IoType.DI:
        has_en = kw["enable_pin"] is not None
        for k in ("enable_state", "enable_timeout"):
            if k in raw and not has_en:
                ctx.invalid(k, "only valid together with enable_pin")
        if has_en and kw["enable_pin"] == kw["pin"]:
            ctx.invalid("enable_pin", "a point cannot enable itself")
        out.update(logic=kw["logic"], debounce_ms=kw["debounce"], enable_pin=kw["enable_pin"],
                   enable_state=kw["enable_state"], enable_timeout_ms=kw["enable_timeout"])
    elif t is IoType.DO:
        out.update(init=kw["init"], inverted=kw["inverted"], pulse_ms=kw["pulse"],
                   keep_estop=kw["keep_estop"])
    else:
        lo, hi = kw["min"], kw["max"]
        if not lo < hi:
            ctx.invalid("max", f"max {fmt_num(hi)} must be greater than min {fmt_num(lo)}")
            return None
        curve = _parse_curve(raw.get("curve", "linear"), lo, hi, kw["offset"], ctx)
        if curve is None:
            return None
        out.update(min=lo, max=hi, unit=kw["unit"], curve=curve, offset=kw["offset"])
        if t is IoType.AI:
            out.update(average=kw["average"])
        else:
            if not lo <= kw["init"] <= hi:
                ctx.invalid("init", f"{fmt_num(kw['init'])} outside [min, max] = "
                                    f"[{fmt_num(lo)}, {fmt_num(hi)}]")
            out.update(init=kw["init"], pulse_ms=kw["pulse"])
    if len(col.errors) != n0:
        return None
    return IoPoint(**out)


_GROUP_KEYS = ["name", "io"]


def parse_io(data: dict[str, Any], col: Collector, file: str = "io.toml") -> IoConfig | None:
    """Parse the decoded TOML of an io.toml; None (errors recorded in `col`) when invalid."""
    n0 = len(col.errors)
    top = Ctx(col, file, "")
    groups: list[IoGroup] = []
    indexed: list[tuple[str, int, IoPoint]] = []  # (group key, index in the TOML array, point)
    for key, table in data.items():
        if not isinstance(table, dict):
            top.unknown(key, [], "io.toml holds only [Group] tables with name and io = [...]")
            continue
        gctx = Ctx(col, file, key)
        check_keys(table, _GROUP_KEYS, gctx)
        name = table.get("name", key)
        if not isinstance(name, str):
            gctx.parse_error("name", f"expected string, got {type_name(name)}")
            name = key
        raw_points = table.get("io", [])
        if not isinstance(raw_points, list):
            gctx.parse_error("io", f"expected an array of inline tables, got {type_name(raw_points)}")
            raw_points = []
        pts = [(i, _parse_point(r, key, i, col, file)) for i, r in enumerate(raw_points)]
        indexed += [(key, i, p) for i, p in pts if p is not None]
        groups.append(IoGroup(key, name, tuple(p for _, p in pts if p is not None)))
    _check_io(indexed, col, file)
    if len(col.errors) != n0:
        return None
    return IoConfig(tuple(groups))


def _check_io(points: list[tuple[str, int, IoPoint]], col: Collector, file: str) -> None:
    """Cross-point checks: duplicate pins per type, duplicate roles, enable_pin targets."""
    seen_pin: dict[tuple[IoType, int], tuple[str, int, IoPoint]] = {}
    seen_role: dict[str, tuple[str, int]] = {}
    di_pins = {p.pin for _, _, p in points if p.type is IoType.DI}
    for gkey, idx, p in points:
        ctx = Ctx(col, file, gkey, f"io[{idx}].")
        k = (p.type, p.pin)
        if k in seen_pin:
            og, oi, op = seen_pin[k]
            ctx.invalid("pin", f"{p.type.value} pin {p.pin} already used by [{og}] io[{oi}]"
                               f" ({op.label!r})")
        else:
            seen_pin[k] = (gkey, idx, p)
        if p.role is not None:
            if p.role in seen_role:
                og, oi = seen_role[p.role]
                ctx.invalid("role", f"role '{p.role}' already assigned to [{og}] io[{oi}]")
            else:
                seen_role[p.role] = (gkey, idx)
        if p.enable_pin is not None and p.enable_pin not in di_pins:
            ctx.invalid("enable_pin", f"{p.enable_pin} is not a di pin defined in {file}")
