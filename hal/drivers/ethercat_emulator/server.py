"""The emulator process: a raw socket (ethertype 0x88A4) answering EtherCAT frames for a line of SubDevices,
plus a Unix-socket control channel (JSON lines) for tests and integrators to inject faults and signals.
"""
from __future__ import annotations

import json
import logging
import selectors
import socket
import struct
import time
from pathlib import Path
from typing import Any

from common.fieldbus.esi import PACKAGED_ESI_DIR, EsiDevice, parse_esi

from .devices import Cia402Drive, DigitalIo
from .esc import OP, SAFEOP, STATE_NAMES, Esc

log = logging.getLogger(__name__)

ETH_P_ECAT = 0x88A4
PACKET_OUTGOING = 4
#: device kinds: ESI file and device type they are built from
KINDS: dict[str, tuple[str, str]] = {
    "drive": ("evo_drive.xml", "EVO-D402"),
    "io8": ("evo_io8.xml", "EVO-IO8"),
}


def load_kind(kind: str, esi_dir: Path = PACKAGED_ESI_DIR) -> EsiDevice:
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r} (known: {', '.join(KINDS)})")
    file, type_name = KINDS[kind]
    return parse_esi(esi_dir / file).device(type_name)


class Segment:
    """The emulated line: SubDevices in bus order, and what the control channel can do to them."""

    def __init__(self, kinds: list[str]) -> None:
        self.devices: list[Esc] = []
        for i, k in enumerate(kinds, 1):
            esi = load_kind(k)
            app: Any = Cia402Drive(esi) if esi.profile == 402 else DigitalIo(esi)
            self.devices.append(Esc(i, esi, app, last=i == len(kinds), serial=0x1000 + i))
        self.kinds = kinds
        self.reachable = len(self.devices)  # devices answering (a cut after device N: N)
        self.silent = False
        self.frames = 0

    # --- frames ------------------------------------------------------------------------------
    def frame(self, buf: bytearray, now: float) -> bool:
        """Process one EtherCAT frame in place; False when nothing answers (it is lost)."""
        if self.silent or self.reachable == 0:
            return False
        if len(buf) < 16:
            return False
        hdr = struct.unpack_from("<H", buf, 14)[0]
        if hdr >> 12 != 1:
            return False
        end = 16 + (hdr & 0x07FF)
        devs = self.devices[:self.reachable]
        mv = memoryview(buf)
        o = 16
        while o + 12 <= min(end, len(buf)):
            cmd = buf[o]
            adp, ado = struct.unpack_from("<HH", buf, o + 2)
            laddr = adp | ado << 16
            lf = struct.unpack_from("<H", buf, o + 6)[0]
            n = lf & 0x07FF
            data = mv[o + 10:o + 10 + n]
            wkc = struct.unpack_from("<H", buf, o + 10 + n)[0]
            for d in devs:
                inc, adp = d.datagram(cmd, adp, ado, laddr, data, now)
                wkc += inc
            struct.pack_into("<H", buf, o + 2, adp)
            struct.pack_into("<H", buf, o + 10 + n, wkc & 0xFFFF)
            o += 12 + n
            if not lf & 0x8000:
                break
        mv.release()
        buf[6] |= 0x02  # source MAC: "passed an ESC" (locally administered bit), as real SubDevices do
        self.frames += 1
        return True

    # --- control channel ---------------------------------------------------------------------
    def _dev(self, req: dict[str, Any]) -> Esc:
        pos = int(req.get("position", 0))
        if not 1 <= pos <= len(self.devices):
            raise ValueError(f"position {pos} out of range 1..{len(self.devices)}")
        return self.devices[pos - 1]

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"devices": [self._status(d) for d in self.devices], "frames": self.frames,
                    "reachable": self.reachable, "silent": self.silent}
        if cmd == "set_di":  # value: channel bitmask of a DI/DO terminal
            d = self._dev(req)
            if not isinstance(d.app, DigitalIo):
                raise ValueError(f"position {d.position} is not an I/O terminal")
            d.app.di = int(req["value"])
            return {}
        if cmd == "fault":  # a drive fault with its 0x603F error code
            d = self._dev(req)
            if not isinstance(d.app, Cia402Drive):
                raise ValueError(f"position {d.position} is not a drive")
            d.app.fault(int(req.get("code", 0x5400)))
            return {}
        if cmd == "leave_op":  # the SubDevice drops to SAFE-OP + error with an AL status code
            d = self._dev(req)
            d.fail(int(req.get("state", SAFEOP)), int(req.get("code", 0x001B)))
            return {}
        if cmd == "drop":  # the line is cut before `position`: it and everything behind stop answering
            d = self._dev(req)
            self.reachable = min(self.reachable, d.position - 1)
            return {}
        if cmd == "silent":  # no frame answered at all (cable pulled at the MainDevice)
            self.silent = bool(req.get("on", True))
            return {}
        if cmd == "restore":  # every cut-off SubDevice answers again
            # power_cycle (default): they were switched off and come back in INIT; else their sync manager
            # watchdog tripped while no frame came: OP -> SAFE-OP + ERROR 0x001B
            gone = self.devices if self.silent else self.devices[self.reachable:]
            for d in gone:
                if req.get("power_cycle", True):
                    d.power_on()
                elif d.al_state == OP:
                    d.fail(SAFEOP, 0x001B)
            self.reachable = len(self.devices)
            self.silent = False
            return {}
        raise ValueError(f"unknown cmd {cmd!r} (status, set_di, fault, leave_op, drop, silent, restore)")

    @staticmethod
    def _status(d: Esc) -> dict[str, Any]:
        return {"position": d.position, "type": d.esi.type_name, "station": d.station,
                "al_state": STATE_NAMES.get(d.al_state, str(d.al_state)), "al_error": d.al_error,
                "al_code": d.al_code, **d.app.status()}


