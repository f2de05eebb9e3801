"""The CiA 402 drive state machine as the master sees it, for every bus (EtherCAT CoE, CANopen).

statusword -> DriveState, and the next controlword that walks a drive towards what the HAL wants: enable
high walks SWITCH ON DISABLED -> READY -> SWITCHED ON -> OPERATION ENABLED; enable low shuts down (or
quick-stops); a FAULT stays latched while enable is high and is reset by a rising edge of bit 7 once it
is low. Pure functions on ints, called once per drive per cycle.
"""
from __future__ import annotations

import enum


class DriveState(enum.IntEnum):
    NOT_READY = 0
    SWITCH_ON_DISABLED = 1
    READY_TO_SWITCH_ON = 2
    SWITCHED_ON = 3
    OPERATION_ENABLED = 4
    QUICK_STOP_ACTIVE = 5
    FAULT_REACTION_ACTIVE = 6
    FAULT = 7


# controlwords (CiA 402 device control commands)
CW_DISABLE_VOLTAGE = 0x0000
CW_QUICK_STOP = 0x0002
CW_SHUTDOWN = 0x0006
CW_SWITCH_ON = 0x0007
CW_ENABLE_OPERATION = 0x000F
CW_FAULT_RESET = 0x0080

FAULTS = (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE)


def decode(sw: int) -> DriveState:
    """The drive state a statusword shows (CiA 402 table of statusword bits 0-3, 5, 6)."""
    if sw & 0x4F == 0x08:
        return DriveState.FAULT
    if sw & 0x4F == 0x0F:
        return DriveState.FAULT_REACTION_ACTIVE
    if sw & 0x4F == 0x40:
        return DriveState.SWITCH_ON_DISABLED
    low = sw & 0x6F
    if low == 0x21:
        return DriveState.READY_TO_SWITCH_ON
    if low == 0x23:
        return DriveState.SWITCHED_ON
    if low == 0x27:
        return DriveState.OPERATION_ENABLED
    if low == 0x07:
        return DriveState.QUICK_STOP_ACTIVE
    return DriveState.NOT_READY


def controlword(state: DriveState, enable: bool, may_reset: bool, quick_stop: bool = False) -> int:
    """Next controlword: one CiA 402 transition per exchange towards the wanted state.

    `may_reset`: a fault reset may be sent now (the caller paces it so that bit 7 sees a rising edge
    and the drive's error code stays visible for a while); `quick_stop`: enable low stops through
    QUICK STOP ACTIVE (the drive's own ramp) instead of SHUTDOWN.
    """
    if state in FAULTS:
        return CW_FAULT_RESET if (not enable and may_reset and state is DriveState.FAULT) else CW_DISABLE_VOLTAGE
    if not enable:
        if quick_stop and state in (DriveState.OPERATION_ENABLED, DriveState.QUICK_STOP_ACTIVE):
            return CW_QUICK_STOP  # let the drive finish its quick-stop ramp
        if state is DriveState.QUICK_STOP_ACTIVE:
            return CW_DISABLE_VOLTAGE
        return CW_DISABLE_VOLTAGE if state is DriveState.SWITCH_ON_DISABLED else CW_SHUTDOWN
    if state in (DriveState.SWITCH_ON_DISABLED, DriveState.NOT_READY):
        return CW_SHUTDOWN
    if state is DriveState.READY_TO_SWITCH_ON:
        return CW_SWITCH_ON
    if state is DriveState.QUICK_STOP_ACTIVE:
        return CW_DISABLE_VOLTAGE  # leave quick stop through SWITCH ON DISABLED, then enable again
    return CW_ENABLE_OPERATION  # switched on -> enable; enabled -> stay
