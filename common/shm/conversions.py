"""Conversions between segment payloads and Python values: fixed-size strings, plain dicts.

Used off the hot path (bridges, tools); the cycle loops work on numpy views directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def encode_str(text: str, size: int) -> bytes:
    """UTF-8, truncated on a character boundary to fit `size - 1` bytes (NUL-terminated)."""
    raw = text.encode("utf-8")
    if len(raw) >= size:
        raw = raw[: size - 1]
        while raw:
            try:
                raw.decode("utf-8")
                break
            except UnicodeDecodeError:
                raw = raw[:-1]
    return raw


def decode_str(value: Any) -> str:
    """Decode a fixed-size `S` field (bytes or numpy bytes_) up to its first NUL."""
    raw = bytes(value)
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def to_python(value: Any, max_array: int | None = None) -> Any:
    """A structured numpy value as nested dicts / lists / scalars (strings decoded).

    `max_array` summarises long arrays as {"len", "nonzero", "first"} for tools that print.
    """
    if isinstance(value, np.ndarray) and value.dtype.names is None:
        if value.dtype.kind == "S":
            return [decode_str(v) for v in value.reshape(-1)]
        if max_array is not None and value.size > max_array:
            nz = int(np.count_nonzero(value))
            return {"len": int(value.size), "nonzero": nz, "first": value.reshape(-1)[:max_array].tolist()}
        return value.tolist()
    dt = value.dtype
    if dt.names is not None:
        if isinstance(value, np.ndarray) and value.shape != ():
            if max_array is not None and value.size > max_array:
                return {"len": int(value.size), "first": [to_python(v, max_array) for v in value[:max_array]]}
            return [to_python(v, max_array) for v in value]
        return {name: to_python(value[name], max_array) for name in dt.names}
    if dt.kind == "S":
        return decode_str(value)
    return value.item()


def bank_to_list(bank: np.ndarray, count: int) -> list[bool]:
    """The first `count` bits of a u64 word bank as booleans (pin p = bit p%64 of word p//64)."""
    bits = np.unpackbits(bank.astype("<u8").view(np.uint8), bitorder="little")
    return [bool(b) for b in bits[:count]]
