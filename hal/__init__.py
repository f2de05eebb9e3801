"""evo hal package."""
