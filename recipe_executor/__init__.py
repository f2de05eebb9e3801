"""evo recipe executor: runs recipes (common.recipes) step by step over the RE segments.

`python -m recipe_executor`; the state machine is executor.py, the segments links.py.
"""
