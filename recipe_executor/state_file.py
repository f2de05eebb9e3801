"""A small JSON file in the run directory recording what the RE is doing (program, step, axes).

A restarted RE reads it: if its predecessor died while running, it comes back in Error saying so.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from common.states import ReState

from .executor import RecoveredRun

log = logging.getLogger(__name__)

FILE_NAME = "re_state.json"
_ACTIVE = {ReState.RUNNING.name, ReState.PAUSED.name, ReState.STOPPING.name}


def write(path: Path, record: dict[str, object]) -> None:
    """Atomic replace (write a temp file, rename); failures are logged, never fatal."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)


def recover(path: Path) -> RecoveredRun | None:
    """The run a dead predecessor left unfinished, or None (no file, or it ended cleanly)."""
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return None
    if not isinstance(rec, dict) or rec.get("state") not in _ACTIVE:
        return None
    try:
        return RecoveredRun(
            program=str(rec.get("program", "")), step=int(rec.get("step", 0)), kind=str(rec.get("kind", "")),
            state=str(rec["state"]), axes=tuple(int(a) for a in rec.get("axes", [])),
        )
    except (TypeError, ValueError) as e:
        log.warning("ignoring malformed %s: %s", path, e)
        return None


class StateWriter:
    """Writes the latest record from a thread (a file write costs ~1 ms on a busy disk; the tick
    loop only hands the record over). `flush()` writes synchronously (shutdown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cv = threading.Condition()
        self._pending: dict[str, object] | None = None
        self._last: dict[str, object] | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="re-state-file", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, object]) -> None:
        with self._cv:
            self._pending = record
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._pending is None:
                    return
                rec, self._pending = self._pending, None
            if rec != self._last:
                write(self.path, rec)
                self._last = rec

    def flush(self, record: dict[str, object] | None = None) -> None:
        """Stop the thread and write `record` (or what is pending) now."""
        with self._cv:
            self._stop = True
            rec = record if record is not None else self._pending
            self._pending = None
            self._cv.notify()
        self._thread.join(2.0)
        if rec is not None and rec != self._last:
            write(self.path, rec)
            self._last = rec
