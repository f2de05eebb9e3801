"""`python -m hal.drivers.ethercat_emulator --interface IFACE --devices drive,drive,io8 [--control PATH]`.

Answers EtherCAT frames on IFACE until SIGTERM / SIGINT; prints `READY ...` once the socket is bound.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .server import KINDS, serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal.drivers.ethercat_emulator",
                                 description="evo's emulated EtherCAT SubDevices on a network interface")
    ap.add_argument("--interface", required=True, help="network interface (e.g. one end of a veth pair)")
    ap.add_argument("--devices", default="drive,drive,io8",
                    help=f"SubDevices in bus order, comma-separated ({', '.join(KINDS)})")
    ap.add_argument("--control", type=Path, default=None, help="Unix socket for the JSON control channel")
    ap.add_argument("--di-init", type=lambda x: int(x, 0), default=0,
                    help="initial DI channel bitmask of every I/O terminal (e.g. 1: an NC E-stop on DI 1 closed)")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s ecat-emu: %(message)s")
    kinds = [k.strip() for k in a.devices.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        print(f"--devices: unknown kind(s) {bad or '(none)'}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(a.interface, kinds, a.control, di_init=a.di_init)
    except PermissionError:
        print(f"cannot open a raw socket on {a.interface}: needs root or CAP_NET_RAW", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot open a raw socket on {a.interface}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
