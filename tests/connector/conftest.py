"""Fixtures for the connector tests: a real mosquitto broker per test and unique iceoryx2 prefixes."""
from __future__ import annotations

import uuid

import pytest

from tests.mosquitto_broker import Broker, start_broker


@pytest.fixture
def broker(tmp_path) -> Broker:
    """A fresh anonymous mosquitto on a free loopback port; killed after the test."""
    b = start_broker(tmp_path / "broker")
    yield b
    b.close()


@pytest.fixture
def iox_prefix() -> str:
    """A unique iceoryx2 service-name prefix so parallel tests never share services."""
    return f"evotest-{uuid.uuid4().hex[:10]}"
