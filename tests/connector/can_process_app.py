"""Support program (no tests here) run inside a test's network namespace: a CAN connector whose gateway is its own
process (iceoryx2 bridges) on udp_multicast, against a bare python-can peer; prints one JSON result per check.

`python tests/connector/can_process_app.py --prefix P --group G`; exits 0 after printing every result.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import can  # noqa: E402

from common.connector import BackPressure, CanRouting, DroppedInbound, GatewayMode, HealthEvent, RawCodec, Up  # noqa: E402
from common.connector.can import CanConnector, CanInterface, CanOptions  # noqa: E402
from common.connector.routing import CanFrameKind  # noqa: E402


def until(pred, timeout: float = 15.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--group", default="239.74.163.2")
    a = ap.parse_args()
    out: dict[str, object] = {}
    peer = can.Bus(interface="udp_multicast", channel=a.group, receive_own_messages=False, fd=True)
    opts = CanOptions({"can0": CanInterface("udp_multicast", a.group, fd=True)})
    c = CanConnector(opts, "canproc", codec=RawCodec(), mode=GatewayMode.PROCESS, prefix=a.prefix, outbound_capacity=4)
    w = c.writer(CanRouting("can0", 0x123))
    w_ext = c.writer(CanRouting("can0", 0x1ABCDEF0, extended=True))
    w_fd = c.writer(CanRouting("can0", 0x300, kind=CanFrameKind.FD))
    r_block = c.reader(CanRouting("can0", 0x200, mask=0x700))
    r_exact = c.reader(CanRouting("can0", 0x234))
    r_small = c.reader(CanRouting("can0", 0x77), capacity=2)
    events = c.subscribe_health()
    gw = c.spawn_gateway()
    try:
        c.start()
        out["up"] = bool(until(lambda: c.health == Up()))
        # outbound: the peer (another process's bus) sees our frames, extended flag and FD intact
        w.send(b"abc")
        w_ext.send(b"x")
        w_fd.send(bytes(range(40)))
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            m = peer.recv(0.2)
            if m is not None and not m.is_error_frame:
                got.append([m.arbitration_id, m.is_extended_id, m.is_fd, bytes(m.data).hex()])
        out["outbound"] = got
        # inbound: filters and overlapping filters across the process boundary
        for can_id in (0x234, 0x2FF, 0x300):
            peer.send(can.Message(arbitration_id=can_id, is_extended_id=False, data=bytes([can_id & 0xFF])))
        block = []
        exact = []
        until(lambda: (block.extend((m.key, m.value.hex()) for m in iter(r_block.try_recv, None))
                       or exact.extend((m.key, m.value.hex()) for m in iter(r_exact.try_recv, None))
                       or (len(block) >= 2 and len(exact) >= 1)))
        out["block"], out["exact"] = block, exact
        # inbound flood into a 2-slot bridge: DroppedInbound mirrored from the gateway process
        for i in range(20):
            peer.send(can.Message(arbitration_id=0x77, is_extended_id=False, data=bytes([i])))
        drops: list[int] = []
        until(lambda: drops.extend(e.count for e in events.drain() if isinstance(e, DroppedInbound)) or sum(drops) >= 18)
        out["dropped"] = sum(drops)
        out["kept"] = [m.value.hex() for m in iter(r_small.try_recv, None)]
        # error frames from the bus: health only (mirrored), then recovery
        peer.send(can.Message(arbitration_id=0x004, is_error_frame=True, is_extended_id=False,
                              data=bytes([0, 0x20]) + bytes(6)))
        out["passive"] = str(until(lambda: c.health if "error passive" in str(c.health) else None))
        peer.send(can.Message(arbitration_id=0x100, is_error_frame=True, is_extended_id=False, data=bytes(8)))
        out["recovered"] = bool(until(lambda: c.health == Up()))
        # back-pressure: the gateway process stopped, the 4-slot outbound bridge fills
        os.kill(gw.pid, signal.SIGSTOP)
        accepted = 0
        try:
            for i in range(50):
                w.send(bytes([i]))
                accepted += 1
            out["backpressure"] = False
        except BackPressure as e:
            out["backpressure"] = str(e)
            out["health_when_full"] = str(c.health)
        out["accepted"] = accepted
        os.kill(gw.pid, signal.SIGCONT)
        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < accepted and time.monotonic() < deadline:
            m = peer.recv(0.2)
            if m is not None and m.arbitration_id == 0x123:
                seen.append(m.data[0])
        out["after_backpressure"] = seen
        w.send(b"\xff")  # the writer's next send clears the back-pressure degradation
        out["up_again"] = bool(until(lambda: c.health == Up()))
        out["events"] = [type(e.current).__name__ for e in events.drain() if isinstance(e, HealthEvent)]
    finally:
        c.stop()
        out["gateway_exit"] = gw.stop()
        peer.shutdown()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
