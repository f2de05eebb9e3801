"""State enums and error-flag tables shared by every process that shows or drives the machine.

The CU implements the transitions; the bridges and tools only decode these numbers to names.
"""
from __future__ import annotations

import enum


class MachineState(enum.IntEnum):
    STOPPED = 0
    STARTING = 1
    IDLE = 2
    MANUAL = 3
    ACTIVE = 4
    SERVICE = 5
    SYSTEM_ERROR = 6


class SafetyState(enum.IntEnum):
    SAFE = 0
    SAFE_REDUCED_SPEED = 1
    SAFETY_STOP = 2  # cleared only by an operator reset


class PowerState(enum.IntEnum):
    POWER_OFF = 0
    POWERING_ON = 1
    STANDBY = 2
    MOTION = 3
    POWERING_OFF = 4
    NO_BRAKE = 5
    POWER_ERROR = 6


class MotionState(enum.IntEnum):
    STANDSTILL = 0
    ACCELERATING = 1
    CONSTANT_VELOCITY = 2
    DECELERATING = 3
    STOPPING = 4
    EMERGENCY_STOP = 5
    HOMING = 6
    GEAR_ASSIST_MOTION = 7
    MOTION_ERROR = 8


class OperationalMode(enum.IntEnum):
    POSITION = 0
    VELOCITY = 1
    TORQUE = 2
    MANUAL = 3
    TEST = 4


class CouplingState(enum.IntEnum):
    UNCOUPLED = 0
    MASTER = 1
    SLAVE_COUPLED = 2
    SLAVE_MODULATED = 3
    WAITING_SYNC = 4
    SYNCHRONIZED = 5
    SYNC_LOST = 6
    COUPLING = 7
    DECOUPLING = 8


class GearboxState(enum.IntEnum):
    NO_GEARBOX = 0
    GEAR1 = 1
    GEAR2 = 2
    GEAR3 = 3
    GEAR4 = 4
    NEUTRAL = 5
    SHIFTING = 6
    GEARBOX_ERROR = 7
    UNKNOWN = 8


class LoadingState(enum.IntEnum):
    PRODUCTION = 0
    READY_FOR_LOADING = 1
    LOADING_BLOCKED = 2
    LOADING_MANUAL_ALLOWED = 3


class SafeStopCategory(enum.IntEnum):
    NONE = 0
    STO = 1
    SS1 = 2
    SS2 = 3


class CommandSource(enum.IntEnum):
    """Who holds an axis's command lock (one commanding source per axis)."""

    NONE = 0
    RE = 1
    RPC = 2


class ReState(enum.IntEnum):
    """Recipe executor states."""

    IDLE = 0
    LOADED = 1
    RUNNING = 2
    PAUSED = 3
    STOPPING = 4
    COMPLETED = 5
    ABORTED = 6
    ERROR = 7


class StepResult(enum.IntEnum):
    NONE = 0
    RUNNING = 1
    OK = 2
    FAILED = 3
    SKIPPED = 4


class DriverState(enum.IntEnum):
    """Per-axis driver state reported by the HAL."""

    OFFLINE = 0
    INIT = 1
    READY = 2
    ENABLED = 3
    FAULT = 4
    DEGRADED = 5  # the driver as a whole: running, but part of the bus is missing or recovering


class AxisError(enum.IntFlag):
    """Per-axis error flags (u64 in the segments; never truncated)."""

    NONE = 0
    LAG_ERROR = 1 << 0
    DRIVE_FAULT = 1 << 1
    DRIVE_NOT_READY_TIMEOUT = 1 << 2
    BRAKE_RELEASE_TIMEOUT = 1 << 3
    BRAKE_ENGAGE_TIMEOUT = 1 << 4
    LIMIT_MIN = 1 << 5
    LIMIT_MAX = 1 << 6
    SOFT_LIMIT_MIN = 1 << 7
    SOFT_LIMIT_MAX = 1 << 8
    HOMING_TIMEOUT = 1 << 9
    HOMING_FAILED = 1 << 10
    SYNC_ERROR = 1 << 11
    GEAR_CHANGE_FAILED = 1 << 12
    HOLD_CHECK_FAILED = 1 << 13
    GUARD_OPEN = 1 << 14
    NOT_REFERENCED = 1 << 15
    LAG_WARNING = 1 << 16
    MASTER_FAULT = 1 << 17


