"""CiA 402 master side: statusword -> drive state, and the controlword that walks a drive towards what the HAL wants.

Enable high walks SWITCH ON DISABLED -> READY -> SWITCHED ON -> OPERATION ENABLED; enable low shuts down (or quick
stops); a FAULT is latched while enable stays high and reset (controlword bit 7 edge) once it goes low, like the sim.
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


CW_DISABLE_VOLTAGE = 0x0000
CW_QUICK_STOP = 0x0002
CW_SHUTDOWN = 0x0006
CW_SWITCH_ON = 0x0007
CW_ENABLE_OPERATION = 0x000F
CW_FAULT_RESET = 0x0080


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


def controlword(state: DriveState, enable: bool, prev_cw: int, quick_stop: bool = False) -> int:
    """Next controlword: one CiA 402 transition per exchange towards the wanted state."""
    if state in (DriveState.FAULT, DriveState.FAULT_REACTION_ACTIVE):
        if enable or state is DriveState.FAULT_REACTION_ACTIVE:
            return CW_DISABLE_VOLTAGE  # latched while the CU still asks for torque
        return CW_DISABLE_VOLTAGE if prev_cw & CW_FAULT_RESET else CW_FAULT_RESET  # a rising edge each second exchange
    if not enable:
        if state is DriveState.OPERATION_ENABLED and quick_stop:
            return CW_QUICK_STOP
        if state is DriveState.QUICK_STOP_ACTIVE:
            return CW_QUICK_STOP  # let the drive finish its quick-stop ramp
        return CW_SHUTDOWN if state is not DriveState.SWITCH_ON_DISABLED else CW_DISABLE_VOLTAGE
    if state is DriveState.SWITCH_ON_DISABLED:
        return CW_SHUTDOWN
    if state is DriveState.READY_TO_SWITCH_ON:
        return CW_SWITCH_ON
    if state in (DriveState.SWITCHED_ON, DriveState.OPERATION_ENABLED):
        return CW_ENABLE_OPERATION
    if state is DriveState.QUICK_STOP_ACTIVE:
        return CW_DISABLE_VOLTAGE  # leave quick stop through SWITCH ON DISABLED, then enable again
    return CW_DISABLE_VOLTAGE
