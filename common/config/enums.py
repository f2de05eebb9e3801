"""Enumerated configuration strings (StrEnum: members compare equal to their TOML spelling).

`parse_enum` accepts the canonical spellings plus the documented upstream aliases below.
"""
from __future__ import annotations

from enum import Enum, StrEnum

__all__ = [
    "AxisType",
    "SafeStopCategory",
    "LagPolicy",
    "HomingMethod",
    "Direction",
    "IoType",
    "Logic",
    "ModuleName",
    "parse_enum",
    "spellings",
]


class AxisType(StrEnum):
    LINEAR = "linear"  # mm, mm/s, mm/s^2
    ROTARY = "rotary"  # deg, deg/s, deg/s^2


class SafeStopCategory(StrEnum):
    STO = "STO"  # torque off at once, brake engaged
    SS1 = "SS1"  # ramp at max_decel_safe, then STO after sto_brake_delay
    SS2 = "SS2"  # ramp, then hold position with ss2_holding_torque


class LagPolicy(StrEnum):
    """What a lag (following) error beyond `lag_error_limit` does.

    Mapping of the upstream spellings (DESIGN.md names win, the seed's are aliases):
        "Critical"            -> CRITICAL  safety stop of the machine
        "Unwanted", "Error"   -> UNWANTED  axis error (this axis stops)
        "Neutral",  "Warning" -> NEUTRAL   flag only, motion continues
        "Desired"             -> DESIRED   ignored (lag expected, e.g. torque mode)
    Default (seed: "Error"): UNWANTED.
    """

    CRITICAL = "Critical"
    UNWANTED = "Unwanted"
    NEUTRAL = "Neutral"
    DESIRED = "Desired"
    ERROR = "Unwanted"  # alias: LagPolicy.ERROR is LagPolicy.UNWANTED
    WARNING = "Neutral"  # alias: LagPolicy.WARNING is LagPolicy.NEUTRAL


class HomingMethod(StrEnum):
    """Homing methods; "HardStop" is another spelling of "TorqueLimit" (drive against a stop
    until the torque reaches `torque_limit`)."""

    HOME_SENSOR = "HomeSensor"  # DI role Ref<N>
    LIMIT_SWITCH = "LimitSwitch"  # DI role LimitMin<N> / LimitMax<N> by approach_direction
    TORQUE_LIMIT = "TorqueLimit"
    HARD_STOP = "TorqueLimit"  # alias
    INDEX_PULSE = "IndexPulse"  # encoder index from the drive
    ABSOLUTE = "Absolute"  # absolute encoder: referenced at power-on
    NO_HOMING = "NoHoming"  # never referenced (e.g. a velocity-mode spindle)


class Direction(StrEnum):
    POSITIVE = "Positive"
    NEGATIVE = "Negative"


class IoType(StrEnum):
    DI = "di"
    DO = "do"
    AI = "ai"
    AO = "ao"


class Logic(StrEnum):
    """Contact logic of a DI: logical value = physical level XOR (logic is NC)."""

    NO = "NO"  # normally open: physical 1 = active
    NC = "NC"  # normally closed: physical 0 = active (wire break reads as active)


class ModuleName(StrEnum):
    """Processes started by the watchdog ([watchdog.modules.<name>] in config.toml)."""

    HAL = "hal"
    CU = "cu"
    RE = "re"
    MQTT = "mqtt"
    GRPC = "grpc"


_EXTRA: dict[type[Enum], dict[str, Enum]] = {
    LagPolicy: {"Error": LagPolicy.UNWANTED, "Warning": LagPolicy.NEUTRAL},
    HomingMethod: {"HardStop": HomingMethod.TORQUE_LIMIT},
}


def spellings(cls: type[Enum]) -> dict[str, Enum]:
    """Every accepted TOML spelling of `cls` -> member."""
    out: dict[str, Enum] = {m.value: m for m in cls}
    out.update(_EXTRA.get(cls, {}))
    return out


def parse_enum(cls: type[Enum], text: str) -> Enum:
    """Member for a TOML spelling (exact, case-sensitive); ValueError lists the accepted ones."""
    table = spellings(cls)
    try:
        return table[text]
    except KeyError:
        allowed = ", ".join(f'"{s}"' for s in table)
        raise ValueError(f"{text!r} is not one of {allowed}") from None
