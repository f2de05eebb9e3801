"""The recipe catalog: every recipe file of a directory with its validity (for ListRecipes).

Reads the files itself, so the gRPC bridge and the executor agree without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .limits import MachineLimits
from .loader import read_recipe, recipe_names
from .model import RecipeError

__all__ = ["RecipeInfo", "list_recipes"]


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
