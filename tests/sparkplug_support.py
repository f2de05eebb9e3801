"""Helpers of the Sparkplug tests (no tests here): config copies with [mqtt.sparkplug], live *_mqt writers.

The writers are real p2p segment writers on /dev/shm whose heartbeat keeps moving until paused.
"""
from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np

from common.shm.io_helpers import set_bit
from common.shm.p2p import TypedP2pWriter, segment_name
from common.states import MachineState, PowerState, ReState, SafetyState
from tests.helpers import REPO, free_port

MID = "spbcell"
GROUP = "plant1"


def sparkplug_config(dest: Path, mqtt_port: int, *, run_dir: Path, primary_host: str = "",
                     deadband: dict[str, float] | None = None, metrics: list[str] | None = None,
                     discovery: bool = False, extra_mqtt: str = "", grpc_port: int | None = None,
                     embedded_broker: bool = False) -> Path:
    """A copy of the default machine with the broker at `mqtt_port`, Sparkplug on (group GROUP, node
    MID), a private run dir and free ports for everything that listens."""
    shutil.copytree(REPO / "config", dest, dirs_exist_ok=True)
    path = dest / "config.toml"
    text = path.read_text()
    text, n = re.subn(r"(?m)^port = 1883$", f"port = {mqtt_port}", text)
    assert n == 1, "config.toml has no [mqtt] port = 1883"
    text = re.sub(r"(?m)^port = 50051$", f"port = {grpc_port or free_port()}", text)
    text = re.sub(r"(?m)^port = 8080$", f"port = {free_port()}", text)  # the HMI, where there is one
    # Zenoh is another output of the same bridge (issue 14): off here, so no fixed port is shared
    text = re.sub(r"(?m)^(\[zenoh\]\n)enabled = true$", r"\1enabled = false", text)
    text = re.sub(r'(?m)^machine_id = ""$', f'machine_id = "{MID}"', text)
    # a loaded 2-core test box: start-up waits that fit a quiet machine may not (nothing here times them)
    text = re.sub(r"(?m)^hal_ready_timeout_s = [0-9.]+$", "hal_ready_timeout_s = 30.0", text)
    text = re.sub(r"(?m)^hal_attach_timeout_s = [0-9.]+$", "hal_attach_timeout_s = 30.0", text)
    # ... and a CU that misses a few ms must not stop the machine at random (cf. tests/grpc_support.py)
    text = re.sub(r"(?m)^stale_reads = \d+$", "stale_reads = 300", text, count=1)
    text = re.sub(r"(?m)^hal_stale_cycles = \d+$", "hal_stale_cycles = 300", text)
    text = re.sub(r"(?m)^embedded_broker = (true|false)$", f"embedded_broker = {str(embedded_broker).lower()}", text)
    text = re.sub(r'(?m)^run_dir = ""$', f'run_dir = "{run_dir}"', text)
    if discovery:
        text = re.sub(r"(?m)^homeassistant_discovery = false$", "homeassistant_discovery = true", text)
    section = (
        "[mqtt.sparkplug]\nenabled = true\n"
        f'group_id = "{GROUP}"\nedge_node_id = ""\nprimary_host_id = "{primary_host}"\n'
        f"metrics = {json.dumps(metrics or ['*'])}\n\n"
        "[mqtt.sparkplug.deadband]\n"
        + "".join(f"{json.dumps(k)} = {v}\n" for k, v in (deadband or {}).items())
    )
    text, n = re.subn(r"(?ms)^\[mqtt\.sparkplug\]\n.*?(?=^\[(?!mqtt\.sparkplug))", section + "\n", text)
    assert n == 1, "config.toml has no [mqtt.sparkplug] section to replace"
    if extra_mqtt:
        text = text.replace("[mqtt]\n", "[mqtt]\n" + extra_mqtt + "\n", 1)
    path.write_text(text)
    run_dir.mkdir(parents=True, exist_ok=True)
    return dest


class LiveWriter:
    """A writer of one *_mqt segment whose heartbeat moves at 200 Hz until `paused` is set."""

    def __init__(self, src: str, dtype: np.dtype) -> None:
        self.w = TypedP2pWriter.create(segment_name(src, "mqt"), src, "mqt", dtype)
        self.local = self.w.local
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            if not self.paused.is_set():
                with self.lock:
                    self.w.commit()

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(2)
            self.w.close()


def fill(cu: LiveWriter, hal: LiveWriter, re_: LiveWriter) -> None:
    """A plausible idle machine: axis 1 at 12.5 mm, E-stop circuit closed, 6.2 bar, a recipe running."""
    with cu.lock:
        st = cu.local["status"]
        st["machine_state"] = MachineState.IDLE
        st["safety_state"] = SafetyState.SAFE
        st["axis_count"] = 4
        ax = st["axes"][0]
        ax["id"] = 1
        ax["power"] = PowerState.STANDBY
        ax["position"] = 12.5
        ax["referenced"] = 1
    with hal.lock:
        io = hal.local["io"]
        set_bit(io["di_bank"], 0, True)  # NC E-stop: circuit closed = not pressed
        io["ai_values"][0] = 6.2
        io["axes"][0]["drive_ready"] = 1
    with re_.lock:
        s = re_.local["status"]
        s["re_state"] = ReState.RUNNING
        s["program_name"] = b"demo_cycle"
        s["current_step"] = 2
        s["step_count"] = 5
        s["progress"] = 40.0
