"""Envelope contract: layout, round trip, validation, and a corrupt envelope discarded with an event."""
from __future__ import annotations

import struct
import zlib

import pytest

from common.connector import envelope
from common.connector.channel import ChannelDescriptor, ChannelHooks, ChannelReader, ChannelWriter
from common.connector.errors import CrcMismatch, EnvelopeTooShort, PayloadTooLarge, UnsupportedVersion
from common.connector.health import Connecting, Degraded, EnvelopeDiscarded, HealthEvent, HealthMonitor, Up
from common.connector.routing import Iceoryx2Routing
from common.connector.transport import RingLink


def _sealed(payload: bytes, seq: int = 7, corr: bytes = b"corr-id") -> memoryview:
    buf = memoryview(bytearray(envelope.envelope_size(256)))
    n = envelope.encode(buf, payload, sequence=seq, timestamp_ns=123456789, correlation_id=corr)
    return buf[:n]


def test_header_layout_is_little_endian_at_fixed_offsets() -> None:
    view = _sealed(b"hello", seq=0x0102030405060708)
    raw = bytes(view)
    assert len(raw) == 64 + 5
    assert struct.unpack_from("<Q", raw, 0)[0] == 0x0102030405060708
    assert struct.unpack_from("<Q", raw, 8)[0] == 123456789
    assert raw[16:48] == b"corr-id".ljust(32, b"\0")
    assert struct.unpack_from("<I", raw, 48)[0] == 5
    assert struct.unpack_from("<I", raw, 52)[0] == 0
    assert struct.unpack_from("<HH", raw, 60) == (envelope.ENVELOPE_VERSION, 0)
    expected_crc = zlib.crc32(raw[64:], zlib.crc32(raw[60:64], zlib.crc32(raw[:56])))
    assert struct.unpack_from("<I", raw, 56)[0] == expected_crc
    assert raw[64:] == b"hello"


def test_round_trip_is_zero_copy_and_tolerates_trailing_slot_bytes() -> None:
    buf = memoryview(bytearray(envelope.envelope_size(64)))
    buf[64:69] = b"abcde"  # the codec writes in place; seal only writes the header
    n = envelope.seal(buf, sequence=1, timestamp_ns=2, payload_len=5)
    header, payload = envelope.decode(buf)  # whole slot: bytes past payload_len are ignored
    assert n == 69 and header.sequence == 1 and header.timestamp_ns == 2
    assert header.correlation_id == bytes(32) and bytes(payload) == b"abcde"
    assert payload.obj is buf.obj  # a view of the slot, not a copy


@pytest.mark.parametrize("offset", [0, 8, 20, 48, 60, 64, 68])
def test_any_flipped_bit_outside_the_crc_field_is_a_crc_mismatch(offset: int) -> None:
    view = bytearray(_sealed(b"hello"))
    view[offset] ^= 0x10
    with pytest.raises((CrcMismatch, EnvelopeTooShort)):
        envelope.decode(view)


def test_corrupted_crc_field_is_a_crc_mismatch() -> None:
    view = bytearray(_sealed(b"x"))
    view[57] ^= 1
    with pytest.raises(CrcMismatch):
        envelope.decode(view)


def test_short_buffers_are_refused() -> None:
    with pytest.raises(EnvelopeTooShort):
        envelope.decode(b"\0" * 63)
    view = bytes(_sealed(b"hello"))
    with pytest.raises(EnvelopeTooShort):
        envelope.decode(view[:-1])


def test_payload_larger_than_slot_and_long_correlation_are_refused() -> None:
    buf = memoryview(bytearray(envelope.envelope_size(4)))
    with pytest.raises(PayloadTooLarge):
        envelope.encode(buf, b"12345", sequence=1, timestamp_ns=1)
    with pytest.raises(PayloadTooLarge):
        envelope.encode(buf, b"1", sequence=1, timestamp_ns=1, correlation_id=b"x" * 33)


def test_unknown_version_is_refused() -> None:
    buf = memoryview(bytearray(envelope.envelope_size(8)))
    envelope.encode(buf, b"v", sequence=1, timestamp_ns=1)
    struct.pack_into("<H", buf, 60, 99)
    struct.pack_into("<I", buf, 56, envelope.compute_crc(buf, 1))
    with pytest.raises(UnsupportedVersion):
        envelope.decode(buf[:65])


def _pair(monitor: HealthMonitor, capacity: int = 4):
    desc = ChannelDescriptor("chan", Iceoryx2Routing("svc"), max_payload=128)
    ring = RingLink(capacity, desc.slot_size)
    ring._has_receiver = True
    hooks = ChannelHooks(monitor)
    return ring, ChannelWriter(desc, ring.sender, hooks=hooks), ChannelReader(desc, ring.receiver, hooks=hooks)


def test_writer_reader_carry_sequence_timestamp_and_correlation() -> None:
    monitor = HealthMonitor("c")
    _ring, w, r = _pair(monitor)
    assert w.send({"a": 1}, correlation_id=b"req-1") == 1
    assert w.send([1, 2]) == 2
    m1, m2 = r.try_recv(), r.try_recv()
    assert (m1.value, m1.sequence, m1.correlation_id.rstrip(b"\0")) == ({"a": 1}, 1, b"req-1")
    assert (m2.value, m2.sequence) == ([1, 2], 2)
    assert m1.timestamp_ns <= m2.timestamp_ns
    assert r.try_recv() is None


def test_crc_mismatch_is_discarded_with_an_event_and_health_recovers() -> None:
    monitor = HealthMonitor("c")
    monitor.set_link(Connecting(1))
    monitor.set_link(Up())
    events = monitor.subscribe()
    ring, w, r = _pair(monitor)
    w.send("first")
    ring._slots[0][64] ^= 0xFF  # corrupt the payload in the bridge
    w.send("second")
    msg = r.try_recv()
    assert msg is not None and msg.value == "second"  # the bad one was skipped, not returned
    assert r.discarded == 1
    got = events.drain()
    discards = [e for e in got if isinstance(e, EnvelopeDiscarded)]
    assert len(discards) == 1 and discards[0].channel == "chan" and "crc32" in discards[0].reason
    transitions = [e for e in got if isinstance(e, HealthEvent)]
    assert isinstance(transitions[0].current, Degraded)
    assert transitions[-1].current == Up()  # the next valid envelope cleared it
