"""TOML text that a hostile or broken file cannot turn into a traceback: bounded size, bounded nesting.

Every TOML file evo reads (config, recipes, fieldbus network files) goes through `parse_toml`.
"""
from __future__ import annotations

import tomllib
from typing import Any

MAX_TOML_BYTES = 1 << 20  # 1 MiB: a machine's largest io.toml is a few tens of KiB
MAX_NESTING = 32  # arrays / inline tables inside each other; real files need 3


class TomlTooDeep(ValueError):
    """Arrays or inline tables nested deeper than MAX_NESTING."""


def nesting_depth(text: str, limit: int = MAX_NESTING) -> int:
    """Deepest `[`/`{` nesting of values outside strings and comments; stops counting past `limit`.
    Table headers (`[a]`, `[[b]]`) sit at depth 1-2 and never exceed it."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            end = text.find(c * 3 if triple else c, i + (3 if triple else 1))
            while c == '"' and end > 0 and text[end - 1] == "\\" and not _escaped_backslashes(text, end):
                end = text.find(c * 3 if triple else c, end + 1)
            i = n if end < 0 else end + (3 if triple else 1)
            continue
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _escaped_backslashes(text: str, quote: int) -> bool:
    """True when the backslashes before `quote` escape each other (an even count): the quote ends."""
    k = quote - 1
    while k >= 0 and text[k] == "\\":
        k -= 1
    return (quote - 1 - k) % 2 == 0


def parse_toml(text: str) -> dict[str, Any]:
    """tomllib.loads with a nesting bound (TomlTooDeep) — tomllib itself recurses without one."""
    if nesting_depth(text) > MAX_NESTING:
        raise TomlTooDeep(f"arrays or inline tables nested more than {MAX_NESTING} deep")
    try:
        return tomllib.loads(text)
    except RecursionError:  # belt and braces: never a traceback
        raise TomlTooDeep(f"arrays or inline tables nested more than {MAX_NESTING} deep") from None
