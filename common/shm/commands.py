"""Command vocabularies and result codes carried by the command and ack rings.

One enum per consumer (CU, HAL, RE); each path's allowed subset is listed here too.
"""
from __future__ import annotations

import enum


class CuCommand(enum.IntEnum):
    """Commands the CU executes (union of upstream's RE->CU and RPC->CU vocabularies)."""

    NOP = 0
    MOVE_ABSOLUTE = 1   # axis, args[0]=position, args[1]=velocity (0: max), args[2]=accel (0: max)
    MOVE_RELATIVE = 2   # axis, args[0]=distance, args[1]=velocity, args[2]=accel
    MOVE_VELOCITY = 3   # axis, args[0]=velocity (signed), args[1]=accel
    HOME = 4            # axis
    STOP = 5            # axis (0 = all), controlled ramp stop
    EMERGENCY_STOP = 6  # machine-wide safety stop
    ENABLE_AXIS = 7     # axis
    DISABLE_AXIS = 8    # axis
    SET_MODE = 9        # axis, pin=OperationalMode
    COUPLE = 10         # axis (slave), pin=master axis, args[0]=ratio
    DECOUPLE = 11       # axis
    GEAR_CHANGE = 12    # axis, pin=gear (1..4, 0=neutral)
    ALLOW_MANUAL_MODE = 13  # args[0]=1 allow / 0 forbid
    JOG_POSITIVE = 14   # axis, args[0]=speed (0: jog default)
    JOG_NEGATIVE = 15   # axis, args[0]=speed
    JOG_STOP = 16       # axis
    RESET_ERROR = 17    # axis (0 = machine + all axes); also clears SafetyStop when inputs are healthy
    SET_MACHINE_STATE = 18  # pin=MachineState requested
    ACQUIRE_LOCK = 19   # axis
    RELEASE_LOCK = 20   # axis
    RELOAD_CONFIG = 21  # text=config dir ("" = current)


RE_TO_CU_ALLOWED = frozenset(
    {
        CuCommand.NOP, CuCommand.MOVE_ABSOLUTE, CuCommand.MOVE_RELATIVE, CuCommand.MOVE_VELOCITY,
        CuCommand.HOME, CuCommand.STOP, CuCommand.EMERGENCY_STOP, CuCommand.ENABLE_AXIS,
        CuCommand.DISABLE_AXIS, CuCommand.SET_MODE, CuCommand.COUPLE, CuCommand.DECOUPLE,
        CuCommand.GEAR_CHANGE, CuCommand.ALLOW_MANUAL_MODE, CuCommand.ACQUIRE_LOCK, CuCommand.RELEASE_LOCK,
    }
)
RPC_TO_CU_ALLOWED = frozenset(
    {
        CuCommand.JOG_POSITIVE, CuCommand.JOG_NEGATIVE, CuCommand.JOG_STOP, CuCommand.MOVE_ABSOLUTE,
        CuCommand.ENABLE_AXIS, CuCommand.DISABLE_AXIS, CuCommand.HOME, CuCommand.RESET_ERROR,
        CuCommand.SET_MACHINE_STATE, CuCommand.SET_MODE, CuCommand.GEAR_CHANGE, CuCommand.ACQUIRE_LOCK,
        CuCommand.RELEASE_LOCK, CuCommand.ALLOW_MANUAL_MODE, CuCommand.RELOAD_CONFIG, CuCommand.STOP,
        CuCommand.EMERGENCY_STOP, CuCommand.NOP,
    }
)


class HalCommand(enum.IntEnum):
    """Direct I/O commands the HAL executes for RE and RPC (only on pins without a role)."""

    NOP = 0
    SET_DO = 1   # pin, args[0]=0/1 (logical value)
    SET_AO = 2   # pin, args[0]=value in engineering units
    PULSE_DO = 3  # pin, args[0]=pulse length ms


class ReCommand(enum.IntEnum):
    """Recipe executor commands from the gRPC bridge."""

    NOP = 0
    LOAD = 1    # text=recipe name
    START = 2
    PAUSE = 3
    RESUME = 4
    ABORT = 5
    STEP = 6    # run exactly one step, then pause
    RESET = 7   # leave Completed/Aborted/Error for Idle


class ResultCode(enum.IntEnum):
    """Ack result codes. The gRPC bridge maps them to status codes."""

    OK = 0
    INVALID_ARGUMENT = 1     # value out of range, unknown axis/pin, not finite
    STATE_FORBIDS = 2        # precondition failed: machine/axis state forbids it (reason in message)
    IO_ROLE_OWNED = 3        # ERR_IO_ROLE_OWNED: the pin belongs to the CU
    BUSY = 4                 # ring full / resource exhausted
    LOCKED = 5               # another source holds the axis lock
    UNKNOWN_COMMAND = 6      # code not in this path's vocabulary
    NOT_EXECUTED = 7         # consumer restarted or skipped it; nothing was done
    SAFETY = 8               # refused by safety (E-stop, SafetyStop, guard)
    TIMEOUT = 9              # the operation started but did not finish in time
    INTERNAL = 10            # a bug: reported, never hidden
    NOT_FOUND = 11           # e.g. recipe name unknown
