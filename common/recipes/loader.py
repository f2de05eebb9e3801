"""Strict TOML -> Recipe conversion: known step types and fields only, typed values, name rules.

Machine-dependent checks (axes, pins, limits, calls) are in validate.py.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Callable

from common.files import FileRefused, read_limited
from common.toml_text import TomlTooDeep, parse_toml

from .model import (
    MAX_NAME_BYTES,
    RECIPE_MODES,
    AxisRef,
    CallStep,
    CoupleStep,
    DecoupleStep,
    DisableStep,
    DwellStep,
    EnableStep,
    GearChangeStep,
    HomeStep,
    MessageStep,
    MoveStep,
    MoveVelocityStep,
    OnError,
    Recipe,
    RecipeError,
    RecipeNotFound,
    RepeatStep,
    SetAoStep,
    SetDoStep,
    SetModeStep,
    Step,
    StepKind,
    StopStep,
    WaitAiStep,
    WaitDiStep,
    WaitInPositionStep,
)

__all__ = ["RECIPE_SUFFIX", "parse_recipe", "read_recipe", "recipe_path", "recipe_names", "check_name"]

RECIPE_SUFFIX = ".toml"
MAX_FILE_BYTES = 1 << 20
MAX_TEXT_BYTES = 95  # operator message: what fits the 96-byte message field of RE_STATUS
MAX_NESTING = 8  # repeat blocks inside repeat blocks
_HEADER_FIELDS = {"name", "description", "on_error"}
_COMMON_FIELDS = {"type", "name", "on_error"}


def check_name(name: Any) -> str | None:
    """Why `name` is not a usable recipe name (None when it is): a file stem, 1..31 UTF-8 bytes."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"'{name[:20]}...' is {size} UTF-8 bytes, at most {MAX_NAME_BYTES}"
    if name.startswith(".") or any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"'{name}' is not a plain file name (no '/', '\\', control characters or leading '.')"
    return None


def recipe_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}{RECIPE_SUFFIX}"


def recipe_names(directory: str | Path) -> list[str]:
    """Stems of the recipe files in `directory` (sorted); README and hidden files are not recipes."""
    d = Path(directory)
    if not d.is_dir():
        return []
    # Every *.toml entry but directories: a FIFO or a link to a device is listed, and refused when read
    # (common.files.read_limited), so `evo config check` names it instead of skipping it silently.
    return sorted(p.stem for p in d.glob(f"*{RECIPE_SUFFIX}") if not p.is_dir() and not p.name.startswith("."))


