"""One executor class per leaf step kind: issue its commands, then judge completion from the status.

Each `poll` returns None (still running) or an Outcome; a refusal, an error flag or a timeout fails.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from common.recipes import MachineLimits
from common.recipes.model import (
    CoupleStep,
    DecoupleStep,
    DisableStep,
    DwellStep,
    EnableStep,
    GearChangeStep,
    HomeStep,
    MessageStep,
    MoveStep,
    MoveVelocityStep,
    SetAoStep,
    SetDoStep,
    SetModeStep,
    StepKind,
    StopStep,
    WaitAiStep,
    WaitDiStep,
    WaitInPositionStep,
)
from common.shm.commands import CuCommand, HalCommand, ResultCode
from common.states import (
    AxisError,
    CouplingState,
    GearboxState,
    MotionState,
    PowerState,
    SafetyState,
    axis_error_reasons,
    machine_error_reasons,
)

from .port import Port, Ticket
from .program import Leaf

ACK_TIMEOUT_S = 3.0  # a command not acked by then fails its step (consumer hung or gone)
CONNECT_WAIT_S = 3.0  # a step that needs the CU / HAL waits this long for it to appear
# Status commits after the one carrying the ack before completion is judged. 0: the CU and the
# HAL ack in the same cycle and commit as the status that reflects the command (DESIGN.md).
SETTLE_COMMITS = 0
VERIFY_TIMEOUT_S = 1.0  # an acked output must show up in hal_re within this
DEFAULT_CU_TIMEOUT_S = 15.0  # enable / disable / mode / couple / gear / stop without a timeout
HOMING_START_COMMITS = 50  # homing never seen running after this many commits: it was instant
# Flags that do not fail a step: a warning and the "unreferenced: 5 % speed" notice.
NON_FATAL_AXIS_FLAGS = int(AxisError.LAG_WARNING | AxisError.NOT_REFERENCED)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: ResultCode = ResultCode.OK
    message: str = ""
    pause_after: bool = False


def fail(code: ResultCode, message: str) -> Outcome:
    return Outcome(False, code, message)


@dataclass
class MoveTarget:
    position: float
    velocity: float
    acceleration: float


@dataclass
class Motion:
    """Motion the run has started, shared by the actions and the executor (pause, abort)."""

    moving: dict[int, MoveTarget] = field(default_factory=dict)  # positioning moves not yet in position
    homing: set[int] = field(default_factory=set)
    touched: set[int] = field(default_factory=set)  # every axis the run has commanded

    def clear(self) -> None:
        self.moving.clear()
        self.homing.clear()
        self.touched.clear()


def machine_fault(port: Port) -> Outcome | None:
    """A safety stop or E-stop of the machine fails whatever step is running."""
    st = port.cu_status()
    if int(st["safety_state"]) == SafetyState.SAFETY_STOP or int(st["estop"]):
        reasons = machine_error_reasons(int(st["machine_errors"])) or ["safety stop"]
        return fail(ResultCode.SAFETY, "machine: " + "; ".join(reasons))
    return None


def same_target(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 + 1e-9 * max(abs(a), abs(b))


def at_target(ax: object, target: float) -> bool:
    return bool(ax["in_position"]) and int(ax["motion"]) == MotionState.STANDSTILL and same_target(
        float(ax["target_position"]), target
    )


class Action:
    """Base: timers that freeze while paused, ticket bookkeeping, fault checks."""

    kind: StepKind
    freezes = True  # paused: not polled (timers frozen); False = runs to completion while paused
    needs_cu = False
    needs_hal = False

    def __init__(self, leaf: Leaf, port: Port, machine: MachineLimits, motion: Motion) -> None:
        self.leaf = leaf
        self.step = leaf.step
        self.port = port
        self.machine = machine
        self.motion = motion
        self.tickets: list[Ticket] = []
        self.begun = False
        self._t0 = 0.0
        self._held_at: float | None = None
        self._held_total = 0.0

    # --- time that does not run while paused -------------------------------------------------
    def elapsed(self, now: float) -> float:
        held = self._held_total + (now - self._held_at if self._held_at is not None else 0.0)
        return now - self._t0 - held

    def hold(self, now: float) -> None:
        if self._held_at is None:
            self._held_at = now

    def release(self, now: float) -> None:
        if self._held_at is not None:
            self._held_total += now - self._held_at
            self._held_at = None

    # --- helpers --------------------------------------------------------------------------
    def label(self, axis_id: int) -> str:
        a = self.machine.axis_by_id(axis_id)
        return a.label if a else str(axis_id)

    def send_cu(self, code: CuCommand, axis: int = 0, pin: int = 0, args: tuple[float, ...] = ()) -> Ticket:
        t = self.port.send_cu(int(code), axis=axis, pin=pin, args=args)
        t.extra["what"] = f"{code.name} {self.label(axis)}" if axis else code.name
        self.tickets.append(t)
        if axis:
            self.motion.touched.add(axis)
        return t

    def send_hal(self, code: HalCommand, pin: int, args: tuple[float, ...]) -> Ticket:
        t = self.port.send_hal(int(code), pin=pin, args=args)
        t.extra["what"] = f"{code.name} pin {pin}"
        self.tickets.append(t)
        return t

    def tickets_state(self, now: float) -> Outcome | bool:
        """An Outcome (failure), False (acks outstanding) or True (all acked OK)."""
        for t in self.tickets:
            if t.ack is None:
                if now - t.sent_at > ACK_TIMEOUT_S:
                    who = "CU" if t.target == "cu" else "HAL"
                    return fail(ResultCode.TIMEOUT, f"{t.extra['what']}: no ack from the {who} in {ACK_TIMEOUT_S:g} s")
                return False
            if not t.ack.ok:
                who = "CU" if t.target == "cu" else "HAL"
                return fail(t.ack.result, f"{who} refused {t.extra['what']}: {t.ack.message}")
        return True

    def settled(self) -> bool:
        commits = self.port.cu_commits() if self.needs_cu else self.port.hal_commits()
        last = max((t.ack_commit for t in self.tickets), default=0)
        return commits >= last + SETTLE_COMMITS

    def machine_fault(self) -> Outcome | None:
        return machine_fault(self.port)

    def axis_fault(self, axes: tuple[int, ...]) -> Outcome | None:
        f = self.machine_fault()
        if f:
            return f
        for a in axes:
            ax = self.port.cu_axis(a)
            flags = int(ax["error_flags"]) & ~NON_FATAL_AXIS_FLAGS
            if flags:
                return fail(ResultCode.STATE_FORBIDS, f"axis {self.label(a)}: " + "; ".join(axis_error_reasons(flags)))
            if int(ax["motion"]) == MotionState.MOTION_ERROR or int(ax["power"]) == PowerState.POWER_ERROR:
                return fail(ResultCode.STATE_FORBIDS, f"axis {self.label(a)}: motion/power error")
        return None

    def connected(self, now: float) -> Outcome | bool:
        """Wait for the CU / HAL this step needs (CONNECT_WAIT_S), or fail."""
        ready = (not self.needs_cu or self.port.cu_ready()) and (not self.needs_hal or self.port.hal_ready())
        if ready:
            return True
        who = "CU" if self.needs_cu and not self.port.cu_ready() else "HAL"
        if self.begun:
            return fail(ResultCode.NOT_EXECUTED, f"{who} connection lost")
        if self.elapsed(now) > CONNECT_WAIT_S:
            return fail(ResultCode.NOT_EXECUTED, f"{who} not connected")
        return False

    # --- the interface the executor uses ----------------------------------------------------
    def start(self, now: float) -> None:
        self._t0 = now

    def poll(self, now: float) -> Outcome | None:
        c = self.connected(now)
        if c is not True:
            return c if isinstance(c, Outcome) else None
        if not self.begun:
            self.begun = True
            early = self.begin(now)
            if early is not None:
                return early
        return self.check(now)

    def begin(self, now: float) -> Outcome | None:
        """Issue the commands (called once, when the CU / HAL is there)."""
        return None

    def check(self, now: float) -> Outcome | None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.step.kind.value

    def timed_out(self, now: float, limit: float | None, what: str) -> Outcome | None:
        if limit is not None and self.elapsed(now) > limit:
            return fail(ResultCode.TIMEOUT, f"{what} not done within {limit:g} s")
        return None


class CuAxesAction(Action):
    """Send one command per axis, then wait until `done(axis_status, axis_id)` holds for all."""

    needs_cu = True
    code: CuCommand
    default_timeout: float | None = DEFAULT_CU_TIMEOUT_S

    def command(self, axis: int) -> tuple[int, tuple[float, ...]]:
        return 0, ()

    def done(self, ax: object, axis: int) -> bool:
        raise NotImplementedError

    def begin(self, now: float) -> Outcome | None:
        for a in self.leaf.axes:
            pin, args = self.command(a)
            self.send_cu(self.code, axis=a, pin=pin, args=args)
        return None

    def check(self, now: float) -> Outcome | None:
        acked = self.tickets_state(now)
        if isinstance(acked, Outcome):
            return acked
        fault = self.axis_fault(self.leaf.axes)
        if fault:
            return fault
        if acked and self.settled() and all(self.done(self.port.cu_axis(a), a) for a in self.leaf.axes):
            return self.finish()
        limit = getattr(self.step, "timeout", None) or self.default_timeout
        return self.timed_out(now, limit, self.describe())

    def finish(self) -> Outcome:
        return Outcome(True)

    def describe(self) -> str:
        return f"{self.step.kind.value} " + ", ".join(self.label(a) for a in self.leaf.axes)


class MoveAction(CuAxesAction):
    code = CuCommand.MOVE_ABSOLUTE
    default_timeout = None  # the CU watches lag and limits; an explicit timeout is optional

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.targets: dict[int, float] = {}

    def begin(self, now: float) -> Outcome | None:
        step: MoveStep = self.step  # type: ignore[assignment]
        for axis, (_, value) in zip(self.leaf.axes, step.targets):
            if step.relative:
                ax = self.port.cu_axis(axis)
                resting = bool(ax["in_position"]) and int(ax["motion"]) == MotionState.STANDSTILL
                base = float(ax["target_position"]) if resting else float(ax["position"])
                target = base + value
                lim = self.machine.axis_by_id(axis)
                if lim and not lim.min_pos <= target <= lim.max_pos:
                    return fail(ResultCode.INVALID_ARGUMENT,
                                f"{self.label(axis)} target {target:g} outside soft limits [{lim.min_pos:g}, {lim.max_pos:g}]")
            else:
                target = value
            self.targets[axis] = target
        vel = step.velocity or 0.0
        acc = step.acceleration or 0.0
        for axis, target in self.targets.items():
            self.send_cu(CuCommand.MOVE_ABSOLUTE, axis=axis, args=(target, vel, acc))
            self.motion.moving[axis] = MoveTarget(target, vel, acc)
        return None

    def done(self, ax: object, axis: int) -> bool:
        if not self.step.wait:  # type: ignore[attr-defined]
            return True
        return at_target(ax, self.targets[axis])

    def finish(self) -> Outcome:
        if self.step.wait:  # type: ignore[attr-defined]
            for a in self.targets:
                self.motion.moving.pop(a, None)
        return Outcome(True)

    def describe(self) -> str:
        step: MoveStep = self.step  # type: ignore[assignment]
        op = "+=" if step.relative else "->"
        return "move " + ", ".join(f"{self.label(a)}{op}{v:g}" for a, (_, v) in zip(self.leaf.axes, step.targets))


class MoveVelocityAction(CuAxesAction):
    code = CuCommand.MOVE_VELOCITY
    freezes = False

    def command(self, axis: int) -> tuple[int, tuple[float, ...]]:
        s: MoveVelocityStep = self.step  # type: ignore[assignment]
        return 0, (s.velocity, s.acceleration or 0.0)

    def done(self, ax: object, axis: int) -> bool:
        v = self.step.velocity  # type: ignore[attr-defined]
        m = int(ax["motion"])
        if v == 0.0:  # velocity mode held at 0 reports constant velocity 0
            return m == MotionState.STANDSTILL or (m == MotionState.CONSTANT_VELOCITY
                                                   and float(ax["setpoint_velocity"]) == 0.0)
        return m == MotionState.CONSTANT_VELOCITY  # ramp over (the CU may cap the speed, e.g. unreferenced)

    def describe(self) -> str:
        return f"move_velocity {self.label(self.leaf.axes[0])} at {self.step.velocity:g}/s"  # type: ignore[attr-defined]


class StopAction(CuAxesAction):
    code = CuCommand.STOP
    freezes = False

    def begin(self, now: float) -> Outcome | None:
        for a in self.leaf.axes:
            self.motion.moving.pop(a, None)
        return super().begin(now)

    def done(self, ax: object, axis: int) -> bool:
        return int(ax["motion"]) == MotionState.STANDSTILL


class HomeAction(CuAxesAction):
    code = CuCommand.HOME
    default_timeout = None  # the CU applies the axis's homing timeout

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.seen_homing: set[int] = set()

    def begin(self, now: float) -> Outcome | None:
        self.motion.homing.update(self.leaf.axes)
        return super().begin(now)

    def check(self, now: float) -> Outcome | None:
        if all(t.ack is not None for t in self.tickets):
            for a in self.leaf.axes:
                ax = self.port.cu_axis(a)
                if int(ax["motion"]) == MotionState.HOMING or not int(ax["referenced"]) or int(ax["homing_phase"]):
                    self.seen_homing.add(a)
        return super().check(now)

    def done(self, ax: object, axis: int) -> bool:
        if not int(ax["referenced"]) or int(ax["motion"]) != MotionState.STANDSTILL or int(ax["homing_phase"]):
            return False
        if axis in self.seen_homing:
            return True
        last = max(t.ack_commit for t in self.tickets)
        lim = self.machine.axis_by_id(axis)
        return (lim is not None and lim.homing_method == "Absolute") or self.port.cu_commits() > last + HOMING_START_COMMITS

    def finish(self) -> Outcome:
        self.motion.homing.difference_update(self.leaf.axes)
        return Outcome(True)


class EnableAction(CuAxesAction):
    code = CuCommand.ENABLE_AXIS
    freezes = False

    def done(self, ax: object, axis: int) -> bool:
        return int(ax["power"]) in (PowerState.STANDBY, PowerState.MOTION)


class DisableAction(CuAxesAction):
    code = CuCommand.DISABLE_AXIS
    freezes = False

    def done(self, ax: object, axis: int) -> bool:
        return int(ax["power"]) == PowerState.POWER_OFF


class SetModeAction(CuAxesAction):
    code = CuCommand.SET_MODE
    freezes = False

    def command(self, axis: int) -> tuple[int, tuple[float, ...]]:
        return int(self.step.mode), ()  # type: ignore[attr-defined]

    def done(self, ax: object, axis: int) -> bool:
        return int(ax["mode"]) == int(self.step.mode)  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"set_mode {self.label(self.leaf.axes[0])} {self.step.mode.name.title()}"  # type: ignore[attr-defined]


class CoupleAction(CuAxesAction):
    code = CuCommand.COUPLE
    freezes = False
    _COUPLED = (CouplingState.SLAVE_COUPLED, CouplingState.SLAVE_MODULATED, CouplingState.SYNCHRONIZED)

    def begin(self, now: float) -> Outcome | None:
        slave, master = self.leaf.axes
        self.send_cu(CuCommand.COUPLE, axis=slave, pin=master, args=(self.step.ratio,))  # type: ignore[attr-defined]
        self.motion.touched.add(master)
        return None

    def check(self, now: float) -> Outcome | None:
        slave, master = self.leaf.axes
        acked = self.tickets_state(now)
        if isinstance(acked, Outcome):
            return acked
        fault = self.axis_fault(self.leaf.axes)
        if fault:
            return fault
        ax = self.port.cu_axis(slave)
        if acked and self.settled() and int(ax["coupling"]) in self._COUPLED and int(ax["master_axis"]) == master:
            return Outcome(True)
        return self.timed_out(now, self.step.timeout or self.default_timeout, self.describe())  # type: ignore[attr-defined]

    def describe(self) -> str:
        slave, master = self.leaf.axes
        return f"couple {self.label(slave)} to {self.label(master)} x{self.step.ratio:g}"  # type: ignore[attr-defined]


class DecoupleAction(CuAxesAction):
    code = CuCommand.DECOUPLE
    freezes = False

    def done(self, ax: object, axis: int) -> bool:
        return int(ax["coupling"]) == CouplingState.UNCOUPLED


class GearChangeAction(CuAxesAction):
    code = CuCommand.GEAR_CHANGE
    freezes = False

    def command(self, axis: int) -> tuple[int, tuple[float, ...]]:
        return self.step.gear, ()  # type: ignore[attr-defined]

    def done(self, ax: object, axis: int) -> bool:
        g = self.step.gear  # type: ignore[attr-defined]
        return int(ax["gearbox"]) == (GearboxState.NEUTRAL if g == 0 else g)

    def describe(self) -> str:
        return f"gear_change {self.label(self.leaf.axes[0])} to {self.step.gear or 'neutral'}"  # type: ignore[attr-defined]


class WaitInPositionAction(Action):
    needs_cu = True

    def check(self, now: float) -> Outcome | None:
        fault = self.axis_fault(self.leaf.axes)
        if fault:
            return fault
        ok = True
        for a in self.leaf.axes:
            ax = self.port.cu_axis(a)
            tgt = self.motion.moving.get(a)
            if tgt is not None:
                if at_target(ax, tgt.position):
                    self.motion.moving.pop(a, None)
                else:
                    ok = False
            elif not (int(ax["in_position"]) and int(ax["motion"]) == MotionState.STANDSTILL):
                ok = False
        if ok:
            return Outcome(True)
        return self.timed_out(now, self.step.timeout, self.describe())  # type: ignore[attr-defined]

    def describe(self) -> str:
        return "wait_in_position " + ", ".join(self.label(a) for a in self.leaf.axes)


class _OutputAction(Action):
    needs_hal = True
    freezes = False

    def applied(self, io: object) -> bool:
        raise NotImplementedError

    def check(self, now: float) -> Outcome | None:
        acked = self.tickets_state(now)
        if isinstance(acked, Outcome):
            return acked
        if not acked or not self.settled():
            return None
        if self.applied(self.port.hal_io()):
            return Outcome(True)
        since = now - max(t.sent_at for t in self.tickets)
        if since > ACK_TIMEOUT_S + VERIFY_TIMEOUT_S:
            return fail(ResultCode.INTERNAL, f"{self.describe()}: acked but not applied by the HAL")
        return None


def _logical(bank: object, pin: int, info: object) -> bool:
    """A pin's logical value from a bank of physical levels (NC inputs / inverted outputs flip)."""
    level = bool((int(bank[pin >> 6]) >> (pin & 63)) & 1)  # type: ignore[index]
    return level ^ bool(getattr(info, "inverts_logic", False))


