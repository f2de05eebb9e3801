"""EVO_IOX2_ROOT: iceoryx2's files under a name of the caller's, so a test run leaves nothing behind (iceoryx2
keeps its node management file in /dev/shm after the last node; with the default name every run shared it)."""
from __future__ import annotations

import os
import shutil

import pytest

from common.connector.errors import ConfigurationError
from common.connector.iceoryx2_transport import Iceoryx2Transport
from tests.helpers import unique_prefix


def test_iceoryx2_files_go_under_evo_iox2_root(monkeypatch, iox_prefix):
    root = unique_prefix("ioxr")
    monkeypatch.setenv("EVO_IOX2_ROOT", root)
    before = set(os.listdir("/dev/shm"))
    t = Iceoryx2Transport(iox_prefix)
    try:
        t.open_sender("frames", 4, 64)
        t.event_service("wake")
        new = set(os.listdir("/dev/shm")) - before
        assert new and all(n.startswith(root + "_") for n in new), sorted(new)
        assert os.path.isdir(f"/tmp/{root}")
    finally:
        t.close()
        for n in os.listdir("/dev/shm"):
            if n.startswith(root + "_"):
                os.unlink(os.path.join("/dev/shm", n))
        shutil.rmtree(f"/tmp/{root}", ignore_errors=True)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(root)]


def test_a_bad_evo_iox2_root_is_refused_by_name(monkeypatch, iox_prefix):
    monkeypatch.setenv("EVO_IOX2_ROOT", "../etc")
    with pytest.raises(ConfigurationError, match="EVO_IOX2_ROOT"):
        Iceoryx2Transport(iox_prefix)
