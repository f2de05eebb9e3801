"""The run directory of an instance (sockets, state files, logs): where it is and that it is private.

One rule for every process and the CLI: `[watchdog] run_dir`, else $EVO_RUN_DIR, else a per-user
default no other user can pre-create; `ensure_private_dir` creates it 0700 or refuses an unsafe one.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping

from common.consts import DEFAULT_SHM_PREFIX, ENV_RUN_DIR, ENV_SHM_PREFIX


class UnsafeRunDir(Exception):
    """The run directory exists but another user owns it or others can write to it."""


def default_run_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """As root `/run/evo-<prefix>`; else `$XDG_RUNTIME_DIR/evo-<prefix>` (a 0700 dir of the user's
    own); else `/tmp/evo-<prefix>-<uid>` (checked by ensure_private_dir before use)."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    name = f"evo-{env.get(ENV_SHM_PREFIX) or DEFAULT_SHM_PREFIX}"
    if uid == 0:
        return Path("/run") / name
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / name
    return Path("/tmp") / f"{name}-{uid}"


def resolve_run_dir(configured: str, env: Mapping[str, str] | None = None) -> Path:
    """`[watchdog] run_dir` if set, else $EVO_RUN_DIR, else default_run_dir()."""
    env = os.environ if env is None else env
    if configured:
        return Path(configured)
    if env.get(ENV_RUN_DIR):
        return Path(env[ENV_RUN_DIR])
    return default_run_dir(env)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700, or check an existing one: a directory
    (not a symlink), owned by us, not writable by group or others. UnsafeRunDir says what is wrong
    and how to fix it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, mode=0o700)
        return path
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRunDir(f"run dir {path} is a symlink: refusing (use the real path in [watchdog] run_dir)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRunDir(f"run dir {path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeRunDir(f"run dir {path} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()}): refusing "
                           "(another user may have created it; choose another [watchdog] run_dir or $EVO_RUN_DIR)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafeRunDir(f"run dir {path} is writable by group or others (mode {mode:04o}): refusing "
                           f"(fix with `chmod 700 {path}`)")
    return path