class SetDoAction(_OutputAction):
    def begin(self, now: float) -> Outcome | None:
        s: SetDoStep = self.step  # type: ignore[assignment]
        self.send_hal(HalCommand.SET_DO, s.pin, (1.0 if s.value else 0.0,))
        return None

    def applied(self, io: object) -> bool:
        s: SetDoStep = self.step  # type: ignore[assignment]
        bank = io["do_bank"]  # type: ignore[index]
        return _logical(bank, s.pin, self.machine.pin("do", s.pin)) == s.value

    def describe(self) -> str:
        s: SetDoStep = self.step  # type: ignore[assignment]
        return f"set_do {s.pin} {'on' if s.value else 'off'}"


class SetAoAction(_OutputAction):
    def begin(self, now: float) -> Outcome | None:
        s: SetAoStep = self.step  # type: ignore[assignment]
        self.send_hal(HalCommand.SET_AO, s.pin, (s.value,))
        return None

    def applied(self, io: object) -> bool:
        s: SetAoStep = self.step  # type: ignore[assignment]
        v = float(io["ao_values"][s.pin])  # type: ignore[index]
        return math.isclose(v, s.value, rel_tol=1e-6, abs_tol=1e-9)

    def describe(self) -> str:
        s: SetAoStep = self.step  # type: ignore[assignment]
        return f"set_ao {s.pin} = {s.value:g}"


