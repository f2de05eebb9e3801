"""Child output capture: each line to the console as `name | line` and to `<log_dir>/<name>.log`.

The files rotate (RotatingFileHandler); `evo logs` reads them back (see evo.logread).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from typing import TextIO

from common import logsafe

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
WATCHDOG_NAME = "watchdog"


def file_handler(path: Path) -> logging.Handler:
    h = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    h.setFormatter(logging.Formatter(FILE_FORMAT, DATE_FORMAT))
    return h


class Console:
    """Serialised writes of prefixed lines to the terminal (lines never interleave)."""

    def __init__(self, stream: TextIO | None = None, width: int = 9) -> None:
        self.stream = stream or sys.stdout
        self.width = width
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(f"{name:<{self.width}} | {text}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not stop supervision


class ModuleLog:
    """The sink of one module's output: console prefix + its own rotating file."""

    def __init__(self, name: str, log_dir: Path, console: Console) -> None:
        self.name = name
        self.console = console
        self._logger = logging.Logger(f"evo.child.{name}")  # not registered: no propagation
        self._handler = file_handler(log_dir / f"{name}.log")
        self._logger.addHandler(self._handler)

    def output(self, line: str) -> None:
        self.console.line(self.name, line)
        self._logger.info("%s", line)

    def note(self, text: str) -> None:
        """A watchdog remark about this module, kept in its log file (the console has the
        watchdog's own line already)."""
        self._logger.info("[watchdog] %s", text)

    def close(self) -> None:
        self._handler.close()


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
            self.console.line(WATCHDOG_NAME, level + msg)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_watchdog_logging(log_dir: Path, console: Console) -> list[logging.Handler]:
    """The watchdog's own log: console (`watchdog | ...`) and `<log_dir>/watchdog.log`."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fh = file_handler(log_dir / f"{WATCHDOG_NAME}.log")
    fh.setFormatter(logging.Formatter(FILE_FORMAT.replace("%(message)s", "%(levelname)s %(message)s"), DATE_FORMAT))
    handlers = [_ConsoleHandler(console), fh]
    logsafe.install(handlers)
    for h in handlers:
        root.addHandler(h)
    return handlers


def teardown_watchdog_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for h in handlers:
        root.removeHandler(h)
        h.close()
