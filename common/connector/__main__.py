"""`python -m common.connector gateway --spec FILE|--spec-json JSON`: a separate gateway process.

Serves one connector's channels over iceoryx2 until SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import sys

from common.connector.gateway import GatewaySpec, run_gateway_process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.connector")
    sub = parser.add_subparsers(dest="command", required=True)
    gw = sub.add_parser("gateway", help="run a connector gateway process")
    src = gw.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", help="path of a GatewaySpec JSON file")
    src.add_argument("--spec-json", help="a GatewaySpec as a JSON string")
    args = parser.parse_args(argv)
    if args.spec:
        with open(args.spec, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = args.spec_json
    try:
        import setproctitle

        setproctitle.setproctitle("evo-gateway")
    except ImportError:
        pass
    return run_gateway_process(GatewaySpec.from_json(text))


if __name__ == "__main__":
    sys.exit(main())
