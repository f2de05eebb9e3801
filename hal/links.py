"""The HAL's inbound segments (cu_hal, re_hal, rpc_hal): attach when present, read once per cycle.

An inbound writer counts as live once its heartbeat has moved since we attached and until it stalls.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from common.shm.p2p import (
    HeartbeatStale,
    ModuleAbbrev,
    ReadContention,
    ShmError,
    TypedP2pReader,
    shm_path,
)
from common.shm.segments import SEGMENTS

log = logging.getLogger(__name__)

WRITER_PROBE_EVERY = 5  # polls between flock probes of the writer's lock (a death seen within 5 cycles)


class InboundLink:
    """One optional inbound segment. `poll(now_ns)` returns the payload read this cycle, or None
    when the segment is absent, not yet live, or stale. `fresh` says the heartbeat moved on this
    read (a new frame); `live` that the last poll returned data."""

    def __init__(self, key: str, stale_reads: int, retry_ns: int) -> None:
        spec = SEGMENTS[key]
        self.key = key
        self.name = spec.name()
        self.dtype = spec.dtype
        self.stale_reads = stale_reads
        self.retry_ns = retry_ns
        self.reader: TypedP2pReader | None = None
        self.local: np.ndarray | None = None
        self.live = False
        self.fresh = False
        self.contentions = 0
        self._next_try = 0
        self._last_hb = -1
        self._advanced = False  # heartbeat moved since attach (a dead writer's segment never does)
        self._last_error = ""
        self._polls = 0

    def _attach(self, now_ns: int) -> bool:
        if now_ns < self._next_try:
            return False
        self._next_try = now_ns + self.retry_ns
        if not os.path.exists(shm_path(self.name)):
            return False
        try:
            self.reader = TypedP2pReader.attach(self.name, ModuleAbbrev.HAL, self.dtype, stale_reads=self.stale_reads)
        except ShmError as e:
            if str(e) != self._last_error:  # once per distinct reason, not once per retry
                self._last_error = str(e)
                log.warning("cannot attach %s yet: %s", self.name, e)
            return False
        self._last_error = ""
        self.local = self.reader.local
        self._last_hb = self.reader.heartbeat
        self._advanced = False
        log.info("attached %s", self.name)
        return True

    def poll(self, now_ns: int) -> np.ndarray | None:
        reader = self.reader
        if reader is None and not self._attach(now_ns):
            return None
        reader = self.reader
        self._polls += 1
        if self._polls % WRITER_PROBE_EVERY == 0 and not reader.writer_alive():
            # The writer process is gone: stale at once, even if a successor takes the segment over
            # and continues the heartbeat before the read count runs out (a restart is a loss).
            self.fresh = False
            self._set_live(False, "gone (its process died)")
            return None
        try:
            local = reader.read()
        except HeartbeatStale:
            self.fresh = False
            self._set_live(False, "stale")
            return None
        except ReadContention:
            self.contentions += 1
            self.fresh = False
            return self.local if self.live else None  # the previous frame is still in local
        hb = reader.heartbeat
        self.fresh = hb != self._last_hb
        if self.fresh:
            self._last_hb = hb
            self._advanced = True
        if not self._advanced:
            return None
        self._set_live(True, "")
        return local

    def _set_live(self, live: bool, why: str) -> None:
        if live != self.live:
            self.live = live
            if live:
                log.info("%s: writer live", self.name)
            else:
                log.warning("%s: writer %s", self.name, why)
                self._advanced = False  # after a stall, wait for the heartbeat to move again

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
            self.local = None
