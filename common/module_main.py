"""The shared `__main__` of every supervised module: arguments, logging, config, then `run(config)`.

Exit codes: what `run` returns; 2 for a refused configuration or a known start-up error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from common import logsafe
from common.config import ConfigError, EvoConfig, format_errors, load_config, resolve_config_dir
from common.notify import notify_loaded, wait_start_gate


def module_main(
    prog: str,
    description: str,
    load_run: Callable[[], Callable[[EvoConfig], int]],
    argv: list[str] | None = None,
    start_errors: dict[type[BaseException], int] | None = None,
) -> int:
    """Parse `--config DIR` / `--log-level`, load the config (every error printed, exit 2) and
    call the run function `load_run()` returns (imported late: `--help` stays fast).
    `start_errors` maps exception types raised during start-up to exit codes (logged, no traceback)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--config", help="configuration directory (default: $EVO_CONFIG_DIR, /etc/evo, packaged config/)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logsafe.install()  # caller-supplied strings cannot forge log lines
    log = logging.getLogger(prog)
    try:
        config = load_config(resolve_config_dir(args.config))
    except ConfigError as e:
        log.error("configuration refused:\n%s", format_errors(e))
        return 2
    errors = tuple(start_errors or {})
    try:
        run = load_run()  # the heavy imports: a preloaded module has them done before its turn
    except errors as e:  # type: ignore[misc]
        return _start_error(log, e, start_errors or {})
    notify_loaded()
    if not wait_start_gate():
        log.info("start cancelled by the watchdog before this module's turn")
        return 0
    try:
        return run(config)
    except errors as e:  # type: ignore[misc]
        return _start_error(log, e, start_errors or {})


def _start_error(log: logging.Logger, e: BaseException, start_errors: dict[type[BaseException], int]) -> int:
    """A known start-up error: logged without a traceback, and its exit code."""
    log.error("%s", e)
    return next(code for t, code in start_errors.items() if isinstance(e, t))
