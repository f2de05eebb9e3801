"""Strict, schema-driven conversion of TOML tables into frozen dataclasses.

A dataclass field's name is its TOML key; `spec()` metadata adds bounds; errors are collected.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from dataclasses import MISSING, Field, field
from enum import Enum
from functools import cache
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from .enums import parse_enum
from .errors import ConfigError, ParseError, UnknownField, ValidationError, fmt_num

__all__ = ["spec", "derived", "Collector", "Ctx", "parse_table", "check_keys", "convert",
           "type_name", "ROLE_RE"]

ROLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def spec(
    default: Any = MISSING,
    *,
    bounds: tuple[float, float] | None = None,
    open_lo: bool = False,
    factory: Callable[[], Any] | None = None,
    custom: bool = False,
    role: bool = False,
) -> Any:
    """A TOML-backed field. No default = mandatory. `bounds` (lo, hi) inclusive, `open_lo`
    makes the lower bound exclusive; `custom` = the key is allowed but parsed by the caller;
    `role` = the value is an I/O role name."""
    md = {"bounds": bounds, "open_lo": open_lo, "custom": custom, "role": role}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    if default is MISSING:
        return field(metadata=md)
    return field(default=default, metadata=md)


def derived(default: Any = MISSING, **kw: Any) -> Any:
    """A field that is not a TOML key of this table (filled in by the loader)."""
    if default is MISSING:
        return field(metadata={"derived": True}, **kw)
    return field(default=default, metadata={"derived": True}, **kw)


class Collector:
    """Accumulates ConfigErrors of one load."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, err: ConfigError) -> None:
        self.errors.append(err)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        # One problem: raise it. Several: raise an aggregate of the first one's class (what
        # callers catch) with its file/section/field, whose `errors` lists every error; each
        # listed error keeps str() == its own message.
        first = self.errors[0]
        if len(self.errors) == 1:
            raise first
        agg = type(first).__new__(type(first))
        agg.__dict__.update(first.__dict__)
        agg.args = first.args
        agg.errors = list(self.errors)
        raise agg


@dataclasses.dataclass(frozen=True)
class Ctx:
    """Where a table lives: file name, section, and a prefix for field paths (io[3].)."""

    col: Collector
    file: str
    section: str
    prefix: str = ""

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def unknown(self, key: str, allowed: list[str], hint: str = "") -> None:
        close = difflib.get_close_matches(key, allowed, n=1)
        detail = hint or (f"did you mean '{close[0]}'?" if close else "")
        self.col.add(UnknownField(detail, file=self.file, section=self.section,
                                  field=self.path(key)))

    def parse_error(self, key: str | None, detail: str, line: int | None = None) -> None:
        self.col.add(ParseError(detail, file=self.file, section=self.section,
                                field=self.path(key) if key else (self.prefix.rstrip(".") or None),
                                line=line))

    def invalid(self, key: str | None, detail: str) -> None:
        self.col.add(ValidationError(detail, file=self.file, section=self.section,
                                     field=self.path(key) if key else (self.prefix.rstrip(".") or None)))


class _TypeMismatch(Exception):
    pass


def type_name(v: Any) -> str:
    return {bool: "bool", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _describe(tp: Any) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is str:
        return "string"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "string"
    origin = get_origin(tp)
    if origin is tuple:
        return f"array of {_describe(get_args(tp)[0])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    return str(tp)


def convert(value: Any, tp: Any) -> Any:
    """Convert a TOML value to type `tp`; _TypeMismatch on a wrong type, ValueError on a bad
    enum spelling."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        return convert(value, inner[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _TypeMismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _TypeMismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _TypeMismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _TypeMismatch
    if isinstance(tp, type) and issubclass(tp, Enum):
        if not isinstance(value, str):
            raise _TypeMismatch
        return parse_enum(tp, value)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise _TypeMismatch
        return tuple(convert(v, args[0]) for v in value)
    raise TypeError(f"unsupported field type {tp}")


def _in_bounds(v: float, lo: float, hi: float, open_lo: bool) -> bool:
    if isinstance(v, float) and math.isnan(v):
        return False
    return (lo < v if open_lo else lo <= v) and v <= hi


@cache
def _schema(cls: type) -> tuple[dict[str, Any], tuple[Field, ...]]:
    hints = get_type_hints(cls)
    flds = tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("derived"))
    return hints, flds


def check_keys(table: dict[str, Any], allowed: list[str], ctx: Ctx,
               hints: dict[str, str] | None = None) -> None:
    for key in table:
        if key not in allowed:
            ctx.unknown(key, allowed, (hints or {}).get(key, ""))


def parse_table(cls: type, table: Any, ctx: Ctx,
                hints: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Parse `table` against dataclass `cls`. Returns the constructor kwargs, defaults filled
    in (custom fields are left to the caller), or None when this table had an error (already
    recorded in ctx.col)."""
    if not isinstance(table, dict):
        ctx.parse_error(None, f"expected a table, got {type_name(table)}")
        return None
    hints, flds = _schema(cls)
    n_before = len(ctx.col.errors)
    names = [f.name for f in flds]
    check_keys(table, names, ctx, hints)
    out: dict[str, Any] = {}
    for f in flds:
        md = f.metadata
        if md.get("custom"):
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        if f.name not in table:
            if required:
                ctx.parse_error(f.name, "missing mandatory field")
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = f.default
            continue
        raw = table[f.name]
        tp = hints[f.name]
        try:
            val = convert(raw, tp)
        except _TypeMismatch:
            ctx.parse_error(f.name, f"expected {_describe(tp)}, got {type_name(raw)} {raw!r}")
            continue
        except ValueError as e:
            ctx.invalid(f.name, str(e))
            continue
        bounds = md.get("bounds")
        if bounds is not None:
            lo, hi = bounds
            vals = val if isinstance(val, tuple) else (val,)
            bad = [v for v in vals if not _in_bounds(v, lo, hi, md.get("open_lo", False))]
            if bad:
                br = "(" if md.get("open_lo") else "["
                ctx.invalid(f.name, f"{fmt_num(bad[0]) if not isinstance(bad[0], float) else repr(bad[0])}"
                            f" out of range {br}{fmt_num(lo)}, {fmt_num(hi)}]")
                continue
        if md.get("role"):
            roles = val if isinstance(val, tuple) else (val,)
            if not all(ROLE_RE.match(r) for r in roles):
                ctx.invalid(f.name, f"{raw!r} is not a role name (letters, digits, _)")
                continue
        out[f.name] = val
    return out if len(ctx.col.errors) == n_before else None
