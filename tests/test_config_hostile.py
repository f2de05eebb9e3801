"""Hostile config and recipe files (issue 16 "Bad input"): a 10 000-deep nested array, an axis file that
is a symlink to /dev/zero, a FIFO, a file over the size limit — each a clear refusal naming the file,
never a traceback or an unbounded read; `evo config check` exits 1 and prints no traceback."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import PACKAGED_CONFIG_DIR, ConfigError, ParseError, load_config
from common.recipes.loader import RecipeError, read_recipe
from common.toml_text import MAX_NESTING, MAX_TOML_BYTES, nesting_depth
from tests.helpers import REPO


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(PACKAGED_CONFIG_DIR, d)
    return d


def _refused(d: Path, file: str, words: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_config(d)
    errs = [e for e in getattr(ei.value, "errors", [ei.value]) if isinstance(e, ParseError) and e.file == file]
    assert errs and words in str(errs[0]), [str(e) for e in getattr(ei.value, "errors", [ei.value])]
    return errs[0]


def test_deeply_nested_array_is_refused_without_a_traceback(cfgdir):
    (cfgdir / "machine.toml").write_text("x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    _refused(cfgdir, "machine.toml", f"nested more than {MAX_NESTING} deep")


def test_axis_file_symlinked_to_dev_zero_is_not_read(cfgdir):
    f = cfgdir / "axis_01_x.toml"
    f.unlink()
    f.symlink_to("/dev/zero")
    _refused(cfgdir, "axis_01_x.toml", "character device")


def test_fifo_and_oversized_files_are_refused(cfgdir):
    (cfgdir / "io.toml").unlink()
    os.mkfifo(cfgdir / "io.toml")  # opening must not block
    (cfgdir / "machine.toml").write_text("# " + "x" * MAX_TOML_BYTES + "\n")
    _refused(cfgdir, "io.toml", "FIFO")
    _refused(cfgdir, "machine.toml", f"at most {MAX_TOML_BYTES}")


def test_recipe_symlinked_to_dev_zero_or_too_deep_is_a_recipe_error(tmp_path):
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    with pytest.raises(RecipeError, match="character device"):
        read_recipe(tmp_path, "zero")
    (tmp_path / "deep.toml").write_text("[recipe]\nname = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match="nested more than"):
        read_recipe(tmp_path, "deep")


def test_nesting_depth_ignores_brackets_in_strings_and_comments():
    assert nesting_depth('a = "[[[[[["  # [[[[\nb = [[1], [2]]\nc = \'{{{\'\nd = """\n[[[\n"""\n') == 2
    assert nesting_depth('[table]\n[[array]]\nx = {y = [1]}\n') == 2


def test_config_check_cli_refuses_the_deep_file_with_exit_1_and_no_traceback(cfgdir):
    (cfgdir / "machine.toml").write_text("x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    r = subprocess.run([sys.executable, "-m", "evo", "config", "check", str(cfgdir)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "machine.toml" in out and "nested more than" in out
    assert "Traceback" not in out
