"""An emulated CiA 402 servo drive: controlword/statusword state machine, CSP / PV / CST, quick stop, faults.

Dynamics per SYNC: CSP follows the target at up to the profile velocity; PV ramps at the profile acceleration.
"""
from __future__ import annotations

import enum
from typing import Any

from .node import EmulatedNode


class State(enum.IntEnum):
    NOT_READY = 0
    SWITCH_ON_DISABLED = 1
    READY_TO_SWITCH_ON = 2
    SWITCHED_ON = 3
    OPERATION_ENABLED = 4
    QUICK_STOP_ACTIVE = 5
    FAULT = 6


STATUSWORD = {
    State.NOT_READY: 0x0000, State.SWITCH_ON_DISABLED: 0x0040, State.READY_TO_SWITCH_ON: 0x0031,
    State.SWITCHED_ON: 0x0033, State.OPERATION_ENABLED: 0x0037, State.QUICK_STOP_ACTIVE: 0x0017,
    State.FAULT: 0x0008,
}
SW_REMOTE = 0x0200
SW_TARGET_REACHED = 0x0400
MODE_CSP, MODE_PV, MODE_CST = 8, 3, 10
TORQUE_ACCEL = 20_000.0  # counts/s^2 per per-mille of rated torque (CST)
MAX_STEP_S = 0.05  # a late SYNC integrates at most this much


def command(cw: int) -> str:
    """CiA 402 device control command encoded in a controlword."""
    if cw & 0x0080:
        return "fault_reset"
    if not cw & 0x0002:
        return "disable_voltage"
    if not cw & 0x0004:
        return "quick_stop"
    if not cw & 0x0001:
        return "shutdown"
    return "enable_operation" if cw & 0x0008 else "switch_on"


TRANSITIONS: dict[tuple[State, str], State] = {
    (State.SWITCH_ON_DISABLED, "shutdown"): State.READY_TO_SWITCH_ON,
    (State.READY_TO_SWITCH_ON, "switch_on"): State.SWITCHED_ON,
    (State.READY_TO_SWITCH_ON, "enable_operation"): State.OPERATION_ENABLED,
    (State.READY_TO_SWITCH_ON, "disable_voltage"): State.SWITCH_ON_DISABLED,
    (State.READY_TO_SWITCH_ON, "quick_stop"): State.SWITCH_ON_DISABLED,
    (State.SWITCHED_ON, "enable_operation"): State.OPERATION_ENABLED,
    (State.SWITCHED_ON, "shutdown"): State.READY_TO_SWITCH_ON,
    (State.SWITCHED_ON, "disable_voltage"): State.SWITCH_ON_DISABLED,
    (State.SWITCHED_ON, "quick_stop"): State.SWITCH_ON_DISABLED,
    (State.OPERATION_ENABLED, "switch_on"): State.SWITCHED_ON,
    (State.OPERATION_ENABLED, "shutdown"): State.READY_TO_SWITCH_ON,
    (State.OPERATION_ENABLED, "disable_voltage"): State.SWITCH_ON_DISABLED,
    (State.OPERATION_ENABLED, "quick_stop"): State.QUICK_STOP_ACTIVE,
    (State.QUICK_STOP_ACTIVE, "disable_voltage"): State.SWITCH_ON_DISABLED,
    (State.QUICK_STOP_ACTIVE, "enable_operation"): State.OPERATION_ENABLED,
}


class Drive402(EmulatedNode):
    """A servo drive with a plain kinematic model (positions in counts)."""

    kind = "drive"

    def on_reset(self, full: bool) -> None:
        if full or not hasattr(self, "state"):
            self.position = 0.0
            self.velocity = 0.0
        self.state = State.SWITCH_ON_DISABLED
        self._cw = 0
        self._last = 0.0
        self._publish()

    def _on_write(self, index: int, subindex: int, od: Any, data: bytes) -> None:
        super()._on_write(index, subindex, od, data)
        if index == 0x6040:
            self._controlword(int.from_bytes(data[:2], "little"))
        elif index == 0x6060:
            self.node.data_store.setdefault(0x6061, {})[0] = bytes(data[:1])

    def _controlword(self, cw: int) -> None:
        prev, self._cw = self._cw, cw
        if self.state is State.FAULT:
            if cw & 0x0080 and not prev & 0x0080:  # rising edge: fault reset
                self.state = State.SWITCH_ON_DISABLED
                self.put(0x603F, 0, 0)
                self.put(0x1001, 0, 0)
                if not self.silent:
                    self.node.emcy.reset()
        else:
            new = TRANSITIONS.get((self.state, command(cw)))
            if new is not None:
                if new is State.OPERATION_ENABLED and self.state is not State.QUICK_STOP_ACTIVE:
                    self.put(0x607A, 0, int(round(self.position)))  # no jump on enable
                self.state = new
        self._publish()

    def on_sync(self, now: float) -> None:
        dt = min(now - self._last, MAX_STEP_S) if self._last else 0.0
        self._last = now
        mode = int(self.get(0x6060))
        if self.state is State.OPERATION_ENABLED and dt > 0:
            if mode == MODE_CSP:
                target = float(self.get(0x607A))
                vmax = float(self.get(0x6081))
                step = max(-vmax * dt, min(vmax * dt, target - self.position))
                self.position += step
                self.velocity = step / dt
            elif mode == MODE_PV:
                target_v = float(self.get(0x60FF))
                a = float(self.get(0x6083)) * dt
                self.velocity += max(-a, min(a, target_v - self.velocity))
                self.position += self.velocity * dt
            elif mode == MODE_CST:
                torque = float(self.get(0x6071))
                self.velocity += (TORQUE_ACCEL * torque - 5.0 * self.velocity) * dt
                self.position += self.velocity * dt
                self.put(0x6077, 0, int(torque))
        elif self.state is State.QUICK_STOP_ACTIVE and dt > 0:
            a = float(self.get(0x6085)) * dt
            self.velocity = 0.0 if abs(self.velocity) <= a else self.velocity - a * (1 if self.velocity > 0 else -1)
            self.position += self.velocity * dt
            if self.velocity == 0.0:
                self.state = State.SWITCH_ON_DISABLED  # quick stop option code 2: stop, then disabled
        else:
            self.velocity = 0.0
        if mode != MODE_CST:
            self.put(0x6077, 0, 0)  # no load model outside CST
        self._publish()

    def _publish(self) -> None:
        sw = STATUSWORD[self.state] | SW_REMOTE
        mode = int(self.get(0x6060))
        if self.state is State.OPERATION_ENABLED:
            if mode == MODE_CSP and abs(float(self.get(0x607A)) - self.position) < 1.0:
                sw |= SW_TARGET_REACHED
            elif mode == MODE_PV and abs(float(self.get(0x60FF)) - self.velocity) < 1.0:
                sw |= SW_TARGET_REACHED
        self.put(0x6041, 0, sw)
        self.put(0x6064, 0, int(round(self.position)))
        self.put(0x606C, 0, int(round(self.velocity)))

    def on_emcy(self, code: int) -> None:
        self.state = State.FAULT
        self.velocity = 0.0
        self.put(0x603F, 0, code & 0xFFFF)
        self._publish()

    def profile_status(self) -> dict[str, Any]:
        return {"state": self.state.name, "statusword": int(self.get(0x6041)), "controlword": self._cw,
                "mode": int(self.get(0x6060)), "position": int(round(self.position)),
                "velocity": int(round(self.velocity)), "target_position": int(self.get(0x607A)),
                "target_velocity": int(self.get(0x60FF)), "target_torque": int(self.get(0x6071)),
                "error_code": int(self.get(0x603F))}
