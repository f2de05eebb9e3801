"""CycleRunner: the CU's 1 kHz loop over the segments — attach hal_cu, create cu_hal / cu_mqt /
cu_re / cu_rpc, attach re_cu / rpc_cu when they appear, and run ControlCore every cycle.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from common.config import ConfigError, EvoConfig, format_errors, load_config
from common.jit_table import array_table
from common.notify import notify_stopping
from common.rt import CycleLoop, StopFlag
from common.shm.commands import CuCommand, ResultCode
from common.shm.inbound import CommandInbox, Inbound, InboundPolicy, LinkStatus
from common.shm.p2p import ShmError, TypedP2pWriter, segment_name
from common.shm.rings import Command
from common.shm.segments import CU_TO_HAL, CU_TO_MQT, CU_TO_RE, CU_TO_RPC
from common.shm.views import field_bytes
from common.shm.wake import WakePoster, post_bits
from common.stale import stale_threshold
from common.states import CommandSource, MachineError, MachineState, SafetyState

from . import commands
from .core import ControlCore
from .diagnostics import StatusWriter, fill_pid
from .kernels.outputs import PUB_MQT, PUB_RE, PUB_RPC, publish_args
from .kernels.step import SI_M_SAFETY
from .latch import FILE_NAME as LATCH_FILE
from .latch import SafetyLatch
from .outputs import HalOutputs
from .params import AxisParams

if (PUB_RPC, PUB_RE, PUB_MQT) != (1, 2, 4):
    raise ImportError("control_unit.cycle: the wake posters are posted by bit position (rpc, re, mqt)")

log = logging.getLogger(__name__)

SLOW_WRITER_STALE_S = 0.5  # RE / RPC heartbeat every <= 50 ms (RE idle) / 10 ms; stale after 0.5 s
PID_EVERY = 10  # PID diagnostics at 100 Hz (status and acks every cycle)
WRITER_PROBE_EVERY = 5  # cycles between flock probes of the HAL's writer lock (a death seen within 5 ms)
COMMAND_PROBE_EVERY = 50  # cycles between flock probes of a command writer's lock (RE / gRPC bridge)
# A command segment whose heartbeat word has not moved is polled only every COMMAND_POLL_EVERY cycles
# (its liveness: stale / writer-lock probe / re-attach); a moved one at once, on the next cycle. Its
# stale and probe budgets are counted in those polls, so the times stay what they were.
COMMAND_POLL_EVERY = 10
BEAT_S = 0.01  # unchanged status segments (cu_rpc/re/mqt) are still committed this often
HAL_ATTACH_POLL_S = 0.02
OVERRUN_FLAG_PER_S = 10  # skipped ticks per second that make CYCLE_OVERRUN an operator-visible error


@dataclass(slots=True)
class CommandPath:
    """A command segment the CU consumes: its source, the inbox, the writer heartbeat word at the
    last poll and whether commands were left waiting."""

    source: CommandSource
    inbox: CommandInbox
    heartbeat: int = -2
    pending: bool = False


class ReloadJob:
    """Validates a configuration directory and builds its ControlCore off the cycle thread
    (load_config takes ~10 ms); the cycle only swaps it in."""

    def __init__(self, path: str, dt: float) -> None:
        self.path = path
        self.dt = dt
        self.result: EvoConfig | None = None
        self.core: ControlCore | None = None
        self.error = ""
        self.done = threading.Event()
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)  # the cycle thread gets the GIL back quickly
        threading.Thread(target=self._run, name="cu-reload", daemon=True).start()

    def _run(self) -> None:
        try:
            cfg = load_config(self.path)
            self.core = ControlCore(cfg, self.dt)
            self.result = cfg
        except ConfigError as e:
            self.error = format_errors(e) if callable(format_errors) else str(e)
        except Exception as e:  # noqa: BLE001 - reported in the ack
            self.error = f"{type(e).__name__}: {e}"
        finally:
            sys.setswitchinterval(self._old_switch)
            self.done.set()


class CycleRunner:
    """Owns the segments and the loop; `run()` returns the exit code."""

    def __init__(self, cfg: EvoConfig) -> None:
        self.cfg = cfg
        self.cu = cfg.system.cu
        self.dt = self.cu.cycle_time_us * 1e-6
        self.stop = StopFlag()
        self.core = ControlCore(cfg, self.dt)
        self.hal = Inbound.for_key("hal_cu", InboundPolicy(
            # normal scheduling's threshold until run() knows whether the loop got SCHED_FIFO
            stale_reads=stale_threshold(self.cu.hal_stale_cycles, self.cu.cycle_time_us, False).cycles,
            retry_s=HAL_ATTACH_POLL_S, probe_every=WRITER_PROBE_EVERY))
        self.writers: list[TypedP2pWriter] = []
        self.paths: list[CommandPath] = []
        self.wakes: list[WakePoster] = []
        self.reload: ReloadJob | None = None
        self.rt_active = False
        self.hal_age = 0
        self._fb_obj: np.ndarray | None = None
        self._fb_tab: np.ndarray | None = None  # gather_feedback's table (_bind_frame)
        self._di_logical = np.zeros(16, dtype=np.uint64)
        self._nc_mask = cfg.io_registry.di_nc_mask
        self.loop: CycleLoop | None = None
        self._overruns_seen = 0
        self._overrun_at = 0.0
        self.latch = SafetyLatch(cfg.run_dir() / LATCH_FILE)

    # --- setup ----------------------------------------------------------------------------------
    def _attach_hal(self) -> bool:
        """Wait (bounded by hal_attach_timeout_s) until hal_cu exists and is attached."""
        deadline = time.monotonic() + self.cu.hal_attach_timeout_s
        while not self.stop.is_set():
            self.hal.poll(time.monotonic())
            if self.hal.attached:
                return True
            if time.monotonic() > deadline:
                log.error("%s did not appear within %.1f s (hal_attach_timeout_s): %s", self.hal.name,
                          self.cu.hal_attach_timeout_s, self.hal.reason)
                return False
            self.stop.wait(HAL_ATTACH_POLL_S)
        return False

    def _create_writers(self) -> None:
        mk = lambda dst, dt: TypedP2pWriter.create(segment_name("cu", dst), "cu", dst, dt)  # noqa: E731
        self.w_hal = mk("hal", CU_TO_HAL)
        self.writers.append(self.w_hal)
        self.w_mqt = mk("mqt", CU_TO_MQT)
        self.writers.append(self.w_mqt)
        self.w_re = mk("re", CU_TO_RE)
        self.writers.append(self.w_re)
        self.w_rpc = mk("rpc", CU_TO_RPC)
        self.writers.append(self.w_rpc)
        self.outputs = HalOutputs(self.w_hal.local)
        self.status = StatusWriter(self.w_rpc.local["status"])
        self.pid = self.w_rpc.local["pid"]
        self.stats_views = (self.w_rpc.local["stats"], self.w_mqt.local["stats"])  # the loop publishes
        u8 = lambda w: field_bytes(w.local, "status")  # noqa: E731
        self.status_src, self.status_re, self.status_mqt = u8(self.w_rpc), u8(self.w_re), u8(self.w_mqt)
        stale = max(1, int(SLOW_WRITER_STALE_S / self.dt) // COMMAND_POLL_EVERY)
        policy = InboundPolicy(stale_reads=stale, retry_s=self.cu.optional_attach_interval_s,
                               probe_every=max(1, COMMAND_PROBE_EVERY // COMMAND_POLL_EVERY))
        self.paths = [
            CommandPath(CommandSource.RE, CommandInbox(Inbound.for_key("re_cu", policy), self.w_re.local["acks"])),
            CommandPath(CommandSource.RPC, CommandInbox(Inbound.for_key("rpc_cu", policy), self.w_rpc.local["acks"])),
        ]
        # wake the readers that block (bridges, RE) after a commit with new acks or a changed status
        # (StatusWriter.fill says which; the HAL heartbeat and age in it mean nothing to them)
        self.wake_mqt, self.wake_rpc, self.wake_re = WakePoster("mqt"), WakePoster("rpc"), WakePoster("re")
        self.wakes = [self.wake_mqt, self.wake_rpc, self.wake_re]
        self._posters = (self.wake_rpc, self.wake_re, self.wake_mqt)  # by bit: PUB_RPC, PUB_RE, PUB_MQT
        self._rpc_acks = self.w_rpc.local["acks"]["count"]
        self._re_acks = self.w_re.local["acks"]["count"]
        self._rpc_acks_seen = self._re_acks_seen = 0
        self._next_beat = 0.0
        self._tick = 0
        self._bind_core()

    def _bind_core(self) -> None:
        core = self.core
        self._nc_mask = np.array(self.cfg.io_registry.di_nc_mask, dtype=np.uint64)  # (a copy: the table's are writable)
        k = core._kernels
        self._arena, self._layout = core._arena, core._layout
        # the compiled entry points themselves (no dispatcher type resolution per call), checked once
        # against the arrays and scalar types every cycle passes
        self._k_feedback = self._k_step = self._k_publish = None
        if k is not None:
            self._k_feedback = k.entry("gather_feedback", self._bind_frame(self.hal.local), 0)
            self._k_step = k.entry("cycle_step", self._arena, self._layout, 0.0)  # ControlCore.step's kernel
            self._pub_args = publish_args(self.w_hal, self.w_rpc, self.w_re, self.w_mqt)
            self._k_publish = k.entry("cu_publish", 0, *self._pub_args)
        self.status.bind(core)
        self.outputs.bind(core, self.cfg.io_registry)
        self._si = core.m._si  # the machine's scalar block (the safety state word)
        self._safety_seen = -1  # the latch is told on the first cycle, and on every change after

    # --- loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        self.stop.install()
        if not self._attach_hal():
            self.hal.close()
            return 1 if not self.stop.is_set() else 0
        try:
            self._create_writers()
        except ShmError as e:
            log.error("cannot create CU segments: %s", e)
            self.hal.close()
            return 1
        verdict = self.latch.start()
        if verdict.required:  # before the first cycle: no frame ever shows this CU without its latch
            self.core.restore_latch(verdict.message)
        # No busy-wait before the deadline (it used to spin 150 us under SCHED_FIFO): ~15 % of a core
        # for ~75 us less wake jitter, and a FIFO spinner can starve a 2-core box.
        # the figures go into cu_rpc / cu_mqt only when those are committed (_publish)
        self.loop = loop = CycleLoop("cu", int(self.cu.cycle_time_us * 1000), self.stop,
                                     rt_priority=self.cu.rt_priority, cpu=self.cu.cpu, auto_publish=False)
        clean = False
        try:
            self.rt_active = loop.start(self.stats_views)
            log.info("cycling: %d axes, %s", self.core.n,
                     f"SCHED_FIFO {self.cu.rt_priority}" if self.rt_active else "normal scheduling")
            stale = stale_threshold(self.cu.hal_stale_cycles, self.cu.cycle_time_us, self.rt_active)
            self.hal.set_stale_reads(stale.cycles)  # before the first cycle
            log.info("HAL stale after %d cycles = %.0f ms (%s): safety stop", stale.cycles, stale.ms, stale.why)
            loop.run(self._step, "control unit running")
            clean = True
        finally:
            notify_stopping()
            self._shutdown()
            if clean:  # only a stop we asked for; an exception out of the loop is an unclean exit
                self.latch.clean_exit()
        log.info("stopped (signal %d)", self.stop.signum)
        return 0

    def _step(self, now_ns: int, ticks: int) -> None:
        """One loop cycle: the control cycle, then the sustained-overrun flag."""
        now = now_ns * 1e-9  # perf_counter_ns is CLOCK_MONOTONIC: the same clock as time.monotonic()
        self.cycle(now)
        # Every overrun is counted in the published stats. The operator-facing flag means "sustained":
        # more than OVERRUN_FLAG_PER_S skipped ticks in the last second (a rare skipped tick is
        # harmless: the trajectory catches up), re-judged every second.
        if now - self._overrun_at >= 1.0:
            overruns = self.loop.timer.overruns  # type: ignore[union-attr]
            burst = overruns - self._overruns_seen
            self._overruns_seen, self._overrun_at = overruns, now
            if burst > OVERRUN_FLAG_PER_S:
                self.core.m.errors |= MachineError.CYCLE_OVERRUN
            else:
                self.core.m.errors &= ~MachineError.CYCLE_OVERRUN

    def _bind_frame(self, fb: np.ndarray) -> np.ndarray | None:
        """Field views of the HAL frame array `fb` (the hal_cu reader's copy); on the compiled engine the
        table of gather_feedback's arrays (kernels/step.py FB_*) over it and the bound core."""
        self._fb_obj, self._fb_axes, self._fb_di = fb, fb["axes"], fb["di_bank"]
        self._fb_tab = None
        if self.core._kernels is not None:
            self._fb_tab = array_table([self._fb_axes.reshape(-1).view(np.uint8), self._fb_di, self._nc_mask,
                                        self._di_logical, self._arena, self._layout])
        return self._fb_tab

    def cycle(self, now: float) -> None:
        """One control cycle: HAL feedback and commands in, ControlCore step, outputs and status
        out, wakes for the readers that block."""
        core = self.core
        hal = self.hal
        fb = hal.poll(now)  # a frame counts once the HAL is seen cycling; a HAL restart is a loss
        self.hal_age = hal.unchanged_polls
        if fb is not None:
            if fb is not self._fb_obj:
                self._bind_frame(fb)
            if self._k_feedback is not None:  # compiled: NC inversion and gathering in one call
                self._k_feedback(self._fb_tab, self.hal_age)
            else:
                np.bitwise_xor(self._fb_di, self._nc_mask, out=self._di_logical)
                core.set_inputs(self._fb_axes, self._di_logical, True, False, self.hal_age)
        else:
            core.set_inputs(None, None, False, hal.status is LinkStatus.ABSENT)
        self._tick += 1
        every = self._tick % COMMAND_POLL_EVERY == 0
        for path in self.paths:
            inbox = path.inbox
            reader = inbox.inbound.reader
            hb = reader.heartbeat if reader is not None else -1
            if hb != path.heartbeat or every:  # moved (a command, an ack seen, a beat), or liveness due
                path.heartbeat = hb
                path.pending = inbox.poll_pending(now)
                if inbox.inbound.lost:
                    self._source_lost(path.source)
            if path.pending:  # cleared once taken (a reload waits while its config is validated)
                self._take_commands(path.source, inbox, now)
                path.pending = inbox.pending()
        core = self.core  # a config reload taken just now swapped the core (and the bound kernels)
        if self._k_step is not None:
            if self._k_step(self._arena, self._layout, now):
                core._announce()  # log lines / message for the events the cycle reported (rare)
        else:
            core.step(now)
        # write-ahead: a SafetyStop (or its reset) is on disk before anyone can see it or its ack (the
        # latch is asked only when the safety state word changed: one integer load per cycle)
        safety = self._si[SI_M_SAFETY]
        if safety != self._safety_seen:
            self._safety_seen = safety
            self.latch.update(int(safety) == SafetyState.SAFETY_STOP, core.m.message)
        self.outputs.write()
        status = self.status.fill(core, hal.heartbeat, self.hal_age)
        if core.cycle % PID_EVERY == 0:
            fill_pid(self.pid, core)
        self._publish(now, status)

    def _publish(self, now: float, status: bool) -> None:
        """cu_hal every cycle (the HAL reads it every cycle); cu_rpc / cu_re / cu_mqt when the status they
        show changed or they carry a new ack — then their reader is woken, after the commits — and otherwise
        every BEAT_S only, as a heartbeat (their readers judge staleness in tenths of seconds). On the
        compiled engine the commits are one call (control_unit/kernels/outputs.cu_publish), else
        TypedP2pWriter.commit in the same order; the same bytes either way."""
        beat = now >= self._next_beat
        if beat:
            self._next_beat = now + BEAT_S
        which = wake = 0
        n = self._rpc_acks[()]
        acked = n != self._rpc_acks_seen
        if status or acked or beat:  # cu_mqt below goes only when this does (status or beat)
            which = PUB_RPC
            if self.loop is not None:
                self.loop.publish()  # the cycle figures (cu_rpc, cu_mqt) as of this cycle
            if status or acked:
                self._rpc_acks_seen = n
                wake = PUB_RPC
        n = self._re_acks[()]
        acked = n != self._re_acks_seen
        if status or acked or beat:
            which |= PUB_RE
            if status or acked:
                self._re_acks_seen = n
                wake |= PUB_RE
        if status or beat:
            which |= PUB_MQT
            if status:
                wake |= PUB_MQT
        if self._k_publish is not None:
            self._k_publish(which, *self._pub_args)
        else:
            self.w_hal.commit()
            if which & PUB_RPC:
                self.w_rpc.commit()
            if which & PUB_RE:
                np.copyto(self.status_re, self.status_src)
                self.w_re.commit()
            if which & PUB_MQT:
                np.copyto(self.status_mqt, self.status_src)
                self.w_mqt.commit()
        if wake:
            post_bits(wake, self._posters)  # (PUB_RPC, PUB_RE, PUB_MQT: bits 0, 1, 2)

    def _source_lost(self, source: CommandSource) -> None:
        """A command writer went away: stop what it commanded."""
        core = self.core
        ids = core.source_lost(source)
        if ids and source == CommandSource.RE:
            core.m.errors |= MachineError.RE_LOST
            core.m.message = f"recipe executor lost while commanding axes {ids}: stopped"
            log.warning(core.m.message)
            if core.m.state == MachineState.ACTIVE:
                core.m.state = MachineState.IDLE

    def _take_commands(self, source: CommandSource, inbox: CommandInbox, now: float) -> None:
        if inbox.next_code() == CuCommand.RELOAD_CONFIG:
            if self.reload is None:
                slot_text = inbox.next_text()
                if self.core.all_standstill():
                    self.reload = ReloadJob(slot_text or str(self.cfg.dir), self.dt)
                    return  # take it once validated
            elif not self.reload.done.is_set():
                return
        for cmd in inbox.take():
            if cmd.code == CuCommand.RELOAD_CONFIG:
                code, msg = self._apply_reload(cmd)
            else:
                code, msg = commands.execute(self.core, cmd, source, now)
            if code != ResultCode.OK:
                log.info("%s %s refused: %s", source.name, _code_name(cmd.code), msg)
            inbox.ack(cmd, code, msg)

    def _apply_reload(self, cmd: Command) -> tuple[ResultCode, str]:
        job, self.reload = self.reload, None
        core = self.core
        if job is None or not core.all_standstill():
            return ResultCode.STATE_FORBIDS, "config reload only at standstill"
        job.done.wait()
        if job.result is None:
            core.m.errors |= MachineError.CONFIG_RELOAD_FAILED
            core.m.message = "config reload refused: " + job.error.splitlines()[0] if job.error else ""
            log.error("config reload refused: %s", job.error)
            return ResultCode.INVALID_ARGUMENT, ("invalid config: " + job.error.replace("\n", "; "))[:95]
        new_cfg = job.result
        if new_cfg.system.cu.cycle_time_us != self.cu.cycle_time_us:
            return ResultCode.STATE_FORBIDS, "cycle_time_us cannot change while running (restart the CU)"
        new = job.core
        new.adopt(core)
        self.core = new
        self.cfg = new_cfg
        self._bind_core()
        new.m.errors &= ~MachineError.CONFIG_RELOAD_FAILED
        new.m.message = f"configuration reloaded from {new_cfg.dir}"
        log.info(new.m.message)
        return ResultCode.OK, f"config reloaded ({len(new_cfg.axes)} axes)"

    def _shutdown(self) -> None:
        """Last frame: drives disabled, brakes engaged; then close (unlink) every segment."""
        try:
            if self.writers:
                self.outputs.safe()
                self.w_hal.commit()
        finally:
            for w in self.writers:
                w.close()
            for path in self.paths:
                path.inbox.close()
            for p in self.wakes:
                p.close()
            self.hal.close()


def _code_name(code: int) -> str:
    try:
        return CuCommand(code).name
    except ValueError:
        return str(code)


def run(cfg: EvoConfig) -> int:
    """Entry point of `python -m control_unit`."""
    return CycleRunner(cfg).run()


__all__ = ["CycleRunner", "run", "AxisParams"]
