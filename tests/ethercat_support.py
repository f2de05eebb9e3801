"""Helpers of the EtherCAT tests (no tests here): a named network namespace holding a veth pair, the emulator
process inside it, config copies of config/examples/ethercat, and an `evo up` whose HAL runs in the namespace.

Frames only ever travel on the veth pair inside the namespace made here; it is deleted afterwards.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.config.schema import SYSTEM_SECTIONS
from hal.drivers.ethercat_emulator.control import EmulatorControl
from tests.helpers import REPO, free_port, module_env, wait_for, zenoh_isolated
from tests.netns import TestNetNs

EXAMPLE = REPO / "config" / "examples" / "ethercat"
MASTER_IF, EMU_IF = "ecm", "ecs"
_seq = itertools.count()


class VethNs(TestNetNs):
    """`evo-ecat-<pid>-<n>`: a network namespace with the veth pair ecm (MainDevice) <-> ecs (emulator)."""

    tag = "evo-ecat"
    needs = "a veth pair in a network namespace (EtherCAT tests: raw sockets)"
    setup = (("link", "add", MASTER_IF, "type", "veth", "peer", "name", EMU_IF), ("link", "set", MASTER_IF, "up"),
             ("link", "set", EMU_IF, "up"))


class Emulator:
    """`python -m hal.drivers.ethercat_emulator` on ecs inside the namespace, with its control socket."""

    def __init__(self, ns: VethNs, tmp: Path, devices: str = "drive,drive,io8", di_init: int = 1) -> None:
        self.sock = tmp / f"ecat-emu-{next(_seq)}.sock"
        self.log_path = tmp / f"{self.sock.stem}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ns.prefix() + [sys.executable, "-m", "hal.drivers.ethercat_emulator", "--interface", EMU_IF,
                           "--devices", devices, "--control", str(self.sock), "--di-init", str(di_init)],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=module_env("unused"), start_new_session=True)
        self.ctl = EmulatorControl(self.sock)
        try:
            wait_for(lambda: self.proc.poll() is None and self.ctl.status(), timeout=30, interval=0.05,
                     what="the EtherCAT emulator's control socket")
        except AssertionError:
            self.stop()
            raise AssertionError(f"emulator did not start:\n{self.output()}") from None

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        return self.ctl.call(cmd, **kw)

    def device(self, position: int) -> dict[str, Any]:
        return self.ctl.device(position)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def ethercat_config(dst: Path, *, network_edit: dict[str, str] | None = None, grpc_port: int = 0,
                    mqtt_port: int = 0, machine_id: str = "ecat") -> Path:
    """A copy of config/examples/ethercat; `network_edit` replaces lines of ethercat.toml (regex -> text, first
    match); ports given: [grpc] / [mqtt] on them, zenoh on its own port, HMI off, generous staleness."""
    shutil.copytree(EXAMPLE, dst)
    p = dst / "ethercat.toml"
    # the emulator is a Python process on a loaded 2-core host: its answers can take milliseconds
    text, n = re.subn(r"(?m)^datagram_timeout_us = \d+", "datagram_timeout_us = 20000", p.read_text(), count=1)
    assert n == 1, "ethercat.toml has no datagram_timeout_us"
    for pattern, repl in (network_edit or {}).items():
        text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
        assert n == 1, f"{pattern!r} not in ethercat.toml"
    p.write_text(text)
    if grpc_port or mqtt_port:
        c = dst / "config.toml"
        text = c.read_text().replace("cycle_time_us = 1000\n", "cycle_time_us = 1000\nstale_reads = 300\n", 1)
        text += (f'\n[grpc]\nbind = "127.0.0.1"\nport = {grpc_port}\n'
                 f'\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nmachine_id = "{machine_id}"\ntelemetry_hz = 20.0\n'
                 "\n[cu]\nhal_stale_cycles = 300\n")
        if "hmi" in SYSTEM_SECTIONS:
            text += f"\n[hmi]\nenabled = false\nport = {free_port()}\n"
        c.write_text(zenoh_isolated(text))
        for axis in dst.glob("axis_*.toml"):  # a starved HAL on a loaded host lags: flag it, do not stop on it
            axis.write_text(axis.read_text().replace('lag_policy = "Unwanted"', 'lag_policy = "Neutral"'))
    return dst


def modules_table(path: Path, ns: VethNs, hal_ready_timeout_s: float = 30.0) -> Path:
    """The default machine's table with the HAL run inside the namespace (`ip netns exec` execs: the notify
    pipe and the pid stay the HAL's); the others run on the host, talking to it through /dev/shm."""
    hal = ["ip", "netns", "exec", ns.name, "{python}", "-m", "hal", "--config", "{config}"]
    path.write_text(f"""
[[module]]
name = "hal"
argv = {json.dumps(hal)}
wrap = false
ready_segments = ["hal_cu"]
liveness_segments = ["hal_cu"]
ready_timeout_s = {hal_ready_timeout_s}

[[module]]
name = "cu"
package = "control_unit"
ready_timeout_s = 60.0
liveness_segments = ["cu_hal"]

[[module]]
name = "re"
package = "recipe_executor"
ready_timeout_s = 60.0
liveness_segments = ["re_cu"]
wait_ready = false

[[module]]
name = "grpc"
package = "grpc_bridge"
ready_timeout_s = 60.0
liveness_segments = ["rpc_cu"]
wait_ready = false

[[module]]
name = "mqtt"
package = "mqtt_bridge"
ready_timeout_s = 60.0
""")
    return path


class EvoUp:
    """`python -m evo up --config DIR --modules FILE` with its own shm prefix and run dir."""

    def __init__(self, cfg: Path, modules: Path, prefix: str, run_dir: Path, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evo", "up", "--config", str(cfg), "--modules", str(modules)], cwd=REPO,
            stdout=self._log, stderr=subprocess.STDOUT, env=module_env(prefix, EVO_RUN_DIR=str(run_dir)),
            start_new_session=True)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def module_pid(self, name: str) -> int:
        data = json.loads((self.run_dir / "modules.json").read_text())
        return next(int(m["pid"] or 0) for m in data["modules"] if m["name"] == name)

    def module_state(self, name: str) -> str:
        data = json.loads((self.run_dir / "modules.json").read_text())
        return next(m["state"] for m in data["modules"] if m["name"] == name)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
