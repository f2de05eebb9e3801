"""A small JSON file in the run directory recording what the RE is doing (program, step, axes).

A restarted RE reads it: if its predecessor died while running, it comes back in Error saying so.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from common.files import write_atomic
from common.states import ReState

from .executor import RecoveredRun

log = logging.getLogger(__name__)

FILE_NAME = "re_state.json"
_ACTIVE = {ReState.RUNNING.name, ReState.PAUSED.name, ReState.STOPPING.name}


def write(path: Path, record: dict[str, object]) -> None:
    """Atomic, synced replace (common.files.write_atomic); failures are logged, never fatal."""
    try:
        write_atomic(path, json.dumps(record, sort_keys=True))
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
    """Writes the record when it changes, before the tick's commands and status go out
    (write-ahead): a status naming a step, or a command of that step, is never seen before the
    file names it, so a crash at any moment leaves the file right. The record changes only on
    step and state transitions, and a write into the run directory (tmpfs by default) costs tens
    of microseconds — no thread needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[str, object] | None = None

    def submit(self, record: dict[str, object]) -> None:
        if record != self._last:
            write(self.path, record)
            self._last = record

    def flush(self, record: dict[str, object] | None = None) -> None:
        """Write `record` now if given (shutdown)."""
        if record is not None:
            self.submit(record)
