"""The gRPC bridge: the operator API (Machine, Io, Recipes, Supervisor, health, reflection) of evo.

Reads come from one shared sample of the segments; commands go through the rpc_* command rings.
"""
