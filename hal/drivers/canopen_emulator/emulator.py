"""The emulator process: nodes from `--nodes` specs on one bus, and the JSON-lines control channel on stdin/stdout.

Commands (one JSON object per line, one JSON reply each): status, heartbeat, silent, reboot, emcy, set_di, set_ai.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from common.fieldbus.canopen_net import EvoNetwork, open_network

from .drive import Drive402
from .io_node import Io401
from .node import EmulatedNode

EDS_DIR = Path(__file__).resolve().parent.parent / "eds"
KINDS = {"drive": (Drive402, "evo_drive.eds"), "io": (Io401, "evo_io.eds")}
IDENTITY_KEYS = ("vendor_id", "product_code", "revision")


class SpecError(ValueError):
    """A `--nodes` entry that cannot be used (the message names it)."""


def parse_nodes(text: str) -> list[EmulatedNode]:
    """`2:drive,3:drive:product_code=0x999,10:io:di=0x3` -> nodes (not yet on a bus)."""
    nodes: list[EmulatedNode] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) < 2 or parts[1] not in KINDS:
            raise SpecError(f"--nodes {item!r}: expected ID:KIND[:key=value...], KIND one of {', '.join(KINDS)}")
        try:
            node_id = int(parts[0], 0)
            opts = {k: int(v, 0) for k, _, v in (p.partition("=") for p in parts[2:])}
        except ValueError:
            raise SpecError(f"--nodes {item!r}: node id and option values must be integers") from None
        if not 1 <= node_id <= 127 or any(n.id == node_id for n in nodes):
            raise SpecError(f"--nodes {item!r}: node id must be 1..127 and unique")
        cls, eds = KINDS[parts[1]]
        eds_path = Path(str(opts.pop("eds"))) if "eds" in opts else EDS_DIR / eds
        identity = {k: opts.pop(k) for k in IDENTITY_KEYS if k in opts}
        extra = {"di": opts.pop("di")} if parts[1] == "io" and "di" in opts else {}
        if opts:
            raise SpecError(f"--nodes {item!r}: unknown option(s) {', '.join(opts)}; known: "
                            f"{', '.join(IDENTITY_KEYS)}{', di' if parts[1] == 'io' else ''}")
        nodes.append(cls(node_id, eds_path, identity, **extra))
    if not nodes:
        raise SpecError("--nodes: no node given")
    return nodes


class Emulator:
    """Nodes on one network; `handle` executes one control command."""

    def __init__(self, net: EvoNetwork, nodes: list[EmulatedNode]) -> None:
        self.net = net
        self.nodes = {n.id: n for n in nodes}
        for n in nodes:
            n.attach(net)

    @classmethod
    def open(cls, interface: str, channel: str, nodes: list[EmulatedNode], **bus_kw: Any) -> "Emulator":
        return cls(open_network(interface, channel, **bus_kw), nodes)

    def power_on(self) -> None:
        for n in self.nodes.values():
            n.boot(full=True)

    def close(self) -> None:
        for n in self.nodes.values():
            n.node.nmt.stop_heartbeat()
        self.net.disconnect()

    def _node(self, cmd: dict[str, Any]) -> EmulatedNode:
        nid = cmd.get("node")
        if nid not in self.nodes:
            raise KeyError(f"no emulated node {nid!r} (nodes: {sorted(self.nodes)})")
        return self.nodes[nid]

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        what = cmd.get("cmd")
        if what == "status":
            return {"ok": True, "nodes": {str(i): n.status() for i, n in self.nodes.items()}}
        node = self._node(cmd)
        if what == "heartbeat":
            node.set_heartbeat(bool(cmd["on"]))
        elif what == "silent":
            node.set_silent(bool(cmd["on"]))
        elif what == "reboot":
            node.set_silent(False)
            node.boot(full=True)
        elif what == "emcy":
            node.emcy(int(cmd["code"]), int(cmd.get("register", 0x01)))
        elif what == "set_di" and isinstance(node, Io401):
            node.set_di(int(cmd["pin"]), bool(cmd["value"]))
        elif what == "set_ai" and isinstance(node, Io401):
            node.set_ai(int(cmd["channel"]), int(cmd["raw"]))
        else:
            raise ValueError(f"unknown command {what!r} for a {node.kind} node")
        return {"ok": True, "node": node.status()}

    def serve(self, inp: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
        """Answer control commands until stdin closes."""
        print(json.dumps({"ready": True, "nodes": sorted(self.nodes)}), file=out, flush=True)
        for line in inp:
            if not line.strip():
                continue
            try:
                reply = self.handle(json.loads(line))
            except (KeyError, ValueError, TypeError) as e:
                reply = {"ok": False, "error": str(e)}
            print(json.dumps(reply), file=out, flush=True)
