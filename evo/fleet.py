"""`evo fleet ls | watch | status MACHINE`: every evo machine reachable on the Zenoh network.

Who is there comes from liveliness tokens (`<prefix>/<id>`, `<prefix>/<id>/modules/<name>`); what
they are doing from their status queryables. Read-only, like the Zenoh tree itself.
"""
from __future__ import annotations

import argparse
import os
import json
import queue
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 1
CONNECT_TIMEOUT_S = 5.0


class FleetError(RuntimeError):
    """A fleet command that cannot be served (no Zenoh reachable, machine not answering)."""


@dataclass(frozen=True, slots=True)
class MachineRow:
    """One machine of `evo fleet ls`."""

    machine_id: str
    online: bool
    state: str | None = None
    safety: str | None = None
    estop: bool | None = None
    modules_up: tuple[str, ...] = ()
    modules_down: tuple[str, ...] = ()
    recipe: str | None = None
    program: str | None = None
    last_change: float | None = None
    zenoh: str | None = None  # the machine's own Zenoh link health
    error: str | None = None  # why there is no snapshot (did not answer, error reply)


@dataclass(slots=True)
class FleetView:
    """What one survey saw; `rows` sorted by machine id."""

    endpoints: tuple[str, ...]
    rows: list[MachineRow] = field(default_factory=list)
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- connection
def _loopback(endpoint: str) -> str:
    """A listen endpoint as something to dial: 0.0.0.0 / [::] become loopback."""
    return endpoint.replace("/0.0.0.0:", "/127.0.0.1:").replace("/[::]:", "/[::1]:")


def default_endpoints(args: argparse.Namespace) -> tuple[tuple[str, ...], str, float]:
    """(endpoints, key prefix, query time-out): --connect, else this machine's [zenoh] (its
    routers if it connects to any, its own router, else its own listen endpoints)."""
    prefix, timeout = args.prefix, args.timeout
    endpoints = tuple(args.connect or ())
    if not endpoints or prefix is None or timeout is None:
        from common.config import (
            ConfigError,
            format_errors,
            load_config,
            resolve_config_dir,
        )

        try:
            cfg = load_config(resolve_config_dir(getattr(args, "config", None)))
        except ConfigError as e:
            if not endpoints:
                raise FleetError(f"no --connect given and the configuration is refused:\n{format_errors(e)}") from None
            cfg = None
        if cfg is not None:
            z = cfg.system.zenoh
            if not endpoints:
                endpoints = z.connect or (z.router_listen if z.router else ()) or tuple(_loopback(e) for e in z.listen)
            prefix = prefix if prefix is not None else z.key_prefix
            timeout = timeout if timeout is not None else z.query_timeout_s
    if not endpoints:
        raise FleetError("no Zenoh endpoint to connect to: give --connect tcp/HOST:PORT or set [zenoh] connect")
    return endpoints, prefix or "evo", timeout or 2.0


