"""Recipe catalog for the executor side; the implementation lives in common.recipes.catalog
(the gRPC bridge imports it from there, process packages never import each other)."""
from __future__ import annotations

from common.recipes.catalog import RecipeInfo, list_recipes

__all__ = ["RecipeInfo", "list_recipes"]
