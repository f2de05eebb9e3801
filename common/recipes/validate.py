"""Load-time validation of recipes against the machine, and of their call graph.

Each refusal is a RecipeError naming recipe, step and field; nothing of a refused recipe runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from common.consts import COUPLING_RATIO_BOUNDS

from .limits import AxisLimits, MachineLimits, PinInfo
from .loader import read_recipe
from .model import (
    AxisRef,
    CallStep,
    CoupleStep,
    HomeStep,
    MoveStep,
    MoveVelocityStep,
    Recipe,
    RecipeError,
    RecipeNotFound,
    SetAoStep,
    SetDoStep,
    Step,
    WaitAiStep,
    WaitDiStep,
)

__all__ = ["RecipeBundle", "validate_recipe", "load_bundle"]


@dataclass(frozen=True)
class RecipeBundle:
    """A validated recipe with every recipe it calls (directly or not), by name."""

    main: Recipe
    recipes: Mapping[str, Recipe]


def _fmt(x: float) -> str:
    return f"{x:g}"


class _Checker:
    def __init__(self, recipe: Recipe, machine: MachineLimits) -> None:
        self.recipe = recipe
        self.m = machine

    def err(self, step: Step, field: str, detail: str) -> RecipeError:
        return RecipeError(self.recipe.name, step.path, field, detail)

    def axis(self, step: Step, ref: AxisRef, field: str) -> AxisLimits:
        a = self.m.axis(ref)
        if a is None:
            raise self.err(step, field, f"unknown axis '{ref}' (axes: {self.m.axis_names()})")
        return a

    def axes(self, step: Step, refs: tuple[AxisRef, ...], field: str) -> list[AxisLimits]:
        out: list[AxisLimits] = []
        for i, r in enumerate(refs):
            a = self.axis(step, r, f"targets.{r}" if field == "targets" else field if field == "axis" else f"{field}[{i}]")
            if any(b.id == a.id for b in out):
                raise self.err(step, field, f"axis {a.label} named twice")
            out.append(a)
        return out

    def free_output(self, step: Step, io_type: str, pin: int) -> PinInfo:
        p = self.m.pin(io_type, pin)
        if p is None:
            raise self.err(step, "pin", f"unknown {io_type} pin {pin} (not in io.toml)")
        if p.role:
            raise self.err(step, "pin", f"{io_type} pin {pin} has role '{p.role}': owned by the CU")
        return p

    def input(self, step: WaitDiStep | WaitAiStep, io_type: str) -> PinInfo:
        if step.role is not None:
            p = self.m.role(step.role)
            if p is None:
                raise self.err(step, "role", f"unknown role '{step.role}' (not in io.toml)")
            if p.type != io_type:
                raise self.err(step, "role", f"role '{step.role}' is a {p.type} (pin {p.pin}), not a {io_type}")
            return p
        assert step.pin is not None
        p = self.m.pin(io_type, step.pin)
        if p is None:
            raise self.err(step, "pin", f"unknown {io_type} pin {step.pin} (not in io.toml)")
        return p

    def step(self, s: Step) -> None:
        if isinstance(s, MoveStep):
            axes = self.axes(s, tuple(r for r, _ in s.targets), "targets")
            for a, (ref, value) in zip(axes, s.targets):
                f = f"targets.{ref}"
                if s.relative:
                    span = a.max_pos - a.min_pos
                    if abs(value) > span:
                        raise self.err(s, f, f"distance {_fmt(value)} exceeds travel {_fmt(span)} of {a.label}")
                elif not a.min_pos <= value <= a.max_pos:
                    raise self.err(s, f, f"{_fmt(value)} outside soft limits [{_fmt(a.min_pos)}, {_fmt(a.max_pos)}]")
                if s.velocity is not None and s.velocity > a.max_velocity:
                    raise self.err(s, "velocity", f"{_fmt(s.velocity)} above max_velocity {_fmt(a.max_velocity)} of {a.label}")
                if s.acceleration is not None and a.max_acceleration is not None and s.acceleration > a.max_acceleration:
                    raise self.err(s, "acceleration",
                                   f"{_fmt(s.acceleration)} above max_acceleration {_fmt(a.max_acceleration)} of {a.label}")
        elif isinstance(s, MoveVelocityStep):
            a = self.axis(s, s.axis, "axis")
            if abs(s.velocity) > a.max_velocity:
                raise self.err(s, "velocity", f"{_fmt(s.velocity)} beyond max_velocity {_fmt(a.max_velocity)} of {a.label}")
            if s.acceleration is not None and a.max_acceleration is not None and s.acceleration > a.max_acceleration:
                raise self.err(s, "acceleration",
                               f"{_fmt(s.acceleration)} above max_acceleration {_fmt(a.max_acceleration)} of {a.label}")
        elif isinstance(s, HomeStep):
            for i, a in enumerate(self.axes(s, s.axes, "axes")):
                if a.homing_method == "NoHoming":
                    raise self.err(s, f"axes[{i}]", f"axis {a.label} has homing method NoHoming")
        elif isinstance(s, CoupleStep):
            slave = self.axis(s, s.axis, "axis")
            master = self.axis(s, s.master, "master")
            if slave.id == master.id:
                raise self.err(s, "master", f"axis {slave.label} cannot follow itself")
            lo, hi = COUPLING_RATIO_BOUNDS
            if s.ratio == 0.0 or not lo <= s.ratio <= hi:
                raise self.err(s, "ratio", f"{_fmt(s.ratio)} must be non-zero within [{_fmt(lo)}, {_fmt(hi)}]")
        elif isinstance(s, SetDoStep):
            self.free_output(s, "do", s.pin)
        elif isinstance(s, SetAoStep):
            p = self.free_output(s, "ao", s.pin)
            if not p.min <= s.value <= p.max:
                raise self.err(s, "value", f"{_fmt(s.value)} outside ao pin {s.pin} range [{_fmt(p.min)}, {_fmt(p.max)}]")
        elif isinstance(s, WaitDiStep):
            self.input(s, "di")
        elif isinstance(s, WaitAiStep):
            self.input(s, "ai")
        elif isinstance(s, CallStep):
            pass  # resolved by load_bundle
        else:
            refs = s.axis_refs()
            if refs:
                field = "axes" if hasattr(s, "axes") else "axis"
                self.axes(s, refs, field)


def validate_recipe(recipe: Recipe, machine: MachineLimits) -> None:
    """Check every step of one recipe against the machine (calls are checked by load_bundle)."""
    c = _Checker(recipe, machine)
    for s in recipe.walk():
        c.step(s)


def load_bundle(directory: str | Path, name: str, machine: MachineLimits) -> RecipeBundle:
    """Read, parse and validate `name` and every recipe it calls. RecipeNotFound only when `name`
    itself has no file; a missing called recipe or a recursive call (direct or indirect) is a
    RecipeError at the calling step."""
    done: dict[str, Recipe] = {}
    chain: list[str] = []

    def visit(rname: str) -> Recipe:
        recipe = read_recipe(directory, rname)
        validate_recipe(recipe, machine)
        chain.append(rname)
        for call in recipe.calls():
            if call.recipe in chain:
                cycle = " -> ".join(chain[chain.index(call.recipe):] + [call.recipe])
                raise RecipeError(rname, call.path, "recipe", f"recursive call {cycle}")
            if call.recipe in done:
                continue
            try:
                done[call.recipe] = visit(call.recipe)
            except RecipeNotFound as e:
                if e.recipe != call.recipe:
                    raise
                raise RecipeError(rname, call.path, "recipe", f"called recipe '{call.recipe}' not found") from None
        chain.pop()
        return recipe

    main = visit(name)
    done[name] = main
    return RecipeBundle(main=main, recipes=done)
