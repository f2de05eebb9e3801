"""`evo shm ls` and `evo shm dump NAME`: inspect the instance's segments from the command line.

Read-only: headers are read without locks and payloads through a non-exclusive reader.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# numpy-backed modules are imported inside the commands: every `evo` call parses this file.


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shm", help="inspect shared-memory segments of this instance ($EVO_SHM_PREFIX)")
    ssub = p.add_subparsers(dest="shm_cmd", required=True)
    ls = ssub.add_parser("ls", help="list segments with writer, reader, size, liveness, heartbeat")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_ls)
    dump = ssub.add_parser("dump", help="header and payload of one segment, decoded by field name")
    dump.add_argument("name", help="segment key (hal_cu) or full name (evo_hal_cu)")
    dump.add_argument("--json", action="store_true", help="machine-readable output")
    dump.add_argument("--full", action="store_true", help="do not summarise long arrays")
    dump.set_defaults(func=cmd_dump)


def cmd_ls(args: argparse.Namespace) -> int:
    from common.shm.discovery import list_segments
    from common.shm.p2p import shm_prefix

    segs = list_segments()
    rows = [
        {
            "name": s.name,
            "writer": s.source_module.abbrev,
            "reader": s.dest_module.abbrev,
            "size": s.size,
            "payload_size": s.payload_size,
            "writer_alive": s.writer_alive,
            "heartbeat": s.heartbeat,
            "last_write_age_s": round(s.last_write_age_s, 3),
            "known": s.known,
        }
        for s in segs
    ]
    if args.json:
        print(json.dumps({"prefix": shm_prefix(), "segments": rows}, indent=2))
        return 0
    if not rows:
        print(f"no segments with prefix {shm_prefix()!r} in /dev/shm")
        return 0
    print(f"{'NAME':<24} {'WRITER':<6} {'READER':<6} {'SIZE':>7} {'ALIVE':<5} {'HEARTBEAT':>12} {'AGE(s)':>8}")
    for r in rows:
        print(
            f"{r['name']:<24} {r['writer']:<6} {r['reader']:<6} {r['size']:>7} {('yes' if r['writer_alive'] else 'NO'):<5} "
            f"{r['heartbeat']:>12} {r['last_write_age_s']:>8.3f}"
        )
    return 0


def _full_name(name: str) -> str:
    from common.shm.p2p import shm_prefix

    return name if name.startswith(shm_prefix() + "_") else f"{shm_prefix()}_{name}"


def cmd_dump(args: argparse.Namespace) -> int:
    from common.shm.conversions import to_python
    from common.shm.p2p import ShmError, TypedP2pReader, read_header
    from common.shm.segments import spec

    try:
        sp = spec(args.name)
    except KeyError as e:
        print(f"evo shm dump: {e.args[0]}", file=sys.stderr)
        return 1
    name = _full_name(sp.key)
    try:
        hdr = read_header(name)
        reader = TypedP2pReader.attach(name, sp.reader, sp.dtype, exclusive=False, stale_reads=1 << 30)
    except ShmError as e:
        print(f"evo shm dump: {e}", file=sys.stderr)
        return 1
    try:
        payload = reader.read()
        data: dict[str, Any] = {
            "name": name,
            "header": {
                "magic": hdr.magic.decode("ascii", "replace").rstrip("\x00"),
                "version_hash": f"{hdr.version_hash:#010x}",
                "heartbeat": hdr.heartbeat,
                "source_module": hdr.source_module,
                "dest_module": hdr.dest_module,
                "payload_size": hdr.payload_size,
                "write_seq": hdr.write_seq,
                "writer_alive": reader.writer_alive(),
            },
            "payload": to_python(payload, None if args.full else 8),
        }
    except ShmError as e:
        print(f"evo shm dump: {e}", file=sys.stderr)
        return 1
    finally:
        reader.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_tree(data)
    return 0


def _print_tree(value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and not _is_flat(v):
                print(f"{pad}{k}:")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}{k}: {v}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            print(f"{pad}[{i}]:")
            _print_tree(v, indent + 1)
    else:
        print(f"{pad}{value}")


def _is_flat(v: Any) -> bool:
    if isinstance(v, list):
        return all(not isinstance(x, (dict, list)) for x in v)
    if isinstance(v, dict):
        return all(not isinstance(x, (dict, list)) for x in v.values()) and len(v) <= 4
    return True
