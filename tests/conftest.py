"""Shared fixtures: a private EVO_SHM_PREFIX per test module, with /dev/shm cleaned afterwards."""
from __future__ import annotations

import os

import pytest

from tests.helpers import remove_shm, unique_prefix

# SCHED_FIFO is the default for the HAL and CU (issue 15). The suite turns it off here, in this one
# place, for every module it starts (inherited through the environment): two pytest workers each run
# whole machines on a 2-core box, and FIFO loops of several machines at once would take the CPU from
# the test processes and the non-RT bridges the tests wait on. Tests prove behaviour, not timing;
# benchmarks/bench_rt.py measures FIFO, and test_rt_loop.py proves the default (it sets EVO_RT itself).
# `EVO_RT=on make test` runs the suite under FIFO.
os.environ.setdefault("EVO_RT", "off")


@pytest.fixture(scope="session", autouse=True)
def iceoryx2_root():
    """iceoryx2's files (services, and the node management file it keeps after the last node) under a
    name of this run's own (common/connector/iceoryx2_transport.py EVO_IOX2_ROOT, inherited by every
    process the tests start), removed at the end: nothing is left in /dev/shm or /tmp."""
    import shutil

    root = unique_prefix("iox")
    os.environ["EVO_IOX2_ROOT"] = root
    yield root
    os.environ.pop("EVO_IOX2_ROOT", None)
    for name in os.listdir("/dev/shm"):
        if name.startswith(root + "_"):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except FileNotFoundError:
                pass
    shutil.rmtree(f"/tmp/{root}", ignore_errors=True)


@pytest.fixture(scope="module")
def shm_prefix():
    """A unique prefix set in os.environ for this module; leftovers are removed and reported."""
    prefix = unique_prefix()
    old = os.environ.get("EVO_SHM_PREFIX")
    os.environ["EVO_SHM_PREFIX"] = prefix
    yield prefix
    if old is None:
        os.environ.pop("EVO_SHM_PREFIX", None)
    else:
        os.environ["EVO_SHM_PREFIX"] = old
    remove_shm(prefix)


@pytest.fixture
def fresh_prefix(monkeypatch):
    """A unique prefix for one test."""
    prefix = unique_prefix()
    monkeypatch.setenv("EVO_SHM_PREFIX", prefix)
    yield prefix
    remove_shm(prefix)
