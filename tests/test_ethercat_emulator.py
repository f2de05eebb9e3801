"""Issue 12: the emulated SubDevices answer hand-built EtherCAT frames (no MainDevice library in between):
chained datagrams, auto-increment / configured / broadcast addressing, working counters, AL state checks with
status codes, FMMU mapping bit-wise and byte-wise for LRD / LWR / LRW, the cut line and the control channel.
"""
from __future__ import annotations

import struct

import pytest

from hal.drivers.ethercat_emulator.esc import APRD, APWR, BRD, FPRD, FPWR, LRD, LRW, LWR, OP, PREOP, SAFEOP
from hal.drivers.ethercat_emulator.server import Segment

HDR = b"\xff" * 6 + b"\x01\x01\x01\x01\x01\x01" + b"\x88\xa4"


def frame(*dgrams: tuple[int, int, int, bytes]) -> bytearray:
    """Ethernet + EtherCAT header + chained datagrams (cmd, adp, ado, data); logical: adp|ado<<16 = address."""
    body = b""
    for i, (cmd, adp, ado, data) in enumerate(dgrams):
        more = 0x8000 if i < len(dgrams) - 1 else 0
        body += struct.pack("<BBHHHH", cmd, i, adp, ado, len(data) | more, 0) + data + b"\0\0"
    return bytearray(HDR + struct.pack("<H", len(body) | 0x1000) + body)


def replies(buf: bytearray) -> list[tuple[int, bytes, int]]:
    """(ADP after the segment, data, working counter) of every datagram."""
    out, o = [], 16
    while True:
        adp = struct.unpack_from("<H", buf, o + 2)[0]
        n = struct.unpack_from("<H", buf, o + 6)[0]
        data = bytes(buf[o + 10:o + 10 + (n & 0x7FF)])
        out.append((adp, data, struct.unpack_from("<H", buf, o + 10 + (n & 0x7FF))[0]))
        o += 12 + (n & 0x7FF)
        if not n & 0x8000:
            return out


def send(seg: Segment, *dgrams: tuple[int, int, int, bytes]) -> list[tuple[int, bytes, int]]:
    buf = frame(*dgrams)
    assert seg.frame(buf, 1.0)
    assert buf[6] & 0x02  # the source MAC says the frame passed an ESC
    return replies(buf)


def w16(v: int) -> bytes:
    return struct.pack("<H", v)


def to_op(seg: Segment, station: int) -> None:
    """io8 at `station`: SM0 outputs @0x0F00, SM1 inputs @0x1000 (1 byte each), INIT -> PRE-OP -> SAFE-OP -> OP."""
    sm = struct.pack("<HHBBBB", 0x0F00, 1, 0x44, 0, 1, 0) + struct.pack("<HHBBBB", 0x1000, 1, 0x00, 0, 1, 0)
    send(seg, (FPWR, station, 0x0800, sm))
    for state in (PREOP, SAFEOP, OP):
        send(seg, (FPWR, station, 0x0120, w16(state)))
    assert send(seg, (FPRD, station, 0x0130, bytes(6)))[0][1][:2] == w16(OP)


def test_addressing_and_working_counters_across_a_line_of_three() -> None:
    seg = Segment(["drive", "drive", "io8"])
    r = send(seg, (BRD, 0, 0x0000, bytes(2)))
    assert r[0][2] == 3 and r[0][0] == 3  # every SubDevice counts and increments ADP
    # station addresses by position (ADP 0, -1, -2), chained in one frame
    r = send(seg, *[(APWR, (-k) & 0xFFFF, 0x0010, w16(0x1001 + k)) for k in range(3)])
    assert [x[2] for x in r] == [1, 1, 1]
    r = send(seg, (FPRD, 0x1003, 0x0010, bytes(2)), (FPRD, 0x1002, 0x0000, bytes(1)), (APRD, 0xFFFF, 0x0010, bytes(2)))
    assert r[0][1:] == (w16(0x1003), 1) and r[1][1:] == (b"\x11", 1) and r[2][1:] == (w16(0x1002), 1)
    assert send(seg, (FPRD, 0x2000, 0x0010, bytes(2)))[0][2] == 0  # nobody there
    # SII: the EEPROM interface reads 8 bytes at a word address (identity at 0x08)
    send(seg, (FPWR, 0x1003, 0x0502, struct.pack("<HHH", 0x0100, 0x0008, 0)))
    r = send(seg, (FPRD, 0x1003, 0x0502, bytes(2)), (FPRD, 0x1003, 0x0508, bytes(8)))
    assert not struct.unpack("<H", r[0][1])[0] & 0x8000
    assert struct.unpack("<II", r[1][1]) == (0x00000EE0, 0x00020008)