def read_recipe(directory: str | Path, name: str) -> Recipe:
    """Read and parse `<directory>/<name>.toml`. RecipeNotFound when the file does not exist."""
    why = check_name(name)
    if why:
        raise RecipeError(str(name)[:40], 0, "name", why)
    path = recipe_path(directory, name)
    try:
        raw = read_limited(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise RecipeNotFound(name, 0, "name", f"no recipe file {path.name} in {directory}") from None
    except FileRefused as e:
        raise RecipeError(name, 0, "file", f"{path.name} refused: {e}") from None
    except OSError as e:
        raise RecipeNotFound(name, 0, "name", f"cannot read {path.name}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(name, 0, "file", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    return parse_recipe(text, name, str(path))


def parse_recipe(text: str, name: str, source: str = "") -> Recipe:
    """Parse one recipe's TOML text; `name` is its file stem."""
    why = check_name(name)
    if why:
        raise RecipeError(str(name)[:40], 0, "name", why)
    try:
        doc = parse_toml(text)
    except TomlTooDeep as e:
        raise RecipeError(name, 0, "file", str(e)) from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(name, 0, "file", f"TOML syntax: {e}") from None
    p = _Parser(name)
    for key in doc:
        if key not in ("recipe", "step"):
            raise RecipeError(name, 0, key, "unknown field (expected [recipe] and [[step]] tables)")
    header = doc.get("recipe", {})
    if not isinstance(header, dict):
        raise RecipeError(name, 0, "recipe", "must be a table [recipe]")
    for key in header:
        if key not in _HEADER_FIELDS:
            raise RecipeError(name, 0, key, f"unknown field in [recipe] (allowed: {', '.join(sorted(_HEADER_FIELDS))})")
    if "name" in header:
        if not isinstance(header["name"], str):
            raise RecipeError(name, 0, "name", "must be a string")
        if header["name"] != name:
            raise RecipeError(name, 0, "name", f"'{header['name'][:40]}' differs from the file name '{name}'")
    description = header.get("description", "")
    if not isinstance(description, str):
        raise RecipeError(name, 0, "description", "must be a string")
    on_error = p.on_error(header.get("on_error", OnError.ABORT.value), "0") or OnError.ABORT
    raw_steps = doc.get("step")
    if raw_steps is None:
        raise RecipeError(name, 0, "step", "the recipe has no [[step]]")
    steps = p.block(raw_steps, "", 0)
    return Recipe(name=name, description=description, on_error=on_error, steps=steps, source=source)


class _Parser:
    """Field readers for one recipe; every failure is a RecipeError naming step and field."""

    def __init__(self, recipe: str) -> None:
        self.recipe = recipe

    def err(self, path: str, field: str, detail: str) -> RecipeError:
        return RecipeError(self.recipe, path or "0", field, detail)

    # --- value readers ---------------------------------------------------------------------
    def number(self, v: Any, path: str, field: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(path, field, f"must be a number, got {_tname(v)}")
        if not math.isfinite(v):
            raise self.err(path, field, "must be finite")
        return float(v)

    def integer(self, v: Any, path: str, field: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(path, field, f"must be an integer, got {_tname(v)}")
        return v

    def boolean(self, v: Any, path: str, field: str) -> bool:
        if not isinstance(v, bool):
            raise self.err(path, field, f"must be true or false, got {_tname(v)}")
        return v

    def string(self, v: Any, path: str, field: str) -> str:
        if not isinstance(v, str):
            raise self.err(path, field, f"must be a string, got {_tname(v)}")
        return v

    def label(self, v: Any, path: str, field: str) -> str:
        s = self.string(v, path, field)
        if len(s.encode("utf-8")) > MAX_NAME_BYTES:
            raise self.err(path, field, f"{len(s.encode('utf-8'))} UTF-8 bytes, at most {MAX_NAME_BYTES}")
        return s

    def pin(self, v: Any, path: str, field: str) -> int:
        n = self.integer(v, path, field)
        if n < 0:
            raise self.err(path, field, f"pin {n} is negative")
        return n

    def axis(self, v: Any, path: str, field: str) -> AxisRef:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.err(path, field, f"must be an axis id or name, got {_tname(v)}")
        if isinstance(v, str):
            if not v:
                raise self.err(path, field, "empty axis name")
            return int(v) if v.isdigit() else v
        return v

    def axes(self, v: Any, path: str, field: str) -> tuple[AxisRef, ...]:
        if not isinstance(v, list):
            v = [v]
        if not v:
            raise self.err(path, field, "names no axis")
        return tuple(self.axis(a, path, f"{field}[{i}]") for i, a in enumerate(v))

    def on_error(self, v: Any, path: str) -> OnError | None:
        s = self.string(v, path, "on_error")
        try:
            return OnError(s)
        except ValueError:
            allowed = ", ".join(f'"{m.value}"' for m in OnError)
            raise self.err(path, "on_error", f"'{s[:20]}' is not one of {allowed}") from None

    def timeout(self, v: Any, path: str, field: str = "timeout") -> float:
        t = self.number(v, path, field)
        if not 0.0 < t <= 86_400.0:
            raise self.err(path, field, f"{t:g} s outside (0, 86400]")
        return t

    # --- steps -----------------------------------------------------------------------------
    def block(self, raw: Any, parent: str, depth: int) -> tuple[Step, ...]:
        field = "step" if not parent else "steps"
        if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
            raise self.err(parent, field, "must be an array of tables ([[step]] / [[step.steps]])")
        if not raw:
            raise self.err(parent, field, "is empty")
        if depth > MAX_NESTING:
            raise self.err(parent, field, f"repeat blocks nested deeper than {MAX_NESTING}")
        return tuple(self.step(s, f"{parent}.{i}" if parent else str(i), depth) for i, s in enumerate(raw, 1))

    def step(self, raw: dict[str, Any], path: str, depth: int) -> Step:
        if "type" not in raw:
            raise self.err(path, "type", "missing (every step has a type)")
        kind_text = self.string(raw["type"], path, "type")
        try:
            kind = StepKind(kind_text)
        except ValueError:
            raise self.err(path, "type", f"unknown step type '{kind_text[:24]}'") from None
        fields, build = _KINDS[kind]
        allowed = _COMMON_FIELDS | set(fields)
        for key in raw:
            if key not in allowed:
                raise self.err(path, key, f"unknown field for a {kind.value} step")
        for key, required in fields.items():
            if required and key not in raw:
                raise self.err(path, key, f"missing (required by a {kind.value} step)")
        common: dict[str, Any] = {"path": path}
        if "name" in raw:
            common["label"] = self.label(raw["name"], path, "name")
        if "on_error" in raw:
            common["on_error"] = self.on_error(raw["on_error"], path)
        return build(self, raw, path, depth, common)


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _opt(raw: dict[str, Any], key: str, fn: Callable[..., Any], p: _Parser, path: str) -> Any:
    return fn(raw[key], path, key) if key in raw else None


def _positive(p: _Parser, v: Any, path: str, field: str) -> float:
    x = p.number(v, path, field)
    if x <= 0.0:
        raise p.err(path, field, f"{x:g} must be > 0")
    return x


def _b_move(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    targets = raw["targets"]
    if not isinstance(targets, dict) or not targets:
        raise p.err(path, "targets", "must be a non-empty table { axis = position, ... }")
    tgt = tuple((p.axis(k, path, f"targets.{k}"), p.number(v, path, f"targets.{k}")) for k, v in targets.items())
    return MoveStep(
        **c, targets=tgt,
        relative=p.boolean(raw["relative"], path, "relative") if "relative" in raw else False,
        velocity=_positive(p, raw["velocity"], path, "velocity") if "velocity" in raw else None,
        acceleration=_positive(p, raw["acceleration"], path, "acceleration") if "acceleration" in raw else None,
        wait=p.boolean(raw["wait"], path, "wait") if "wait" in raw else True,
        timeout=_opt(raw, "timeout", p.timeout, p, path),
    )


def _b_move_velocity(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return MoveVelocityStep(
        **c, axis=p.axis(raw["axis"], path, "axis"), velocity=p.number(raw["velocity"], path, "velocity"),
        acceleration=_positive(p, raw["acceleration"], path, "acceleration") if "acceleration" in raw else None,
        timeout=_opt(raw, "timeout", p.timeout, p, path),
    )


def _axes_builder(cls: type) -> Callable[..., Step]:
    def build(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
        return cls(**c, axes=p.axes(raw["axes"], path, "axes"), timeout=_opt(raw, "timeout", p.timeout, p, path))

    return build


def _b_set_mode(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    text = p.string(raw["mode"], path, "mode")
    if text not in RECIPE_MODES:
        raise p.err(path, "mode", f"'{text[:20]}' is not one of {', '.join(RECIPE_MODES)}")
    return SetModeStep(**c, axis=p.axis(raw["axis"], path, "axis"), mode=RECIPE_MODES[text],
                       timeout=_opt(raw, "timeout", p.timeout, p, path))


def _b_couple(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return CoupleStep(
        **c, axis=p.axis(raw["axis"], path, "axis"), master=p.axis(raw["master"], path, "master"),
        ratio=p.number(raw["ratio"], path, "ratio") if "ratio" in raw else 1.0,
        timeout=_opt(raw, "timeout", p.timeout, p, path),
    )


def _b_decouple(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return DecoupleStep(**c, axis=p.axis(raw["axis"], path, "axis"), timeout=_opt(raw, "timeout", p.timeout, p, path))


def _b_gear(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    gear = p.integer(raw["gear"], path, "gear")
    if not 0 <= gear <= 4:
        raise p.err(path, "gear", f"{gear} outside 0..4 (0 = neutral)")
    return GearChangeStep(**c, axis=p.axis(raw["axis"], path, "axis"), gear=gear,
                          timeout=_opt(raw, "timeout", p.timeout, p, path))


def _b_set_do(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return SetDoStep(**c, pin=p.pin(raw["pin"], path, "pin"), value=p.boolean(raw["value"], path, "value"))


def _b_set_ao(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return SetAoStep(**c, pin=p.pin(raw["pin"], path, "pin"), value=p.number(raw["value"], path, "value"))


def _pin_or_role(p: _Parser, raw: dict, path: str) -> dict[str, Any]:
    if ("pin" in raw) == ("role" in raw):
        raise p.err(path, "pin", "give exactly one of pin or role")
    if "pin" in raw:
        return {"pin": p.pin(raw["pin"], path, "pin")}
    role = p.string(raw["role"], path, "role")
    if not role:
        raise p.err(path, "role", "empty role")
    return {"role": role}


def _b_wait_di(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    return WaitDiStep(**c, **_pin_or_role(p, raw, path),
                      value=p.boolean(raw["value"], path, "value") if "value" in raw else True,
                      timeout=_opt(raw, "timeout", p.timeout, p, path))


def _b_wait_ai(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    if ("above" in raw) == ("below" in raw):
        raise p.err(path, "above", "give exactly one of above or below")
    return WaitAiStep(**c, **_pin_or_role(p, raw, path),
                      above=_opt(raw, "above", p.number, p, path), below=_opt(raw, "below", p.number, p, path),
                      timeout=_opt(raw, "timeout", p.timeout, p, path))


def _b_dwell(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    s = p.number(raw["seconds"], path, "seconds")
    if not 0.0 <= s <= 86_400.0:
        raise p.err(path, "seconds", f"{s:g} s outside [0, 86400]")
    return DwellStep(**c, seconds=s)


def _b_repeat(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    n = p.integer(raw["count"], path, "count")
    if not 1 <= n <= 1_000_000:
        raise p.err(path, "count", f"{n} outside 1..1000000")
    return RepeatStep(**c, count=n, steps=p.block(raw["steps"], path, depth + 1))


def _b_call(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    name = raw["recipe"]
    why = check_name(name)
    if why:
        raise p.err(path, "recipe", why)
    return CallStep(**c, recipe=name)


def _b_message(p: _Parser, raw: dict, path: str, depth: int, c: dict) -> Step:
    text = p.string(raw["text"], path, "text")
    if not text or len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise p.err(path, "text", f"{len(text.encode('utf-8'))} UTF-8 bytes, must be 1..{MAX_TEXT_BYTES}")
    return MessageStep(**c, text=text, pause=p.boolean(raw["pause"], path, "pause") if "pause" in raw else False)


_AXES_FIELDS = {"axes": True, "timeout": False}
_AXIS_FIELDS = {"axis": True, "timeout": False}
# kind -> ({field: required}, builder)
_KINDS: dict[StepKind, tuple[dict[str, bool], Callable[..., Step]]] = {
    StepKind.MOVE: ({"targets": True, "relative": False, "velocity": False, "acceleration": False, "wait": False,
                     "timeout": False}, _b_move),
    StepKind.MOVE_VELOCITY: ({"axis": True, "velocity": True, "acceleration": False, "timeout": False},
                             _b_move_velocity),
    StepKind.STOP: (_AXES_FIELDS, _axes_builder(StopStep)),
    StepKind.WAIT_IN_POSITION: (_AXES_FIELDS, _axes_builder(WaitInPositionStep)),
    StepKind.ENABLE: (_AXES_FIELDS, _axes_builder(EnableStep)),
    StepKind.DISABLE: (_AXES_FIELDS, _axes_builder(DisableStep)),
    StepKind.HOME: (_AXES_FIELDS, _axes_builder(HomeStep)),
    StepKind.SET_MODE: ({**_AXIS_FIELDS, "mode": True}, _b_set_mode),
    StepKind.COUPLE: ({**_AXIS_FIELDS, "master": True, "ratio": False}, _b_couple),
    StepKind.DECOUPLE: (_AXIS_FIELDS, _b_decouple),
    StepKind.GEAR_CHANGE: ({**_AXIS_FIELDS, "gear": True}, _b_gear),
    StepKind.SET_DO: ({"pin": True, "value": True}, _b_set_do),
    StepKind.SET_AO: ({"pin": True, "value": True}, _b_set_ao),
    StepKind.WAIT_DI: ({"pin": False, "role": False, "value": False, "timeout": False}, _b_wait_di),
    StepKind.WAIT_AI: ({"pin": False, "role": False, "above": False, "below": False, "timeout": False}, _b_wait_ai),
    StepKind.DWELL: ({"seconds": True}, _b_dwell),
    StepKind.REPEAT: ({"count": True, "steps": True}, _b_repeat),
    StepKind.CALL: ({"recipe": True}, _b_call),
    StepKind.MESSAGE: ({"text": True, "pause": False}, _b_message),
}
assert set(_KINDS) == set(StepKind)
