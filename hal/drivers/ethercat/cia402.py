"""The CiA 402 drive state machine as the MainDevice sees it: statusword -> state, (state, enable) -> controlword.

Pure functions on ints, used once per drive per cycle by the EtherCAT driver.
"""
from __future__ import annotations

import enum


class Cia402State(enum.IntEnum):
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
CW_SHUTDOWN = 0x0006
CW_SWITCH_ON = 0x0007
CW_ENABLE_OPERATION = 0x000F
CW_QUICK_STOP = 0x0002
CW_FAULT_RESET = 0x0080


def decode(sw: int) -> Cia402State:
    """The state a statusword shows (bits 0-3, 5, 6)."""
    if sw & 0x4F == 0x00:
        return Cia402State.NOT_READY
    if sw & 0x4F == 0x40:
        return Cia402State.SWITCH_ON_DISABLED
    if sw & 0x6F == 0x21:
        return Cia402State.READY_TO_SWITCH_ON
    if sw & 0x6F == 0x23:
        return Cia402State.SWITCHED_ON
    if sw & 0x6F == 0x27:
        return Cia402State.OPERATION_ENABLED
    if sw & 0x6F == 0x07:
        return Cia402State.QUICK_STOP_ACTIVE
    if sw & 0x4F == 0x0F:
        return Cia402State.FAULT_REACTION_ACTIVE
    if sw & 0x4F == 0x08:
        return Cia402State.FAULT
    return Cia402State.NOT_READY


def controlword(state: Cia402State, enable: bool, reset_phase: bool) -> int:
    """The next controlword: walk up to Operation enabled while `enable`, else shut down.

    A fault is reset only while enable is low (the CU drops enable on a drive fault and raises it again after
    the operator's reset); `reset_phase` alternates so that bit 7 sees a rising edge.
    """
    if state in (Cia402State.FAULT, Cia402State.FAULT_REACTION_ACTIVE):
        return CW_FAULT_RESET if (not enable and reset_phase and state is Cia402State.FAULT) else CW_DISABLE_VOLTAGE
    if not enable:
        return CW_SHUTDOWN if state is not Cia402State.QUICK_STOP_ACTIVE else CW_DISABLE_VOLTAGE
    if state is Cia402State.SWITCH_ON_DISABLED or state is Cia402State.NOT_READY:
        return CW_SHUTDOWN
    if state is Cia402State.READY_TO_SWITCH_ON:
        return CW_SWITCH_ON
    if state is Cia402State.QUICK_STOP_ACTIVE:
        return CW_DISABLE_VOLTAGE
    return CW_ENABLE_OPERATION  # switched on -> enable; enabled -> stay
