"""I/O role naming convention `FunctionAxisNumber` (axes start at 1): LimitMin3, BrakeOut1, ...

Role name constants and helpers, and the name -> I/O type table the loader checks.
"""
from __future__ import annotations

import re

from .enums import IoType

# A role gives a pin to the CU (it owns role pins; RE writes only role-less pins). The table below
# is what the CU understands; the loader checks that a role of a known name sits on the right
# I/O type. Logical values (after NC inversion) mean:
#
# | role                  | type | logical True means                       | wiring usually |
# |-----------------------|------|------------------------------------------|----------------|
# | EStop                 | di   | an E-stop is pressed                     | NC             |
# | EStopReset            | di   | E-stop reset button pressed              | NO             |
# | SafetyGate            | di   | light curtain / gate interrupted         | NC             |
# | GuardClosed, GuardClosed<N> | di | guard door closed (machine / axis N) | NO             |
# | ReducedSpeed          | di   | reduced speed requested (key switch)     | NO             |
# | Start, Stop, Reset, Pause | di | operator button pressed                | NO             |
# | PressureOk, VacuumOk  | di   | supply OK                                | NC             |
# | LimitMin<N>, LimitMax<N> | di | axis N at its lower/upper limit switch  | NC             |
# | Ref<N>                | di   | homing (reference) sensor of axis N      | NO             |
# | BrakeIn<N>            | di   | brake of axis N reported released        | NO             |
# | BrakeOut<N>           | do   | release the brake of axis N (energise)   |                |
# | DoorLock              | do   | lock the guard door                      |                |
#
# Roles named by axis files get their type from the field that names them (brake.do_brake: do,
# brake.di_released: di, tailstock.clamp_role: do, tailstock.clamped_role: di, guard.di_guard: di),
# whatever the name. Homing uses Ref<N> (HomeSensor) and LimitMin<N>/LimitMax<N> (LimitSwitch,
# chosen by approach_direction Negative/Positive); a missing one is a load warning, not an error.

__all__ = [
    "ESTOP", "ESTOP_RESET", "SAFETY_GATE", "GUARD_CLOSED", "REDUCED_SPEED", "START", "STOP",
    "RESET", "PAUSE", "PRESSURE_OK", "VACUUM_OK", "DOOR_LOCK",
    "limit_min", "limit_max", "ref", "brake_in", "brake_out", "guard_closed",
    "ROLE_CONVENTIONS", "convention_type",
]

ESTOP = "EStop"
ESTOP_RESET = "EStopReset"
SAFETY_GATE = "SafetyGate"
GUARD_CLOSED = "GuardClosed"
REDUCED_SPEED = "ReducedSpeed"
START = "Start"
STOP = "Stop"
RESET = "Reset"
PAUSE = "Pause"
PRESSURE_OK = "PressureOk"
VACUUM_OK = "VacuumOk"
DOOR_LOCK = "DoorLock"


def limit_min(axis_id: int) -> str:
    return f"LimitMin{axis_id}"


def limit_max(axis_id: int) -> str:
    return f"LimitMax{axis_id}"


def ref(axis_id: int) -> str:
    return f"Ref{axis_id}"


def brake_in(axis_id: int) -> str:
    return f"BrakeIn{axis_id}"


def brake_out(axis_id: int) -> str:
    return f"BrakeOut{axis_id}"


def guard_closed(axis_id: int | None = None) -> str:
    return GUARD_CLOSED if axis_id is None else f"{GUARD_CLOSED}{axis_id}"


# (regex, type): a role whose name matches must be on that I/O type
ROLE_CONVENTIONS: tuple[tuple[re.Pattern[str], IoType], ...] = tuple(
    (re.compile(rx), t)
    for rx, t in (
        (r"EStop|EStopReset|SafetyGate|ReducedSpeed|Start|Stop|Reset|Pause", IoType.DI),
        (r"PressureOk|VacuumOk", IoType.DI),
        (r"GuardClosed\d*", IoType.DI),
        (r"(LimitMin|LimitMax|Ref|BrakeIn)\d+", IoType.DI),
        (r"BrakeOut\d+|DoorLock", IoType.DO),
    )
)


def convention_type(role: str) -> IoType | None:
    """The I/O type a role of this name must have, or None if the name is not in the table."""
    for rx, t in ROLE_CONVENTIONS:
        if rx.fullmatch(role):
            return t
    return None
