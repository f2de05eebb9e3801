"""evo: the watchdog (`evo up`) that supervises the machine's processes, and the `evo` CLI.

Imports only `common`; the modules it supervises run as subprocesses.
"""
