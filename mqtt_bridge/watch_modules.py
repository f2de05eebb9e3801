"""Watches the watchdog's `<run_dir>/modules.json` (rewritten atomically on every change) by mtime.

Yields the module entries only when the file changed; a missing or half-read file changes nothing.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ModulesWatcher:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode)
        self.modules: dict[str, dict[str, Any]] = {}
        self.updated: float | None = None

    def poll(self) -> bool:
        """Re-read the file if it changed; True if the module entries were replaced."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            log.warning("cannot read %s: %s", self.path, e)
            return False  # retried next poll: the stamp is not recorded
        self._stamp = stamp
        entries = data.get("modules") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return False
        self.modules = {str(m["name"]): m for m in entries if isinstance(m, dict) and "name" in m}
        self.updated = data.get("updated")
        return True
