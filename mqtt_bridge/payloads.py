"""Segment payloads to JSON-ready dicts: names instead of numbers, values with units, no NaN.

Pure functions (no I/O); the bridge adds timestamps and decides when to publish.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from common.config import AxisConfig, IoConfig
from common.shm.conversions import decode_str
from common.drive_errors import drive_error_text
from common.shm.io_helpers import get_bit
from common.states import (
    DriverState,
    CouplingState,
    GearboxState,
    LoadingState,
    MachineState,
    MotionState,
    OperationalMode,
    PowerState,
    ReState,
    SafetyState,
    StepResult,
    axis_error_reasons,
    enum_name,
    machine_error_reasons,
)

IO_KINDS = ("di", "do", "ai", "ao")


def num(x: Any) -> float | None:
    """A finite float to 12 significant digits (no 5.999999999999998 from scaling round-off),
    or None (JSON has no NaN/inf)."""
    v = float(x)
    return float(f"{v:.12g}") if math.isfinite(v) else None


def quantity(x: Any, unit: str) -> dict[str, Any]:
    return {"value": num(x), "unit": unit}


@dataclass(frozen=True, slots=True)
class AxisInfo:
    """What the bridge needs of an axis's configuration."""

    id: int
    name: str
    unit: str  # "mm" (linear) or "deg" (rotary)

    @classmethod
    def of(cls, axis: AxisConfig) -> "AxisInfo":
        return cls(axis.id, axis.name, "deg" if str(axis.type) == "rotary" else "mm")


@dataclass(frozen=True, slots=True)
class IoPointInfo:
    label: str
    pin: int
    unit: str
    invert: bool = False  # physical level -> logical value (DI: NC contact, DO: inverted output)


def io_points(io: IoConfig) -> dict[str, tuple[IoPointInfo, ...]]:
    """Configured points per kind, labelled (name, else role, else type+pin; made unique by pin)."""
    out: dict[str, tuple[IoPointInfo, ...]] = {}
    for kind in IO_KINDS:
        points = io.points_of(kind)
        seen: dict[str, int] = {}
        for p in points:
            seen[p.label] = seen.get(p.label, 0) + 1
        out[kind] = tuple(
            IoPointInfo(p.label if seen[p.label] == 1 else f"{p.label} ({kind}{p.pin})", p.pin, p.unit,
                        p.inverts_logic)
            for p in points
        )
    return out


def unavailable(status: str) -> dict[str, Any]:
    """What a topic carries while its source is not live: no values, only why."""
    return {"live": False, "status": status}


def state_payload(status: np.ndarray, sources: dict[str, str]) -> dict[str, Any]:
    """Machine + safety state from a cu_mqt `status` (CU_STATUS)."""
    errors = int(status["machine_errors"])
    return {
        "live": True,
        "machine_state": enum_name(MachineState, status["machine_state"]),
        "safety_state": enum_name(SafetyState, status["safety_state"]),
        "estop": bool(status["estop"]),
        "reduced_speed": bool(status["reduced_speed"]),
        "manual_allowed": bool(status["manual_allowed"]),
        "errors": machine_error_reasons(errors),
        "error_flags": errors,
        "message": decode_str(status["message"]),
        "axis_count": int(status["axis_count"]),
        "hal_age_cycles": int(status["hal_age_cycles"]),
        "sources": dict(sources),
    }


def driver_payload(io: np.ndarray) -> dict[str, Any]:
    """The HAL driver's health from a HAL_IO record: state and the driver's reason."""
    return {"state": enum_name(DriverState, io["hal_state"]), "message": decode_str(io["hal_message"])}


def state_unavailable(cu_status: str, sources: dict[str, str]) -> dict[str, Any]:
    return {**unavailable(cu_status), "machine_state": None, "safety_state": None, "sources": dict(sources)}


class _Memo:
    """The last body built per slot (an axis, an I/O kind, the recipe), handed out again while the raw
    record bytes it was built from are the same: an idle machine's scans (10 per second, the JSON tree
    and the Zenoh tree each) rebuild nothing. Bodies handed out are shared: callers copy, never mutate."""

    def __init__(self) -> None:
        self._last: dict[Any, tuple[bytes, dict[str, Any]]] = {}

    def get(self, slot: Any, raw: bytes) -> dict[str, Any] | None:
        hit = self._last.get(slot)
        return hit[1] if hit is not None and hit[0] == raw else None

    def put(self, slot: Any, raw: bytes, body: dict[str, Any]) -> dict[str, Any]:
        self._last[slot] = (raw, body)  # one assignment: safe beside the query thread's reads
        return body


_memo = _Memo()


