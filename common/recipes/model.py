"""The recipe model: frozen step dataclasses, the Recipe, on-error policies and RecipeError.

A recipe is data only (see config/recipes/README.md for the TOML format these mirror).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Iterator, Union

from common.consts import NAME_LEN
from common.shm.commands import ResultCode
from common.states import OperationalMode

#: An axis as a recipe names it: its id, or its name / short file name (case-insensitive).
AxisRef = Union[int, str]

MAX_NAME_BYTES = NAME_LEN - 1  # fixed-size, NUL-terminated name fields in the segments


class StepKind(StrEnum):
    """Every step `type` a recipe may use."""

    MOVE = "move"
    MOVE_VELOCITY = "move_velocity"
    STOP = "stop"
    WAIT_IN_POSITION = "wait_in_position"
    ENABLE = "enable"
    DISABLE = "disable"
    HOME = "home"
    SET_MODE = "set_mode"
    COUPLE = "couple"
    DECOUPLE = "decouple"
    GEAR_CHANGE = "gear_change"
    SET_DO = "set_do"
    SET_AO = "set_ao"
    WAIT_DI = "wait_di"
    WAIT_AI = "wait_ai"
    DWELL = "dwell"
    REPEAT = "repeat"
    CALL = "call"
    MESSAGE = "message"


class OnError(StrEnum):
    """What a failed step does before the recipe ends in Error.

    ABORT: controlled STOP of every axis the recipe has commanded.
    STOP:  controlled STOP of all axes of the machine (STOP axis 0).
    ESTOP: EMERGENCY_STOP (machine safety stop, operator reset needed).
    """

    ABORT = "abort"
    STOP = "stop"
    ESTOP = "estop"


#: Operational modes a recipe may select (Manual and Test belong to the operator).
RECIPE_MODES: dict[str, OperationalMode] = {
    "Position": OperationalMode.POSITION,
    "Velocity": OperationalMode.VELOCITY,
    "Torque": OperationalMode.TORQUE,
}


class RecipeError(Exception):
    """A refused recipe. `recipe`, `step` (1-based top-level step number, 0 = the [recipe] header
    or the file itself), `step_path` ("3", "3.2" inside a repeat block), `field` and `detail`;
    `code` is the ResultCode an ack carries (INVALID_ARGUMENT, NOT_FOUND for a missing file)."""

    code: ResultCode = ResultCode.INVALID_ARGUMENT

    def __init__(self, recipe: str, step: int | str, field: str, detail: str) -> None:
        self.recipe = recipe
        self.step_path = str(step)
        self.step = int(self.step_path.split(".", 1)[0])
        self.field = field
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Short enough for an ack (96 bytes) in most cases: "name: step 3, targets.X: ..."."""
        where = "header" if self.step_path == "0" else f"step {self.step_path}"
        return f"{self.recipe}: {where}, {self.field}: {self.detail}"


class RecipeNotFound(RecipeError):
    code = ResultCode.NOT_FOUND


# --- steps -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Step:
    """Common to every step: its place (`path`, "3" or "3.2"), an optional label and on_error
    (None = the recipe's)."""

    kind: ClassVar[StepKind]
    path: str
    label: str = ""
    on_error: OnError | None = None

    @property
    def number(self) -> int:
        """Top-level step number (1-based) this step belongs to."""
        return int(self.path.split(".", 1)[0])

    def axis_refs(self) -> tuple[AxisRef, ...]:
        """Every axis this step names (for validation and for the executor's axis set)."""
        return ()


@dataclass(frozen=True, kw_only=True)
class MoveStep(Step):
    """Absolute (targets = positions) or relative (targets = distances) move of one or several
    axes at once; velocity/acceleration None = the axis maximum. `wait` = finish when every axis is
    in position (else the next step starts at once; use wait_in_position later)."""

    kind: ClassVar[StepKind] = StepKind.MOVE
    targets: tuple[tuple[AxisRef, float], ...]
    relative: bool = False
    velocity: float | None = None
    acceleration: float | None = None
    wait: bool = True
    timeout: float | None = None

    def axis_refs(self) -> tuple[AxisRef, ...]:
        return tuple(a for a, _ in self.targets)


@dataclass(frozen=True, kw_only=True)
class MoveVelocityStep(Step):
    """Run an axis at a signed velocity (e.g. a spindle); finished once the CU accepted it and the
    axis is no longer accelerating. velocity 0 = ramp down to standstill."""

    kind: ClassVar[StepKind] = StepKind.MOVE_VELOCITY
    axis: AxisRef
    velocity: float
    acceleration: float | None = None
    timeout: float | None = None

    def axis_refs(self) -> tuple[AxisRef, ...]:
        return (self.axis,)


