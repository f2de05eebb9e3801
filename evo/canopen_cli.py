"""`evo canopen scan`: every CANopen node that answers on a bus, with its identity (0x1018), device type and NMT state.

Read-only on the bus: SDO uploads and listening to heartbeats; nothing is configured or started.
"""
from __future__ import annotations

import argparse
import json
import sys

# canopen / python-can are imported inside the command: every `evo` call parses this file.


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("canopen", help="CANopen bus tools")
    csub = p.add_subparsers(dest="canopen_cmd", required=True)
    sc = csub.add_parser("scan", help="list every node that answers: id, vendor, product, revision, device type, "
                                      "NMT state")
    sc.add_argument("--interface", required=True, help="python-can interface (socketcan, virtual, udp_multicast, ...)")
    sc.add_argument("--channel", required=True, help="python-can channel (can0, a multicast group, ...)")
    sc.add_argument("--bitrate", type=int, default=500_000, help="bit/s for adapters that set it (default 500000)")
    sc.add_argument("--wait", type=float, default=1.2, help="seconds to listen for answers and heartbeats (def 1.2)")
    sc.add_argument("--sdo-timeout", type=float, default=0.3, help="seconds per SDO answer (default 0.3)")
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    sc.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    from common.fieldbus.canopen_net import open_network, scan

    try:
        net = open_network(args.interface, args.channel, args.bitrate)
    except Exception as e:  # noqa: BLE001 - python-can raises many kinds: name the bus and the reason
        print(f"evo canopen scan: cannot open {args.interface} channel {args.channel!r}: {e}", file=sys.stderr)
        return 1
    try:
        nodes = scan(net, wait_s=args.wait, sdo_timeout_s=args.sdo_timeout)
    finally:
        net.disconnect()
    if args.json:
        print(json.dumps({"interface": args.interface, "channel": args.channel,
                          "nodes": [n.to_dict() for n in nodes]}, indent=2))
        return 0

    def hx(v: int | None) -> str:
        return "-" if v is None else f"0x{v:08X}"

    if not nodes:
        print(f"no CANopen node answered on {args.interface} {args.channel}")
        return 0
    print(f"{'node':>4}  {'vendor_id':<10}  {'product':<10}  {'revision':<10}  {'dev_type':<10}  nmt_state")
    for n in nodes:
        print(f"{n.node_id:>4}  {hx(n.vendor_id):<10}  {hx(n.product_code):<10}  {hx(n.revision):<10}  "
              f"{hx(n.device_type):<10}  {n.nmt_state}{f'  ({n.error})' if n.error else ''}")
    return 0
