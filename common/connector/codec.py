"""Payload codecs: typed values to payload bytes written straight into an envelope slot, and back.

`JsonCodec` is the default; `RawCodec` moves bytes untouched.
"""
from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from common.connector.errors import CodecError, PayloadTooLarge


@runtime_checkable
class PayloadCodec(Protocol):
    """Encodes a value into a caller-provided buffer and decodes a payload view."""

    @property
    def format_name(self) -> str: ...

    def encode(self, value: Any, buf: memoryview) -> int:
        """Write `value` into `buf`; return bytes written. Raise `CodecError` on failure."""
        ...

    def decode(self, payload: memoryview) -> Any:
        """Decode a payload view. Raise `CodecError` on failure."""
        ...


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not valid JSON")


class JsonCodec:
    """Compact JSON (UTF-8); NaN and +-inf are refused both ways."""

    format_name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant)

    def encode(self, value: Any, buf: memoryview) -> int:
        try:
            data = self._encoder.encode(value).encode("utf-8")
        except ValueError as exc:
            if "Out of range float" in str(exc):
                raise CodecError(self.format_name, "NaN/inf cannot be encoded as JSON", exc) from exc
            raise CodecError(self.format_name, f"cannot encode: {exc}", exc) from exc
        except TypeError as exc:
            raise CodecError(self.format_name, f"cannot encode: {exc}", exc) from exc
        n = len(data)
        if n > len(buf):
            err = PayloadTooLarge(f"{n} B encoded, channel payload holds {len(buf)} B")
            raise CodecError(self.format_name, str(err), err)
        buf[:n] = data
        return n

    def decode(self, payload: memoryview) -> Any:
        try:
            return self._decoder.decode(str(payload, "utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(self.format_name, f"cannot decode: {exc}", exc) from exc


class RawCodec:
    """Bytes in, bytes out: for channels whose payload is already encoded."""

    format_name = "raw"

    def encode(self, value: Any, buf: memoryview) -> int:
        if isinstance(value, str):
            value = value.encode("utf-8")
        try:
            n = len(value)
        except TypeError as exc:
            raise CodecError(self.format_name, "value is not bytes-like", exc) from exc
        if n > len(buf):
            err = PayloadTooLarge(f"{n} B, channel payload holds {len(buf)} B")
            raise CodecError(self.format_name, str(err), err)
        buf[:n] = value
        return n

    def decode(self, payload: memoryview) -> bytes:
        return bytes(payload)
