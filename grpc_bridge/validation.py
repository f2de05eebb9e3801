"""Request checks against the configuration, done before anything is written to a command ring.

Each check raises CommandError: INVALID_ARGUMENT for bad values, PERMISSION_DENIED for role pins.
"""
from __future__ import annotations

import math

import grpc

from common.config import AxisConfig, EvoConfig, IoPoint, IoType
from common.consts import MAX_AO, MAX_DO
from common.recipes.loader import check_name
from common.shm.commands import ResultCode
from common.states import MachineState, OperationalMode

from .status_map import CommandError, invalid


class Validator:
    """Knows the configured axes and I/O points; one method per argument kind."""

    def __init__(self, cfg: EvoConfig) -> None:
        self.cfg = cfg
        self._axis_ids = tuple(a.id for a in cfg.axes)

    # -- numbers and enums ------------------------------------------------------------------------
    @staticmethod
    def finite(name: str, value: float) -> float:
        if not math.isfinite(value):
            raise invalid(f"{name} must be a finite number, got {value!r}")
        return float(value)

    @staticmethod
    def enum_value(name: str, enum_cls: type, value: int) -> int:
        try:
            return int(enum_cls(int(value)))
        except ValueError:
            allowed = ", ".join(f"{m.name}={m.value}" for m in enum_cls)
            raise invalid(f"{name} {value} is not one of {allowed}") from None

    def mode(self, value: int) -> int:
        return self.enum_value("mode", OperationalMode, value)

    def machine_state(self, value: int) -> int:
        return self.enum_value("state", MachineState, value)

    # -- axes -------------------------------------------------------------------------------------
    def axis(self, axis_id: int, allow_all: bool = False) -> AxisConfig | None:
        """The configured axis; None for 0 when `allow_all` (every axis)."""
        if axis_id == 0 and allow_all:
            return None
        try:
            return self.cfg.axis(axis_id)
        except (KeyError, ValueError, LookupError):
            ids = ", ".join(map(str, self._axis_ids))
            extra = " (or 0 for every axis)" if allow_all else ""
            raise invalid(f"axis {axis_id} is not configured; configured axes: {ids}{extra}") from None

    def position(self, ax: AxisConfig, value: float) -> float:
        v = self.finite("position", value)
        k = ax.kinematics
        if not k.min_pos <= v <= k.max_pos:
            raise invalid(
                f"position {v:g} of axis {ax.id} ({ax.name}) outside its soft limits [{k.min_pos:g}, {k.max_pos:g}]"
            )
        return v

    def velocity(self, ax: AxisConfig, value: float, what: str = "velocity") -> float:
        """0 = the default (max_velocity / jog default); else 0 < v <= max_velocity."""
        v = self.finite(what, value)
        vmax = ax.kinematics.max_velocity
        if v < 0 or v > vmax:
            raise invalid(f"{what} {v:g} of axis {ax.id} ({ax.name}) outside [0, max_velocity {vmax:g}]")
        return v

    def acceleration(self, ax: AxisConfig, value: float) -> float:
        a = self.finite("acceleration", value)
        amax = ax.kinematics.max_acceleration
        if a < 0 or (amax is not None and a > amax):
            top = f"max_acceleration {amax:g}" if amax is not None else "inf"
            raise invalid(f"acceleration {a:g} of axis {ax.id} ({ax.name}) outside [0, {top}]")
        return a

    # -- I/O ----------------------------------------------------------------------------------------
    def _output(self, io_type: IoType, pin: int, limit: int) -> IoPoint:
        kind = io_type.value
        if not 0 <= pin < limit:
            raise invalid(f"{kind} pin {pin} out of range 0..{limit - 1}")
        point = self.cfg.io.point(io_type, pin)
        if point is None:
            raise invalid(f"{kind} pin {pin} is not declared in io.toml")
        role = self.cfg.io_registry.role_of(io_type, pin)
        if role is not None:
            raise CommandError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{kind} pin {pin} has role '{role}' and belongs to the control unit",
                ResultCode.IO_ROLE_OWNED,
            )
        return point

    def digital_output(self, pin: int) -> IoPoint:
        return self._output(IoType.DO, pin, MAX_DO)

    def analog_output(self, pin: int, value: float) -> float:
        point = self._output(IoType.AO, pin, MAX_AO)
        v = self.finite("value", value)
        if not point.min <= v <= point.max:
            raise invalid(f"ao pin {pin} value {v:g} outside [{point.min:g}, {point.max:g}] {point.unit}".rstrip())
        return v

    # -- recipes --------------------------------------------------------------------------------------
    @staticmethod
    def recipe_name(name: str) -> str:
        why = check_name(name)
        if why:
            raise invalid(f"recipe name {why}")
        return name
