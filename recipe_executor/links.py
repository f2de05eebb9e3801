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
from common.shm.inbound import CommandInbox, CommandOutbox, Inbound, InboundPolicy, LinkStatus
from common.shm.p2p import TypedP2pWriter, segment_name
from common.shm.rings import Command, RingFull
from common.shm.segments import RE_TO_CU, RE_TO_HAL, RE_TO_MQT, RE_TO_RPC
from common.shm.wake import WakePoster
from common.consts import ACK_MESSAGE_LEN, NAME_LEN

from .executor import Snapshot
from .port import Ticket

log = logging.getLogger(__name__)

ATTACH_INTERVAL_S = 1.0
PROBE_EVERY = 5  # polls between writer-lock probes of the CU / HAL / gRPC bridge


class Links:
    """Segments + rings; one instance per RE process. Also the executor's Port."""

    def __init__(self, stale_after_s: float) -> None:
        self._writers: list[TypedP2pWriter] = []
        try:
            self.re_cu = self._create("cu", RE_TO_CU)
            self.re_hal = self._create("hal", RE_TO_HAL)
            self.re_mqt = self._create("mqt", RE_TO_MQT)
            self.re_rpc = self._create("rpc", RE_TO_RPC)
        except BaseException:
            self.close()
            raise
        # by time, not read counts: the RE polls at its tick only while a recipe runs
        policy = InboundPolicy(stale_after_s=stale_after_s, retry_s=ATTACH_INTERVAL_S, probe_every=PROBE_EVERY)
        self.cu_in = Inbound.for_key("cu_re", policy)
        self.hal_in = Inbound.for_key("hal_re", policy)
        self.rpc_in = CommandInbox(Inbound.for_key("rpc_re", policy), self.re_rpc.local["acks"])
        self.cu_out = CommandOutbox(self.re_cu.local["ring"], self.cu_in)
        self.hal_out = CommandOutbox(self.re_hal.local["ring"], self.hal_in)
        self.wake_mqt, self.wake_rpc = WakePoster("mqt"), WakePoster("rpc")
        self.wake_hal = WakePoster("hal")  # the HAL takes a posted command between its cycles
        self._hal_submitted = False
        self._rpc_acks = self.re_rpc.local["acks"]["count"]
        self._rpc_acks_seen = 0
        self._status_changed = True
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
        self.cu_in.poll(now)
        if self.cu_in.status is LinkStatus.LIVE:
            self._collect("cu", self.cu_out.poll_acks(), self.cu_in.heartbeat)
        self.hal_in.poll(now)
        if self.hal_in.status is LinkStatus.LIVE:
            self._collect("hal", self.hal_out.poll_acks(), self.hal_in.heartbeat)
        self.rpc_in.poll(now)

    def _collect(self, target: str, acks: list, commit: int) -> None:
        for a in acks:
            t = self._tickets.pop((target, a.request_id), None)
            if t is not None:
                t.ack = a
                t.ack_commit = commit

    def commands(self) -> Iterator[Command]:
        """rpc_re commands not seen before (each must be acked with `ack`)."""
        return self.rpc_in.take()

    def ack(self, cmd: Command, result: ResultCode, message: str) -> None:
        self.rpc_in.ack(cmd, result, message)

    def busy(self) -> bool:
        """Commands wait for a ring slot, or for an ack from a consumer that is there."""
        return bool(self._queue) or (bool(self._tickets) and (self.cu_in.live or self.hal_in.live))

    # --- Port -------------------------------------------------------------------------------
    def cu_ready(self) -> bool:
        return self.cu_out.ready

    def hal_ready(self) -> bool:
        return self.hal_out.ready

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
            out = self.cu_out if t.target == "cu" else self.hal_out
            try:
                out.submit(t.code, t.request_id, axis=t.axis, pin=t.pin, args=t.args)
            except RingFull:  # BackPressure: it stays queued until a slot is free
                return
            t.sent_at = time.monotonic()
            self._hal_submitted |= out is self.hal_out
            self._queue.pop(0)

    def send_cu(self, code: int, axis: int = 0, pin: int = 0, args: Sequence[float] = ()) -> Ticket:
        return self._send("cu", code, axis, pin, args)

    def send_hal(self, code: int, pin: int = 0, args: Sequence[float] = ()) -> Ticket:
        return self._send("hal", code, 0, pin, args)

    def cu_status(self) -> np.ndarray:
        return self.cu_in.local["status"]

    def cu_axis(self, axis_id: int) -> np.ndarray:
        return self.cu_in.local["status"]["axes"][axis_id - 1]

    def cu_commits(self) -> int:
        return self.cu_in.heartbeat

    def hal_io(self) -> np.ndarray:
        return self.hal_in.local["io"]

    def hal_commits(self) -> int:
        return self.hal_in.heartbeat

    # --- outputs ----------------------------------------------------------------------------
    def publish(self, snap: Snapshot) -> None:
        """Telemetry into re_mqt and re_rpc (written only when it changed) and re_cu.re_state."""
        self.re_cu.local["re_state"] = int(snap.state)
        if snap == self._last:
            return
        self._last = snap
        self._status_changed = True
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
        """Commit every segment, then wake the bridges when the status or the rpc acks changed."""
        self._flush()
        for w in self._writers:
            w.commit()
        if self._hal_submitted:
            self._hal_submitted = False
            self.wake_hal.post()
        n = self._rpc_acks[()]
        if self._status_changed or n != self._rpc_acks_seen:
            self._rpc_acks_seen = n
            self.wake_rpc.post()
            if self._status_changed:
                self.wake_mqt.post()
            self._status_changed = False

    def close(self) -> None:
        for inp in ("cu_in", "hal_in", "rpc_in", "wake_mqt", "wake_rpc", "wake_hal"):
            if hasattr(self, inp):
                getattr(self, inp).close()
        for w in self._writers:
            w.close()
        self._writers = []
