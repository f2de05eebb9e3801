"""Protected mode (issue 16): `[grpc] bind = "0.0.0.0"` with no tokens is refused with file, section and
field and says how to allow it; with tokens, on loopback, or explicitly allowed it loads."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import PACKAGED_CONFIG_DIR, ConfigError, load_config
from common.config.exposure import is_loopback
from tests.helpers import REPO


def _cfg(tmp_path: Path, grpc_extra: str, hmi_bind: str = "127.0.0.1") -> Path:
    d = tmp_path / "config"
    shutil.copytree(PACKAGED_CONFIG_DIR, d)
    text = (d / "config.toml").read_text()
    if "allow_unauthenticated_remote = true" in grpc_extra:
        grpc_extra = grpc_extra.replace("\nallow_unauthenticated_remote = true", "")
        text = text.replace("allow_unauthenticated_remote = false", "allow_unauthenticated_remote = true", 1)
    if "has_tokens = true" in grpc_extra:
        grpc_extra = grpc_extra.replace("\nhas_tokens = true", "")
        text = text.replace("operator_tokens = []", 'operator_tokens = ["s3cret"]', 1)
    text = re.sub(r'(?m)^(\[grpc\]\n(?:.*\n)*?)bind = "127.0.0.1"\n', rf'\g<1>{grpc_extra}\n', text, count=1)
    text = re.sub(r'(?m)^(\[hmi\]\n(?:.*\n)*?)bind = "127.0.0.1"\n', rf'\g<1>bind = "{hmi_bind}"\n', text, count=1)
    (d / "config.toml").write_text(text)
    return d


def test_a_remote_bind_without_tokens_is_refused(tmp_path):
    d = _cfg(tmp_path, 'bind = "0.0.0.0"')
    with pytest.raises(ConfigError) as ei:
        load_config(d)
    e = [x for x in ei.value.errors if getattr(x, "field", None) == "bind"][0]
    assert e.file == "config.toml" and e.section == "grpc"
    assert "allow_unauthenticated_remote" in str(e) and "tokens" in str(e)
    r = subprocess.run([sys.executable, "-m", "evo", "config", "check", str(d)], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "[grpc]" in r.stderr or "grpc" in r.stderr


@pytest.mark.parametrize("extra", [
    'bind = "0.0.0.0"\nhas_tokens = true',
    'bind = "0.0.0.0"\nallow_unauthenticated_remote = true',
    'bind = "::1"',
])
def test_tokens_loopback_or_an_explicit_allowance_load(tmp_path, extra):
    assert load_config(_cfg(tmp_path, extra)).system.grpc.bind


def test_the_hmi_listener_is_judged_too(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(_cfg(tmp_path, 'bind = "127.0.0.1"', hmi_bind="0.0.0.0"))
    assert any(getattr(x, "section", None) == "hmi" for x in ei.value.errors)


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("") and not is_loopback("10.0.0.5")
    assert not is_loopback("plc.example")
