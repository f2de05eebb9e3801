"""The recipe executor's state machine: commands (load, start, pause, resume, abort, step, reset)
and the per-tick walk through the program. Pure logic over a Port, so unit tests can drive it.

Pause = controlled STOP of every axis the run is positioning or homing; resume re-issues those
moves / homings (absolute targets, so a relative move is not applied twice), then continues.
Abort = STOP of every axis the run has commanded, wait for standstill, then Aborted.
A run owns its axes: START takes an explicit CU lock on every axis the program names before the
first step (refused -> Error, nothing moved) and gives them back when the run ends, so no other
source can command them between steps.
A failed step applies its on_error (abort: STOP the run's axes; stop: STOP all; estop:
EMERGENCY_STOP), waits for standstill, then Error with the step's reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.recipes import MachineLimits, OnError, RecipeError, load_bundle
from common.shm.commands import CuCommand, ReCommand, ResultCode
from common.states import MotionState, PowerState, ReState, StepResult

from . import actions as _actions
from .actions import ACK_TIMEOUT_S, SETTLE_COMMITS, Action, Motion, Outcome, fail, machine_fault, make_action
from .port import Port, Ticket
from .program import Leaf, LoopEnd, LoopStart, Program, compile_bundle

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0  # STOP sent: axes must be at rest within this, else Error
MAX_STEPS_PER_TICK = 8  # instant steps (messages, zero dwells) chained in one tick
_MOVING = (MotionState.ACCELERATING, MotionState.CONSTANT_VELOCITY, MotionState.DECELERATING, MotionState.HOMING,
           MotionState.GEAR_ASSIST_MOTION)


@dataclass(frozen=True)
class Snapshot:
    state: ReState
    step_result: StepResult
    current_step: int
    step_count: int
    error_code: int
    cycle_count: int
    progress: float
    program: str
    step_kind: str
    message: str


@dataclass(frozen=True)
class RecoveredRun:
    """What a previous instance was doing when it died (from the state file)."""

    program: str
    step: int
    kind: str
    state: str
    axes: tuple[int, ...]


class _StopJob:
    """STOP / EMERGENCY_STOP sent; waiting for the axes to rest, then `final` state."""

    def __init__(self, tickets: list[Ticket], axes: tuple[int, ...], deadline: float, final: ReState,
                 code: int, message: str) -> None:
        self.tickets = tickets
        self.axes = axes
        self.deadline = deadline
        self.final = final
        self.code = code
        self.message = message
        self.notes: list[str] = []


class _ClaimJob:
    """After START: ACQUIRE_LOCK sent for every axis of the program; the first step waits for the acks."""

    def __init__(self, axes: tuple[int, ...], deadline: float) -> None:
        self.axes = axes
        self.deadline = deadline  # for the CU to be there at all
        self.tickets: list[Ticket] = []


class _ResumeJob:
    """After RESUME: wait for the paused axes to rest, re-issue their moves / homings, wait acks."""

    def __init__(self, axes: tuple[int, ...], deadline: float) -> None:
        self.axes = axes
        self.deadline = deadline
        self.tickets: list[Ticket] = []
        self.sent = False


class Executor:
    def __init__(self, port: Port, machine: MachineLimits, recipes_dir: str | Path,
                 recovered: RecoveredRun | None = None, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.port = port
        self.machine = machine
        self.recipes_dir = Path(recipes_dir)
        self.stop_timeout_s = stop_timeout_s
        self.state = ReState.IDLE
        self.program: Program | None = None
        self.motion = Motion()
        self.action: Action | None = None
        self.leaf: Leaf | None = None
        self.pc = 0
        self.loops: dict[int, int] = {}  # LoopStart index -> passes left
        self.leaves_done = 0
        self.cycle_count = 0
        self.step_result = StepResult.NONE
        self.error_code = 0
        self.message = ""
        self.single_step = False
        self._pause_tickets: list[Ticket] = []
        self._paused_axes: tuple[int, ...] = ()
        self._resume: _ResumeJob | None = None
        self._stop: _StopJob | None = None
        self._claim: _ClaimJob | None = None
        self._claimed: tuple[int, ...] = ()  # axes this run holds locked
        self._safety_stop_axes: tuple[int, ...] = ()
        self.dirty = True
        if recovered is not None:
            self.state = ReState.ERROR
            self.error_code = int(ResultCode.NOT_EXECUTED)
            self.step_result = StepResult.FAILED
            self.message = (f"restarted while {recovered.state.lower()} '{recovered.program}' at step "
                            f"{recovered.step} ({recovered.kind}); not resumed")
            self._safety_stop_axes = recovered.axes
            log.warning("%s; axes %s get a STOP", self.message, list(recovered.axes) or "none")

    # ================================================================== commands (rpc_re) ==
    def command(self, code: int, text: str, now: float) -> tuple[ResultCode, str]:
        try:
            cmd = ReCommand(code)
        except ValueError:
            return ResultCode.UNKNOWN_COMMAND, f"unknown recipe command {code}"
        handler: Callable[[str, float], tuple[ResultCode, str]] = {
            ReCommand.NOP: lambda t, n: (ResultCode.OK, "nop"),
            ReCommand.LOAD: self._cmd_load,
            ReCommand.START: self._cmd_start,
            ReCommand.PAUSE: self._cmd_pause,
            ReCommand.RESUME: self._cmd_resume,
            ReCommand.ABORT: self._cmd_abort,
            ReCommand.STEP: self._cmd_step,
            ReCommand.RESET: self._cmd_reset,
        }[cmd]
        result, msg = handler(text, now)
        log.info("%s%s -> %s: %s", cmd.name, f" {text!r}" if text else "", result.name, msg)
        return result, msg

    def _forbid(self, what: str, needs: str) -> tuple[ResultCode, str]:
        return ResultCode.STATE_FORBIDS, f"{what} needs {needs} (state {self.state.name.title()})"

    def _cmd_load(self, name: str, now: float) -> tuple[ResultCode, str]:
        if self.state in (ReState.RUNNING, ReState.PAUSED, ReState.STOPPING):
            return self._forbid("LOAD", "no recipe running")
        if not name:
            return ResultCode.INVALID_ARGUMENT, "LOAD needs a recipe name"
        try:
            bundle = load_bundle(self.recipes_dir, name, self.machine)
            program = compile_bundle(bundle, self.machine)
        except RecipeError as e:
            log.warning("recipe refused: %s", e.message)
            return e.code, e.message
        self.program = program
        self._set_state(ReState.LOADED)
        self._reset_run()
        self.cycle_count = 0
        self.error_code = 0
        self.step_result = StepResult.NONE
        self.message = f"loaded {name}: {program.top_count} steps"
        return ResultCode.OK, self.message

    def _cmd_start(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state not in (ReState.LOADED, ReState.COMPLETED) or self.program is None:
            return self._forbid("START", "a loaded recipe")
        self._begin_run(now, single_step=False)
        return ResultCode.OK, f"started {self.program.name}"

    def _cmd_step(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state in (ReState.LOADED, ReState.COMPLETED) and self.program is not None:
            self._begin_run(now, single_step=True)
            return ResultCode.OK, "running one step"
        if self.state == ReState.RUNNING:
            self.single_step = True
            return ResultCode.OK, "pausing after the current step"
        if self.state == ReState.PAUSED:
            self.single_step = True
            self._do_resume(now)
            return ResultCode.OK, "running one step"
        return self._forbid("STEP", "a loaded or paused recipe")

    def _cmd_pause(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state == ReState.PAUSED:
            return ResultCode.OK, "already paused"
        if self.state != ReState.RUNNING:
            return self._forbid("PAUSE", "a running recipe")
        self._do_pause(now, "paused by operator")
        return ResultCode.OK, self.message

    def _cmd_resume(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state != ReState.PAUSED:
            return self._forbid("RESUME", "a paused recipe")
        self.single_step = False
        self._do_resume(now)
        return ResultCode.OK, f"resumed at step {self._top()}"

    def _cmd_abort(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state == ReState.STOPPING:
            return ResultCode.OK, "already stopping"
        if self.state not in (ReState.RUNNING, ReState.PAUSED):
            return self._forbid("ABORT", "a running or paused recipe")
        axes = tuple(sorted(self.motion.touched))
        self._begin_stop(now, CuCommand.STOP, axes, ReState.ABORTED, 0, f"aborted by operator at step {self._top()}")
        return ResultCode.OK, "aborting: stopping " + (self._labels(axes) or "nothing")

    def _cmd_reset(self, _: str, now: float) -> tuple[ResultCode, str]:
        if self.state in (ReState.RUNNING, ReState.PAUSED, ReState.STOPPING):
            return self._forbid("RESET", "no recipe running (abort first)")
        self.program = None
        self._reset_run()
        self.cycle_count = 0
        self.error_code = 0
        self.step_result = StepResult.NONE
        self.message = ""
        self._set_state(ReState.IDLE)
        return ResultCode.OK, "reset to Idle"

    def has_pending_stops(self) -> bool:
        """STOPs owed to the CU after a safety stop (sent once the CU follows our ring)."""
        return bool(self._safety_stop_axes)

    # ============================================================================ the tick ==
    def tick(self, now: float) -> None:
        if self._safety_stop_axes and self.port.cu_ready():
            for a in self._safety_stop_axes:
                self.port.send_cu(int(CuCommand.STOP), axis=a)
            self._safety_stop_axes = ()
        if self.state == ReState.RUNNING:
            self._tick_running(now)
        elif self.state == ReState.PAUSED:
            self._tick_paused(now)
        elif self.state == ReState.STOPPING:
            self._tick_stopping(now)

    def _tick_running(self, now: float) -> None:
        if self._claim is not None:
            self._tick_claim(now)
            return
        if self._resume is not None:
            out = self._tick_resume(now)
            if out is not None:
                self._step_failed(now, out)
            return
        guard = self._guard()
        if guard is not None:
            self._step_failed(now, guard)
            return
        for _ in range(MAX_STEPS_PER_TICK):
            if self.action is None and not self._next_leaf(now):
                return
            assert self.action is not None
            out = self.action.poll(now)
            if out is None:
                return
            if not out.ok:
                self._step_failed(now, out)
                return
            self._step_done(out)
            if out.pause_after or self.single_step:
                self._do_pause(now, out.message if out.pause_after else f"stepped: step {self._top()} done")
                return

    def _tick_paused(self, now: float) -> None:
        guard = self._guard()
        if guard is not None:
            self._step_failed(now, guard)
            return
        for t in self._pause_tickets:
            if t.ack is not None and not t.ack.ok:
                self._step_failed(now, fail(t.ack.result, f"pause: CU refused STOP: {t.ack.message}"))
                return
        if self.action is not None and not self.action.freezes:
            out = self.action.poll(now)
            if out is not None:
                if out.ok:
                    self._step_done(out)
                else:
                    self._step_failed(now, out)

    def _guard(self) -> Outcome | None:
        """Machine-wide reasons to stop a run that has commanded axes."""
        if not self.motion.touched:
            return None
        if not self.port.cu_ready():
            return fail(ResultCode.NOT_EXECUTED, "CU connection lost")
        return machine_fault(self.port)

    def _next_leaf(self, now: float) -> bool:
        """Advance to the next leaf and start it; at the end, Completed."""
        assert self.program is not None
        ins = self.program.instructions
        while self.pc < len(ins):
            i = ins[self.pc]
            if isinstance(i, LoopStart):
                self.loops[self.pc] = i.count
                self.pc += 1
            elif isinstance(i, LoopEnd):
                left = self.loops[i.start] - 1
                if left > 0:
                    self.loops[i.start] = left
                    self.pc = i.start + 1
                else:
                    self.pc += 1
            else:
                self.leaf = i
                self.pc += 1
                self.action = make_action(i, self.port, self.machine, self.motion)
                self.action.start(now)
                self.step_result = StepResult.RUNNING
                self.message = f"step {i.top}/{self.program.top_count}: {self.action.describe()}"
                self.dirty = True
                log.info("%s: %s", i.where, self.action.describe())
                return True
        self.action = None
        self.leaf = None
        self._release_axes()
        self.cycle_count += 1
        self.step_result = StepResult.OK
        self.message = f"completed {self.program.name} (cycle {self.cycle_count})"
        self._set_state(ReState.COMPLETED)
        return False

    def _step_done(self, out: Outcome) -> None:
        self.leaves_done += 1
        self.step_result = StepResult.OK
        if out.message:
            self.message = out.message
        self.action = None
        self.dirty = True

    def _step_failed(self, now: float, out: Outcome) -> None:
        leaf = self.leaf
        where = leaf.where if leaf is not None else "run"
        kind = leaf.step.kind.value if leaf is not None else ""
        msg = f"{where} {kind}: {out.message}"
        log.warning("step failed (%s): %s", out.code.name, msg)
        self.step_result = StepResult.FAILED
        self.action = None
        self._resume = None
        policy = leaf.on_error if leaf is not None else OnError.ABORT
        touched = tuple(sorted(self.motion.touched))
        if policy is OnError.ESTOP:
            self._begin_stop(now, CuCommand.EMERGENCY_STOP, touched, ReState.ERROR, int(out.code), msg, all_axes=True)
        elif policy is OnError.STOP:
            self._begin_stop(now, CuCommand.STOP, touched, ReState.ERROR, int(out.code), msg, all_axes=True)
        else:
            self._begin_stop(now, CuCommand.STOP, touched, ReState.ERROR, int(out.code), msg)

    # ==================================================================== axis ownership ==
    def _tick_claim(self, now: float) -> None:
        job = self._claim
        assert job is not None
        if not job.tickets:
            if self.port.cu_ready():
                job.tickets = [self.port.send_cu(int(CuCommand.ACQUIRE_LOCK), axis=a) for a in job.axes]
            elif now > job.deadline:
                self._claim_failed(now, ResultCode.NOT_EXECUTED,
                                   f"CU not connected: cannot take {self._labels(job.axes)}")
            return
        for t in job.tickets:
            if t.ack is None:
                if now - t.sent_at > ACK_TIMEOUT_S:
                    self._claim_failed(now, ResultCode.TIMEOUT, "no ack from the CU for the axis locks")
                return
        self._claimed = tuple(t.axis for t in job.tickets if t.ack is not None and t.ack.ok)
        refused = [t for t in job.tickets if t.ack is not None and not t.ack.ok]
        if refused:
            self._claim = None  # every ack is in: only the locks granted are given back
            t = refused[0]
            assert t.ack is not None
            self._claim_failed(now, t.ack.result, f"cannot take {self._labels((t.axis,))}: {t.ack.message}")
            return
        self._claim = None
        log.info("holding %s for %s", self._labels(self._claimed), self.program.name if self.program else "")

    def _claim_failed(self, now: float, code: ResultCode, message: str) -> None:
        self.step_result = StepResult.FAILED
        self._begin_stop(now, CuCommand.STOP, (), ReState.ERROR, int(code), f"start: {message}")

    def _release_axes(self) -> None:
        """Give back the run's axis locks (the CU drops them itself if we die or the link goes)."""
        if self._claimed and self.port.cu_ready():
            for a in self._claimed:
                self.port.send_cu(int(CuCommand.RELEASE_LOCK), axis=a)
        self._claimed = ()

    # ==================================================================== pause / resume ==
    def _do_pause(self, now: float, why: str) -> None:
        axes = tuple(sorted(set(self.motion.moving) | self.motion.homing))
        self._resume = None
        self._pause_tickets = []
        if axes and self.port.cu_ready():
            self._pause_tickets = [self.port.send_cu(int(CuCommand.STOP), axis=a) for a in axes]
        self._paused_axes = axes
        if self.action is not None and self.action.freezes:
            self.action.hold(now)
        self.message = f"{why} at step {self._top()}" + (f": stopping {self._labels(axes)}" if axes else "")
        self._set_state(ReState.PAUSED)

    def _do_resume(self, now: float) -> None:
        self._set_state(ReState.RUNNING)
        self._pause_tickets = []
        axes = tuple(a for a in self._paused_axes if a in self.motion.moving or a in self.motion.homing)
        self._paused_axes = ()
        if axes:
            self._resume = _ResumeJob(axes, now + self.stop_timeout_s)
            self.message = f"resuming step {self._top()}: re-issuing {self._labels(axes)}"
        else:
            self._finish_resume(now)

    def _finish_resume(self, now: float) -> None:
        self._resume = None
        if self.action is not None:
            self.action.release(now)
            self.message = f"step {self._top()}/{self._count()}: {self.action.describe()}"

    def _tick_resume(self, now: float) -> Outcome | None:
        job = self._resume
        assert job is not None
        if not self.port.cu_ready():
            return fail(ResultCode.NOT_EXECUTED, "resume: CU not connected")
        if not job.sent:
            if not all(self._at_rest(a) for a in job.axes):
                if now > job.deadline:
                    return fail(ResultCode.TIMEOUT, f"resume: {self._labels(job.axes)} still moving")
                return None
            for a in job.axes:
                tgt = self.motion.moving.get(a)
                if tgt is not None:
                    t = self.port.send_cu(int(CuCommand.MOVE_ABSOLUTE), axis=a,
                                          args=(tgt.position, tgt.velocity, tgt.acceleration))
                else:
                    t = self.port.send_cu(int(CuCommand.HOME), axis=a)
                job.tickets.append(t)
            job.sent = True
            return None
        for t in job.tickets:
            if t.ack is None:
                if now - t.sent_at > ACK_TIMEOUT_S:
                    return fail(ResultCode.TIMEOUT, "resume: no ack from the CU")
                return None
            if not t.ack.ok:
                return fail(t.ack.result, f"resume: CU refused re-issue on {self._labels((t.axis,))}: {t.ack.message}")
        if self.port.cu_commits() >= max(t.ack_commit for t in job.tickets) + SETTLE_COMMITS:
            self._finish_resume(now)
        return None

    # ==================================================================== stopping ==
    def _begin_stop(self, now: float, code: CuCommand, axes: tuple[int, ...], final: ReState, err: int,
                    message: str, all_axes: bool = False) -> None:
        tickets: list[Ticket] = []
        wait_axes = tuple(a.id for a in self.machine.axes) if all_axes else axes
        if self._claim is not None:  # stopped while taking the locks: give back every one asked for
            self._claimed = tuple(t.axis for t in self._claim.tickets)
            self._claim = None
        if self.port.cu_ready():
            if code is CuCommand.EMERGENCY_STOP:
                tickets.append(self.port.send_cu(int(code)))
            elif all_axes:
                tickets.append(self.port.send_cu(int(code), axis=0))
            else:
                tickets = [self.port.send_cu(int(code), axis=a) for a in axes]
        self._pause_tickets = []
        self._resume = None
        if self.action is not None:
            self.action = None
        self._stop = _StopJob(tickets, wait_axes, now + self.stop_timeout_s, final, err, message)
        self.error_code = err
        self.message = message if final == ReState.ERROR else f"stopping: {message}"
        self._set_state(ReState.STOPPING)
        if not tickets and not wait_axes:
            self._end_stop()

    def _tick_stopping(self, now: float) -> None:
        job = self._stop
        assert job is not None
        if not self.port.cu_ready():
            if job.axes:
                job.notes.append("CU not connected: stop not confirmed")
            self._end_stop()
            return
        for t in job.tickets:
            if t.ack is not None and not t.ack.ok and "refused" not in t.extra:
                t.extra["refused"] = True
                job.notes.append(f"STOP refused: {t.ack.message}")
                log.warning("stopping: CU refused %s on axis %d: %s", CuCommand(t.code).name, t.axis, t.ack.message)
        acked = all(t.ack is not None or now - t.sent_at > ACK_TIMEOUT_S for t in job.tickets)
        if acked and all(self._at_rest(a) for a in job.axes):
            self._end_stop()
        elif now > job.deadline:
            job.final = ReState.ERROR
            job.code = job.code or int(ResultCode.TIMEOUT)
            job.notes.append(f"axes still moving after {self.stop_timeout_s:g} s")
            self._end_stop()

    def _end_stop(self) -> None:
        job = self._stop
        assert job is not None
        self._stop = None
        self.motion.moving.clear()
        self.motion.homing.clear()
        self._release_axes()
        self.error_code = job.code
        self.message = job.message + ("; " + "; ".join(job.notes) if job.notes else "")
        if job.final == ReState.ERROR:
            self.step_result = StepResult.FAILED
        self._set_state(job.final)

    # ==================================================================== helpers ==
    def _at_rest(self, axis: int) -> bool:
        ax = self.port.cu_axis(axis)
        m = int(ax["motion"])
        if m == MotionState.STANDSTILL:
            return True
        if m in _MOVING or m == MotionState.STOPPING:
            return False
        lim = self.machine.axis_by_id(axis)
        vmax = lim.max_velocity if lim else 1.0
        return abs(float(ax["velocity"])) <= 1e-3 * vmax or int(ax["power"]) == PowerState.POWER_OFF

    def _begin_run(self, now: float, single_step: bool) -> None:
        self._reset_run()
        if self.program is not None and self.program.axes:
            self._claim = _ClaimJob(self.program.axes, now + _actions.CONNECT_WAIT_S)
        self.single_step = single_step
        self.error_code = 0
        self.step_result = StepResult.NONE
        self.message = f"running {self.program.name}" if self.program else ""
        self._set_state(ReState.RUNNING)

    def _reset_run(self) -> None:
        self.pc = 0
        self.loops.clear()
        self.leaves_done = 0
        self.action = None
        self.leaf = None
        self.motion.clear()
        self._pause_tickets = []
        self._paused_axes = ()
        self._resume = None
        self._stop = None
        self._claim = None

    def _set_state(self, state: ReState) -> None:
        if state != self.state:
            log.info("state %s -> %s%s", self.state.name, state.name, f": {self.message}" if self.message else "")
            self.state = state
        self.dirty = True

    def _top(self) -> int:
        return self.leaf.top if self.leaf is not None else 0

    def _count(self) -> int:
        return self.program.top_count if self.program else 0

    def _labels(self, axes: tuple[int, ...]) -> str:
        out = []
        for a in axes:
            lim = self.machine.axis_by_id(a)
            out.append(lim.label if lim else str(a))
        return ", ".join(out)

    def snapshot(self) -> Snapshot:
        p = self.program
        if self.state == ReState.COMPLETED:
            progress = 100.0
        elif p is not None and p.leaf_total:
            progress = min(100.0, 100.0 * self.leaves_done / p.leaf_total)
        else:
            progress = 0.0
        return Snapshot(
            state=self.state, step_result=self.step_result, current_step=self._top(),
            step_count=p.top_count if p else 0, error_code=self.error_code, cycle_count=self.cycle_count,
            progress=progress, program=p.name if p else "", step_kind=self.leaf.step.kind.value if self.leaf else "",
            message=self.message,
        )

    def persist_record(self) -> dict[str, object]:
        """What the state file keeps (a restarted RE reads it to report what it was doing)."""
        return {
            "state": self.state.name, "program": self.program.name if self.program else "",
            "step": self._top(), "kind": self.leaf.step.kind.value if self.leaf else "",
            "axes": sorted(self.motion.touched),
        }
