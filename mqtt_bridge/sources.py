"""The bridge's inbound segments (cu_mqt, hal_mqt, re_mqt): attach when they appear, follow restarts.

A source is LIVE only while its writer's heartbeat moves; stale data is never reported as live.
"""
from __future__ import annotations

import enum
import logging
import math
import os
import time

import numpy as np

from common.shm.p2p import HeartbeatStale, ModuleAbbrev, ReadContention, ShmError, TypedP2pReader, shm_path
from common.shm.segments import SEGMENTS

log = logging.getLogger(__name__)


class SourceStatus(enum.Enum):
    ABSENT = "absent"  # no segment (writer never started, or exited cleanly)
    STALE = "stale"  # segment present, heartbeat frozen (writer hung or dead)
    LIVE = "live"


class SegmentSource:
    """One `<src>_mqt` segment read by the bridge (the exclusive reader).

    `poll()` returns the payload when LIVE, else None; `status` says why. A writer that restarts
    with a new segment is re-attached (inode change); one that took its old segment over simply
    becomes live again when its heartbeat moves.
    """

    def __init__(self, key: str, scan_hz: float, stale_after_s: float = 0.5, retry_s: float = 0.5) -> None:
        spec = SEGMENTS[key]
        if spec.reader is not ModuleAbbrev.MQT:
            raise ValueError(f"{key} is not read by the MQTT bridge")
        self.key = key
        self.name = spec.name()
        self.dtype = spec.dtype
        # the p2p reader counts reads without a heartbeat change; turn the time budget into reads
        self.stale_reads = max(3, math.ceil(stale_after_s * scan_hz))
        self.retry_s = retry_s
        self.reader: TypedP2pReader | None = None
        self.status = SourceStatus.ABSENT
        self.attach_attempted = False
        self.reattaches = 0
        self._next_try = 0.0
        self._last_hb = -1
        self._advanced = False  # a dead writer's segment never moves: live only after it does

    def _attach(self, now: float) -> bool:
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        self.attach_attempted = True
        if not os.path.exists(shm_path(self.name)):
            return False
        try:
            self.reader = TypedP2pReader.attach(self.name, ModuleAbbrev.MQT, self.dtype, stale_reads=self.stale_reads)
        except ShmError as e:
            log.warning("cannot attach %s yet: %s", self.name, e)
            return False
        self._last_hb = self.reader.heartbeat
        self._advanced = False
        log.info("attached %s", self.name)
        return True

    def poll(self, now: float | None = None) -> np.ndarray | None:
        """Read the segment; the payload (reused buffer) when LIVE, else None."""
        now = time.monotonic() if now is None else now
        if self.reader is None and not self._attach(now):
            self._set(SourceStatus.ABSENT)
            return None
        reader = self.reader
        assert reader is not None
        before = reader.reattach_count
        try:
            local = reader.read()
        except HeartbeatStale:
            self._advanced = False
            self._set(SourceStatus.STALE if os.path.exists(shm_path(self.name)) else SourceStatus.ABSENT)
            return None
        except ReadContention:
            return reader.local if self.status is SourceStatus.LIVE else None
        if reader.reattach_count != before:
            self.reattaches += 1
            self._last_hb = reader.heartbeat
            self._advanced = False  # live again once the new writer's heartbeat moves
            log.info("%s: re-attached to a restarted writer", self.name)
            return None
        hb = reader.heartbeat
        if hb != self._last_hb:
            self._last_hb = hb
            self._advanced = True
        if not self._advanced:
            return None
        self._set(SourceStatus.LIVE)
        return local

    def _set(self, status: SourceStatus) -> None:
        if status is not self.status:
            log.info("%s: %s -> %s", self.name, self.status.value, status.value)
            self.status = status

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
