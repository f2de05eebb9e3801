"""The RE process: segments, the [re] tick_ms loop (commands -> executor -> telemetry -> commit).

Entry point `run(config)`; SIGTERM/SIGINT stop the run's axes first, then unlink the segments.
"""
from __future__ import annotations

import logging
import math
import time

from common.config import EvoConfig
from common.notify import WatchdogPinger, notify_ready, notify_stopping
from common.recipes import MachineLimits
from common.rt import CycleTimer, StopFlag, freeze_gc, process_setup, set_timer_slack_ns
from common.shm.commands import CuCommand, ResultCode
from common.states import ReState

from . import state_file
from .executor import Executor
from .links import Links

log = logging.getLogger(__name__)

STALE_WINDOW_MS = 500  # inputs silent this long are stale (covers a 10 ms writer's jitter)
SHUTDOWN_ACK_S = 0.5  # on SIGTERM mid-run: wait this long for the STOP acks


def run(cfg: EvoConfig) -> int:
    process_setup("evo-re")
    stop = StopFlag().install()
    set_timer_slack_ns(1)
    tick_ms = cfg.system.re.tick_ms
    machine = MachineLimits.from_config(cfg)
    state_path = cfg.run_dir() / state_file.FILE_NAME
    recovered = state_file.recover(state_path)
    links = Links(stale_reads=max(3, math.ceil(STALE_WINDOW_MS / tick_ms)))
    ex = Executor(links, machine, cfg.recipes_dir(), recovered=recovered)
    log.info("recipe executor up: tick %d ms, recipes in %s, state file %s", tick_ms, cfg.recipes_dir(), state_path)
    timer = CycleTimer(tick_ms * 1_000_000)
    pinger = WatchdogPinger()
    writer = state_file.StateWriter(state_path)
    first = True
    try:
        freeze_gc()
        while not stop.is_set():
            timer.wait()
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
            if first:
                first = False
                notify_ready(f"tick {tick_ms} ms")
            pinger.tick()
            timer.done()
        notify_stopping()
        writer.flush(ex.persist_record())
        _stop_axes_on_exit(ex, links)
    finally:
        writer.flush()
        links.close()
    log.info("recipe executor stopped (signal %d)", stop.signum)
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
