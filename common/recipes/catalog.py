"""The recipe catalog: every recipe file of a directory with its validity (for ListRecipes).

Reads the files itself, so the gRPC bridge and the executor agree without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .limits import MachineLimits
from .loader import read_recipe, recipe_names
from .model import RecipeError

if TYPE_CHECKING:
    from common.config import EvoConfig

__all__ = ["RecipeCheck", "RecipeInfo", "check_recipes", "list_recipes"]


@dataclass(frozen=True)
class RecipeInfo:
    """One recipe file: `steps` = its top-level step count; `error` = why it is refused ("" if valid)."""

    name: str
    description: str
    steps: int
    valid: bool
    error: str = ""


def list_recipes(directory: str | Path, machine: MachineLimits | None = None) -> list[RecipeInfo]:
    """Every `*.toml` of `directory`, sorted by name. With `machine` each recipe is fully
    validated (axes, pins, limits, calls) as LOAD would; without it only the file format is."""
    from .validate import load_bundle  # local: validate imports loader, keep import order simple

    out: list[RecipeInfo] = []
    for name in recipe_names(directory):
        try:
            recipe = read_recipe(directory, name)
        except RecipeError as e:
            out.append(RecipeInfo(name, "", 0, False, e.message))
            continue
        error = ""
        if machine is not None:
            try:
                load_bundle(directory, name, machine)
            except RecipeError as e:
                error = e.message
        out.append(RecipeInfo(name, recipe.description, len(recipe.steps), not error, error))
    return out


@dataclass(frozen=True)
class RecipeCheck:
    """The recipes of a configuration, checked as LOAD would: `dir_error` when `[re] recipes_dir`
    cannot be used, else every recipe with its validity."""

    directory: Path
    dir_error: str
    recipes: tuple[RecipeInfo, ...]

    @property
    def invalid(self) -> tuple[RecipeInfo, ...]:
        return tuple(r for r in self.recipes if not r.valid)

    def problems(self) -> list[str]:
        """One line per problem, naming the file and the field (empty = all good)."""
        if self.dir_error:
            return [f"config.toml [re] recipes_dir: {self.dir_error}"]
        return [f"{self.directory.name}/{r.name}.toml: {r.error}" for r in self.invalid]


def check_recipes(cfg: "EvoConfig") -> RecipeCheck:
    """`evo config check` and `evo up`: the configured recipes directory and every recipe in it."""
    d = cfg.recipes_dir()
    if not d.exists():
        return RecipeCheck(d, f"directory {d} does not exist", ())
    if not d.is_dir():
        return RecipeCheck(d, f"{d} is not a directory", ())
    return RecipeCheck(d, "", tuple(list_recipes(d, MachineLimits.from_config(cfg))))
