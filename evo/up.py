"""`evo up`: validate the config, take the instance lock, clear a killed run's leftovers, supervise.

Runs in the foreground until SIGINT/SIGTERM or `evo down`; exit 2 on a bad config (nothing started).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from common.shm.discovery import cleanup_stale, list_segments, unlink_all
from common.shm.p2p import shm_prefix

from evo.broker import write_mosquitto_conf
from evo.instance import AlreadyRunning, InstanceLock
from evo.logcapture import Console, setup_watchdog_logging, teardown_watchdog_logging
from evo.modules import ModuleTableError, default_modules, expand, load_module_table
from evo.watchdog import Policy, Watchdog

log = logging.getLogger("evo.up")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
WATCHDOG_NICE = -10


def _raise_priority() -> str:
    """nice -10 so exits and hangs are noticed promptly on a busy machine; SCHED_RESET_ON_FORK
    gives every module the normal nice 0 back (modules choose their own real-time priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, WATCHDOG_NICE)
        return f"nice {WATCHDOG_NICE}"
    except (PermissionError, OSError):
        return "normal priority (raising it is not permitted)"


def _set_title() -> None:
    try:
        import setproctitle

        setproctitle.setproctitle("evo-watchdog")
    except ImportError:  # pragma: no cover
        pass


def run_up(config_arg: str | None, modules_file: str | None = None) -> int:
    from common.config import ConfigError, load_config, resolve_config_dir
    from common.rundir import UnsafeRunDir, ensure_private_dir

    cdir = resolve_config_dir(config_arg)
    try:
        cfg = load_config(cdir)
    except ConfigError as e:
        errors = e.errors or [e]
        print(f"evo up: configuration {cdir} refused ({len(errors)} error{'s' * (len(errors) != 1)}); "
              "nothing started:", file=sys.stderr)
        for err in errors:
            print(f"  {err.message}", file=sys.stderr)
        return EXIT_CONFIG
    from common.recipes.catalog import check_recipes

    recipes = check_recipes(cfg)
    if recipes.dir_error:  # the recipe executor would have nothing to run: a config error
        print(f"evo up: configuration {cdir} refused; nothing started:\n  {recipes.problems()[0]}", file=sys.stderr)
        return EXIT_CONFIG
    prefix = shm_prefix()
    run_dir, log_dir = cfg.run_dir(), cfg.log_dir()
    wd_cfg = cfg.system.watchdog
    try:
        if modules_file:
            specs = load_module_table(Path(modules_file), Path(cfg.dir), float(wd_cfg.watchdog_timeout_s))
        else:
            specs = default_modules(cfg)
    except ModuleTableError as e:
        print(f"evo up: {e}; nothing started", file=sys.stderr)
        return EXIT_CONFIG
    specs = [expand(s, run_dir) for s in specs]
    os.umask(0o077)  # every file the watchdog and its children create is private (state, logs, sockets)
    try:
        ensure_private_dir(run_dir)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except UnsafeRunDir as e:
        print(f"evo up: {e}; nothing started", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as e:
        print(f"evo up: cannot create {run_dir} / {log_dir}: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        lock = InstanceLock(run_dir).acquire()
    except AlreadyRunning as e:
        print(f"evo up: {e}", file=sys.stderr)
        return EXIT_ERROR
    _set_title()
    priority = _raise_priority()
    console = Console(width=max([9, *(len(s.name) for s in specs)]))
    handlers = setup_watchdog_logging(log_dir, console)
    wd = None
    try:
        log.info("evo-watchdog pid %d, %s", os.getpid(), priority)
        for line in recipes.problems():  # listed as invalid (LoadRecipe refuses them); the machine starts
            log.warning("invalid recipe: %s", line)
        stale = cleanup_stale(prefix)
        if stale:
            log.info("removed %d stale segment(s) left by a killed run: %s", len(stale), ", ".join(stale))
        live = [s.name for s in list_segments(prefix) if s.writer_alive]
        if live:
            log.warning("segment(s) with a live writer outside this watchdog: %s", ", ".join(live))
        if any(s.name == "mosquitto" and s.enabled for s in specs):
            write_mosquitto_conf(run_dir, cfg.system.mqtt.host, cfg.system.mqtt.port)
        wd = Watchdog(specs, policy=Policy.from_config(wd_cfg), run_dir=run_dir, log_dir=log_dir, prefix=prefix,
                      config_dir=Path(cfg.dir), console=console)
        servers: list = []

        def start_control() -> None:
            from evo.control import ControlServer  # grpc import overlaps the HAL's start-up

            servers.append(ControlServer(wd, Path(cfg.dir)).start())

        try:
            return wd.run(after_first_spawn=start_control)
        finally:
            for server in servers:
                server.stop()
    except BaseException:
        log.exception("the watchdog failed; killing every module")
        if wd is not None:
            wd.kill_all()
        unlink_all(prefix)
        return EXIT_ERROR
    finally:
        lock.release()
        teardown_watchdog_logging(handlers)
