"""`evo config check` checks the recipes with the config (issue 16): a recipe naming a missing axis or
pin, a recipe that is not valid TOML, a recipes_dir that does not exist — each an error with file and
field, exit 1, no traceback; the packaged recipes pass."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import PACKAGED_CONFIG_DIR, load_config
from common.recipes.catalog import check_recipes
from tests.helpers import REPO


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(PACKAGED_CONFIG_DIR, d)
    return d


def _check(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", "config", "check", str(d)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_packaged_recipes_pass(cfgdir):
    check = check_recipes(load_config(cfgdir))
    assert check.recipes and not check.problems()
    assert _check(cfgdir).returncode == 0


@pytest.mark.parametrize("name,text,words", [
    ("ghost_axis", '[recipe]\n[[step]]\ntype = "move"\ntargets = { Q = 1.0 }\nvelocity = 5.0\n', "Q"),
    ("ghost_pin", '[recipe]\n[[step]]\ntype = "set_do"\npin = 999\nvalue = true\n', "999"),
    ("not_toml", '[recipe\nname = \n', "TOML"),
])
def test_a_bad_recipe_refuses_the_config_naming_file_and_field(cfgdir, name, text, words):
    (cfgdir / "recipes" / f"{name}.toml").write_text(text)
    r = _check(cfgdir)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"recipes/{name}.toml" in out and words in out, out
    assert "Traceback" not in out


def test_a_missing_recipes_dir_refuses_the_config(cfgdir):
    shutil.rmtree(cfgdir / "recipes")
    r = _check(cfgdir)
    assert r.returncode == 1
    assert "config.toml [re] recipes_dir" in r.stderr and "does not exist" in r.stderr


def test_a_recipe_that_is_a_device_or_fifo_is_named_not_skipped(cfgdir):
    """Fault-suite finding: a recipe symlinked to /dev/zero was skipped silently; now it is refused by name."""
    (cfgdir / "recipes" / "zero.toml").symlink_to("/dev/zero")
    r = _check(cfgdir)
    assert r.returncode == 1 and "recipes/zero.toml" in r.stderr and "character device" in r.stderr, r.stderr
