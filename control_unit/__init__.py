"""evo control unit: 1 kHz cycle of state machines, trajectories, vectorised control law and safety.

`python -m control_unit`; in-process use: `control_unit.core.ControlCore`.
"""
