"""The RE's segments: writes re_cu, re_hal, re_mqt, re_rpc; reads cu_re, hal_re, rpc_re when present.

Implements the executor's Port (commands out through the rings, acks and status back).
"""
from __future__ import annotations

import logging
import time
from typing import Iterator, Sequence

import numpy as np

from common.shm.commands import ResultCode
from common.shm.conversions import encode_str
from common.shm.p2p import (
    HeartbeatStale,
    ReadContention,
    ShmError,
    TypedP2pReader,
    TypedP2pWriter,
    segment_name,
)
from common.shm.rings import Command, CommandRingReader, CommandRingWriter, RingFull
from common.shm.segments import CU_TO_RE, HAL_TO_RE, RE_TO_CU, RE_TO_HAL, RE_TO_MQT, RE_TO_RPC, RPC_TO_RE
from common.consts import ACK_MESSAGE_LEN, NAME_LEN

from .executor import Snapshot
from .port import Ticket

log = logging.getLogger(__name__)

ATTACH_INTERVAL_S = 1.0


class OptionalInput:
    """A reader of a segment that may not exist yet: attach once per ATTACH_INTERVAL_S, report
    `fresh` (read OK and heartbeat moving); a stale writer is retried transparently by p2p."""

    def __init__(self, src: str, dtype: np.dtype, stale_reads: int) -> None:
        self.name = segment_name(src, "re")
        self.dtype = dtype
        self.stale_reads = stale_reads
        self.reader: TypedP2pReader | None = None
        self.fresh = False
        self._next_try = 0.0
        self.zero = np.zeros((), dtype=dtype)
        self.data = self.zero  # last read (zeros until attached)

    def read(self, now: float) -> bool:
        if self.reader is None:
            if now < self._next_try:
                return False
            self._next_try = now + ATTACH_INTERVAL_S
            try:
                self.reader = TypedP2pReader.attach(self.name, "re", self.dtype, stale_reads=self.stale_reads)
                log.info("attached %s", self.name)
            except ShmError as e:
                log.debug("cannot attach %s yet: %s", self.name, e)
                return False
            self.data = self.reader.local
        was = self.fresh
        try:
            self.reader.read()
            self.fresh = True
        except HeartbeatStale:
            self.fresh = False
        except ReadContention:
            pass  # keep the previous verdict; the next tick reads again
        if was != self.fresh:
            log.info("%s %s", self.name, "fresh" if self.fresh else "stale: writer gone or hung")
        return self.fresh

    @property
    def heartbeat(self) -> int:
        return self.reader.heartbeat if self.reader is not None else 0

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.data = self.zero


