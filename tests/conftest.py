"""Shared fixtures: a private EVO_SHM_PREFIX per test module, with /dev/shm cleaned afterwards."""
from __future__ import annotations

import os

import pytest

from tests.helpers import remove_shm, unique_prefix


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
