"""Recipes as data: the model, the strict TOML loader and the load-time validation.

Shared by the recipe executor (runs them) and the gRPC bridge (lists them); no execution here.
"""
from __future__ import annotations

from .catalog import RecipeInfo, list_recipes
from .limits import AxisLimits, MachineLimits, PinInfo
from .loader import parse_recipe, read_recipe, recipe_path, recipe_names
from .model import (
    AxisRef,
    CallStep,
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
    OnError,
    Recipe,
    RecipeError,
    RecipeNotFound,
    RepeatStep,
    SetAoStep,
    SetDoStep,
    SetModeStep,
    Step,
    StepKind,
    StopStep,
    WaitAiStep,
    WaitDiStep,
    WaitInPositionStep,
)
from .validate import RecipeBundle, load_bundle, validate_recipe

__all__ = [
    "AxisLimits", "AxisRef", "CallStep", "CoupleStep", "DecoupleStep", "DisableStep", "DwellStep",
    "EnableStep", "GearChangeStep", "HomeStep", "MachineLimits", "MessageStep", "MoveStep",
    "MoveVelocityStep", "OnError", "PinInfo", "Recipe", "RecipeBundle", "RecipeError", "RecipeInfo",
    "RecipeNotFound", "RepeatStep", "SetAoStep", "SetDoStep", "SetModeStep", "Step", "StepKind",
    "StopStep", "WaitAiStep", "WaitDiStep", "WaitInPositionStep", "list_recipes", "load_bundle",
    "parse_recipe", "read_recipe", "recipe_names", "recipe_path", "validate_recipe",
]
