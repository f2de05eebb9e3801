"""The interface of a further bridge output (Zenoh, Sparkplug B, ...) fed from the same samples.

The bridge polls its sources once per scan and hands the samples to every output in `Bridge.outputs`.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class BridgeOutput(Protocol):
    """One more view of the machine. `scan` runs in the bridge's loop: never block in it."""

    name: str
    #: optional: an output with inputs of its own (CAN frames) sets the longest time between two scans;
    #: without it the bridge scans on a segment wake, at the telemetry rate and every LIVENESS_PERIOD_S
    poll_period_s: float | None

    def start(self) -> None:
        """Open the output's connector (non-blocking; it connects and retries on its own)."""

    def scan(self, now: float, cu: np.ndarray | None, hal: np.ndarray | None, re_: np.ndarray | None,
             statuses: dict[str, str], telemetry_due: bool) -> None:
        """One pass over this scan's samples (None = that source is not live; `statuses` says why)."""

    def stop(self) -> None:
        """Say goodbye where the protocol has a way (a death certificate, a liveliness token) and close."""
