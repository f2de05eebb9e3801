"""The RE process: segments, the [re] tick_ms loop (commands -> executor -> telemetry -> commit).

Entry point `run(config)`; SIGTERM/SIGINT stop the run's axes first, then unlink the segments.
"""
from __future__ import annotations

import logging
import time

from common.config import EvoConfig
from common.notify import notify_stopping
from common.recipes import MachineLimits
from common.rt import CycleLoop, StopFlag, process_setup
from common.shm.commands import CuCommand, ResultCode
from common.shm.wake import WakeWaiter
from common.states import ReState

from . import state_file
from .executor import Executor
from .links import Links

log = logging.getLogger(__name__)

STALE_WINDOW_S = 0.5  # inputs silent this long are stale (covers a 10 ms writer's jitter)
SHUTDOWN_ACK_S = 0.5  # on SIGTERM mid-run: wait this long for the STOP acks
# Idle (no recipe running) the RE blocks on its wake semaphore (the gRPC bridge posts a command) for
# at most this long, then ticks once: its heartbeat must stay inside every reader's stale budget —
# the gRPC bridge's 0.2 s (grpc_bridge/shm_link.py), the CU's and HAL's 0.5 s, the MQTT bridge's 0.5 s.
IDLE_WAKE_S = 0.05
BUSY_STATES = frozenset({ReState.RUNNING, ReState.PAUSED, ReState.STOPPING})


def run(cfg: EvoConfig) -> int:
    process_setup("evo-re")
    stop = StopFlag().install()
    tick_ms = cfg.system.re.tick_ms
    machine = MachineLimits.from_config(cfg)
    state_path = cfg.run_dir() / state_file.FILE_NAME
    recovered = state_file.recover(state_path)
    links = Links(stale_after_s=STALE_WINDOW_S)
    ex = Executor(links, machine, cfg.recipes_dir(), recovered=recovered)
    log.info("recipe executor up: tick %d ms, recipes in %s, state file %s", tick_ms, cfg.recipes_dir(), state_path)
    writer = state_file.StateWriter(state_path)
    waiter = WakeWaiter("re")
    loop = CycleLoop("re", tick_ms * 1_000_000, stop)

    def step(now_ns: int, ticks: int) -> None:
        now = time.monotonic()
        links.read_inputs(now)
        for cmd in links.commands():
            try:
                result, msg = ex.command(cmd.code, cmd.text, now)
            except Exception as e:  # a bug must not kill the loop or leave the caller waiting
                log.exception("command %d failed", cmd.code)
                result, msg = ResultCode.INTERNAL, f"internal error: {e}"
            links.ack(cmd, result, msg)
        ex.tick(now)
        if ex.dirty:  # before commit: the file names a step before its commands or status leave
            ex.dirty = False
            writer.submit(ex.persist_record())
        links.publish(ex.snapshot())
        links.commit()

    def idle() -> bool:
        """Nothing to tick: no recipe in progress, no command waiting for a slot or an ack."""
        return ex.state not in BUSY_STATES and not ex.has_pending_stops() and not links.busy()

    try:
        loop.start()
        loop.run(step, f"tick {tick_ms} ms", idle=idle, waiter=waiter, idle_timeout_s=IDLE_WAKE_S)
        notify_stopping()
        writer.flush(ex.persist_record())
        _stop_axes_on_exit(ex, links)
    finally:
        writer.flush()
        links.close()
        waiter.close()
    log.info("recipe executor stopped (signal %d; %d idle waits)", stop.signum, loop.idle_waits)
    return 0


def _stop_axes_on_exit(ex: Executor, links: Links) -> None:
    """Shut down mid-run: STOP every axis the run commanded (the state file keeps the record of
    the run, so the next start reports it)."""
    if ex.state not in (ReState.RUNNING, ReState.PAUSED, ReState.STOPPING):
        return
    record = ex.persist_record()
    axes = sorted(ex.motion.touched)
    log.warning("shutting down while %s %s at step %s: stopping axes %s", ex.state.name, record["program"],
                record["step"], axes)
    if not axes or not links.cu_ready():
        return
    tickets = [links.send_cu(int(CuCommand.STOP), axis=a) for a in axes]
    deadline = time.monotonic() + SHUTDOWN_ACK_S
    while time.monotonic() < deadline and any(t.ack is None for t in tickets):
        links.commit()
        time.sleep(0.005)
        links.read_inputs(time.monotonic())