def open_raw(interface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ECAT))
    s.bind((interface, ETH_P_ECAT))
    s.setblocking(False)
    return s


def serve(interface: str, kinds: list[str], control_path: Path | None, *, di_init: int = 0) -> None:
    """Run until SIGTERM/SIGINT: answer frames on `interface`, commands on `control_path`."""
    seg = Segment(kinds)
    for d in seg.devices:
        if isinstance(d.app, DigitalIo):
            d.app.di = di_init
    raw = open_raw(interface)
    sel = selectors.DefaultSelector()
    sel.register(raw, selectors.EVENT_READ, "raw")
    srv = None
    clients: dict[socket.socket, bytes] = {}
    if control_path is not None:
        control_path.unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(control_path))
        srv.listen(8)
        srv.setblocking(False)
        sel.register(srv, selectors.EVENT_READ, "listen")
    log.info("EtherCAT emulator on %s: %s (control %s)", interface,
             ", ".join(f"{d.position}:{d.esi.type_name}" for d in seg.devices), control_path or "none")
    print(f"READY {interface} {' '.join(kinds)}", flush=True)
    try:
        while True:
            for key, _ in sel.select(timeout=0.2):
                if key.data == "raw":
                    _drain(raw, seg)
                elif key.data == "listen":
                    assert srv is not None
                    c, _ = srv.accept()
                    c.setblocking(False)
                    clients[c] = b""
                    sel.register(c, selectors.EVENT_READ, "client")
                else:
                    _client(key.fileobj, seg, clients, sel)  # type: ignore[arg-type]
    finally:
        for c in list(clients):
            c.close()
        if srv is not None:
            srv.close()
            control_path.unlink(missing_ok=True)  # type: ignore[union-attr]
        raw.close()


def _drain(raw: socket.socket, seg: Segment) -> None:
    for _ in range(64):  # bounded: the selector comes back for more
        try:
            data, addr = raw.recvfrom(2048)
        except BlockingIOError:
            return
        if addr[2] == PACKET_OUTGOING:  # our own replies
            continue
        buf = bytearray(data)
        if seg.frame(buf, time.monotonic()):
            raw.send(buf)


def _client(c: socket.socket, seg: Segment, clients: dict[socket.socket, bytes], sel: selectors.BaseSelector) -> None:
    try:
        chunk = c.recv(65536)
    except OSError:
        chunk = b""
    if not chunk:
        sel.unregister(c)
        clients.pop(c, None)
        c.close()
        return
    buf = clients[c] + chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            req = json.loads(line)
            reply = {"ok": True, **seg.control(req)}
        except (ValueError, KeyError, TypeError) as e:
            reply = {"ok": False, "error": str(e)}
        c.sendall(json.dumps(reply).encode() + b"\n")
    clients[c] = buf


__all__ = ["serve", "Segment", "KINDS", "load_kind"]
