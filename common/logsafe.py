"""Log lines a caller cannot forge: control characters escaped, long messages capped.

Installed on every handler of every evo process (module_main, the watchdog): a newline or NUL in a
recipe name or an E-stop reason shows as `\\n` / `\\x00`, and a 1 MB string is logged as its first
MAX_MESSAGE characters plus how much was left out. Tracebacks (exc_info) are not touched.
"""
from __future__ import annotations

import logging
import re

MAX_MESSAGE = 2000  # characters of one log message
_NAMED = {"\n": "\\n", "\r": "\\r"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def safe_text(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line (control characters escaped), at most `limit` characters plus a note."""
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = _CONTROL.sub(_escape, text)
    return f"{text}… ({cut} more characters)" if cut > 0 else text


class SafeMessages(logging.Filter):
    """Rewrites each record's message through safe_text (the arguments are merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_evo_safe", False):
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must still log something
            msg = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = safe_text(msg), None
        record._evo_safe = True
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Add the filter to `handlers` (default: the root logger's handlers)."""
    for h in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, SafeMessages) for f in h.filters):
            h.addFilter(SafeMessages())
