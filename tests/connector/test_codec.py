"""Codec contract: JSON default, encode into the caller's buffer, NaN/inf refused, errors name the codec."""
from __future__ import annotations

import math

import pytest

from common.connector.codec import JsonCodec, PayloadCodec, RawCodec
from common.connector.errors import CodecError, PayloadTooLarge


def test_json_is_compact_utf8_written_in_place() -> None:
    codec = JsonCodec()
    buf = memoryview(bytearray(64))
    n = codec.encode({"axis": 1, "pos": 2.5, "unit": "mm", "ok": True, "name": "Zß"}, buf)
    assert bytes(buf[:n]) == '{"axis":1,"pos":2.5,"unit":"mm","ok":true,"name":"Zß"}'.encode()
    assert codec.decode(buf[:n]) == {"axis": 1, "pos": 2.5, "unit": "mm", "ok": True, "name": "Zß"}
    assert isinstance(codec, PayloadCodec) and codec.format_name == "json"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"v": [1.0, math.nan]}])
def test_non_finite_numbers_are_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(CodecError, match="NaN/inf") as info:
        JsonCodec().encode(bad, memoryview(bytearray(64)))
    assert info.value.format_name == "json"


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"-Infinity"])
def test_non_finite_literals_are_refused_on_decode(text: bytes) -> None:
    with pytest.raises(CodecError, match="non-finite"):
        JsonCodec().decode(memoryview(text))


def test_too_large_for_the_buffer_carries_the_source_error() -> None:
    with pytest.raises(CodecError) as info:
        JsonCodec().encode("x" * 100, memoryview(bytearray(16)))
    assert isinstance(info.value.source, PayloadTooLarge)


def test_unserialisable_and_malformed_payloads_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        JsonCodec().encode(object(), memoryview(bytearray(64)))
    with pytest.raises(CodecError):
        JsonCodec().decode(memoryview(b"{not json"))
    with pytest.raises(CodecError):
        JsonCodec().decode(memoryview(b"\xff\xfe"))


def test_raw_codec_moves_bytes() -> None:
    buf = memoryview(bytearray(8))
    n = RawCodec().encode(b"\x00\x01ab", buf)
    assert RawCodec().decode(buf[:n]) == b"\x00\x01ab"
    with pytest.raises(CodecError):
        RawCodec().encode(b"123456789", buf)