class _InputWait(Action):
    needs_hal = True
    io_type = "di"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        s = self.step
        if s.role is not None:  # type: ignore[attr-defined]
            p = self.machine.role(s.role)  # type: ignore[attr-defined]
            assert p is not None, "validated"
            self.pin, self.what = p.pin, f"{self.io_type.upper()} {p.pin} ({s.role})"  # type: ignore[attr-defined]
        else:
            self.pin = s.pin  # type: ignore[attr-defined]
            p = self.machine.pin(self.io_type, self.pin)
            name = f" ({p.name})" if p and p.name else ""
            self.what = f"{self.io_type.upper()} {self.pin}{name}"

    def satisfied(self, io: object) -> bool:
        raise NotImplementedError

    def condition(self) -> str:
        raise NotImplementedError

    def check(self, now: float) -> Outcome | None:
        if self.satisfied(self.port.hal_io()):
            return Outcome(True)
        t = self.step.timeout  # type: ignore[attr-defined]
        if t is not None and self.elapsed(now) > t:
            return fail(ResultCode.TIMEOUT, f"{self.what} not {self.condition()} within {t:g} s")
        return None

    def describe(self) -> str:
        return f"wait {self.what} {self.condition()}"


class WaitDiAction(_InputWait):
    io_type = "di"

    def satisfied(self, io: object) -> bool:
        bank = io["di_bank"]  # type: ignore[index]
        return _logical(bank, self.pin, self.machine.pin("di", self.pin)) == self.step.value  # type: ignore[attr-defined]

    def condition(self) -> str:
        return "on" if self.step.value else "off"  # type: ignore[attr-defined]


