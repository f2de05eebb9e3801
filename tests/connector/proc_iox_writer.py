"""Subprocess for the iceoryx2 gateway test: sends N values through a ChannelWriter over iceoryx2.

Prints one JSON line with what it did, then exits.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from common.connector import BackPressure, ChannelDescriptor, ChannelWriter, Iceoryx2Routing, NotConnected
from common.connector.iceoryx2_transport import Iceoryx2Transport


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--capacity", type=int, required=True)
    args = ap.parse_args()
    transport = Iceoryx2Transport(args.prefix)
    desc = ChannelDescriptor("cross", Iceoryx2Routing(args.service), max_payload=256)
    sender = transport.open_sender(args.service, args.capacity, desc.slot_size, f"{args.service}.ev")
    writer: ChannelWriter = ChannelWriter(desc, sender)
    deadline = time.monotonic() + 10
    while not sender.connected():  # the test's reader must be attached first
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no reader"}))
            return 2
        time.sleep(0.01)
    backpressure = 0
    i = 0
    while i < args.count:
        try:
            writer.send({"i": i}, correlation_id=f"c{i}".encode())
            i += 1
        except BackPressure:
            backpressure += 1
            time.sleep(0.001)
        except NotConnected:
            print(json.dumps({"error": "reader went away", "sent": i}))
            return 3
    print(json.dumps({"sent": i, "backpressure": backpressure, "last_sequence": writer.sequence}), flush=True)
    writer.close()
    transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
