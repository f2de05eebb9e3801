"""What a recipe is checked against: the configured axes (limits, names) and I/O points (roles, ranges).

Built once from an EvoConfig; plain frozen values so tests can also build one by hand.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from .model import AxisRef

if TYPE_CHECKING:
    from common.config import EvoConfig

_FILE_SHORT = re.compile(r"^axis_\d+_(.+)\.toml$")


@dataclass(frozen=True)
class AxisLimits:
    """One axis as recipes see it. `short` is the name part of axis_NN_<short>.toml."""

    id: int
    name: str
    short: str = ""
    min_pos: float = float("-inf")
    max_pos: float = float("inf")
    max_velocity: float = float("inf")
    max_acceleration: float | None = None
    homing_method: str = ""
    in_position_window: float = 0.0

    @property
    def label(self) -> str:
        return self.name or self.short or str(self.id)


@dataclass(frozen=True)
class PinInfo:
    """One configured I/O point: type ("di", "do", "ai", "ao"), pin, role (None = free)."""

    type: str
    pin: int
    role: str | None = None
    name: str = ""
    min: float = 0.0
    max: float = 0.0
    inverts_logic: bool = False  # bank bit = logical value XOR this (NC input / inverted output)


@dataclass(frozen=True)
class MachineLimits:
    axes: tuple[AxisLimits, ...] = ()
    pins: tuple[PinInfo, ...] = ()
    _by_key: Mapping[str, AxisLimits] = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]
    _pins: Mapping[tuple[str, int], PinInfo] = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]
    _roles: Mapping[str, PinInfo] = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        by: dict[str, AxisLimits] = {}
        for a in self.axes:
            for key in (a.name, a.short):
                if key:
                    by.setdefault(key.casefold(), a)
        object.__setattr__(self, "_by_key", by)
        object.__setattr__(self, "_pins", {(p.type, p.pin): p for p in self.pins})
        object.__setattr__(self, "_roles", {p.role: p for p in self.pins if p.role})

    @classmethod
    def from_config(cls, cfg: "EvoConfig") -> "MachineLimits":
        axes = []
        for a in cfg.axes:
            m = _FILE_SHORT.match(a.file or "")
            k = a.kinematics
            axes.append(AxisLimits(
                id=a.id, name=a.name, short=m.group(1) if m else "", min_pos=k.min_pos, max_pos=k.max_pos,
                max_velocity=k.max_velocity, max_acceleration=k.max_acceleration,
                homing_method=str(a.homing.method.value), in_position_window=k.in_position_window,
            ))
        pins = []
        for p in cfg.io.points:
            pins.append(PinInfo(type=str(p.type.value), pin=p.pin, role=p.role, name=p.name,
                                min=float(p.min), max=float(p.max), inverts_logic=p.inverts_logic))
        return cls(axes=tuple(axes), pins=tuple(pins))

    def axis(self, ref: AxisRef) -> AxisLimits | None:
        """The axis a recipe names: by id (int or digits) or by name / short name, case-insensitive."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            i = int(ref)
            return next((a for a in self.axes if a.id == i), None)
        return self._by_key.get(ref.casefold())

    def axis_by_id(self, axis_id: int) -> AxisLimits | None:
        return next((a for a in self.axes if a.id == axis_id), None)

    def pin(self, io_type: str, pin: int) -> PinInfo | None:
        return self._pins.get((io_type, pin))

    def role(self, role: str) -> PinInfo | None:
        return self._roles.get(role)

    def axis_names(self) -> str:
        return ", ".join(f"{a.label}({a.id})" for a in self.axes)