@dataclass(frozen=True, kw_only=True)
class _AxesStep(Step):
    axes: tuple[AxisRef, ...]
    timeout: float | None = None

    def axis_refs(self) -> tuple[AxisRef, ...]:
        return self.axes


@dataclass(frozen=True, kw_only=True)
class StopStep(_AxesStep):
    kind: ClassVar[StepKind] = StepKind.STOP


@dataclass(frozen=True, kw_only=True)
class WaitInPositionStep(_AxesStep):
    kind: ClassVar[StepKind] = StepKind.WAIT_IN_POSITION


@dataclass(frozen=True, kw_only=True)
class EnableStep(_AxesStep):
    kind: ClassVar[StepKind] = StepKind.ENABLE


@dataclass(frozen=True, kw_only=True)
class DisableStep(_AxesStep):
    kind: ClassVar[StepKind] = StepKind.DISABLE


@dataclass(frozen=True, kw_only=True)
class HomeStep(_AxesStep):
    kind: ClassVar[StepKind] = StepKind.HOME


@dataclass(frozen=True, kw_only=True)
class _AxisStep(Step):
    axis: AxisRef
    timeout: float | None = None

    def axis_refs(self) -> tuple[AxisRef, ...]:
        return (self.axis,)


@dataclass(frozen=True, kw_only=True)
class SetModeStep(_AxisStep):
    kind: ClassVar[StepKind] = StepKind.SET_MODE
    mode: OperationalMode


@dataclass(frozen=True, kw_only=True)
class CoupleStep(_AxisStep):
    """`axis` (the slave) follows `master` with `ratio`."""

    kind: ClassVar[StepKind] = StepKind.COUPLE
    master: AxisRef
    ratio: float = 1.0

    def axis_refs(self) -> tuple[AxisRef, ...]:
        return (self.axis, self.master)


@dataclass(frozen=True, kw_only=True)
class DecoupleStep(_AxisStep):
    kind: ClassVar[StepKind] = StepKind.DECOUPLE


@dataclass(frozen=True, kw_only=True)
class GearChangeStep(_AxisStep):
    """gear 1..4, 0 = neutral."""

    kind: ClassVar[StepKind] = StepKind.GEAR_CHANGE
    gear: int


@dataclass(frozen=True, kw_only=True)
class SetDoStep(Step):
    kind: ClassVar[StepKind] = StepKind.SET_DO
    pin: int
    value: bool


@dataclass(frozen=True, kw_only=True)
class SetAoStep(Step):
    kind: ClassVar[StepKind] = StepKind.SET_AO
    pin: int
    value: float


@dataclass(frozen=True, kw_only=True)
class WaitDiStep(Step):
    """Wait until a DI (by `pin` or `role`, logical value) equals `value`; timeout None = forever."""

    kind: ClassVar[StepKind] = StepKind.WAIT_DI
    pin: int | None = None
    role: str | None = None
    value: bool = True
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class WaitAiStep(Step):
    """Wait until an AI (by `pin` or `role`) is above or below a threshold."""

    kind: ClassVar[StepKind] = StepKind.WAIT_AI
    pin: int | None = None
    role: str | None = None
    above: float | None = None
    below: float | None = None
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class DwellStep(Step):
    kind: ClassVar[StepKind] = StepKind.DWELL
    seconds: float


@dataclass(frozen=True, kw_only=True)
class RepeatStep(Step):
    kind: ClassVar[StepKind] = StepKind.REPEAT
    count: int
    steps: tuple[Step, ...]


@dataclass(frozen=True, kw_only=True)
class CallStep(Step):
    kind: ClassVar[StepKind] = StepKind.CALL
    recipe: str


@dataclass(frozen=True, kw_only=True)
class MessageStep(Step):
    """Show `text` to the operator; `pause` = then wait (Paused) until the operator resumes."""

    kind: ClassVar[StepKind] = StepKind.MESSAGE
    text: str
    pause: bool = False


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One recipe file: name (= file stem), description, default on_error, its steps."""

    name: str
    description: str = ""
    on_error: OnError = OnError.ABORT
    steps: tuple[Step, ...] = ()
    source: str = ""  # file path, for messages

    def walk(self) -> Iterator[Step]:
        """Every step, depth first, repeat blocks included (called recipes not)."""
        stack = list(reversed(self.steps))
        while stack:
            s = stack.pop()
            yield s
            if isinstance(s, RepeatStep):
                stack.extend(reversed(s.steps))

    def calls(self) -> Iterator[CallStep]:
        return (s for s in self.walk() if isinstance(s, CallStep))
