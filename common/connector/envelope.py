"""ConnectorEnvelope: the 64-byte little-endian header + payload that crosses every bridge.

Encoded in place into a preallocated buffer (a ring slot or an iceoryx2 loan); decode validates.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from common.connector.errors import CrcMismatch, EnvelopeTooShort, PayloadTooLarge, UnsupportedVersion

HEADER_SIZE = 64
CORRELATION_ID_LEN = 32
ENVELOPE_VERSION = 1

# sequence u64 @0, timestamp_ns u64 @8, correlation_id 32B @16, payload_len u32 @48,
# reserved u32 @52, crc32 u32 @56, version u16 @60, pad u16 @62
_HEAD = struct.Struct("<QQ32sII")  # bytes 0..56
_TAIL = struct.Struct("<HH")  # bytes 60..64
_CRC = struct.Struct("<I")
_CRC_OFFSET = 56
_TAIL_OFFSET = 60
_ZERO_CORRELATION = bytes(CORRELATION_ID_LEN)


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The decoded, validated header of one envelope."""

    sequence: int
    timestamp_ns: int
    correlation_id: bytes
    payload_len: int
    reserved: int
    crc32: int
    version: int


def envelope_size(max_payload: int) -> int:
    """Bytes one envelope slot needs for a channel whose payload is at most `max_payload`."""
    return HEADER_SIZE + max_payload


def payload_area(buf: memoryview) -> memoryview:
    """The writable payload region of an envelope buffer (codecs encode straight into it)."""
    return buf[HEADER_SIZE:]


def compute_crc(buf: memoryview, payload_len: int) -> int:
    """CRC32 over header bytes [0:56] + [60:64] + the payload (the CRC field itself excluded)."""
    crc = zlib.crc32(buf[:_CRC_OFFSET])
    crc = zlib.crc32(buf[_TAIL_OFFSET:HEADER_SIZE], crc)
    return zlib.crc32(buf[HEADER_SIZE : HEADER_SIZE + payload_len], crc)


def seal(
    buf: memoryview,
    *,
    sequence: int,
    timestamp_ns: int,
    payload_len: int,
    correlation_id: bytes = _ZERO_CORRELATION,
    reserved: int = 0,
) -> int:
    """Write the header for a payload already placed at buf[64:64+payload_len]; returns total length.

    The payload is expected in place (zero-copy); only the 64 header bytes are written here.
    """
    if payload_len > len(buf) - HEADER_SIZE:
        raise PayloadTooLarge(f"payload of {payload_len} B exceeds slot payload of {len(buf) - HEADER_SIZE} B")
    if len(correlation_id) > CORRELATION_ID_LEN:
        raise PayloadTooLarge(f"correlation_id longer than {CORRELATION_ID_LEN} B")
    _HEAD.pack_into(buf, 0, sequence, timestamp_ns, correlation_id, payload_len, reserved)
    _TAIL.pack_into(buf, _TAIL_OFFSET, ENVELOPE_VERSION, 0)
    _CRC.pack_into(buf, _CRC_OFFSET, compute_crc(buf, payload_len))
    return HEADER_SIZE + payload_len


def encode(
    buf: memoryview,
    payload: bytes | memoryview,
    *,
    sequence: int,
    timestamp_ns: int,
    correlation_id: bytes = _ZERO_CORRELATION,
) -> int:
    """Copy `payload` into `buf` after the header and seal it; returns total length."""
    n = len(payload)
    if n > len(buf) - HEADER_SIZE:
        raise PayloadTooLarge(f"payload of {n} B exceeds slot payload of {len(buf) - HEADER_SIZE} B")
    buf[HEADER_SIZE : HEADER_SIZE + n] = payload
    return seal(buf, sequence=sequence, timestamp_ns=timestamp_ns, payload_len=n, correlation_id=correlation_id)


def decode(buf: memoryview | bytes) -> tuple[EnvelopeHeader, memoryview]:
    """Validate length, version and CRC; return the header and a zero-copy view of the payload."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if len(view) < HEADER_SIZE:
        raise EnvelopeTooShort(f"{len(view)} B is shorter than the {HEADER_SIZE} B header")
    sequence, timestamp_ns, correlation_id, payload_len, reserved = _HEAD.unpack_from(view, 0)
    version, _pad = _TAIL.unpack_from(view, _TAIL_OFFSET)
    (crc,) = _CRC.unpack_from(view, _CRC_OFFSET)
    if len(view) < HEADER_SIZE + payload_len:
        raise EnvelopeTooShort(f"header declares {payload_len} B payload, buffer holds {len(view) - HEADER_SIZE} B")
    actual = compute_crc(view, payload_len)
    if actual != crc:
        raise CrcMismatch(f"crc32 stored {crc:#010x}, computed {actual:#010x} (seq {sequence})")
    if version != ENVELOPE_VERSION:
        raise UnsupportedVersion(f"envelope version {version}, expected {ENVELOPE_VERSION}")
    header = EnvelopeHeader(sequence, timestamp_ns, correlation_id, payload_len, reserved, crc, version)
    return header, view[HEADER_SIZE : HEADER_SIZE + payload_len]
