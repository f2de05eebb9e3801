"""Command rings and ack rings: exactly-once command delivery over seqlock segments.

Shared by all five command paths (re_cu, rpc_cu, re_hal, rpc_hal, rpc_re); see docs below.

Protocol
--------
The command writer W keeps `CMD_RING` in its outbound payload: its instance `epoch` and the
`count` of commands it has written; command `seq` n lives in slot `(n-1) % SLOTS`. The consumer
C keeps `ACK_RING` in its reverse payload: its own `epoch`, the W epoch it follows
(`cmd_epoch_seen`), the highest seq it has `consumed`, and a ring of acks with their `count`.

- C consumes each seq once. When W's epoch changes (W restarted) C starts again from seq 1 of
  the new epoch. When C itself starts it skips what is already in the ring (it cannot know what
  its previous instance did); W sees those seqs `consumed` with no ack and reports them
  NOT_EXECUTED instead of waiting for a deadline.
- W never has more than SLOTS commands in flight (`count - consumed`): `submit` raises
  `RingFull` (the caller answers "busy"), it never overwrites an unconsumed slot.
- W notices C restarting (C's epoch changes) and fails everything pending with NOT_EXECUTED.
"""
from __future__ import annotations

import math
import os
import struct
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from common.consts import ACK_MESSAGE_LEN, ACK_RING_SLOTS, CMD_RING_SLOTS, NAME_LEN
from common.shm.commands import ResultCode
from common.shm.conversions import decode_str, encode_str


class RingFull(Exception):
    """All command slots are in flight; nothing was written (BackPressure / RESOURCE_EXHAUSTED)."""


def new_epoch() -> int:
    """A non-zero instance id, unique per process start."""
    return (int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF) or 1


@dataclass(frozen=True)
class Command:
    """A command as the consumer sees it."""

    seq: int
    request_id: int
    issued_ns: int
    code: int
    axis: int
    pin: int
    flags: int
    args: tuple[float, ...]
    text: str


@dataclass(frozen=True)
class Ack:
    """An ack as the command writer sees it."""

    request_id: int
    seq: int
    result: ResultCode
    detail: int
    message: str
    done_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.result == ResultCode.OK


# One command slot as packed bytes (seq, request_id, issued_ns, code, axis, pin, flags, 8 args, text):
# one struct.pack_into per command instead of nine structured-field assignments (~5x cheaper; the
# bridge's submit sits on a command's round trip). Checked against the slot dtype at first use.
_SLOT_STRUCT = struct.Struct("<QQQHHHH8d%ds" % NAME_LEN)
_SLOT_FIELDS = ("seq", "request_id", "issued_ns", "code", "axis", "pin", "flags", "args", "text")
_NO_ARGS = (0.0,) * 8


def _check_slot_layout(slot_dtype: np.dtype) -> None:
    """The packed struct must match the CMD_RING slot dtype field by field (order, offsets, size)."""
    offsets = [slot_dtype.fields[f][1] for f in _SLOT_FIELDS]
    want = [0, 8, 16, 24, 26, 28, 30, 32, 96]
    if offsets != want or slot_dtype.itemsize != _SLOT_STRUCT.size:
        raise AssertionError(f"CMD_RING slot layout changed ({offsets}, {slot_dtype.itemsize} bytes): update _SLOT_STRUCT")


