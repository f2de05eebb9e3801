"""evo evo package."""
