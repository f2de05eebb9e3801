"""Validation and execution of HalCommand (SET_DO, SET_AO, PULSE_DO, NOP) from RE and RPC.

Every command gets exactly one (ResultCode, message); role pins are refused (IO_ROLE_OWNED).
"""
from __future__ import annotations

import math

from common.config import IoConfig, IoType
from common.config.errors import fmt_num
from common.consts import IO_PULSE_MS_BOUNDS, MAX_AO, MAX_DO
from common.shm.commands import HalCommand, ResultCode
from common.shm.rings import Command

from .io import IoProcessor


class CommandExecutor:
    """Checks a command against io.toml and the HAL's state, then applies it to the IoProcessor.

    Checks, in order: known code; pin configured for that type (INVALID_ARGUMENT); pin without a
    role (IO_ROLE_OWNED, naming pin and role); value finite and in range (INVALID_ARGUMENT);
    CU connected (STATE_FORBIDS: outputs are held in their safe state without it); E-stop
    (SAFETY: a DO without keep_estop cannot be switched on while the E-stop is pressed).
    """

    def __init__(self, io: IoConfig, proc: IoProcessor) -> None:
        self.io = io
        self.proc = proc

    def execute(self, cmd: Command, now_ns: int, cu_connected: bool) -> tuple[ResultCode, str]:
        try:
            code = HalCommand(cmd.code)
        except ValueError:
            return ResultCode.UNKNOWN_COMMAND, f"unknown HAL command code {cmd.code} (known: " + \
                ", ".join(f"{c.value}={c.name}" for c in HalCommand) + ")"
        if code is HalCommand.NOP:
            return ResultCode.OK, ""
        io_type = IoType.AO if code is HalCommand.SET_AO else IoType.DO
        limit = MAX_AO if io_type is IoType.AO else MAX_DO
        pin = cmd.pin
        kind = io_type.value
        if not 0 <= pin < limit:
            return ResultCode.INVALID_ARGUMENT, f"{kind} pin {pin} out of range 0..{limit - 1}"
        point = self.io.point(io_type, pin)
        if point is None:
            return ResultCode.INVALID_ARGUMENT, f"{kind} pin {pin} is not configured in io.toml"
        if point.role is not None:
            return ResultCode.IO_ROLE_OWNED, (
                f"ERR_IO_ROLE_OWNED: {kind} pin {pin} has role '{point.role}' (owned by the CU)"
            )
        value = cmd.args[0]
        if not math.isfinite(value):
            return ResultCode.INVALID_ARGUMENT, f"{kind} pin {pin}: value {value} is not a finite number"
        if code is HalCommand.SET_AO:
            if not point.min <= value <= point.max:
                return ResultCode.INVALID_ARGUMENT, (
                    f"ao pin {pin}: {fmt_num(value)} outside [{fmt_num(point.min)}, {fmt_num(point.max)}] {point.unit}"
                ).rstrip()
        elif code is HalCommand.SET_DO:
            if value not in (0.0, 1.0):
                return ResultCode.INVALID_ARGUMENT, f"do pin {pin}: value {fmt_num(value)} must be 0 or 1"
        else:  # PULSE_DO
            length_ms = value if value > 0 else float(point.pulse_ms)
            lo, hi = IO_PULSE_MS_BOUNDS
            if length_ms <= 0:
                return ResultCode.INVALID_ARGUMENT, (
                    f"do pin {pin}: PULSE_DO needs a length in ms (args[0] > 0) or a configured pulse"
                )
            if length_ms > hi:
                return ResultCode.INVALID_ARGUMENT, f"do pin {pin}: pulse {fmt_num(length_ms)} ms above {hi} ms"
        if not cu_connected:
            return ResultCode.STATE_FORBIDS, "CU not connected: outputs are held in their safe state"
        switching_on = code is HalCommand.PULSE_DO or (code is HalCommand.SET_DO and value == 1.0)
        if switching_on and self.proc.estop and not point.keep_estop:
            return ResultCode.SAFETY, f"E-stop active: do pin {pin} (no keep_estop) is held off"
        if code is HalCommand.SET_DO:
            self.proc.set_do(pin, value == 1.0, now_ns)
            return ResultCode.OK, f"do {pin} = {int(value)}"
        if code is HalCommand.PULSE_DO:
            self.proc.pulse_do(pin, int(round(length_ms * 1e6)), now_ns)
            return ResultCode.OK, f"do {pin} pulsed {fmt_num(length_ms)} ms"
        self.proc.set_ao(pin, float(value), now_ns)
        return ResultCode.OK, f"ao {pin} = {fmt_num(value)}"