def axis_payload(info: AxisInfo, ax: Any, feedback: Any | None, drive_error_code: int = 0) -> dict[str, Any]:
    """One axis from a CU_AXIS_STATUS record (+ the HAL's HAL_AXIS_FEEDBACK and the drive's own
    error code when live). The same records give the same (shared) body without rebuilding it."""
    raw = ax.tobytes() + (b"" if feedback is None else feedback.tobytes()) + int(drive_error_code).to_bytes(8, "little")
    body = _memo.get(("axis", info), raw)
    if body is None:
        body = _memo.put(("axis", info), raw, _axis_payload(info, ax, feedback, drive_error_code))
    return body


def _axis_payload(info: AxisInfo, ax: Any, feedback: Any | None, drive_error_code: int) -> dict[str, Any]:
    u = info.unit
    flags = int(ax["error_flags"])
    out: dict[str, Any] = {
        "live": True,
        "id": info.id,
        "name": info.name,
        "power": enum_name(PowerState, ax["power"]),
        "motion": enum_name(MotionState, ax["motion"]),
        "mode": enum_name(OperationalMode, ax["mode"]),
        "coupling": enum_name(CouplingState, ax["coupling"]),
        "gearbox": enum_name(GearboxState, ax["gearbox"]),
        "loading": enum_name(LoadingState, ax["loading"]),
        "referenced": bool(ax["referenced"]),
        "enabled": bool(ax["enabled"]),
        "in_position": bool(ax["in_position"]),
        "brake_released": bool(ax["brake_released"]),
        "errors": axis_error_reasons(flags),
        "error_flags": flags,
        "position": quantity(ax["position"], u),
        "velocity": quantity(ax["velocity"], f"{u}/s"),
        "target_position": quantity(ax["target_position"], u),
        "lag_error": quantity(ax["lag_error"], u),
        "torque": quantity(ax["torque"], "%"),
    }
    if feedback is not None:
        out["drive"] = {"ready": bool(feedback["drive_ready"]), "fault": bool(feedback["drive_fault"]),
                        "error_code": int(drive_error_code),
                        "error": drive_error_text(drive_error_code) if drive_error_code else None}
    return out


def axis_unavailable(info: AxisInfo, status: str) -> dict[str, Any]:
    return {**unavailable(status), "id": info.id, "name": info.name}


def io_payload(kind: str, io: np.ndarray, points: Iterable[IoPointInfo]) -> dict[str, Any]:
    """Configured points of one kind from a HAL_IO record: booleans for DI/DO, quantities for AI/AO.
    The same bank or values (and points) give the same (shared) body without rebuilding it."""
    points = tuple(points)
    raw = io[f"{kind}_bank" if kind in ("di", "do") else f"{kind}_values"].tobytes()
    body = _memo.get(("io", kind, points), raw)
    if body is None:
        body = _memo.put(("io", kind, points), raw, _io_payload(kind, io, points))
    return body


def _io_payload(kind: str, io: np.ndarray, points: tuple[IoPointInfo, ...]) -> dict[str, Any]:
    if kind in ("di", "do"):
        bank = io[f"{kind}_bank"]
        # banks carry physical levels; dashboards get the logical value (what the point means)
        values: dict[str, Any] = {p.label: get_bit(bank, p.pin) ^ p.invert for p in points}
    else:
        arr = io[f"{kind}_values"]
        values = {p.label: quantity(arr[p.pin], p.unit) for p in points}
    return {"live": True, "points": values}


def recipe_payload(status: np.ndarray) -> dict[str, Any]:
    """Recipe executor telemetry from re_mqt `status` (RE_STATUS); the same record gives the same
    (shared) body without rebuilding it."""
    raw = status.tobytes()
    body = _memo.get("recipe", raw)
    if body is None:
        body = _memo.put("recipe", raw, _recipe_payload(status))
    return body


def _recipe_payload(status: np.ndarray) -> dict[str, Any]:
    return {
        "live": True,
        "state": enum_name(ReState, status["re_state"]),
        "program": decode_str(status["program_name"]),
        "step": {
            "current": int(status["current_step"]),
            "count": int(status["step_count"]),
            "kind": decode_str(status["step_kind"]),
            "result": enum_name(StepResult, status["step_result"]),
        },
        "progress": quantity(status["progress"], "%"),
        "cycle_count": int(status["cycle_count"]),
        "error_code": int(status["error_code"]),
        "message": decode_str(status["message"]),
    }


MODULE_FIELDS = ("name", "state", "pid", "restarts", "since", "reason", "enabled", "last_exit")


def module_payload(entry: dict[str, Any]) -> dict[str, Any]:
    """One module of the watchdog's modules.json."""
    return {k: entry.get(k) for k in MODULE_FIELDS}
