"""The HAL's 1 kHz cycle: cu_hal/re_hal/rpc_hal in, driver exchange, I/O semantics, four segments out.

`HalCycle.step()` is one cycle without sleeping (benchmarks call it); `run(config)` is the process.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from common.config import EvoConfig
from common.consts import MAX_AXES
from common.notify import notify_stopping
from common.rt import CycleLoop, StopFlag, process_setup
from common.shm.inbound import CommandInbox, Inbound, InboundPolicy, SharedStateInbound
from common.shm.inbound_jit import N_STATE, S_GEN, S_TABLE_GEN
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import HAL_IO, SEGMENTS
from common.shm.views import ChangeDetector, flat_bytes
from common.shm.wake import WakePoster, WakeWaiter, post_bits
from common.stale import stale_threshold
from common.states import DriverState

from .commands import CommandExecutor
from .drivers.base import Driver, DriverIO
from .drivers.registry import create_driver
from .engine import resolve_engine
from .fused import FusedStep, spans
from .io import IoProcessor
from .kernels import (CMD_RE, CMD_RPC, FL_ACKED, FL_COMMIT, FL_CONNECTED, FL_FRESH, FL_POLL, FL_PUBLISH, N_POLLS,
                      NEED_PYTHON, PHASE_ALL, PHASE_OUT, PHASE_POST, PHASE_PRE, R_ALL, TO_PYTHON, U_IO_SINCE,
                      U_NEXT_BEAT, U_RE_SEEN, U_RPC_SEEN, WAKE_ALL, WAKE_BITS, WAKE_MQT, WAKE_RE, WAKE_RPC, WAKE_SHIFT)
from .state_file import StateWriter, load_state

if (WAKE_MQT, WAKE_RPC, WAKE_RE) != (1, 2, 4):
    raise ImportError("hal.cycle: the wake posters are posted by bit position (mqt, rpc, re)")

log = logging.getLogger(__name__)

COMMAND_STALE_S = 0.5  # re_hal / rpc_hal writers commit every <= 10 ms; stale after 0.5 s
CU_RETRY_S = 0.1  # attach attempts for cu_hal (the CU matters: look often)
OPTIONAL_RETRY_S = 0.1  # attach attempts for re_hal / rpc_hal: a stat while absent; a bridge that just
# started takes commands within 0.1 s (at 1 s a command right after `evo up` was refused as "not attached")
SLOW_EVERY_S = 0.1  # state file offer, driver health
WRITER_PROBE_EVERY = 5  # cycles between flock probes of the CU's writer lock (a death seen within 5 ms)
MAX_CATCH_UP_TICKS = 20  # a late cycle steps the plant by at most this many periods
_FL_POLLED = FL_POLL | FL_COMMIT | FL_PUBLISH  # _step_polled's call: the kernel polls, commits, publishes
_FL_POST = FL_CONNECTED | FL_COMMIT | FL_PUBLISH  # ... and its second call around a Python driver's cycle
BEAT_NS = 10_000_000  # unchanged status segments (hal_mqt/rpc/re) are still committed this often
BETWEEN_GUARD_NS = 150_000  # a command woken closer than this to the next cycle waits for that cycle

_u8 = flat_bytes


def _nothing() -> None:
    pass


class HalCycle:
    """All HAL state and one cycle of work. Construct, `step()` every period, `close()`.

    `step` is bound per state: with the compiled engine (default) `_step_polled` once the kernels commit
    and while the CU is connected — the polls, the numerics and the commits in one kernel call
    (hal/fused.py; with a non-sim driver two, around driver.cycle) — else `_step_glue`, the same kernel
    with the polls and commands in Python; with EVO_HAL_ENGINE=numpy `_step_reference`, the numpy
    reference. All publish the same bytes (tests/test_hal_fused.py runs them side by side)."""

    def __init__(self, config: EvoConfig, driver: Driver | None = None) -> None:
        self.config = config
        hal = config.system.hal
        self.period_ns = hal.cycle_time_us * 1000
        self.driver = driver if driver is not None else create_driver(config)
        self.configured = np.zeros(MAX_AXES, np.bool_)
        for ax in config.axes:
            self.configured[ax.id - 1] = True
        self.engine = resolve_engine()
        self.fused: FusedStep | None = None
        self.axis_count = max(config.axis_ids)
        self._writers: list[TypedP2pWriter] = []
        self._links: list[Inbound | CommandInbox] = []
        self.state_writer: StateWriter | None = None
        try:
            self._create_segments()
            io = self.w_mqt.local["io"]
            self.proc = IoProcessor(
                config.io, config.io_registry, [ax.brake.do_brake for ax in config.axes if ax.brake is not None],
                di_bank=io["di_bank"], do_bank=io["do_bank"], ai_values=io["ai_values"], ao_values=io["ao_values"],
                engine=self.engine,
            )
            self.executor = CommandExecutor(config.io, self.proc)
            # the driver reads its commands from and writes its status into the published payload;
            # the compiled engine keeps the command side and the raw inputs in its kernel's arena
            own: dict[str, np.ndarray] = {}
            if self.engine == "compiled":
                self.fused = FusedStep(self.configured, self.driver.uses_targets, self.cu_in.local,
                                       self.w_mqt.local, self.w_cu.local, BEAT_NS, self._polls)
                own = {k: getattr(self.fused, k) for k in
                       ("enable", "brake_release", "torque", "target_position", "target_velocity", "di", "ai")}
            fb = io["axes"]
            self.dio = DriverIO(
                do_bank=self.proc.do_bank, ao=self.proc.ao_norm,
                position=fb["position"], velocity=fb["velocity"], torque_estimate=fb["torque_estimate"],
                drive_ready=fb["drive_ready"].view(np.bool_), drive_fault=fb["drive_fault"].view(np.bool_),
                referenced=fb["referenced"].view(np.bool_), axis_state=io["driver_state"],
                drive_error_code=io["drive_error_code"], **own,
            )
            self._open_driver()
            if self.fused is not None:
                kernel_state = getattr(self.driver, "kernel_state", None)
                self.fused.bind(self.proc._arena, self.proc._lay, kernel_state() if kernel_state else None,
                                (self.w_cu, self.w_mqt, self.w_rpc, self.w_re), self._polled)
        except BaseException:
            self.close(save=False)
            raise
        self.cycles = 0
        self._cu_local: np.ndarray | None = None
        self._cu_views: tuple[np.ndarray, ...] = ()
        self._switch_key = b"-"  # forces the first write of enable / brake_release
        self._targets = self.driver.uses_targets
        self._next_slow = 0
        # a driver with periodic work apart from its exchange (the sim's injection file) says so by
        # `poll_in_cycle`: it is then polled in housekeeping(), for both engines alike
        self._driver_poll = self.driver.poll if hasattr(self.driver, "poll_in_cycle") else None
        if self._driver_poll is not None:
            self.driver.poll_in_cycle = False
        self.cu_connected = False
        self._acked = False  # a command was acked this cycle: its segment is committed and its reader woken
        self._io_since = np.ones(1, np.int64)  # the status payload changed since the last state-file offer
        self.between_passes = 0  # commands taken between cycles (`between`)
        # the compiled engine commits in its kernels (FL_COMMIT, hal_publish) once every writer has made
        # its first, whole commit in Python (after the first cycle): _compiled_commits() switches
        self._fl_commit = 0
        self._pub: Callable[..., int] | None = None
        # the status segments' next beat (ns): the kernel's (hal_step decides it when it commits them)
        self._beat = np.zeros(1, np.int64)
        if self.fused is not None:
            f = self.fused
            self._k, self._k_tail = f.kernel, f.tail
            self._sim = self.driver if f.sim_in_kernel else None
            self._phase = PHASE_ALL if self._sim is not None else PHASE_PRE
            self._cu_fresh = FL_CONNECTED | FL_FRESH
            self._beat = f.pub[U_NEXT_BEAT:U_NEXT_BEAT + 1]
            self._io_since = f.pub[U_IO_SINCE:U_IO_SINCE + 1]  # set by the kernel when the status changed
            self._io_since[0] = 1
            self.step = self._step_glue  # _step_polled once the kernels commit and the CU is connected
        else:
            self.step = self._step_reference

    # --- set-up -------------------------------------------------------------------------------
    def _create_segments(self) -> None:
        def writer(key: str) -> TypedP2pWriter:
            s = SEGMENTS[key]
            w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
            self._writers.append(w)
            return w

        self.w_cu = writer("hal_cu")
        self.w_mqt = writer("hal_mqt")
        self.w_rpc = writer("hal_rpc")
        self.w_re = writer("hal_re")
        cyc_us = self.config.system.hal.cycle_time_us
        cmd_stale = max(1, int(COMMAND_STALE_S * 1e6 / cyc_us))
        # normal scheduling's threshold until run() knows whether the loop got SCHED_FIFO
        stale = stale_threshold(self.config.system.hal.stale_reads, cyc_us, rt_active=False)
        # the writer probes (a flock / a stat, ~20 us each after a sleep here) run in housekeeping(),
        # after the cycle's commits: a dead writer is seen by the next cycle's poll
        # the compiled engine's kernel polls the three itself while nothing else is due (hal/kernels.py FL_POLL):
        # their Inbounds keep their poll state in rows it shares (common/shm/inbound_jit.py)
        self._polls = np.zeros((N_POLLS, N_STATE), np.int64) if self.engine == "compiled" else None

        def inbound(key: str, policy: InboundPolicy, row: int) -> Inbound:
            if self._polls is None:
                return Inbound.for_key(key, policy)
            return SharedStateInbound.for_key(key, policy, state=self._polls[row])

        self.cu_in = inbound("cu_hal", InboundPolicy(
            stale_reads=stale.cycles, retry_s=CU_RETRY_S, probe_every=WRITER_PROBE_EVERY, probe_apart=True), 0)
        cmd_policy = InboundPolicy(stale_reads=cmd_stale, retry_s=OPTIONAL_RETRY_S, probe_every=WRITER_PROBE_EVERY,
                                   probe_apart=True)
        self.re_cmds = CommandInbox(inbound("re_hal", cmd_policy, 1), self.w_re.local["acks"])
        self.rpc_cmds = CommandInbox(inbound("rpc_hal", cmd_policy, 2), self.w_rpc.local["acks"])
        self._polled = (self.cu_in, self.re_cmds.inbound, self.rpc_cmds.inbound) if self._polls is not None else None
        self._links = [self.cu_in, self.re_cmds, self.rpc_cmds]
        self._probes = (self.cu_in.probe, self.re_cmds.inbound.probe, self.rpc_cmds.inbound.probe)
        # wake the readers that block (bridges, RE) after a commit with new acks or changed I/O
        # (their open and inode checks run in housekeeping(), after the cycle's commits, like the probes)
        self.wake_mqt, self.wake_rpc, self.wake_re = (WakePoster(d, apart=True) for d in ("mqt", "rpc", "re"))
        self._posters = (self.wake_mqt, self.wake_rpc, self.wake_re)
        self._io_change = ChangeDetector(_u8(self.w_mqt.local)[: HAL_IO.itemsize])
        self._rpc_acks = self.w_rpc.local["acks"]["count"]
        self._re_acks = self.w_re.local["acks"]["count"]
        self._rpc_acks_seen = self._re_acks_seen = 0
        # the hal_mqt payload is filled in place; the other three copy bytes from it
        io = self.w_mqt.local["io"]
        io["axes"]["active"] = self.configured
        self.io_hal_state = io["hal_state"]
        self.io_hal_message = io["hal_message"]
        self._health = None
        self.io_cu_connected = io["cu_connected"]
        io["axis_count"] = self.axis_count
        self.w_cu.local["axis_count"] = self.axis_count
        self.stats = self.w_mqt.local["stats"]
        n_io = HAL_IO.itemsize
        src = _u8(self.w_mqt.local)
        self._io_src = src[:n_io]
        self._io_dst = [_u8(self.w_rpc.local)[:n_io], _u8(self.w_re.local)[:n_io]]
        # what follows the status payload (stats, acks) in each: published alone when only it changed
        self._status_tail = n_io
        self._mqt_end, self._rpc_end, self._re_end = (w.dtype.itemsize for w in (self.w_mqt, self.w_rpc, self.w_re))
        assert all(w.dtype.fields["io"][1] == 0 for w in (self.w_mqt, self.w_rpc, self.w_re))
        self._io_span, self._cu_span = spans(self.w_cu.dtype)
        self.stats_views = (self.stats, self.w_rpc.local["stats"])  # the loop publishes into both
        # run() sets this to CycleLoop.publish: the figures are copied only before a status commit
        # (a commit is on a change, an ack or the 10 ms beat), not every cycle
        self.publish_figures: Callable[[], None] = _nothing
        # hal_cu (upstream layout) = HAL_IO's axes + di_bank, then ai_values
        cu = _u8(self.w_cu.local)
        io_ai = HAL_IO.fields["ai_values"][1]
        cu_ai = self.w_cu.dtype.fields["ai_values"][1]
        n_ai = self.w_cu.dtype.fields["ai_values"][0].itemsize
        self._cu_head_dst, self._cu_head_src = cu[:cu_ai], src[:cu_ai]
        self._cu_ai_dst, self._cu_ai_src = cu[cu_ai : cu_ai + n_ai], src[io_ai : io_ai + n_ai]
        assert HAL_IO.fields["di_bank"][1] == self.w_cu.dtype.fields["di_bank"][1]

    def _open_driver(self) -> None:
        cfg = self.config
        d = self.driver
        if d.persists_positions:
            path = cfg.hal_state_file()
            positions, referenced = load_state(path, cfg.axis_ids)
            d.restore_positions(positions, referenced)
            self.state_writer = StateWriter(path, cfg.axis_ids, d.name).start()
        d.open(self.dio)
        self.proc.inputs(self.dio.di, self.dio.ai, time.perf_counter_ns())
        self._publish_health()

    # --- the cycle ----------------------------------------------------------------------------
    def step(self, now_ns: int, dt_s: float) -> None:  # replaced per instance in __init__
        """One cycle: read inputs, execute commands, exchange with the driver, publish."""
        raise AssertionError("HalCycle.step is bound in __init__")

    def _step_polled(self, now_ns: int, dt_s: float) -> None:
        """The compiled cycle while the CU is connected and the kernels commit: ONE kernel call (two around a
        Python driver's cycle) for the polls of cu_hal, re_hal and rpc_hal, the numerics, hal_cu's commit and
        the status commits due (a change, an ack, the 10 ms beat); then the wakes it asks for. The kernel polls
        through the Inbounds' shared rows (common/shm/inbound_jit.py) and stops before anything else when a
        poll needs Python (NEED_PYTHON: attaching, a liveness edge, the stale criterion reached, a mapping it
        does not list) or commands wait (CMD_RE / CMD_RPC): `_step_glue` finishes that cycle in Python."""
        res = self._k(self._phase, _FL_POLLED, now_ns, dt_s, *self._k_tail)
        if res & TO_PYTHON:
            self._step_glue(now_ns, dt_s, res)
            return
        if self._sim is None:
            self.driver.cycle(self.dio, now_ns, dt_s)
            res = self._k(PHASE_POST, _FL_POST, now_ns, dt_s, *self._k_tail)
        if res & WAKE_BITS:
            post_bits((res >> WAKE_SHIFT) & WAKE_ALL, self._posters)
        self.cycles += 1

    def _step_glue(self, now_ns: int, dt_s: float, stopped: int = NEED_PYTHON) -> None:
        """The compiled cycle with its polls and commands in Python: the first cycles (each writer's first
        commit is whole, in Python), while the CU is not connected, and the cycles `_step_polled` hands over
        (`stopped`: NEED_PYTHON — nothing polled yet; CMD_RE / CMD_RPC — the kernel polled all three and
        commands wait). Then the kernel call(s) for the numerics and the commits."""
        now = now_ns * 1e-9  # perf_counter_ns is CLOCK_MONOTONIC: the same clock as time.monotonic()
        if stopped & NEED_PYTHON:
            self._follow_mappings()
            cu_in = self.cu_in
            connected = cu_in.poll(now) is not None
            if connected is not self.cu_connected:
                self._cu_changed(connected)
            if self.re_cmds.poll_pending(now):
                self._run_commands(self.re_cmds, now_ns, connected)
            if self.rpc_cmds.poll_pending(now):
                self._run_commands(self.rpc_cmds, now_ns, connected)
        else:  # the kernel polled: the CU is LIVE (it polls only then), commands wait
            connected = True
            if stopped & CMD_RE:
                self._run_commands(self.re_cmds, now_ns, True)
            if stopped & CMD_RPC:
                self._run_commands(self.rpc_cmds, now_ns, True)
        flags = ((self._cu_fresh if self.cu_in.changed else FL_CONNECTED) if connected else 0) | self._fl_commit
        if self._fl_commit and self._acked:  # the kernel commits the status segments (FL_PUBLISH) with the acks
            flags |= FL_ACKED
        if self._sim is not None:
            res = self._k(PHASE_ALL, flags, now_ns, dt_s, *self._k_tail)
        else:
            self._k(PHASE_PRE, flags, now_ns, dt_s, *self._k_tail)
            self.driver.cycle(self.dio, now_ns, dt_s)
            res = self._k(PHASE_POST, flags, now_ns, dt_s, *self._k_tail)
        changed = res & R_ALL
        if self._fl_commit:  # hal_cu and the status segments are committed: the readers to wake, if any
            self._acked = False
            if res & WAKE_BITS:
                post_bits((res >> WAKE_SHIFT) & WAKE_ALL, self._posters)
        else:  # the first cycle: the commits in Python (each writer's first is whole)
            # hal_cu's payload is parts of the status payload: the kernel copied those that changed
            lo, hi = self._cu_span[changed]
            self.w_cu.commit_part(lo, hi)
            if changed or self._acked or now_ns >= self._beat[0]:
                self._publish_status(changed, now_ns)
            self._compiled_commits()
        self.cycles += 1

    def _follow_mappings(self) -> None:
        """The kernel's table of the polled segments' mappings made again when one of them mapped another
        (attached, re-attached to a restarted writer's segment, dropped): it polls a segment only while the
        table lists that segment's mapping."""
        p = self._polls
        if (p[:, S_GEN] != p[:, S_TABLE_GEN]).any():
            self.fused.set_sources(self._polled)
            self._k_tail = self.fused.tail

    def _compiled_commits(self) -> None:
        """From here the kernels commit (hal_cu in hal_step, the status segments in hal_publish): once
        every writer's segment holds its bytes everywhere (a whole first commit)."""
        if not all(w.whole_committed for w in self._writers):
            return
        f = self.fused
        f.pub[U_RPC_SEEN], f.pub[U_RE_SEEN] = self._rpc_acks_seen, self._re_acks_seen
        self._pub_args = f.publish_tail
        self._pub = f.publish
        self._fl_commit = FL_COMMIT | FL_PUBLISH
        self._pick_step()

    def _pick_step(self) -> None:
        """The kernel polls (`_step_polled`) once it commits and while the CU is connected; else `_step_glue`."""
        if self.fused is not None:
            self.step = self._step_polled if self._fl_commit and self.cu_connected else self._step_glue

    def housekeeping(self, now_ns: int) -> None:
        """After a cycle's commits, in the same wake (the loop calls it right after `step`): the work
        that is not the cycle's I/O — the writer probes of cu_hal, re_hal and rpc_hal (a flock or a
        stat on two of every WRITER_PROBE_EVERY cycles each: a dead CU is seen by the next cycle's poll,
        whose outputs go safe; the attach attempts while one is absent), the wake posters' open and
        inode checks (a restarted bridge's new semaphore is followed within 0.1 s), and what is due every 100 ms or every inject_poll_ms: the sim's
        injection-file poll (a new injection applies from the next cycle), the state-file offer, the
        driver's health (published with the next status commit). Out of `step` so that the outputs and
        the status are published first: after a pause each of these syscalls cost 10-60 µs on the
        2-core box and together they made the step's p99 (BENCHMARKS.md, bench_hal --parts)."""
        now = now_ns * 1e-9
        for probe in self._probes:
            probe(now)
        for poster in self._posters:
            poster.maintain(now)
        if self._driver_poll is not None:
            self._driver_poll(now_ns)
        if now_ns >= self._next_slow:
            self._slow(now_ns)

    def between(self, now_ns: int) -> None:
        """Between cycles, woken by a bridge's post after it submitted a command: take the commands
        waiting in rpc_hal / re_hal now instead of at the next cycle, recompute the outputs on the
        last cycle's CU frame and inputs, and commit the status with the acks — a reader that sees
        the ack sees the outputs it set (read-your-writes). The driver exchanges them in the next
        cycle, as it would a command taken at a cycle's start. Nothing else of the cycle runs: the
        CU frame, the plant and the inputs stay the last cycle's (the CU's liveness is judged by
        cycles, not by these extra polls, which see a new commit and so count nothing stale)."""
        now = now_ns * 1e-9
        connected = self.cu_connected
        if self.rpc_cmds.poll_pending(now):
            self._run_commands(self.rpc_cmds, now_ns, connected)
        if self.re_cmds.poll_pending(now):
            self._run_commands(self.re_cmds, now_ns, connected)
        if not self._acked:
            return
        if self.fused is not None:
            changed = self._k(PHASE_OUT, FL_CONNECTED if connected else 0, now_ns, 0.0, *self._k_tail)
        else:
            v = self._cu_views
            if connected and v:
                self.proc.outputs(v[6], v[7], now_ns, False)
            else:
                self.proc.outputs(None, None, now_ns, False)
            changed = R_ALL if self._io_change.changed() else 0
        self.between_passes += 1
        self._publish_status(changed, now_ns)

    def _cu_changed(self, connected: bool) -> None:
        self.cu_connected = connected
        self._pick_step()
        if connected:
            log.info("CU connected: outputs follow cu_hal")
        else:
            log.warning("CU absent or stale: drives disabled, brakes engaged, outputs safe")

    def _step_reference(self, now_ns: int, dt_s: float) -> None:
        """The numpy reference cycle (EVO_HAL_ENGINE=numpy): read inputs, execute commands, exchange
        with the driver, publish."""
        dio = self.dio
        proc = self.proc
        now = now_ns * 1e-9
        cu = self.cu_in.poll(now)
        connected = cu is not None
        if connected != self.cu_connected:
            self._cu_changed(connected)
        if self.re_cmds.poll_pending(now):
            self._run_commands(self.re_cmds, now_ns, connected)
        if self.rpc_cmds.poll_pending(now):
            self._run_commands(self.rpc_cmds, now_ns, connected)
        if connected:
            if cu is not self._cu_local:
                self._bind_cu(cu)
            v = self._cu_views
            key = v[0].tobytes() + v[1].tobytes()
            if key != self._switch_key:  # enable / brake_release change rarely
                self._switch_key = key
                np.not_equal(v[0], 0, out=dio.enable)
                dio.enable &= self.configured
                np.not_equal(v[1], 0, out=dio.brake_release)
                dio.brake_release &= self.configured
            np.add(v[2], v[3], out=dio.torque)
            if self._targets:
                dio.target_position[:] = v[4]
                dio.target_velocity[:] = v[5]
            proc.outputs(v[6], v[7], now_ns, self.cu_in.changed)
        else:
            if self._switch_key:
                self._switch_key = b""
                dio.enable[:] = False
                dio.brake_release[:] = False
                dio.torque[:] = 0.0
            proc.outputs(None, None, now_ns, False)
        self.driver.cycle(dio, now_ns, dt_s)
        proc.inputs(dio.di, dio.ai, now_ns)
        self._publish(connected, now_ns)
        self.cycles += 1

    def _bind_cu(self, cu: np.ndarray) -> None:
        """Field views of the cu_hal reader's local copy (rebuilt only if it is a new array)."""
        axes = cu["axes"]
        self._cu_local = cu
        self._cu_views = (
            axes["enable"], axes["brake_release"], axes["calculated_torque"], axes["torque_offset"],
            axes["target_position"], axes["target_velocity"], cu["do_bank"], cu["ao_values"],
        )

    def _run_commands(self, inbox: CommandInbox, now_ns: int, connected: bool) -> None:
        for cmd in inbox.take():
            result, message = self.executor.execute(cmd, now_ns, connected)
            inbox.ack(cmd, result, message)
            self._acked = True
            if result:
                log.info("%s command %d (request %d) refused: %s", inbox.name, cmd.code, cmd.request_id, message)

    def _publish(self, connected: bool, now_ns: int) -> None:
        """hal_cu every cycle (the CU reads it every cycle); the three status segments when what
        they show changed or they carry a new ack — then their reader is woken — and otherwise
        every BEAT_NS only, as a heartbeat (their readers judge staleness in tenths of seconds)."""
        self.io_cu_connected[...] = connected
        np.copyto(self._cu_head_dst, self._cu_head_src)
        np.copyto(self._cu_ai_dst, self._cu_ai_src)
        self.w_cu.commit()
        self._publish_status(R_ALL if self._io_change.changed() else 0, now_ns)

    def _publish_status(self, changed: int, now_ns: int) -> None:
        """hal_mqt / hal_rpc / hal_re: committed when the status payload changed (`changed`: its
        regions, kernels.R_*) or their beat is due; hal_rpc / hal_re also when they carry a new ack.
        Woken on a change or an ack. Each commit copies the span of the changed regions and the part
        after the status payload (the loop's figures, the acks); the segments hold the rest from
        their last commit already."""
        self._acked = False
        beat = now_ns >= self._beat[0]
        if beat:
            self._beat[0] = now_ns + BEAT_NS
        if changed:
            self._io_since[0] = 1
        if self._pub is not None:  # compiled: the same commits in one call (hal/kernels.py hal_publish), the
            # figures copied in it from the loop's record (fused.figures)
            wake = self._pub(changed, beat, *self._pub_args)
            if wake:
                post_bits(wake, self._posters)  # (WAKE_MQT, WAKE_RPC, WAKE_RE: bits 0, 1, 2)
            return
        self.publish_figures()  # the loop's cycle figures into the tail these commits copy
        tail = self._status_tail
        lo, hi = self._io_span[changed]
        if changed:
            self.w_mqt.commit_part(lo, hi, tail, self._mqt_end)
            self.wake_mqt.post()
        elif beat:
            self.w_mqt.commit_part(tail, self._mqt_end)
        n = self._rpc_acks[()]
        acked = n != self._rpc_acks_seen
        if changed or acked or beat:
            if changed:
                self._io_dst[0][lo:hi] = self._io_src[lo:hi]
            self.w_rpc.commit_part(lo, hi, tail, self._rpc_end)
            if changed or acked:
                self._rpc_acks_seen = n
                self.wake_rpc.post()
        n = self._re_acks[()]
        acked = n != self._re_acks_seen
        if changed or acked or beat:
            if changed:
                self._io_dst[1][lo:hi] = self._io_src[lo:hi]
            self.w_re.commit_part(lo, hi, tail, self._re_end)
            if changed or acked:
                self._re_acks_seen = n
                self.wake_re.post()

    def _slow(self, now_ns: int) -> None:
        self._next_slow = now_ns + int(SLOW_EVERY_S * 1e9)
        if self.state_writer is not None and self._io_since[0]:  # positions are in that payload
            self._io_since[0] = 0
            self.state_writer.offer(self.dio.position, self.dio.referenced)
        self._publish_health()

    def _publish_health(self) -> None:
        """Driver state and reason into the status segments; a change is logged once."""
        health = self.driver.health()
        if health is not self._health and health != self._health:
            if self._health is not None:
                (log.info if health.state in (DriverState.READY, DriverState.ENABLED) else log.warning)(
                    "driver %s: %s%s", self.driver.name, health.state.name, f" ({health.message})" if health.message else "")
            self._health = health
            self.io_hal_state[...] = health.state
            self.io_hal_message[...] = health.message.encode("utf-8", "replace")[: self.io_hal_message.dtype.itemsize]

    # --- teardown -----------------------------------------------------------------------------
    def close(self, save: bool = True) -> None:
        """Drives off, final state saved, segments unlinked (clean exit)."""
        if self.state_writer is not None:
            if save:
                self.state_writer.close(self.dio.position, self.dio.referenced)
            self.state_writer = None
        try:
            self.driver.close()
        except Exception:  # noqa: BLE001 - teardown continues; the error is logged
            log.exception("driver close failed")
        for link in self._links:
            link.close()
        for w in self._writers:
            w.close()
        for p in (getattr(self, "wake_mqt", None), getattr(self, "wake_rpc", None), getattr(self, "wake_re", None)):
            if p is not None:
                p.close()
        self._links, self._writers = [], []


def run(config: EvoConfig) -> int:
    """The HAL process: set up, loop at `[hal] cycle_time_us` until SIGTERM/SIGINT, clean up."""
    process_setup("evo-hal")
    stop = StopFlag().install()
    hal_cfg = config.system.hal
    hal = HalCycle(config)
    log.info(
        "HAL up: driver %s, %d axes, cycle %d us, state file %s",
        hal.driver.name, len(config.axes), hal_cfg.cycle_time_us, config.hal_state_file(),
    )
    loop = CycleLoop("hal", hal.period_ns, stop, rt_priority=hal_cfg.rt_priority, cpu=hal_cfg.cpu,
                     auto_publish=False, record=hal.fused.figures if hal.fused is not None else None)
    dt_of_ticks = [k * hal.period_ns / 1e9 for k in range(MAX_CATCH_UP_TICKS + 1)]  # no float built per cycle

    def step(now_ns: int, ticks: int) -> None:
        hal.step(now_ns, dt_of_ticks[ticks if ticks < MAX_CATCH_UP_TICKS else MAX_CATCH_UP_TICKS])
        hal.housekeeping(now_ns)  # after the cycle's commits

    # a bridge posts "hal" after it submits a command: the loop sleeps on it and takes the command at once
    waiter = WakeWaiter("hal") if hal_cfg.commands_between_cycles else None
    if waiter is not None:
        loop.wake_between(waiter, hal.between, BETWEEN_GUARD_NS)
    try:
        rt = loop.start(hal.stats_views)
        hal.publish_figures = loop.publish
        log.info("HAL cycle: %s", "SCHED_FIFO %d" % hal_cfg.rt_priority if rt else "normal scheduling")
        stale = stale_threshold(hal_cfg.stale_reads, hal_cfg.cycle_time_us, rt)
        hal.cu_in.set_stale_reads(stale.cycles)  # before the first cycle: until here nothing was polled
        log.info("CU stale after %d cycles = %.0f ms (%s): drives off, brakes on, outputs safe",
                 stale.cycles, stale.ms, stale.why)
        loop.run(step, f"HAL cycling, driver {hal.driver.name}")
    finally:
        notify_stopping()
        if waiter is not None:
            waiter.close()
        hal.close()
        log.info("HAL stopped after %d cycles (%d overruns, %d command passes between cycles)", hal.cycles,
                 loop.timer.overruns, hal.between_passes)
    return 0
