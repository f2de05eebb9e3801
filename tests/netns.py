"""A named network namespace a test makes for itself (`ip netns`), so that bus traffic (udp_multicast, raw
EtherCAT frames on a veth pair) never leaves on the real interface; `prefix()` runs a program inside it.

Skips the test with the reason when `ip` or the rights are missing (CI has both).
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from typing import Sequence

import pytest

from tests.helpers import REPO

_seq = itertools.count()


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


class TestNetNs:
    """`<tag>-<pid>-<n>`, created with loopback up plus `setup` (ip commands run inside it)."""

    __test__ = False  # a helper, not a test class
    tag = "evo-ns"
    needs = "a network namespace"
    setup: Sequence[Sequence[str]] = ()

    def __init__(self) -> None:
        self.name = f"{self.tag}-{os.getpid()}-{next(_seq)}"

    def create(self) -> "TestNetNs":
        if shutil.which("ip") is None:
            pytest.skip(f"the `ip` tool (iproute2) is missing: cannot make {self.needs}")
        if os.geteuid() != 0:
            pytest.skip(f"{self.needs} needs root (network namespace)")
        r = ip("netns", "add", self.name)
        if r.returncode != 0:
            pytest.skip(f"cannot create {self.needs} (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
        for cmd in (("link", "set", "lo", "up"), *self.setup):
            r = ip("-n", self.name, *cmd)
            if r.returncode != 0:
                self.delete()
                raise RuntimeError(f"netns {self.name}: ip {' '.join(cmd)} failed: {r.stderr}")
        return self

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
            **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.prefix() + args, capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=timeout, **kw)

    def delete(self) -> None:
        ip("netns", "delete", self.name)
