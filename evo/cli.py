"""The `evo` command: `up`, `status`, `start|stop|restart MODULE`, `down`, `logs`, plus `shm` and `config`.

Exit codes: 0 success, 1 error (no watchdog, unknown module, ...), 2 usage or bad configuration.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_ERROR = 0, 1


def _config_dir(args: argparse.Namespace) -> Path:
    from common.config import resolve_config_dir

    return resolve_config_dir(getattr(args, "config", None))


def _run_dir(args: argparse.Namespace) -> Path:
    from evo.instance import run_dir_for

    return run_dir_for(_config_dir(args))


def _fail(msg: str) -> int:
    print(f"evo: {msg}", file=sys.stderr)
    return EXIT_ERROR


def _with_client(args: argparse.Namespace, fn: Callable[[Any], int]) -> int:
    from evo.client import Client, ClientError

    try:
        with Client(_run_dir(args)) as c:
            return fn(c)
    except ClientError as e:
        return _fail(str(e))


# ------------------------------------------------------------------------------- commands
def cmd_up(args: argparse.Namespace) -> int:
    from evo.up import run_up

    return run_up(getattr(args, "config", None), args.modules)


def _fmt_duration(s: float) -> str:
    if s <= 0:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h < 48 else f"{h // 24}d{h % 24:02d}h"


def _fmt_bytes(n: int) -> str:
    if n <= 0:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def status_dict(resp: Any) -> dict[str, Any]:
    """ListModulesResponse -> the `evo status --json` document."""
    from evo.control import state_name

    mods = []
    for m in resp.modules:
        mods.append({
            "name": m.name, "state": state_name(m.state), "pid": m.pid, "restarts": m.restarts,
            "uptime_s": round(m.uptime_s, 3), "last_exit": m.last_exit,
            "last_exit_code": m.last_exit_code if m.HasField("last_exit_code") else None,
            "last_exit_signal": m.last_exit_signal if m.HasField("last_exit_signal") else None,
            "cpu_percent": round(m.cpu_percent, 1), "rss_bytes": m.rss_bytes,
            "heartbeat_age_s": round(m.heartbeat_age_s, 3), "watchdog_age_s": round(m.watchdog_age_s, 3),
            "status": m.status, "reason": m.reason, "enabled": m.enabled, "since": m.since_unix, "kind": m.kind,
            "standby_pid": m.standby_pid,
        })
    return {"watchdog_pid": resp.watchdog_pid, "uptime_s": round(resp.watchdog_uptime_s, 3),
            "instance": resp.instance, "config_dir": resp.config_dir, "run_dir": resp.run_dir,
            "degraded": resp.degraded, "modules": mods}


def cmd_status(args: argparse.Namespace) -> int:
    def go(c: Any) -> int:
        doc = status_dict(c.list_modules())
        if args.json:
            print(json.dumps(doc, indent=1))
            return EXIT_OK
        failed = [m["name"] for m in doc["modules"] if m["state"] == "failed"]
        print(f"evo watchdog pid {doc['watchdog_pid']}, up {_fmt_duration(doc['uptime_s'])}, instance "
              f"{doc['instance']}, config {doc['config_dir']}" + (f" - DEGRADED: {', '.join(failed)} failed" if failed else ""))
        rows = [("MODULE", "STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT", "CPU%", "RSS", "HB AGE", "DETAIL")]
        for m in doc["modules"]:
            hb = f"{m['heartbeat_age_s']:.2f}s" if m["heartbeat_age_s"] >= 0 else "-"
            detail = m["status"] if m["state"] == "running" and m["status"] else m["reason"]
            rows.append((m["name"], m["state"], str(m["pid"] or "-"), str(m["restarts"]), _fmt_duration(m["uptime_s"]),
                         m["last_exit"] or "-", f"{m['cpu_percent']:.1f}" if m["pid"] else "-",
                         _fmt_bytes(m["rss_bytes"]), hb, detail))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
        return EXIT_OK

    return _with_client(args, go)


def _module_cmd(op: str, want: set[str]) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        from evo.control import state_name

        def go(c: Any) -> int:
            reply = getattr(c, op)(args.module)
            state = state_name(reply.module.state)
            extra = f" ({reply.module.reason})" if reply.module.reason and state not in want else ""
            print(f"{reply.message}: {state}{extra}")
            return EXIT_OK if state in want else EXIT_ERROR

        return _with_client(args, go)

    return cmd


def cmd_down(args: argparse.Namespace) -> int:
    def go(c: Any) -> int:
        t0 = time.monotonic()
        c.shutdown()
        if not c.wait_exit(args.timeout):
            return _fail(f"the watchdog (pid {c.pid}) is still running after {args.timeout:g} s")
        print(f"evo down: stopped in {time.monotonic() - t0:.2f} s")
        return EXIT_OK

    return _with_client(args, go)


def cmd_logs(args: argparse.Namespace) -> int:
    from evo.instance import log_dir_for
    from evo.logread import follow, log_files, merged_tail

    log_dir = log_dir_for(_config_dir(args))
    files = log_files(log_dir)
    if args.module:
        if args.module not in files:
            known = ", ".join(files) or "none"
            return _fail(f"no log for module {args.module!r} in {log_dir} (logs: {known})")
        files = {args.module: files[args.module]}
    elif not files:
        return _fail(f"no log files in {log_dir}")
    width = max(len(n) for n in files)

    def emit(name: str, line: str) -> None:
        print(line if args.module else f"{name:<{width}} | {line}", flush=True)

    for name, line in merged_tail(files, args.lines):
        emit(name, line)
    if args.follow:
        try:
            follow(files, emit, stop=lambda: False)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


# ------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo", description="evo machine runtime: supervisor and tools")
    parser.add_argument("--config", metavar="DIR",
                        help="config directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged config/)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, help_: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", metavar="DIR", default=argparse.SUPPRESS, help="config directory")
        p.set_defaults(func=func)
        return p

    up = add("up", "start the machine: supervise every module in the foreground until Ctrl-C or `evo down`", cmd_up)
    up.add_argument("--modules", metavar="FILE", help="module table (TOML [[module]] entries) instead of the default machine")
    st = add("status", "modules, states, pids, restarts, resources", cmd_status)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    for name, op, want, help_ in (("start", "start", {"running"}, "start a stopped or failed module"),
                                  ("stop", "stop", {"stopped"}, "stop a module (stays down until started)"),
                                  ("restart", "restart", {"running"}, "stop and start a module")):
        p = add(name, help_, _module_cmd(op, want))
        p.add_argument("module", metavar="MODULE")
    dn = add("down", "stop every module in reverse order and end `evo up`", cmd_down)
    dn.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the watchdog to exit")
    lg = add("logs", "show module logs (all modules merged by time, or one)", cmd_logs)
    lg.add_argument("module", nargs="?", metavar="MODULE")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="lines to show (default 50)")
    from evo import config_cli, shm_cli

    shm_cli.add_parser(sub)
    config_cli.add_parser(sub)
    from evo import fleet  # issue 14: the machines on Zenoh

    fleet.add_parser(sub)
    from evo import canopen_cli

    canopen_cli.add_parser(sub)
    from evo import ethercat_cli  # issue 12

    ethercat_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