def open_fleet(endpoints: tuple[str, ...], timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A started client-mode ZenohConnector on `endpoints`, Up (FleetError if none answers)."""
    from common.connector import ConfigurationError, Up
    from common.connector.zenoh import ZenohConnector, ZenohOptions

    try:
        conn = ZenohConnector(ZenohOptions(mode="client", connect=endpoints, min_peers=1), "fleet")
    except ConfigurationError as e:
        raise FleetError(str(e)) from None
    conn.start()
    deadline = time.monotonic() + timeout_s
    while conn.health != Up():
        backend = conn.backend
        if time.monotonic() > deadline or (backend is not None and backend.stats.open_failures):
            why = getattr(conn.health, "reason", type(conn.health).__name__)
            conn.stop()
            raise FleetError(f"cannot reach Zenoh at {', '.join(endpoints)} ({why})")
        time.sleep(0.01)
    return conn


# --------------------------------------------------------------------------- survey
def _mid(key: str, prefix: str) -> str:
    return key[len(prefix) + 1:].split("/", 1)[0]


def row_from_status(mid: str, status: dict[str, Any], tokens: set[str]) -> MachineRow:
    """A fleet row from a status snapshot and the machine's module tokens (names)."""
    state = status.get("state") or {}
    recipe = status.get("recipe") or {}
    modules = status.get("modules") or {}
    # up: its liveliness token, or running in the snapshot (a liveliness get that timed out on a
    # loaded network may be missing tokens; the snapshot comes from the same bridge that holds them)
    up = set(tokens) | {n for n, m in modules.items() if m.get("state") == "running"}
    down = tuple(sorted(n for n, m in modules.items()
                        if m.get("enabled", True) and m.get("state") != "disabled" and n not in up))
    zenoh_health = (status.get("connectors") or {}).get("zenoh") or {}
    return MachineRow(
        machine_id=mid, online=True, state=state.get("machine_state"), safety=state.get("safety_state"),
        estop=state.get("estop"), modules_up=tuple(sorted(up)), modules_down=down,
        recipe=recipe.get("state"), program=recipe.get("program") or None, last_change=status.get("last_change"),
        zenoh=zenoh_health.get("state"),
    )


def survey(conn: Any, prefix: str, timeout_s: float) -> FleetView:
    """Every machine with a liveliness token, with its status snapshot (queried all at once)."""
    t0 = time.monotonic()
    alive = conn.alive(f"{prefix}/**", timeout_s=timeout_s)
    machines = sorted({_mid(k, prefix) for k in alive if k.count("/") == prefix.count("/") + 1})
    tokens: dict[str, set[str]] = {m: set() for m in machines}
    for k in alive:
        parts = k[len(prefix) + 1:].split("/")
        if len(parts) == 3 and parts[1] == "modules":
            tokens.setdefault(parts[0], set()).add(parts[2])
    result = conn.query(f"{prefix}/*/status", timeout_s=timeout_s)
    statuses: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for r in result.replies:
        if r.ok:
            statuses[_mid(r.key, prefix)] = r.value
        elif isinstance(r.value, dict) and r.value.get("selector"):
            errors[_mid(str(r.value["selector"]).split("?")[0], prefix)] = r.error or "error"
    view = FleetView(tuple(conn.options.connect))
    for mid in sorted(set(machines) | set(statuses)):  # a status answer proves the machine is there too
        tokens.setdefault(mid, set())
        if mid in statuses:
            view.rows.append(row_from_status(mid, statuses[mid], tokens[mid]))
        else:
            view.rows.append(MachineRow(mid, True, modules_up=tuple(sorted(tokens[mid])),
                                        error=errors.get(mid, f"no status answer within {timeout_s:g} s")))
    view.elapsed_s = time.monotonic() - t0
    return view


# --------------------------------------------------------------------------- printing
def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    dt = max(0.0, now - ts)
    when = time.strftime("%H:%M:%S", time.localtime(ts))
    if dt < 60:
        return f"{when} ({dt:.0f}s ago)"
    if dt < 3600:
        return f"{when} ({dt / 60:.0f}m ago)"
    return f"{when} ({dt / 3600:.1f}h ago)"


def format_table(view: FleetView, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("MACHINE", "STATE", "SAFETY", "MODULES", "RECIPE", "ZENOH", "LAST CHANGE")]
    for r in view.rows:
        if r.error:
            rows.append((r.machine_id, "?", "?", f"{len(r.modules_up)} up", "-", "-", r.error))
            continue
        mods = f"{len(r.modules_up)} up" + (f", DOWN: {','.join(r.modules_down)}" if r.modules_down else "")
        recipe = r.recipe or "-"
        if r.program:
            recipe += f" {r.program}"
        safety = (r.safety or "-") + (" E-STOP" if r.estop else "")
        rows.append((r.machine_id, r.state or "-", safety, mods, recipe, r.zenoh or "-", _ago(r.last_change, now)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append(f"{len(view.rows)} machine(s) on {', '.join(view.endpoints)}")
    return "\n".join(lines)


def format_status(s: dict[str, Any]) -> str:
    """One machine's snapshot, readable."""
    st = s.get("state") or {}
    out = [f"machine {s.get('machine_id')}: {st.get('machine_state')}, safety {st.get('safety_state')}"
           + (", E-STOP" if st.get("estop") else "") + ("" if s.get("live") else " (not live)")]
    if st.get("errors"):
        out.append("  errors: " + "; ".join(map(str, st["errors"])))
    if st.get("message"):
        out.append(f"  message: {st['message']}")
    out.append("axes:")
    for aid, a in (s.get("axes") or {}).items():
        if not a.get("live"):
            out.append(f"  {aid} {a.get('name')}: not live ({a.get('status')})")
            continue
        pos, vel = a["position"], a["velocity"]
        out.append(f"  {aid} {a['name']}: {a['power']}/{a['motion']} pos {pos['value']} {pos['unit']} "
                   f"vel {vel['value']} {vel['unit']}" + ("" if a["referenced"] else " unreferenced")
                   + (f" errors: {', '.join(map(str, a['errors']))}" if a.get("errors") else ""))
    for kind, io in (s.get("io") or {}).items():
        pts = io.get("points") or {}
        if kind in ("di", "do"):
            on = [k for k, v in pts.items() if v]
            out.append(f"io/{kind}: {len(pts)} points, on: {', '.join(on) or '-'}")
        else:
            out.append(f"io/{kind}: " + ", ".join(f"{k}={v['value']}{v['unit']}" for k, v in pts.items()))
    r = s.get("recipe") or {}
    out.append(f"recipe: {r.get('state')}" + (f" {r['program']} step {r['step']['current']}/{r['step']['count']}"
                                              if r.get("program") else ""))
    mods = s.get("modules") or {}
    out.append("modules: " + ", ".join(f"{n}={m.get('state')}" for n, m in mods.items()))
    for name, h in (s.get("connectors") or {}).items():
        out.append(f"{name}: {h.get('state')}" + (f" ({h['reason']})" if h.get("reason") else ""))
    return "\n".join(out)


# --------------------------------------------------------------------------- commands
def cmd_ls(args: argparse.Namespace) -> int:
    endpoints, prefix, timeout = default_endpoints(args)
    conn = open_fleet(endpoints)
    try:
        view = survey(conn, prefix, timeout)
    finally:
        conn.stop()
    if args.json:
        print(json.dumps({"endpoints": list(view.endpoints), "machines": [asdict(r) for r in view.rows]}, indent=1))
    else:
        print(format_table(view))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    endpoints, prefix, timeout = default_endpoints(args)
    conn = open_fleet(endpoints)
    try:
        result = conn.query(f"{prefix}/{args.machine}/status", timeout_s=timeout)
        if not result.ok:
            if result.errors:
                raise FleetError(f"{args.machine}: {result.errors[0].error}")
            alive = sorted({_mid(k, prefix) for k in conn.alive(f"{prefix}/*", timeout_s=timeout)})
            raise FleetError(f"machine {args.machine!r} did not answer within {timeout:g} s "
                             f"(online: {', '.join(alive) or 'none'})")
        status = result.ok[0].value
    finally:
        conn.stop()
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """One line per change: machines coming and going, modules up/down, state and recipe changes."""
    from common.connector import ZenohRouting

    endpoints, prefix, _timeout = default_endpoints(args)
    conn = open_fleet(endpoints)
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    sub = conn.watch_alive(f"{prefix}/**", lambda key, alive: events.put(("alive", key, alive)))
    states = conn.reader(ZenohRouting(f"{prefix}/*/state"))
    recipes = conn.reader(ZenohRouting(f"{prefix}/*/recipe"))
    last: dict[str, Any] = {}
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def emit(mid: str, what: str, **detail: Any) -> None:
        if args.json:
            print(json.dumps({"ts": round(time.time(), 3), "machine": mid, "event": what, **detail}), flush=True)
        else:
            text = " ".join(f"{k}={v}" for k, v in detail.items())
            print(f"{time.strftime('%H:%M:%S')}  {mid:<20} {what} {text}".rstrip(), flush=True)

    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                _kind, key, alive = events.get(timeout=0.05)
                parts = key[len(prefix) + 1:].split("/")
                if len(parts) == 1:
                    emit(parts[0], "online" if alive else "offline")
                elif len(parts) == 3 and parts[1] == "modules":
                    emit(parts[0], "module up" if alive else "module down", module=parts[2])
            except queue.Empty:
                pass
            for reader, field_ in ((states, "state"), (recipes, "recipe")):
                while (msg := reader.try_recv()) is not None:
                    mid = _mid(msg.key or "", prefix)
                    v = msg.value
                    now_v = ((v.get("machine_state"), v.get("safety_state")) if field_ == "state"
                             else (v.get("state"), v.get("program")))
                    if last.get((mid, field_)) != now_v:
                        last[(mid, field_)] = now_v
                        if field_ == "state":
                            emit(mid, "state", machine=now_v[0], safety=now_v[1])
                        else:
                            emit(mid, "recipe", state=now_v[0], program=now_v[1] or "-")
    except KeyboardInterrupt:
        pass
    finally:
        sub.undeclare()
        conn.stop()
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """Register `evo fleet ls|watch|status` on the `evo` command's subparsers."""
    fleet = sub.add_parser("fleet", help="every evo machine on the Zenoh network (ls, watch, status)",
                           description="every evo machine reachable on the Zenoh network (read-only)")
    fsub = fleet.add_subparsers(dest="fleet_cmd", required=True, metavar="COMMAND")

    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = fsub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", metavar="DIR", default=argparse.SUPPRESS, help="config directory ([zenoh])")
        p.add_argument("--connect", action="append", metavar="ENDPOINT",
                       help="Zenoh router/peer to connect to, e.g. tcp/10.0.0.5:7448 (repeatable; "
                            "default: [zenoh] connect, the local router, else the local machine)")
        p.add_argument("--prefix", help="key prefix (default: [zenoh] key_prefix)")
        p.add_argument("--timeout", type=float, help="query time-out in s (default: [zenoh] query_timeout_s)")
        p.set_defaults(func=_guarded(func))
        return p

    ls = add("ls", "every machine: state, safety, modules up/down, recipe, last change", cmd_ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    w = add("watch", "print machines coming and going, modules up/down, state and recipe changes", cmd_watch)
    w.add_argument("--json", action="store_true", help="one JSON object per line")
    w.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    st = add("status", "one machine's whole snapshot", cmd_status)
    st.add_argument("machine", metavar="MACHINE")
    st.add_argument("--json", action="store_true", help="the snapshot as JSON")


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            rc = func(args)
        except FleetError as e:
            print(f"evo fleet: {e}", file=sys.stderr)
            rc = EXIT_ERROR
        # zenoh's native threads may call back into a finalizing interpreter and abort the process
        # ("FATAL: exception not rethrown", exit -6) after the answer was printed: the session is
        # closed, the output is complete, so leave without the interpreter's teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)

    return run
