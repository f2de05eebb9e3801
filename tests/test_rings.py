"""Command and ack rings over real segments: exactly-once delivery, bounded in-flight (busy, never
overwritten), writer restart, consumer restart (NOT_EXECUTED instead of silence)."""
from __future__ import annotations

import pytest

from common.consts import CMD_RING_SLOTS
from common.shm.commands import CuCommand, ResultCode
from common.shm.p2p import TypedP2pReader, TypedP2pWriter, segment_name
from common.shm.rings import CommandRingReader, CommandRingWriter, RingFull
from common.shm.segments import CU_TO_RPC, RPC_TO_CU


class Pair:
    """rpc_cu (commands) and cu_rpc (acks) with both ends in this process."""

    def __init__(self) -> None:
        self.cmd_w = TypedP2pWriter.create(segment_name("rpc", "cu"), "rpc", "cu", RPC_TO_CU)
        self.ack_w = TypedP2pWriter.create(segment_name("cu", "rpc"), "cu", "rpc", CU_TO_RPC)
        self.producer = CommandRingWriter(self.cmd_w.local["ring"])
        self.consumer = CommandRingReader(self.ack_w.local["acks"])
        self.cmd_w.commit()
        self.ack_w.commit()
        self.cmd_r = TypedP2pReader.attach(self.cmd_w.name, "cu", RPC_TO_CU, stale_reads=1 << 30)
        self.ack_r = TypedP2pReader.attach(self.ack_w.name, "rpc", CU_TO_RPC, stale_reads=1 << 30)

    def consume(self, result=ResultCode.OK, message="ok"):
        self.cmd_w.commit()
        taken = list(self.consumer.take(self.cmd_r.read()["ring"]))
        for c in taken:
            self.consumer.ack(c, result, message)
        self.ack_w.commit()
        return taken

    def acks(self):
        return self.producer.poll_acks(self.ack_r.read()["acks"])

    def close(self):
        for x in (self.cmd_r, self.ack_r, self.cmd_w, self.ack_w):
            x.close()


@pytest.fixture
def pair(fresh_prefix):
    p = Pair()
    p.consume()  # consumer sees the writer epoch
    p.acks()
    yield p
    p.close()


def test_each_command_once_with_its_ack(pair):
    seqs = [pair.producer.submit(CuCommand.MOVE_ABSOLUTE, 100 + i, axis=1, args=(float(i), 1.0)) for i in range(5)]
    taken = pair.consume()
    assert [c.seq for c in taken] == seqs
    assert [c.request_id for c in taken] == [100, 101, 102, 103, 104]
    assert taken[3].args[:2] == (3.0, 1.0) and taken[0].code == CuCommand.MOVE_ABSOLUTE
    assert pair.consume() == []  # nothing twice
    acks = pair.acks()
    assert [a.request_id for a in acks] == [100, 101, 102, 103, 104]
    assert all(a.ok and a.message == "ok" for a in acks)
    assert pair.producer.in_flight == 0


def test_full_ring_is_busy_not_overwritten(pair):
    for i in range(CMD_RING_SLOTS):
        pair.producer.submit(CuCommand.NOP, i)
    with pytest.raises(RingFull):
        pair.producer.submit(CuCommand.NOP, 999)
    taken = pair.consume()
    assert [c.request_id for c in taken] == list(range(CMD_RING_SLOTS))
    pair.acks()
    pair.producer.submit(CuCommand.NOP, 1000)  # room again once consumed
    assert [c.request_id for c in pair.consume()] == [1000]
    assert pair.consumer.lost == 0


def test_refusal_carries_code_and_reason(pair):
    pair.producer.submit(CuCommand.ENABLE_AXIS, 7, axis=9)
    pair.consume(ResultCode.INVALID_ARGUMENT, "axis 9 is not configured")
    (ack,) = pair.acks()
    assert ack.result == ResultCode.INVALID_ARGUMENT and "axis 9" in ack.message


def test_consumer_restart_reports_not_executed(pair):
    pair.producer.submit(CuCommand.HOME, 55, axis=1)
    pair.cmd_w.commit()
    # the consumer dies before taking it; a new consumer instance starts
    pair.consumer = CommandRingReader(pair.ack_w.local["acks"])
    pair.consume()
    acks = pair.acks()
    assert [(a.request_id, a.result) for a in acks] == [(55, ResultCode.NOT_EXECUTED)]
    assert pair.producer.in_flight == 0
    pair.producer.submit(CuCommand.HOME, 56, axis=1)
    assert [c.request_id for c in pair.consume()] == [56]
    assert [a.request_id for a in pair.acks()] == [56]


def test_writer_restart_is_followed_from_its_first_command(pair):
    pair.producer.submit(CuCommand.NOP, 1)
    pair.consume()
    pair.acks()
    # a new writer instance (new epoch, count restarts at 0)
    pair.producer = CommandRingWriter(pair.cmd_w.local["ring"])
    pair.producer.submit(CuCommand.STOP, 2, axis=1)
    taken = pair.consume()
    assert [c.request_id for c in taken] == [2]
    assert [a.request_id for a in pair.acks()] == [2]


def test_a_packed_slot_reads_back_field_by_field_and_a_value_that_does_not_fit_admits_nothing(pair):
    """Issue 15 (command round trip): the writer packs a slot in one struct write; every field —
    8 arguments, a UTF-8 text cut on a character boundary — reads back as the consumer's Command,
    and a value outside its field's range is refused with nothing admitted (count unchanged)."""
    long_text = "é" * 40  # 80 bytes: cut to the slot's 31 on a character boundary
    args = tuple(float(i) + 0.5 for i in range(8))
    seq = pair.producer.submit(CuCommand.MOVE_ABSOLUTE, 2**40, axis=3, pin=65535, flags=7, args=args, text=long_text)
    (c,) = pair.consume()
    assert (c.seq, c.request_id, c.code, c.axis, c.pin, c.flags) == (seq, 2**40, CuCommand.MOVE_ABSOLUTE, 3, 65535, 7)
    assert c.args == args and c.text == "é" * 15 and c.issued_ns > 0
    count = pair.producer.count
    with pytest.raises(ValueError, match="does not fit"):
        pair.producer.submit(CuCommand.NOP, 1, pin=70000)
    with pytest.raises(ValueError, match="at most 8"):
        pair.producer.submit(CuCommand.NOP, 1, args=(0.0,) * 9)
    assert pair.producer.count == count and pair.consume() == []
