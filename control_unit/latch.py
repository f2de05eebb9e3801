"""The CU's safety latch on disk: a SafetyStop, and whether the last CU exited cleanly, outlive the process.

Written ahead (synced) on every change before the cycle publishes it; read once at start-up. A CU that
finds a latched SafetyStop, or the record of a CU that did not exit cleanly, starts in SafetyStop and
requires an operator reset before any motion (DESIGN.md "Safety latches across restarts").
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.files import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "cu_latch.json"
FORMAT_VERSION = 1
REASON_MAX = 200  # characters of the reason kept in the file


@dataclass(frozen=True)
class LatchRecord:
    """What must survive the CU. `running` is true from start-up until a clean exit."""

    safety_stop: bool = False
    reason: str = ""  # why the SafetyStop was triggered (the operator message of the time)
    running: bool = False
    pid: int = 0
    updated_unix: float = 0.0
    version: int = FORMAT_VERSION


@dataclass(frozen=True)
class StartLatch:
    """What a starting CU must honour: `required` = start in SafetyStop, reset before any motion."""

    required: bool
    message: str


def load(path: Path) -> tuple[LatchRecord | None, str]:
    """The record and "" — or None and why it could not be used (missing: ""; corrupt: the reason)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({e})"
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        return None, f"{path}: unknown format"
    try:
        rec = LatchRecord(safety_stop=bool(data["safety_stop"]), reason=str(data.get("reason", ""))[:REASON_MAX],
                          running=bool(data["running"]), pid=int(data.get("pid", 0)),
                          updated_unix=float(data.get("updated_unix", 0.0)))
    except (KeyError, TypeError, ValueError) as e:
        return None, f"{path}: malformed ({e})"
    return rec, ""


def judge(rec: LatchRecord | None, problem: str) -> StartLatch:
    """How the previous CU left the machine. A record we cannot read is treated as the worst case
    (fail safe): a reset is required."""
    if problem:
        return StartLatch(True, f"safety latch file unusable ({problem}): operator reset required")
    if rec is None:
        return StartLatch(False, "")
    if rec.safety_stop:
        why = f" ({rec.reason})" if rec.reason else ""
        return StartLatch(True, f"safety stop latched before the control unit restarted{why}: operator reset required")
    if rec.running:
        return StartLatch(True, f"control unit restarted after an unclean exit (pid {rec.pid}): "
                                "operator reset required before any motion")
    return StartLatch(False, "")


class SafetyLatch:
    """Owns the file. `update()` is called every cycle and writes only when the latched state changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.safety_stop = False
        self.reason = ""
        self.writes = 0

    def start(self) -> StartLatch:
        """Read what the previous CU left, then record this CU as running (before the first cycle)."""
        rec, problem = load(self.path)
        verdict = judge(rec, problem)
        if verdict.required:
            log.warning("%s", verdict.message)
        self.safety_stop = verdict.required
        self.reason = verdict.message if verdict.required else ""
        self._write(running=True)
        return verdict

    def update(self, safety_stop: bool, reason: str) -> None:
        """Cheap when nothing changed; a change is on disk before this returns (write-ahead)."""
        safety_stop = bool(safety_stop)  # a numpy bool from a state word would not go into JSON
        if safety_stop == self.safety_stop:
            return
        self.safety_stop = safety_stop
        self.reason = reason[:REASON_MAX] if safety_stop else ""
        self._write(running=True)

    def clean_exit(self) -> None:
        """A clean stop: the latch (if any) stays, the next CU needs no reset for an unclean exit."""
        self._write(running=False)

    def _write(self, running: bool) -> None:
        rec = LatchRecord(self.safety_stop, self.reason, running, os.getpid(), time.time())
        try:
            write_atomic(self.path, json.dumps(asdict(rec), sort_keys=True))
            self.writes += 1
        except OSError as e:  # the cycle goes on; the operator sees it in the log
            log.error("cannot write the safety latch %s: %s", self.path, e)