def test_al_state_changes_are_checked_and_errors_carry_a_status_code() -> None:
    seg = Segment(["io8"])
    send(seg, (APWR, 0, 0x0010, w16(0x1001)))
    send(seg, (FPWR, 0x1001, 0x0120, w16(OP)))  # INIT -> OP: not allowed
    st, _, code = struct.unpack("<HHH", send(seg, (FPRD, 0x1001, 0x0130, bytes(6)))[0][1])
    assert (st, code) == (0x11, 0x0011)  # INIT + ERROR, "invalid requested state change"
    send(seg, (FPWR, 0x1001, 0x0120, w16(PREOP)))  # ignored until acknowledged
    assert send(seg, (FPRD, 0x1001, 0x0130, bytes(2)))[0][1] == w16(0x11)
    send(seg, (FPWR, 0x1001, 0x0120, w16(PREOP | 0x10)))
    send(seg, (FPWR, 0x1001, 0x0120, w16(SAFEOP)))  # no process-data SMs configured
    st, _, code = struct.unpack("<HHH", send(seg, (FPRD, 0x1001, 0x0130, bytes(6)))[0][1])
    assert (st, code) == (0x12, 0x001D)  # PRE-OP + ERROR, "invalid output configuration"


@pytest.mark.parametrize("bitwise", [False, True])
def test_fmmus_map_outputs_and_inputs_for_lrd_lwr_and_lrw(bitwise: bool) -> None:
    """Must exist (emulator): LRW and LRD/LWR through FMMUs, byte-wise and bit-wise, with working counters."""
    seg = Segment(["io8"])
    send(seg, (APWR, 0, 0x0010, w16(0x1001)))
    io = seg.devices[0].app
    # bit-wise: the 8 outputs at logical bits 0x100.4 .. 0x101.3, the inputs at 0x200.4 .. 0x201.3
    sb, eb = (4, 3) if bitwise else (0, 7)
    n = 2 if bitwise else 1
    fmmu = (struct.pack("<IHBBHBBBxxx", 0x100, n, sb, eb, 0x0F00, 0, 2, 1)
            + struct.pack("<IHBBHBBBxxx", 0x200, n, sb, eb, 0x1000, 0, 1, 1))
    send(seg, (FPWR, 0x1001, 0x0600, fmmu))
    to_op(seg, 0x1001)
    out = bytes([0xA0, 0x0C]) if bitwise else bytes([0xCA])  # channel mask 0xCA either way
    assert send(seg, (LWR, 0x100, 0, out))[0][2] == 1
    assert io.do == 0xCA
    io.di = 0x5A
    r = send(seg, (LRD, 0x200, 0, bytes(n)))[0]
    assert r[2] == 1 and r[1] == (bytes([0xA0, 0x05]) if bitwise else bytes([0x5A]))
    # LRW over both areas: +2 (write) +1 (read); a datagram that matches nothing counts nothing
    data = bytearray(0x110)
    data[0:n] = bytes(n)  # outputs all off
    r = send(seg, (LRW, 0x100, 0, bytes(data)))[0]
    assert r[2] == 3 and io.do == 0
    assert r[1][0x100:0x100 + n] == (bytes([0xA0, 0x05]) if bitwise else bytes([0x5A]))
    assert send(seg, (LRW, 0x800, 0, bytes(4)))[0][2] == 0


def test_a_cut_line_answers_up_to_the_cut_and_a_silent_one_not_at_all() -> None:
    seg = Segment(["drive", "drive", "io8"])
    seg.control({"cmd": "drop", "position": 2})
    assert send(seg, (BRD, 0, 0, bytes(1)))[0][2] == 1
    seg.control({"cmd": "silent", "on": True})
    assert not seg.frame(frame((BRD, 0, 0, bytes(1))), 1.0)
    seg.control({"cmd": "restore"})
    assert send(seg, (BRD, 0, 0, bytes(1)))[0][2] == 3
    with pytest.raises(ValueError, match="position 4 out of range 1..3"):
        seg.control({"cmd": "fault", "position": 4})
    with pytest.raises(ValueError, match="not a drive"):
        seg.control({"cmd": "fault", "position": 3})
    with pytest.raises(ValueError, match="unknown cmd 'nope'"):
        seg.control({"cmd": "nope"})
