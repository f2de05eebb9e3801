"""Configuration errors: one class per kind of problem, each naming file, section and field.

The loader collects every problem it can find and raises the first one with `.errors` listing all.
"""
from __future__ import annotations

import re

__all__ = [
    "ConfigError",
    "UnknownField",
    "ParseError",
    "AxisIdMismatch",
    "DuplicateAxisId",
    "NoAxesDefined",
    "ValidationError",
    "FileNotFound",
    "RoleMissing",
    "RoleTypeMismatch",
    "fmt_num",
]


def fmt_num(x: float | int) -> str:
    """Short, readable number for messages: 0, 2.5, 1e6, -1e-5."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    s = "%g" % x
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m[1] == "-" else "") + m[2], s)


class ConfigError(Exception):
    """Base class. Attributes: file (name, e.g. "io.toml"), section, field, detail, errors.

    `errors` lists every problem found by one load (this one first); `str()` shows them all.
    """

    def __init__(
        self,
        detail: str,
        *,
        file: str | None = None,
        section: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.file = file
        self.section = section
        self.field = field
        self.errors: list[ConfigError] = [self]

    # "file [section] field: detail"; a top-level key has section "" -> "file (top level)".
    def location(self, *, with_field: bool = True) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.section is not None:
            parts.append(f"[{self.section}]" if self.section else "(top level)")
        if with_field and self.field:
            parts.append(self.field)
        return " ".join(parts)

    @property
    def message(self) -> str:
        """This single error, without the others of the same load."""
        loc = self.location()
        return f"{loc}: {self.detail}" if loc else self.detail

    def __str__(self) -> str:
        if len(self.errors) <= 1:
            return self.message
        lines = [f"{len(self.errors)} configuration errors:"]
        lines += [f"  - {e.message}" for e in self.errors]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class UnknownField(ConfigError):
    """A key that the schema does not know (strict parsing). `field` is the full key path."""

    @property
    def message(self) -> str:
        # the unknown key goes into the text, its parent path stays in the location
        path = self.field or ""
        parent, _, leaf = path.rpartition(".")
        loc = self.location(with_field=False)
        if parent:
            loc = f"{loc} {parent}"
        return f"{loc}: unknown field '{leaf}'" + (f" ({self.detail})" if self.detail else "")


class ParseError(ConfigError):
    """TOML syntax error (`line` set), missing mandatory field, or wrong value type."""

    def __init__(self, detail: str, *, line: int | None = None, **kw: str | None) -> None:
        super().__init__(detail, **kw)
        self.line = line


class ValidationError(ConfigError):
    """A well-typed value that is out of bounds or inconsistent with another one."""


class AxisIdMismatch(ConfigError):
    """`[axis].id` differs from the NN of its file name axis_NN_name.toml."""

    def __init__(self, *, file: str, expected: int, found: object) -> None:
        super().__init__(
            f"id = {found!r} does not match the file name (expected {expected})",
            file=file,
            section="axis",
            field="id",
        )
        self.expected = expected
        self.found = found


class DuplicateAxisId(ConfigError):
    """Two axis files carry the same NN."""

    def __init__(self, axis_id: int, *, file: str, other_file: str) -> None:
        super().__init__(f"axis number {axis_id:02d} is also used by {other_file}", file=file)
        self.axis_id = axis_id
        self.other_file = other_file


class NoAxesDefined(ConfigError):
    """No axis_NN_*.toml file in the configuration directory."""


class FileNotFound(ConfigError):
    """A mandatory file (or the directory itself) does not exist."""


class RoleMissing(ValidationError, KeyError):
    """A role named by an axis file (or asked of the IoRegistry) is not defined in io.toml."""

    def __init__(self, role: str, detail: str | None = None, **kw: str | None) -> None:
        super().__init__(detail or f"role '{role}' is not defined in io.toml", **kw)
        self.role = role

    __str__ = ConfigError.__str__  # not KeyError's repr-quoting


class RoleTypeMismatch(ValidationError):
    """A role exists in io.toml but on the wrong I/O type."""

    def __init__(self, role: str, expected: str, found: str, detail: str | None = None,
                 **kw: str | None) -> None:
        super().__init__(
            detail or f"role '{role}' must be a {expected} point, io.toml has it on a {found}",
            **kw,
        )
        self.role = role
        self.expected = expected
        self.found = found
