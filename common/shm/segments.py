"""Payload layouts of all 15 segments (numpy structured dtypes) and the table of who writes what.

`hal_cu` and `cu_hal` are byte-identical to upstream evo; the other 13 are evo-python's own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.consts import (
    ACK_MESSAGE_LEN,
    ACK_RING_SLOTS,
    BANK_WORDS,
    CMD_RING_SLOTS,
    MAX_AI,
    MAX_AO,
    MAX_AXES,
    NAME_LEN,
)
from common.shm.p2p import ModuleAbbrev

JITTER_BUCKETS = 32  # cycle-time histogram buckets
JITTER_BUCKET_US = 25  # bucket width; the last bucket collects everything above


def _struct(fields: list[tuple], align: int = 8) -> np.dtype:
    """C-like layout: each field at its natural alignment (max 8), total padded to `align`."""
    names, formats, offsets = [], [], []
    off = 0
    for name, fmt, *shape in fields:
        dt = np.dtype(fmt)
        base = dt.base if dt.subdtype else dt
        fa = 8 if base.fields else min(8, max(1, base.alignment if base.kind != "S" else 1))
        off = (off + fa - 1) // fa * fa
        full = np.dtype((dt, tuple(shape[0]) if shape and isinstance(shape[0], tuple) else shape[0])) if shape else dt
        names.append(name)
        formats.append(full)
        offsets.append(off)
        off += full.itemsize
    size = (off + align - 1) // align * align
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})


# --- upstream-identical active segments --------------------------------------------------------
HAL_AXIS_FEEDBACK = np.dtype(
    {
        "names": ["position", "velocity", "torque_estimate", "drive_ready", "drive_fault", "referenced", "active"],
        "formats": ["<f8", "<f8", "<f8", "u1", "u1", "u1", "u1"],
        "offsets": [0, 8, 16, 24, 25, 26, 27],
        "itemsize": 32,
    }
)
CU_AXIS_COMMAND = np.dtype(
    {
        "names": ["target_position", "target_velocity", "calculated_torque", "torque_offset", "enable", "brake_release"],
        "formats": ["<f8", "<f8", "<f8", "<f8", "u1", "u1"],
        "offsets": [0, 8, 16, 24, 32, 33],
        "itemsize": 40,
    }
)
HAL_TO_CU = np.dtype(
    {
        "names": ["axes", "di_bank", "ai_values", "axis_count"],
        "formats": [(HAL_AXIS_FEEDBACK, (MAX_AXES,)), ("<u8", (BANK_WORDS,)), ("<f8", (MAX_AI,)), "u1"],
        "offsets": [0, 2048, 2176, 10368],
        "itemsize": 10432,
    }
)
CU_TO_HAL = np.dtype(
    {
        "names": ["axes", "do_bank", "ao_values", "axis_count"],
        "formats": [(CU_AXIS_COMMAND, (MAX_AXES,)), ("<u8", (BANK_WORDS,)), ("<f8", (MAX_AO,)), "u1"],
        "offsets": [0, 2560, 2688, 10880],
        "itemsize": 10944,
    }
)

# --- building blocks ---------------------------------------------------------------------------
CYCLE_STATS = _struct(
    [
        ("cycle_count", "<u8"),
        ("cycle_time_ns", "<u8"),  # configured period
        ("last_cycle_ns", "<u8"),  # compute time of the last cycle
        ("max_cycle_ns", "<u8"),
        ("last_wake_jitter_ns", "<i8"),  # wake-up lateness of the last cycle
        ("max_wake_jitter_ns", "<i8"),
        ("overruns", "<u8"),  # cycles whose deadline was missed (skipped ticks are counted)
        ("rt_active", "u1"),  # SCHED_FIFO in force
        ("jitter_hist", "<u4", (JITTER_BUCKETS,)),  # wake lateness, JITTER_BUCKET_US per bucket
    ]
)

COMMAND = _struct(
    [
        ("seq", "<u8"),  # 1-based position in the writer's stream
        ("request_id", "<u8"),  # caller's correlation id, echoed in the ack
        ("issued_ns", "<u8"),  # CLOCK_MONOTONIC at submission
        ("code", "<u2"),  # CuCommand / HalCommand / ReCommand
        ("axis", "<u2"),  # axis id (1-based), 0 = none / all
        ("pin", "<u2"),  # pin number or small enum argument
        ("flags", "<u2"),
        ("args", "<f8", (8,)),
        ("text", f"S{NAME_LEN}"),  # UTF-8, NUL padded (recipe name, config dir, ...)
    ]
)
CMD_RING = _struct(
    [
        ("epoch", "<u8"),  # writer instance id (non-zero); a new one means the writer restarted
        ("count", "<u8"),  # commands written so far by this instance; slot = (seq - 1) % SLOTS
        ("slots", COMMAND, (CMD_RING_SLOTS,)),
    ]
)
ACK = _struct(
    [
        ("request_id", "<u8"),
        ("seq", "<u8"),  # the command's seq
        ("cmd_epoch", "<u8"),  # the command writer's epoch the seq belongs to
        ("result", "<i4"),  # ResultCode
        ("detail", "<u4"),
        ("done_ns", "<u8"),
        ("message", f"S{ACK_MESSAGE_LEN}"),  # readable reason, UTF-8
    ]
)
ACK_RING = _struct(
    [
        ("epoch", "<u8"),  # consumer instance id
        ("cmd_epoch_seen", "<u8"),  # the command writer's epoch these counters refer to
        ("consumed", "<u8"),  # highest command seq consumed (acked or skipped)
        ("count", "<u8"),  # acks written by this consumer instance; slot = (n - 1) % ACK_RING_SLOTS
        ("slots", ACK, (ACK_RING_SLOTS,)),
    ]
)

CU_AXIS_STATUS = _struct(
    [
        ("position", "<f8"),
        ("velocity", "<f8"),
        ("target_position", "<f8"),  # final target of the active move
        ("setpoint_position", "<f8"),  # trajectory set-point of this cycle
        ("setpoint_velocity", "<f8"),
        ("lag_error", "<f8"),
        ("torque", "<f8"),  # commanded torque (% of rated)
        ("error_flags", "<u8"),  # AxisError, never truncated
        ("id", "u1"),
        ("power", "u1"),  # PowerState
        ("motion", "u1"),  # MotionState
        ("mode", "u1"),  # OperationalMode
        ("coupling", "u1"),  # CouplingState
        ("gearbox", "u1"),  # GearboxState
        ("loading", "u1"),  # LoadingState
        ("referenced", "u1"),
        ("in_position", "u1"),
        ("enabled", "u1"),
        ("brake_released", "u1"),
        ("lock_source", "u1"),  # CommandSource
        ("safe_stop", "u1"),  # SafeStopCategory in progress
        ("homing_phase", "u1"),
        ("master_axis", "u1"),
        ("name", f"S{NAME_LEN}"),
    ]
)
CU_STATUS = _struct(
    [
        ("machine_state", "u1"),  # MachineState
        ("safety_state", "u1"),  # SafetyState
        ("axis_count", "u1"),
        ("estop", "u1"),
        ("reduced_speed", "u1"),
        ("manual_allowed", "u1"),
        ("machine_errors", "<u8"),  # MachineError
        ("hal_heartbeat", "<u8"),  # last HAL heartbeat seen
        ("hal_age_cycles", "<u4"),  # cycles since the HAL heartbeat last moved
        ("message", f"S{ACK_MESSAGE_LEN}"),  # latest reason an operator should read
        ("axes", CU_AXIS_STATUS, (MAX_AXES,)),
    ]
)
PID_STATE = _struct(
    [
        ("error", "<f8"),
        ("integral", "<f8"),
        ("derivative", "<f8"),
        ("output", "<f8"),
        ("feedforward", "<f8"),
        ("dob_estimate", "<f8"),
    ]
)
HAL_IO = _struct(
    [
        ("axes", HAL_AXIS_FEEDBACK, (MAX_AXES,)),
        # Banks carry PHYSICAL levels (DI after debounce/enable_pin); the logical value of a pin is
        # derived with IoRegistry (di_logical: XOR NC; DO: XOR inverted) — same as hal_cu/cu_hal.
        ("di_bank", "<u8", (BANK_WORDS,)),
        ("do_bank", "<u8", (BANK_WORDS,)),
        ("ai_values", "<f8", (MAX_AI,)),  # engineering units
        ("ao_values", "<f8", (MAX_AO,)),
        ("axis_count", "u1"),
        ("driver_state", "u1", (MAX_AXES,)),  # DriverState per axis
        ("hal_state", "u1"),  # DriverState of the driver as a whole
        ("cu_connected", "u1"),  # cu_hal attached and fresh (else outputs are safe)
        # The drive's own error code per axis (CiA 402 0x603F, a CANopen EMCY code; 0 = none):
        # common/drive_errors.py turns it into text for the axis error on gRPC and MQTT.
        ("drive_error_code", "<u4", (MAX_AXES,)),
        ("hal_message", f"S{ACK_MESSAGE_LEN}"),  # the driver's health reason (bus lost, AL status, ...)
    ]
)
RE_STATUS = _struct(
    [
        ("re_state", "u1"),  # ReState
        ("step_result", "u1"),  # StepResult of the current/last step
        ("current_step", "<u2"),  # 1-based, 0 = none
        ("step_count", "<u2"),
        ("error_code", "<u4"),  # ResultCode of the failure, 0 = none
        ("cycle_count", "<u8"),  # completed runs of the loaded program
        ("progress", "<f4"),  # 0..100 %
        ("program_name", f"S{NAME_LEN}"),
        ("step_kind", "S16"),
        ("message", f"S{ACK_MESSAGE_LEN}"),  # error message or operator message
    ]
)

# --- the 13 evo-python segments ---------------------------------------------------------------
CU_TO_MQT = _struct([("status", CU_STATUS), ("stats", CYCLE_STATS)], align=64)
HAL_TO_MQT = _struct([("io", HAL_IO), ("stats", CYCLE_STATS)], align=64)
RE_TO_CU = _struct([("ring", CMD_RING), ("re_state", "u1")], align=64)
RE_TO_HAL = _struct([("ring", CMD_RING)], align=64)
RE_TO_MQT = _struct([("status", RE_STATUS)], align=64)
RE_TO_RPC = _struct([("status", RE_STATUS), ("acks", ACK_RING)], align=64)
RPC_TO_CU = _struct([("ring", CMD_RING)], align=64)
RPC_TO_HAL = _struct([("ring", CMD_RING)], align=64)
RPC_TO_RE = _struct([("ring", CMD_RING)], align=64)
CU_TO_RE = _struct([("status", CU_STATUS), ("acks", ACK_RING)], align=64)
CU_TO_RPC = _struct(
    [("status", CU_STATUS), ("stats", CYCLE_STATS), ("pid", PID_STATE, (MAX_AXES,)), ("acks", ACK_RING)], align=64
)
HAL_TO_RPC = _struct([("io", HAL_IO), ("stats", CYCLE_STATS), ("acks", ACK_RING)], align=64)
HAL_TO_RE = _struct([("io", HAL_IO), ("acks", ACK_RING)], align=64)


@dataclass(frozen=True)
class SegmentSpec:
    """One row of the segment table."""

    key: str  # "<src>_<dst>"
    writer: ModuleAbbrev
    reader: ModuleAbbrev
    dtype: np.dtype
    kind: str  # "active" (upstream), "status", "commands"
    description: str

    def name(self, prefix: str | None = None) -> str:
        from common.shm.p2p import segment_name

        return segment_name(self.writer, self.reader, prefix)


_H, _C, _R, _M, _P = ModuleAbbrev.HAL, ModuleAbbrev.CU, ModuleAbbrev.RE, ModuleAbbrev.MQT, ModuleAbbrev.RPC
SEGMENTS: dict[str, SegmentSpec] = {
    s.key: s
    for s in [
        SegmentSpec("hal_cu", _H, _C, HAL_TO_CU, "active", "axis feedback, DI bank, AI values (upstream layout)"),
        SegmentSpec("cu_hal", _C, _H, CU_TO_HAL, "active", "axis commands, DO bank, AO values (upstream layout)"),
        SegmentSpec("cu_mqt", _C, _M, CU_TO_MQT, "status", "machine/safety/axis status snapshot + cycle stats"),
        SegmentSpec("hal_mqt", _H, _M, HAL_TO_MQT, "status", "full I/O and axis feedback + HAL cycle stats"),
        SegmentSpec("re_cu", _R, _C, RE_TO_CU, "commands", "motion commands from recipes (ring)"),
        SegmentSpec("re_hal", _R, _H, RE_TO_HAL, "commands", "direct I/O commands from recipes (ring)"),
        SegmentSpec("re_mqt", _R, _M, RE_TO_MQT, "status", "recipe telemetry"),
        SegmentSpec("re_rpc", _R, _P, RE_TO_RPC, "status", "recipe status + acks of rpc_re"),
        SegmentSpec("rpc_cu", _P, _C, RPC_TO_CU, "commands", "operator commands to the CU (ring)"),
        SegmentSpec("rpc_hal", _P, _H, RPC_TO_HAL, "commands", "operator I/O commands to the HAL (ring)"),
        SegmentSpec("rpc_re", _P, _R, RPC_TO_RE, "commands", "recipe commands (ring)"),
        SegmentSpec("cu_re", _C, _R, CU_TO_RE, "status", "CU status for recipes + acks of re_cu"),
        SegmentSpec("cu_rpc", _C, _P, CU_TO_RPC, "status", "full diagnostics (PID, cycle stats) + acks of rpc_cu"),
        SegmentSpec("hal_rpc", _H, _P, HAL_TO_RPC, "status", "I/O snapshot + HAL stats + acks of rpc_hal"),
        SegmentSpec("hal_re", _H, _R, HAL_TO_RE, "status", "I/O snapshot for recipes + acks of re_hal"),
    ]
}

# Which ack segment answers which command segment.
ACK_PATH: dict[str, str] = {
    "re_cu": "cu_re",
    "rpc_cu": "cu_rpc",
    "re_hal": "hal_re",
    "rpc_hal": "hal_rpc",
    "rpc_re": "re_rpc",
}


def spec(key: str) -> SegmentSpec:
    """Look a segment up by key (`hal_cu`) or by full name (`evo_hal_cu`, any prefix)."""
    if key in SEGMENTS:
        return SEGMENTS[key]
    parts = key.rsplit("_", 2)
    if len(parts) == 3 and f"{parts[1]}_{parts[2]}" in SEGMENTS:
        return SEGMENTS[f"{parts[1]}_{parts[2]}"]
    raise KeyError(f"unknown segment {key!r}; known: {', '.join(SEGMENTS)}")
