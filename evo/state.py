"""Module states as the watchdog tracks them, exit descriptions and the restart backoff rule.

The state names match `evo.v1.ModuleState` (MODULE_STATE_<NAME>) and modules.json (lower case).
"""
from __future__ import annotations

import enum
import signal
from dataclasses import dataclass


class ModuleState(enum.Enum):
    STOPPED = "stopped"  # not running: not started yet, or stopped by an operator
    STARTING = "starting"  # spawned, waiting for readiness
    RUNNING = "running"  # ready and alive
    STOPPING = "stopping"  # SIGTERM sent, waiting for the exit
    BACKOFF = "backoff"  # exited; restart scheduled after the backoff delay
    FAILED = "failed"  # past max_restarts: left down (degraded) until an operator starts it
    DISABLED = "disabled"  # [watchdog.modules.<name>] enabled = false

    @property
    def alive(self) -> bool:
        """A process exists in this state."""
        return self in (ModuleState.STARTING, ModuleState.RUNNING, ModuleState.STOPPING)


@dataclass(frozen=True)
class ExitInfo:
    """How a process ended: exit code or the signal that killed it."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, rc: int) -> "ExitInfo":
        return cls(signal=-rc) if rc < 0 else cls(code=rc)

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                return signal.Signals(self.signal).name
            except ValueError:
                return f"signal {self.signal}"
        return f"exit {self.code}"


def backoff_s(consecutive: int, initial_backoff_ms: int, max_backoff_s: float) -> float:
    """Delay before restart number `consecutive + 1`: initial × 2^consecutive, capped."""
    return min(initial_backoff_ms / 1000.0 * (2 ** min(consecutive, 32)), float(max_backoff_s))
