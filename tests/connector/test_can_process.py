"""The CAN connector across processes: application, gateway process (iceoryx2 bridges) and a bare python-can peer
on udp_multicast inside a private network namespace.

Issue 13 "Connector: filters, overlapping filters, extended ids, FD frames, back-pressure, health on bus errors ...
across processes" (seed 002 REQ_0607, REQ_0608, REQ_0613-0615, REQ_0624, REQ_0631-0632).
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from tests.canopen_support import NetNs

pytestmark = pytest.mark.timeout(180)
APP = Path(__file__).resolve().parent / "can_process_app.py"


@pytest.fixture(scope="module")
def result():
    ns = NetNs().create()
    try:
        r = ns.run([sys.executable, str(APP), "--prefix", f"evocan-{uuid.uuid4().hex[:8]}"], timeout=150)
        assert r.returncode == 0, r.stderr[-4000:]
        yield json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        ns.delete()


def test_frames_leave_with_their_id_extended_flag_and_fd_payload(result) -> None:
    """REQ_0613/0615: outbound frames carry the routing's id, EFF flag and the codec's bytes; FD up to 64 bytes."""
    assert result["up"]
    assert result["outbound"] == [[0x123, False, False, "616263"], [0x1ABCDEF0, True, False, "78"],
                                  [0x300, False, True, bytes(range(40)).hex() + "0000000000000000"]]


def test_filters_and_overlapping_filters_across_processes(result) -> None:
    """REQ_0622/0624: the block filter gets 0x234 and 0x2FF, the exact one its own copy of 0x234, 0x300 nobody."""
    assert result["block"] == [["std:0x234", "34"], ["std:0x2FF", "ff"]]
    assert result["exact"] == [["std:0x234", "34"]]


def test_a_full_inbound_bridge_is_reported_as_dropped_inbound(result) -> None:
    """REQ_0608: 20 frames into a 2-slot bridge: 2 kept, 18 reported by DroppedInbound from the gateway process."""
    assert result["kept"] == ["00", "01"] and result["dropped"] == 18


def test_error_frames_drive_health_only(result) -> None:
    """REQ_0631/0632: an error-passive frame degrades the mirrored health naming the interface; recovery clears it."""
    assert result["passive"] == "Degraded(reason='can0: error passive')"
    assert result["recovered"]


def test_a_stalled_gateway_is_back_pressure_and_nothing_accepted_is_lost(result) -> None:
    """REQ_0607: outbound bridge full -> BackPressure and Degraded; every accepted frame goes out afterwards."""
    assert result["backpressure"] == "outbound bridge full on channel 'can0/std:0x123.classic'"
    assert "outbound bridge full" in result["health_when_full"]
    assert result["accepted"] == 4 and result["after_backpressure"] == [0, 1, 2, 3]
    assert result["up_again"] and result["gateway_exit"] == 0
