"""The HAL state file ([hal] state_file): axis positions and referenced flags across HAL restarts.

Written atomically (tmp file, fsync, rename) by a background thread, so the 1 kHz loop never waits.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np

from common.files import write_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def load_state(path: Path, axis_ids: tuple[int, ...]) -> tuple[dict[int, float], dict[int, bool]]:
    """Positions and referenced flags by axis id; empty (with a warning) if missing or corrupt."""
    try:
        data = json.loads(path.read_text())
        axes = data["axes"]
        positions = {int(k): float(v["position"]) for k, v in axes.items() if int(k) in axis_ids}
        referenced = {int(k): bool(v.get("referenced", False)) for k, v in axes.items() if int(k) in axis_ids}
    except FileNotFoundError:
        log.info("no HAL state file at %s: axes start at their default positions", path)
        return {}, {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("HAL state file %s unreadable (%s): axes start at their default positions", path, e)
        return {}, {}
    positions = {k: v for k, v in positions.items() if math.isfinite(v)}
    log.info("HAL state restored from %s (%d axes)", path, len(positions))
    return positions, referenced


class StateWriter:
    """Keeps the state file up to date: `offer()` from the loop (cheap, skips unchanged state),
    a daemon thread writes; `close()` writes the final state synchronously."""

    def __init__(self, path: Path, axis_ids: tuple[int, ...], driver: str) -> None:
        self.path = path
        self.idx = np.array([a - 1 for a in axis_ids], np.intp)
        self.axis_ids = axis_ids
        self.driver = driver
        self._pos = np.full(len(axis_ids), np.nan)
        self._ref = np.zeros(len(axis_ids), np.bool_)
        self._buf_pos = self._pos.copy()
        self._buf_ref = self._ref.copy()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.writes = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="hal-state-writer", daemon=True)

    def start(self) -> "StateWriter":
        self._thread.start()
        return self

    def offer(self, position: np.ndarray, referenced: np.ndarray) -> None:
        """Hand the current state to the writer if it changed since the last offer."""
        pos = position[self.idx]
        ref = referenced[self.idx]
        if np.array_equal(pos, self._pos) and np.array_equal(ref, self._ref):
            return
        self._pos[:] = pos
        self._ref[:] = ref
        with self._lock:
            self._buf_pos[:] = pos
            self._buf_ref[:] = ref
        self._wake.set()

    def _text(self) -> str:
        with self._lock:
            pos = self._buf_pos.tolist()
            ref = self._buf_ref.tolist()
        axes = {str(a): {"position": p, "referenced": r} for a, p, r in zip(self.axis_ids, pos, ref) if math.isfinite(p)}
        return json.dumps({"version": FORMAT_VERSION, "driver": self.driver, "saved_at": time.time(), "axes": axes})

    def _write(self) -> None:
        try:
            write_atomic(self.path, self._text())
            self.writes += 1
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error("cannot write HAL state file %s: %s (%d failures)", self.path, e, self.errors)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            self._write()

    def close(self, position: np.ndarray, referenced: np.ndarray) -> None:
        """Stop the thread and write the final state (also when unchanged: the file must exist)."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._pos[:] = np.nan
        self.offer(position, referenced)
        self._write()
