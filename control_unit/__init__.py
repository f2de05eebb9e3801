"""evo control_unit package."""
