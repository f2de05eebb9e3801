"""Exec wrapper for external programs: set PR_SET_PDEATHSIG, check the watchdog still lives, then exec.

`python -m evo.launch -- PROG ARGS...`; the death signal survives exec (for non-setuid programs).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m evo.launch -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
    parent = os.environ.get("EVO_WATCHDOG_PID")
    if parent and os.getppid() != int(parent):
        return 1  # the watchdog died before the death signal was armed
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"evo.launch: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
