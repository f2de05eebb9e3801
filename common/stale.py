"""The heartbeat-stale thresholds the HAL (`[hal] stale_reads`) and the CU (`[cu] hal_stale_cycles`) use.

A configured value is used as it is; 0 (the default) chooses by the scheduling the loop actually got.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Seed 003: fault-tolerant time 100 ms, a fault detected within FTTI/2. Under SCHED_FIFO a 1 kHz reader
# saw the peer's heartbeat unchanged for at most 25 cycles in 10 minutes on this 2-vCPU VM (0 false trips
# at 30, 50 and 100; BENCHMARKS.md, bench_stale), so FTTI/2 holds with room.
AUTO_FIFO_MS = 50.0
# Under normal scheduling the same VM froze the peer for up to 62 ms quiet and 204 ms loaded: 50 ms would
# stop a healthy machine about 12 times an hour, so a loop without SCHED_FIFO waits 100 ms (= the FTTI;
# seed 003's FTTI/2 is not met without real-time scheduling, which the start-up log says).
AUTO_NORMAL_MS = 100.0


@dataclass(frozen=True)
class StaleThreshold:
    """The cycles a peer's heartbeat may stay unchanged, and why (for the start-up log line)."""

    cycles: int
    ms: float
    why: str


def stale_threshold(configured: int, cycle_time_us: int, rt_active: bool) -> StaleThreshold:
    """`configured` cycles when > 0, else the auto value for the loop's scheduling, rounded up to
    whole cycles of `cycle_time_us`."""
    if cycle_time_us <= 0:
        raise ValueError(f"cycle_time_us must be positive, got {cycle_time_us}")
    if configured > 0:
        return StaleThreshold(configured, configured * cycle_time_us / 1000.0, "configured")
    ms = AUTO_FIFO_MS if rt_active else AUTO_NORMAL_MS
    cycles = max(1, math.ceil(ms * 1000.0 / cycle_time_us))
    if rt_active:
        why = "auto: SCHED_FIFO, FTTI/2"
    else:
        why = "auto: normal scheduling (FTTI/2 = 50 ms needs SCHED_FIFO; set rt_priority and grant rtprio)"
    return StaleThreshold(cycles, cycles * cycle_time_us / 1000.0, why)