class Links:
    """Segments + rings; one instance per RE process. Also the executor's Port."""

    def __init__(self, stale_reads: int) -> None:
        self._writers: list[TypedP2pWriter] = []
        try:
            self.re_cu = self._create("cu", RE_TO_CU)
            self.re_hal = self._create("hal", RE_TO_HAL)
            self.re_mqt = self._create("mqt", RE_TO_MQT)
            self.re_rpc = self._create("rpc", RE_TO_RPC)
        except BaseException:
            self.close()
            raise
        self.cu_ring = CommandRingWriter(self.re_cu.local["ring"])
        self.hal_ring = CommandRingWriter(self.re_hal.local["ring"])
        self.rpc_cmds = CommandRingReader(self.re_rpc.local["acks"])
        self.cu_in = OptionalInput("cu", CU_TO_RE, stale_reads)
        self.hal_in = OptionalInput("hal", HAL_TO_RE, stale_reads)
        self.rpc_in = OptionalInput("rpc", RPC_TO_RE, stale_reads)
        self._next_rid = 1
        self._tickets: dict[tuple[str, int], Ticket] = {}
        self._queue: list[Ticket] = []  # waiting for a free ring slot
        self._mqt_status = self.re_mqt.local["status"]
        self._rpc_status = self.re_rpc.local["status"]
        self._last: Snapshot | None = None

    def _create(self, dst: str, dtype: np.dtype) -> TypedP2pWriter:
        w = TypedP2pWriter.create(segment_name("re", dst), "re", dst, dtype)
        self._writers.append(w)
        return w

    # --- inputs -----------------------------------------------------------------------------
    def read_inputs(self, now: float) -> None:
        if self.cu_in.read(now):
            self._collect("cu", self.cu_ring.poll_acks(self.cu_in.data["acks"]), self.cu_in.heartbeat)
        if self.hal_in.read(now):
            self._collect("hal", self.hal_ring.poll_acks(self.hal_in.data["acks"]), self.hal_in.heartbeat)
        self.rpc_in.read(now)

    def _collect(self, target: str, acks: list, commit: int) -> None:
        for a in acks:
            t = self._tickets.pop((target, a.request_id), None)
            if t is not None:
                t.ack = a
                t.ack_commit = commit

    def commands(self) -> Iterator[Command]:
        """rpc_re commands not seen before (each must be acked with `ack`)."""
        if self.rpc_in.reader is None or not self.rpc_in.fresh:
            return iter(())
        return self.rpc_cmds.take(self.rpc_in.data["ring"])

    def ack(self, cmd: Command, result: ResultCode, message: str) -> None:
        self.rpc_cmds.ack(cmd, result, message)

    # --- Port -------------------------------------------------------------------------------
    def cu_ready(self) -> bool:
        return self.cu_in.fresh and int(self.cu_in.data["acks"]["cmd_epoch_seen"]) == self.cu_ring.epoch

    def hal_ready(self) -> bool:
        return self.hal_in.fresh and int(self.hal_in.data["acks"]["cmd_epoch_seen"]) == self.hal_ring.epoch

    def _send(self, target: str, code: int, axis: int, pin: int, args: Sequence[float]) -> Ticket:
        rid = self._next_rid
        self._next_rid += 1
        t = Ticket(target, int(code), rid, axis=axis, pin=pin, args=tuple(args), sent_at=time.monotonic())
        self._tickets[(target, rid)] = t
        self._queue.append(t)
        self._flush()
        return t

    def _flush(self) -> None:
        while self._queue:
            t = self._queue[0]
            ring = self.cu_ring if t.target == "cu" else self.hal_ring
            try:
                ring.submit(t.code, t.request_id, axis=t.axis, pin=t.pin, args=t.args)
            except RingFull:
                return
            t.sent_at = time.monotonic()
            self._queue.pop(0)

    def send_cu(self, code: int, axis: int = 0, pin: int = 0, args: Sequence[float] = ()) -> Ticket:
        return self._send("cu", code, axis, pin, args)

    def send_hal(self, code: int, pin: int = 0, args: Sequence[float] = ()) -> Ticket:
        return self._send("hal", code, 0, pin, args)

    def cu_status(self) -> np.ndarray:
        return self.cu_in.data["status"]

    def cu_axis(self, axis_id: int) -> np.ndarray:
        return self.cu_in.data["status"]["axes"][axis_id - 1]

    def cu_commits(self) -> int:
        return self.cu_in.heartbeat

    def hal_io(self) -> np.ndarray:
        return self.hal_in.data["io"]

    def hal_commits(self) -> int:
        return self.hal_in.heartbeat

    # --- outputs ----------------------------------------------------------------------------
    def publish(self, snap: Snapshot) -> None:
        """Telemetry into re_mqt and re_rpc (written only when it changed) and re_cu.re_state."""
        self.re_cu.local["re_state"] = int(snap.state)
        if snap == self._last:
            return
        self._last = snap
        for st in (self._mqt_status, self._rpc_status):
            st["re_state"] = int(snap.state)
            st["step_result"] = int(snap.step_result)
            st["current_step"] = snap.current_step
            st["step_count"] = snap.step_count
            st["error_code"] = snap.error_code
            st["cycle_count"] = snap.cycle_count
            st["progress"] = snap.progress
            st["program_name"] = encode_str(snap.program, NAME_LEN)
            st["step_kind"] = snap.step_kind.encode("utf-8")[:16]
            st["message"] = encode_str(snap.message, ACK_MESSAGE_LEN)

    def commit(self) -> None:
        self._flush()
        for w in self._writers:
            w.commit()

    def close(self) -> None:
        for inp in ("cu_in", "hal_in", "rpc_in"):
            if hasattr(self, inp):
                getattr(self, inp).close()
        for w in self._writers:
            w.close()
        self._writers = []