class MachineError(enum.IntFlag):
    """Machine-level error flags (u64)."""

    NONE = 0
    ESTOP = 1 << 0
    HAL_STALE = 1 << 1
    HAL_MISSING = 1 << 2
    CYCLE_OVERRUN = 1 << 3
    AXIS_ERROR = 1 << 4
    SAFETY_STOP = 1 << 5
    GUARD_OPEN = 1 << 6
    LAG_CRITICAL = 1 << 7
    CONFIG_RELOAD_FAILED = 1 << 8
    MANUAL_TIMEOUT = 1 << 9
    RE_LOST = 1 << 10
    RECOVERY_REQUIRED = 1 << 11


AXIS_ERROR_TEXT: dict[AxisError, str] = {
    AxisError.LAG_ERROR: "following (lag) error beyond lag_error_limit",
    AxisError.DRIVE_FAULT: "drive reports a fault",
    AxisError.DRIVE_NOT_READY_TIMEOUT: "drive did not become ready within 5 s",
    AxisError.BRAKE_RELEASE_TIMEOUT: "brake not confirmed released within release_timeout",
    AxisError.BRAKE_ENGAGE_TIMEOUT: "brake not confirmed engaged within engage_timeout",
    AxisError.LIMIT_MIN: "minimum limit switch hit",
    AxisError.LIMIT_MAX: "maximum limit switch hit",
    AxisError.SOFT_LIMIT_MIN: "target below soft limit min_pos",
    AxisError.SOFT_LIMIT_MAX: "target above soft limit max_pos",
    AxisError.HOMING_TIMEOUT: "homing did not finish within its timeout",
    AxisError.HOMING_FAILED: "homing failed",
    AxisError.SYNC_ERROR: "coupled axis out of sync beyond max_sync_error",
    AxisError.GEAR_CHANGE_FAILED: "gear change failed",
    AxisError.HOLD_CHECK_FAILED: "axis moved during the brake hold check",
    AxisError.GUARD_OPEN: "guard opened during motion",
    AxisError.NOT_REFERENCED: "axis not referenced (speed limited to 5 %)",
    AxisError.LAG_WARNING: "lag error beyond limit (flag only)",
    AxisError.MASTER_FAULT: "master axis of a coupling is in error",
}

MACHINE_ERROR_TEXT: dict[MachineError, str] = {
    MachineError.ESTOP: "emergency stop pressed",
    MachineError.HAL_STALE: "HAL heartbeat stale",
    MachineError.HAL_MISSING: "HAL segment missing",
    MachineError.CYCLE_OVERRUN: "control cycle overrunning: more than 10 missed ticks in the last second",
    MachineError.AXIS_ERROR: "one or more axes in error",
    MachineError.SAFETY_STOP: "safety stop active: operator reset required",
    MachineError.GUARD_OPEN: "guard open",
    MachineError.LAG_CRITICAL: "critical lag error",
    MachineError.CONFIG_RELOAD_FAILED: "configuration reload refused",
    MachineError.MANUAL_TIMEOUT: "manual mode timed out",
    MachineError.RE_LOST: "recipe executor lost while commanding axes",
    MachineError.RECOVERY_REQUIRED: "recovery authorization required (reset)",
}


def axis_error_reasons(flags: int) -> list[str]:
    """Readable reasons for every set axis error flag, in bit order."""
    return [text for flag, text in AXIS_ERROR_TEXT.items() if flags & flag]


def machine_error_reasons(flags: int) -> list[str]:
    return [text for flag, text in MACHINE_ERROR_TEXT.items() if flags & flag]


def enum_name(enum_cls: type[enum.IntEnum], value: int) -> str:
    """Name for a stored enum value, `UNKNOWN(<n>)` if out of range (dashboards must not crash)."""
    try:
        return enum_cls(int(value)).name
    except ValueError:
        return f"UNKNOWN({int(value)})"
