"""Fault and signal injection for the simulated plant: a JSON file the sim driver polls (~10 Hz).

Any test (HAL, CU, RE, bridges) writes it to flip inputs or break drives; see SimDriver's docstring.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import IoConfig, IoType
from common.consts import MAX_AI, MAX_AXES, MAX_DI

log = logging.getLogger(__name__)

AXIS_KEYS = frozenset({"drive_fault", "drive_error_code", "load_torque", "set_position"})
TOP_KEYS = frozenset({"axes", "di", "di_logical", "ai", "ai_raw"})


class InjectionError(ValueError):
    """The injection file is malformed (the previous injection stays in force)."""


@dataclass(eq=False)
class Injection:
    """Parsed overrides, as arrays the sim applies every cycle (index = axis id - 1 / pin)."""

    di_mask: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DI, np.bool_))
    di_value: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DI, np.bool_))  # physical
    ai_mask: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AI, np.bool_))
    ai_value: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AI))  # normalised raw
    drive_fault: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    load_torque: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))  # % rated
    # the code an injected fault reports (CiA 402 0x603F style); 0x1000 "generic error" by default
    drive_error_code: np.ndarray = field(default_factory=lambda: np.full(MAX_AXES, 0x1000, np.uint32))
    set_position: dict[int, float] = field(default_factory=dict)  # axis id -> position (one-shot)

    any_di: bool = False  # summaries, computed once by parse_injection (the sim checks them per cycle)
    any_ai: bool = False
    any_fault: bool = False
    any_load: bool = False

    def summarise(self) -> "Injection":
        self.any_di = bool(self.di_mask.any())
        self.any_ai = bool(self.ai_mask.any())
        self.any_fault = bool(self.drive_fault.any())
        self.any_load = bool(self.load_torque.any())
        return self


def _pin(key: str, limit: int, what: str) -> int:
    try:
        pin = int(key)
    except (TypeError, ValueError):
        raise InjectionError(f"{what}: pin {key!r} is not an integer") from None
    if not 0 <= pin < limit:
        raise InjectionError(f"{what}: pin {pin} out of range 0..{limit - 1}")
    return pin


def _bool(v: Any, what: str) -> bool:
    if isinstance(v, bool) or v in (0, 1):
        return bool(v)
    raise InjectionError(f"{what}: expected true/false (or 0/1), got {v!r}")


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InjectionError(f"{what}: expected a finite number, got {v!r}")
    return float(v)


def parse_injection(data: Any, io: IoConfig) -> Injection:
    """Validate and convert the decoded JSON; InjectionError names the offending entry."""
    if not isinstance(data, dict):
        raise InjectionError("top level must be a JSON object")
    inj = Injection()
    axes: dict[str, Any] = {}
    for key, value in data.items():
        if key.isdigit():  # shorthand: {"1": {"drive_fault": true}}
            axes[key] = value
        elif key not in TOP_KEYS:
            raise InjectionError(f"unknown key {key!r} (known: {', '.join(sorted(TOP_KEYS))} or an axis id)")
        elif not isinstance(value, dict):
            raise InjectionError(f"{key}: expected an object")
    axes.update(data.get("axes", {}))
    for key, spec in axes.items():
        try:
            axis_id = int(key)
        except ValueError:
            raise InjectionError(f"axes: {key!r} is not an axis id") from None
        if not 1 <= axis_id <= MAX_AXES:
            raise InjectionError(f"axes: axis id {axis_id} out of range 1..{MAX_AXES}")
        if not isinstance(spec, dict):
            raise InjectionError(f"axes.{key}: expected an object")
        unknown = set(spec) - AXIS_KEYS
        if unknown:
            raise InjectionError(f"axes.{key}: unknown key(s) {sorted(unknown)} (known: {sorted(AXIS_KEYS)})")
        i = axis_id - 1
        if "drive_fault" in spec:
            inj.drive_fault[i] = _bool(spec["drive_fault"], f"axes.{key}.drive_fault")
        if "drive_error_code" in spec:
            code = spec["drive_error_code"]
            if isinstance(code, bool) or not isinstance(code, int) or not 0 < code <= 0xFFFF:
                raise InjectionError(f"axes.{key}.drive_error_code: expected an integer 1..0xFFFF, got {code!r}")
            inj.drive_error_code[i] = code
        if "load_torque" in spec:
            inj.load_torque[i] = _num(spec["load_torque"], f"axes.{key}.load_torque")
        if "set_position" in spec:
            inj.set_position[axis_id] = _num(spec["set_position"], f"axes.{key}.set_position")
    for key, value in data.get("di", {}).items():
        pin = _pin(key, MAX_DI, "di")
        inj.di_mask[pin] = True
        inj.di_value[pin] = _bool(value, f"di.{key}")
    for key, value in data.get("di_logical", {}).items():
        pin = _pin(key, MAX_DI, "di_logical")
        p = io.point(IoType.DI, pin)
        inj.di_mask[pin] = True
        inj.di_value[pin] = _bool(value, f"di_logical.{key}") ^ (p is not None and p.is_nc)
    for key, value in data.get("ai", {}).items():
        pin = _pin(key, MAX_AI, "ai")
        p = io.point(IoType.AI, pin)
        if p is None:
            raise InjectionError(f"ai.{key}: ai pin {pin} is not in io.toml (use ai_raw for a raw 0..1 value)")
        inj.ai_mask[pin] = True
        inj.ai_value[pin] = float(p.from_engineering(_num(value, f"ai.{key}")))
    for key, value in data.get("ai_raw", {}).items():
        pin = _pin(key, MAX_AI, "ai_raw")
        inj.ai_mask[pin] = True
        inj.ai_value[pin] = _num(value, f"ai_raw.{key}")
    return inj.summarise()


class InjectionFile:
    """Polls one file by content; `poll()` returns a new Injection when it changed, an empty one
    when it disappeared, else None. A malformed file is logged once and ignored."""

    def __init__(self, path: Path, io: IoConfig) -> None:
        self.path = path
        self.io = io
        self._raw: bytes | None = None

    def poll(self) -> Injection | None:
        if self._raw is None and not os.access(self.path, os.F_OK):
            return None  # the usual case, without the cost of a FileNotFoundError in the HAL cycle
        try:
            with open(self.path, "rb") as f:  # a few bytes: cheaper than trusting coarse mtimes
                raw = f.read()
        except FileNotFoundError:
            if self._raw is None:
                return None
            self._raw = None
            log.info("injection file %s removed: overrides cleared", self.path)
            return Injection()
        except OSError:
            return None
        if raw == self._raw:
            return None
        self._raw = raw
        try:
            if not raw.strip():
                return Injection()  # an empty file: no overrides
            inj = parse_injection(json.loads(raw), self.io)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and InjectionError
            log.warning("injection file %s ignored: %s", self.path, e)
            return None
        log.info("injection file %s applied", self.path)
        return inj


def write_injection(path: os.PathLike[str] | str, data: dict[str, Any]) -> None:
    """Atomically replace the injection file (what tests call; tmp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, p)