class CommandRingWriter:
    """Producer side. `ring` is the CMD_RING field of the writer's local payload (a view);
    `acks` is the ACK_RING field of the reverse segment's last read (a view), refreshed by the
    caller (read the reverse segment, then call `poll_acks`)."""

    def __init__(self, ring: np.ndarray) -> None:
        self.ring = ring
        self.epoch = new_epoch()
        ring["epoch"] = self.epoch
        ring["count"] = 0
        self._slots = ring["slots"]
        self._n = len(self._slots)
        _check_slot_layout(self._slots.dtype)
        # the slots' bytes (ring is a view into the writer's local payload: writes land there)
        self._slot_bytes = memoryview(self._slots.reshape(-1).view(np.uint8))
        self._count = ring["count"]  # 0-d view
        self._consumed = 0
        self._consumer_epoch = 0
        self._last_ack = 0
        self._pending: dict[int, int] = {}  # seq -> request_id

    @property
    def count(self) -> int:
        return int(self.ring["count"])

    @property
    def in_flight(self) -> int:
        return self.count - self._consumed

    @property
    def pending(self) -> dict[int, int]:
        return dict(self._pending)

    def submit(
        self,
        code: int,
        request_id: int,
        *,
        axis: int = 0,
        pin: int = 0,
        flags: int = 0,
        args: Sequence[float] = (),
        text: str = "",
    ) -> int:
        """Place one command in the local ring (the caller then commits its segment). Returns its seq."""
        if self.in_flight >= self._n:
            raise RingFull(f"{self.in_flight} commands in flight, ring has {self._n} slots")
        if len(args) > 8:
            raise ValueError("at most 8 arguments")
        seq = int(self._count) + 1
        try:
            _SLOT_STRUCT.pack_into(
                self._slot_bytes, ((seq - 1) % self._n) * _SLOT_STRUCT.size, seq, request_id, time.monotonic_ns(),
                int(code), axis, pin, flags, *args, *_NO_ARGS[len(args):], encode_str(text, NAME_LEN))
        except struct.error as e:  # a value out of its field's range: nothing admitted (count unchanged)
            raise ValueError(f"command does not fit its ring slot: {e}") from None
        self._count[()] = seq  # last: the slot is complete before the count admits it
        self._pending[seq] = request_id
        return seq

    def poll_acks(self, acks: np.ndarray) -> list[Ack]:
        """Collect new acks from the consumer's ACK_RING view. Commands the consumer consumed
        without acking, or lost by restarting, come back as NOT_EXECUTED acks."""
        out: list[Ack] = []
        c_epoch = int(acks["epoch"])
        if c_epoch != self._consumer_epoch:
            if self._consumer_epoch != 0:
                for seq, rid in sorted(self._pending.items()):
                    if seq <= self._consumed:
                        continue
                    out.append(Ack(rid, seq, ResultCode.NOT_EXECUTED, 0, "consumer restarted; command not executed"))
                    self._pending.pop(seq)
            self._consumer_epoch = c_epoch
            self._last_ack = 0
        if int(acks["cmd_epoch_seen"]) != self.epoch:
            return out  # the consumer has not seen this writer instance yet
        count = int(acks["count"])
        slots = acks["slots"]
        first = max(self._last_ack + 1, count - len(slots) + 1)
        for n in range(first, count + 1):
            a = slots[(n - 1) % len(slots)]
            if int(a["cmd_epoch"]) != self.epoch:
                continue  # an ack for an earlier instance of this writer
            seq = int(a["seq"])
            rid = self._pending.pop(seq, None)
            if rid is None:
                continue  # not ours (an earlier epoch) or already reported
            out.append(
                Ack(
                    int(a["request_id"]), seq, ResultCode(int(a["result"])), int(a["detail"]),
                    decode_str(a["message"]), int(a["done_ns"]),
                )
            )
        self._last_ack = count
        consumed = int(acks["consumed"])
        self._consumed = max(self._consumed, min(consumed, self.count))
        for seq in [s for s in self._pending if s <= self._consumed]:
            out.append(Ack(self._pending.pop(seq), seq, ResultCode.NOT_EXECUTED, 0,
                           "consumer started after the command was issued; not executed"))
        return out

    def fail_pending(self, reason: str) -> list[Ack]:
        """Give up on everything pending (e.g. consumer gone); the slots stay reserved until consumed."""
        out = [Ack(rid, seq, ResultCode.NOT_EXECUTED, 0, reason) for seq, rid in sorted(self._pending.items())]
        self._pending.clear()
        return out


class CommandRingReader:
    """Consumer side. `acks` is the ACK_RING field of the consumer's local outbound payload."""

    def __init__(self, acks: np.ndarray) -> None:
        self.acks = acks
        self.epoch = new_epoch()
        acks["epoch"] = self.epoch
        acks["cmd_epoch_seen"] = 0
        acks["consumed"] = 0
        acks["count"] = 0
        self._ack_slots = acks["slots"]
        self._writer_epoch = 0
        self._consumed = 0
        self.lost = 0  # commands overwritten before we saw them (a writer bug; counted, reported)

    def take(self, ring: np.ndarray) -> Iterator[Command]:
        """Yield each new command of the writer's CMD_RING view exactly once. The caller must
        `ack()` each (or the writer reports it NOT_EXECUTED)."""
        w_epoch = int(ring["epoch"])
        count = int(ring["count"])
        if w_epoch == 0:
            return
        if w_epoch != self._writer_epoch:
            # First sight of this consumer: skip history. Writer restart: start from its seq 1.
            self._consumed = count if self._writer_epoch == 0 else 0
            self._writer_epoch = w_epoch
            self.acks["cmd_epoch_seen"] = w_epoch
            self.acks["consumed"] = self._consumed
        slots = ring["slots"]
        n = len(slots)
        if count - self._consumed > n:
            self.lost += count - self._consumed - n
            self._consumed = count - n
        while self._consumed < count:
            seq = self._consumed + 1
            s = slots[(seq - 1) % n]
            self._consumed = seq
            self.acks["consumed"] = seq
            if int(s["seq"]) != seq:
                self.lost += 1
                continue
            yield Command(
                seq, int(s["request_id"]), int(s["issued_ns"]), int(s["code"]), int(s["axis"]),
                int(s["pin"]), int(s["flags"]), tuple(float(x) for x in s["args"]), decode_str(s["text"]),
            )

    def reset_writer(self) -> None:
        """Forget the writer (its segment vanished); its next epoch is followed from seq 1."""
        if self._writer_epoch != 0:
            self._writer_epoch = 1  # non-zero: next epoch is a restart, not our first sight

    def ack(self, cmd: Command, result: ResultCode, message: str = "", detail: int = 0) -> None:
        n = int(self.acks["count"]) + 1
        a = self._ack_slots[(n - 1) % len(self._ack_slots)]
        a["request_id"] = cmd.request_id
        a["seq"] = cmd.seq
        a["cmd_epoch"] = self._writer_epoch
        a["result"] = int(result)
        a["detail"] = detail
        a["done_ns"] = time.monotonic_ns()
        a["message"] = encode_str(message, ACK_MESSAGE_LEN)
        self.acks["count"] = n


def finite_args(cmd: Command, n: int) -> bool:
    """True when the first n arguments are finite numbers (NaN/inf are refused everywhere)."""
    return all(math.isfinite(x) for x in cmd.args[:n])


assert CMD_RING_SLOTS < ACK_RING_SLOTS, "acks must outlive the commands in flight"
