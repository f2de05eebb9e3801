"""evo recipe_executor package."""
