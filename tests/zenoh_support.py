"""Helpers of the Zenoh and fleet tests (no tests here): machine configs on private ports, Zenoh
clients with scouting off and explicit loopback endpoints, machines started with `evo up`.
"""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from common.connector import Up
from common.connector.zenoh import ZenohConnector, ZenohOptions
from tests.fixtures.progs.evo_harness import EvoUp, instance_processes
from tests.grpc_support import make_config
from tests.helpers import ModuleProcess, free_port, remove_shm, wait_for


def ep(port: int) -> str:
    return f"tcp/127.0.0.1:{port}"


def zenoh_section(*, listen: tuple[str, ...] = (), connect: tuple[str, ...] = (), mode: str = "peer",
                  router_listen: tuple[str, ...] = (), enabled: bool = True, query_timeout_s: float = 2.0) -> str:
    def arr(xs: tuple[str, ...]) -> str:
        return json.dumps(list(xs))

    return (f"[zenoh]\nenabled = {'true' if enabled else 'false'}\nmode = \"{mode}\"\nlisten = {arr(listen)}\n"
            f"connect = {arr(connect)}\nmulticast_scouting = false\ngossip_scouting = false\nkey_prefix = \"evo\"\n"
            f"query_timeout_s = {query_timeout_s}\nrouter = {'true' if router_listen else 'false'}\n"
            f"router_listen = {arr(router_listen or ('tcp/127.0.0.1:7448',))}\n")


def machine_config(dest: Path, machine_id: str, zenoh: str, *, grpc_port: int | None = None,
                   modules_off: tuple[str, ...] = (), mosquitto: bool = True, cycle_time_us: int = 1000,
                   watchdog: dict[str, Any] | None = None) -> Path:
    """The default machine as `machine_id` on private ports with `zenoh` as its [zenoh] section.
    `modules_off`: [watchdog.modules.<name>] disabled; `mosquitto=False`: no embedded broker (the
    MQTT bridge then retries a closed port and reports Down, the Zenoh output is unaffected)."""
    cfg = make_config(dest, grpc_port or free_port(), mqtt=True, hal_stale_reads=300, cu_hal_stale_cycles=300)
    path = cfg / "config.toml"
    text = path.read_text()
    text = re.sub(r"(?m)^port = 1883$", f"port = {free_port()}", text)
    text = re.sub(r'(?m)^machine_id = ""$', f'machine_id = "{machine_id}"', text)
    text = re.sub(r"(?m)^port = 8080$", f"port = {free_port()}", text)  # the HMI, where present
    text, n = re.subn(r"(?ms)^\[zenoh\]\n.*?(?=^\[|\Z)", zenoh + "\n", text)
    assert n == 1, "config.toml has no [zenoh] section"
    if not mosquitto:
        text = re.sub(r"(?m)^embedded_broker = true$", "embedded_broker = false", text)
    for name in modules_off:
        text, n = re.subn(rf"(?m)^(\[watchdog\.modules\.{name}\]\n)enabled = true$", r"\1enabled = false", text)
        assert n == 1, name
    if cycle_time_us != 1000:
        text = re.sub(r"(?m)^cycle_time_us = 1000$", f"cycle_time_us = {cycle_time_us}", text)
    # a 2-core box shared with other suites can take longer than 5 s to bring a HAL up
    for key, value in {"hal_ready_timeout_s": 20.0, **(watchdog or {})}.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert n == 1, key
    path.write_text(text)
    return cfg


def start_machine(tmp: Path, prefix: str, config_dir: Path) -> EvoUp:
    up = EvoUp(tmp / "evo-up", prefix, None)  # its own scratch config is replaced by ours
    up.config_dir = config_dir
    return up.start()


def stop_machine(up: EvoUp) -> list[int]:
    """Stop `evo up` and remove whatever it left; returns the pids that had to be killed."""
    up.stop()
    leftovers = instance_processes(up.prefix)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    remove_shm(up.prefix)
    return leftovers


def client(*endpoints: str, name: str = "probe", timeout: float = 30.0) -> ZenohConnector:
    """A started client-mode connector (scouting off) on `endpoints`, once Up."""
    c = ZenohConnector(ZenohOptions(mode="client", connect=endpoints, min_peers=1), name)
    c.start()
    wait_for(lambda: c.health == Up(), timeout, 0.01, f"zenoh client {name} up on {endpoints}")
    return c


def start_router(prefix: str, config_dir: Path, log_dir: Path) -> ModuleProcess:
    """`python -m evo.zenoh_router` on the config's [zenoh] router_listen, as its own process."""
    return ModuleProcess("evo.zenoh_router", prefix, ["--config", str(config_dir)], log_dir=log_dir).start()
