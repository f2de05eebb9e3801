"""Compile a validated recipe bundle into a flat program: leaves, loop markers, called recipes inlined.

Axis references are resolved to ids here; the executor walks the program with one counter.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.recipes import MachineLimits, OnError, RecipeBundle, RecipeError
from common.recipes.model import CallStep, Recipe, RepeatStep, Step

MAX_INSTRUCTIONS = 100_000  # calls are inlined: bound what a call tree may expand to


@dataclass(frozen=True)
class Leaf:
    """An executable step. `top` is the number of the main recipe's top-level step it belongs to;
    `axes` the axis ids it names (resolved)."""

    step: Step
    on_error: OnError
    recipe: str
    top: int
    axes: tuple[int, ...]

    @property
    def where(self) -> str:
        return f"{self.recipe} step {self.step.path}"


@dataclass(frozen=True)
class LoopStart:
    count: int
    end: int  # index of the matching LoopEnd
    top: int


@dataclass(frozen=True)
class LoopEnd:
    start: int  # index of the matching LoopStart
    top: int


Instruction = Leaf | LoopStart | LoopEnd


@dataclass(frozen=True)
class Program:
    name: str
    description: str
    instructions: tuple[Instruction, ...]
    top_count: int  # top-level steps of the main recipe
    leaf_total: int  # leaves executed by one complete run (repeats multiplied out)
    axes: tuple[int, ...]  # every axis any step names


def compile_bundle(bundle: RecipeBundle, machine: MachineLimits) -> Program:
    out: list[Instruction] = []
    axes: set[int] = set()

    def resolve(step: Step) -> tuple[int, ...]:
        ids = []
        for ref in step.axis_refs():
            a = machine.axis(ref)
            assert a is not None, "validated recipes name known axes"
            ids.append(a.id)
        return tuple(ids)

    def emit(recipe: Recipe, steps: tuple[Step, ...], top: int | None, depth: int) -> int:
        """Append `steps`; return how many leaves one pass executes."""
        leaves = 0
        for s in steps:
            t = s.number if top is None else top
            if len(out) > MAX_INSTRUCTIONS:
                raise RecipeError(bundle.main.name, t, "step", f"expands to more than {MAX_INSTRUCTIONS} steps")
            if isinstance(s, RepeatStep):
                start = len(out)
                out.append(LoopStart(s.count, -1, t))
                inner = emit(recipe, s.steps, t, depth)
                out[start] = LoopStart(s.count, len(out), t)
                out.append(LoopEnd(start, t))
                leaves += s.count * inner
            elif isinstance(s, CallStep):
                leaves += emit(bundle.recipes[s.recipe], bundle.recipes[s.recipe].steps, t, depth + 1)
            else:
                ids = resolve(s)
                axes.update(ids)
                out.append(Leaf(s, s.on_error or recipe.on_error, recipe.name, t, ids))
                leaves += 1
        return leaves

    main = bundle.main
    total = emit(main, main.steps, None, 0)
    return Program(main.name, main.description, tuple(out), len(main.steps), total, tuple(sorted(axes)))
