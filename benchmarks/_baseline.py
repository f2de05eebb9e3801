"""Today's code beside the working tree: a throwaway `git worktree` of a commit for side-by-side runs.

`with baseline_tree("99af192") as path:` runs anything from `path` (cwd / PYTHONPATH = path).
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
# The commit before issue 15's changes ("today's code" in the idle and round-trip side-by-sides).
BASELINE_COMMIT = "99af192"


@contextlib.contextmanager
def baseline_tree(commit: str = BASELINE_COMMIT) -> Iterator[Path]:
    """A detached worktree of `commit` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="evo-baseline-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
