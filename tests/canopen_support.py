"""Helpers of the CANopen and CAN tests (no tests here): private network namespaces, the emulator process, configs.

udp_multicast traffic only ever runs inside a namespace made here (lo up, multicast on, 224.0.0.0/4 routed on lo).
"""
from __future__ import annotations

import json
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from tests.helpers import REPO
from tests.netns import TestNetNs

GROUP = "239.74.163.2"
EXAMPLE = REPO / "config" / "examples" / "canopen"
class NetNs(TestNetNs):
    """A named network namespace with multicast on its loopback (udp_multicast stays inside it)."""

    tag = "evo-can"
    needs = "a network namespace for udp_multicast"
    setup = (("link", "set", "lo", "multicast", "on"), ("route", "add", "224.0.0.0/4", "dev", "lo"))


def netns_fixture() -> Iterator[NetNs]:
    ns = NetNs().create()
    try:
        yield ns
    finally:
        ns.delete()


class EmulatorProcess:
    """`python -m hal.drivers.canopen_emulator` in a namespace, driven over its JSON-lines stdin/stdout."""

    def __init__(self, ns: NetNs | None, nodes: str, interface: str = "udp_multicast", channel: str = GROUP,
                 log: Path | None = None) -> None:
        args = [sys.executable, "-m", "hal.drivers.canopen_emulator", "--interface", interface, "--channel", channel,
                "--nodes", nodes]
        self._log = open(log, "wb") if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen((ns.prefix() if ns else []) + args, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        hello = self._line(20.0)
        if not hello.get("ready"):
            self.stop()
            raise RuntimeError(f"emulator did not start: {hello}")

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError(f"no answer from the CANopen emulator within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CANopen emulator exited (code {self.proc.poll()})")
        return json.loads(line)

    def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self._line(10.0)
        if not reply.get("ok"):
            raise RuntimeError(f"emulator refused {cmd}: {reply}")
        return reply

    def node(self, node_id: int) -> dict[str, Any]:
        return self.command(cmd="status")["nodes"][str(node_id)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF ends it cleanly
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def canopen_config(dst: Path, *, interface: str = "udp_multicast", channel: str = GROUP,
                   canopen_edit: dict[str, str] | None = None) -> Path:
    """A copy of config/examples/canopen on the given bus; `canopen_edit` replaces `key = value` lines of
    canopen.toml (first match of the regex key)."""
    shutil.copytree(EXAMPLE, dst)
    p = dst / "canopen.toml"
    text = p.read_text()
    text = re.sub(r'(?m)^interface = ".*"$', f'interface = "{interface}"', text, count=1)
    text = re.sub(r'(?m)^channel = ".*"$', f'channel = "{channel}"', text, count=1)
    for pattern, repl in (canopen_edit or {}).items():
        text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
        assert n == 1, f"{pattern!r} not in canopen.toml"
    p.write_text(text)
    return dst