class WaitAiAction(_InputWait):
    io_type = "ai"

    def satisfied(self, io: object) -> bool:
        v = float(io["ai_values"][self.pin])  # type: ignore[index]
        s = self.step
        return v > s.above if s.above is not None else v < s.below  # type: ignore[attr-defined]

    def condition(self) -> str:
        s = self.step
        return f"> {s.above:g}" if s.above is not None else f"< {s.below:g}"  # type: ignore[attr-defined]


class DwellAction(Action):
    def check(self, now: float) -> Outcome | None:
        return Outcome(True) if self.elapsed(now) >= self.step.seconds else None  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"dwell {self.step.seconds:g} s"  # type: ignore[attr-defined]


class MessageAction(Action):
    freezes = False

    def check(self, now: float) -> Outcome | None:
        s: MessageStep = self.step  # type: ignore[assignment]
        return Outcome(True, message=s.text, pause_after=s.pause)

    def describe(self) -> str:
        return "message"


ACTIONS: dict[StepKind, Callable[..., Action]] = {
    StepKind.MOVE: MoveAction,
    StepKind.MOVE_VELOCITY: MoveVelocityAction,
    StepKind.STOP: StopAction,
    StepKind.WAIT_IN_POSITION: WaitInPositionAction,
    StepKind.ENABLE: EnableAction,
    StepKind.DISABLE: DisableAction,
    StepKind.HOME: HomeAction,
    StepKind.SET_MODE: SetModeAction,
    StepKind.COUPLE: CoupleAction,
    StepKind.DECOUPLE: DecoupleAction,
    StepKind.GEAR_CHANGE: GearChangeAction,
    StepKind.SET_DO: SetDoAction,
    StepKind.SET_AO: SetAoAction,
    StepKind.WAIT_DI: WaitDiAction,
    StepKind.WAIT_AI: WaitAiAction,
    StepKind.DWELL: DwellAction,
    StepKind.MESSAGE: MessageAction,
}

_STEP_TYPES = {
    MoveStep, MoveVelocityStep, StopStep, WaitInPositionStep, EnableStep, DisableStep, HomeStep, SetModeStep,
    CoupleStep, DecoupleStep, GearChangeStep, SetDoStep, SetAoStep, WaitDiStep, WaitAiStep, DwellStep, MessageStep,
}
assert {t.kind for t in _STEP_TYPES} == set(ACTIONS)


def make_action(leaf: Leaf, port: Port, machine: MachineLimits, motion: Motion) -> Action:
    return ACTIONS[leaf.step.kind](leaf, port, machine, motion)
