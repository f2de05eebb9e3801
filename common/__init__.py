"""evo common: code shared by every evo process (shm protocol, config, notify, rt helpers).

No process package is imported from here; every process package imports this one.
"""
