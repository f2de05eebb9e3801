"""`evo ethercat scan --interface IFACE [--json]`: every SubDevice on a segment, in bus order, with its identity.

Position, station address, vendor id, product code, revision, name, AL state (like IgH's `ethercat slaves`).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

CAP_NET_RAW = 13
# pysoem is imported inside the command: every `evo` call parses this file.


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ethercat", help="EtherCAT segment tools")
    esub = p.add_subparsers(dest="ethercat_cmd", required=True)
    sc = esub.add_parser(
        "scan", help="list every SubDevice in bus order: position, station address, identity, name, AL state",
        description="Enumerates the segment the way the HAL does at start-up (SOEM config_init: the SubDevices are "
                    "reset to INIT and left in PRE-OP), so do not scan a segment a running machine drives.")
    sc.add_argument("--interface", required=True, help="network interface of the segment (e.g. eth1)")
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    sc.add_argument("--timeout-us", type=int, default=2000, metavar="US",
                    help="answer time-out of one datagram (default 2000 µs; more for slow or emulated segments)")
    sc.set_defaults(func=cmd_scan)


def _may_use_raw_sockets() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    except OSError:
        pass
    return False


def scan(interface: str, timeout_us: int = 2000) -> list[dict[str, Any]]:
    """The SubDevices found on `interface` (RuntimeError with the reason when the segment cannot be read)."""
    import pysoem

    pysoem.settings.timeouts.ret = timeout_us
    master = pysoem.Master()
    try:
        master.open(interface)
    except ConnectionError as e:
        raise RuntimeError(f"cannot open {interface}: {e}") from None
    try:
        n = master.config_init()
        if n <= 0:
            return []
        master.state_check(pysoem.PREOP_STATE, 1_000_000)  # config_init requested PRE-OP: let it settle
        master.read_state()
        names = {pysoem.INIT_STATE: "INIT", pysoem.PREOP_STATE: "PRE-OP", pysoem.BOOT_STATE: "BOOT",
                 pysoem.SAFEOP_STATE: "SAFE-OP", pysoem.OP_STATE: "OP"}
        out = []
        for pos, s in enumerate(master.slaves, 1):
            try:
                station = int.from_bytes(s._fprd(0x0010, 2), "little")
            except Exception:  # noqa: BLE001 - shown as unknown
                station = None
            st = s.state
            al = names.get(st & 0x0F, f"0x{st:02X}") + (" + ERROR" if st & pysoem.STATE_ERROR else "")
            out.append({"position": pos, "station_address": station, "vendor_id": s.man, "product_code": s.id,
                        "revision": s.rev, "name": s.name, "al_state": al, "al_status_code": s.al_status})
        return out
    finally:
        master.close()


def cmd_scan(args: argparse.Namespace) -> int:
    iface = args.interface
    if not _may_use_raw_sockets():
        print(f"evo ethercat scan: needs root or CAP_NET_RAW to open a raw socket on {iface} "
              "(run as root, or: setcap cap_net_raw+ep on the Python interpreter)", file=sys.stderr)
        return 1
    try:
        socket.if_nametoindex(iface)
    except OSError:
        have = ", ".join(name for _, name in socket.if_nameindex())
        print(f"evo ethercat scan: no network interface {iface!r} (have: {have})", file=sys.stderr)
        return 1
    try:
        found = scan(iface, args.timeout_us)
    except RuntimeError as e:
        print(f"evo ethercat scan: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"interface": iface, "subdevices": found}, indent=2))
        return 0
    if not found:
        print(f"no SubDevice answered on {iface}")
        return 0
    print(f"{'pos':>3}  {'station':<7}  {'vendor_id':<10}  {'product':<10}  {'revision':<10}  {'al_state':<8}  name")
    for d in found:
        st = "-" if d["station_address"] is None else f"0x{d['station_address']:04X}"
        print(f"{d['position']:>3}  {st:<7}  0x{d['vendor_id']:08X}  0x{d['product_code']:08X}  "
              f"0x{d['revision']:08X}  {d['al_state']:<8}  {d['name']}")
    return 0
