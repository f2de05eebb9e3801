"""`python -m hal.drivers.canopen_emulator`: emulated CANopen nodes on a python-can bus until stdin closes or SIGTERM.

Control and fault injection: JSON lines on stdin (see emulator.py), one JSON reply per line on stdout.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from .emulator import Emulator, SpecError, parse_nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hal.drivers.canopen_emulator", description=__doc__)
    p.add_argument("--interface", default="udp_multicast", help="python-can interface (default udp_multicast)")
    p.add_argument("--channel", default="239.74.163.2", help="python-can channel (default 239.74.163.2)")
    p.add_argument("--nodes", required=True,
                   help="ID:KIND[:key=value...] comma-separated; KIND drive|io; keys vendor_id, product_code, "
                        "revision, di (io: initial inputs, bit 0 = pin 0)")
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="canopen-emulator %(levelname)s %(message)s")
    try:
        nodes = parse_nodes(a.nodes)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        emu = Emulator.open(a.interface, a.channel, nodes)
    except Exception as e:  # noqa: BLE001 - python-can raises many kinds; say what and where
        print(f"error: cannot open {a.interface} bus {a.channel!r}: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        emu.power_on()
        emu.serve()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
