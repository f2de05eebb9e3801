"""Issue 16: the default heartbeat-stale thresholds follow the scheduling the loops got — 50 ms under
SCHED_FIFO (seed 003's FTTI/2), 100 ms under normal scheduling — a configured value is used as it is, and
a real HAL frozen with SIGSTOP is caught by a real CU after exactly that many cycles.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from common.stale import AUTO_FIFO_MS, AUTO_NORMAL_MS, stale_threshold
from common.states import MachineError, SafetyState
from tests.cu_support import Machine, machine_test_config
from tests.helpers import REPO, wait_for


# --- the rule -------------------------------------------------------------------------------------

def test_auto_threshold_by_scheduling_and_cycle_time():
    assert (AUTO_FIFO_MS, AUTO_NORMAL_MS) == (50.0, 100.0)
    assert stale_threshold(0, 1000, True).cycles == 50
    assert stale_threshold(0, 1000, False).cycles == 100
    assert stale_threshold(0, 500, True).cycles == 100  # the same 50 ms at 2 kHz
    assert stale_threshold(0, 3000, True).cycles == 17  # rounded up: never shorter than 50 ms ...
    assert stale_threshold(0, 3000, True).ms == 51.0  # ... and the log says what it really is
    assert stale_threshold(0, 1000, False).why.startswith("auto: normal scheduling")
    assert "SCHED_FIFO" in stale_threshold(0, 1000, True).why


def test_configured_threshold_is_used_as_it_is():
    for rt in (True, False):
        t = stale_threshold(30, 1000, rt)
        assert (t.cycles, t.ms, t.why) == (30, 30.0, "configured")
    with pytest.raises(ValueError, match="cycle_time_us"):
        stale_threshold(0, 0, True)


def test_shipped_config_is_auto_and_bounds_name_the_field(tmp_path):
    cfg = load_config(REPO / "config")
    assert cfg.system.hal.stale_reads == 0 and cfg.system.cu.hal_stale_cycles == 0
    for section, key, bad in (("cu", "hal_stale_cycles", -1), ("hal", "stale_reads", 10_001)):
        d = tmp_path / f"{key}{bad}"
        d.mkdir()
        for f in (REPO / "config").iterdir():
            if f.is_file():
                (d / f.name).write_bytes(f.read_bytes())
        text = (d / "config.toml").read_text()
        text, n = re.subn(rf"(?m)^{key} = \d+$", f"{key} = {bad}", text)
        assert n == 1
        (d / "config.toml").write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(d)
        assert key in str(e.value) and "config.toml" in str(e.value), str(e.value)


# --- a real HAL frozen, a real CU catches it --------------------------------------------------------

def _machine(shm_prefix: str, tmp: Path, rt: str) -> Machine:
    cfg = machine_test_config(tmp / "cfg", {"config.toml": {"cu": {"hal_stale_cycles": 0}}})
    toml = cfg / "config.toml"  # machine_test_config makes the HAL tolerant (200): back to auto here
    text, n = re.subn(r"(?m)^stale_reads = \d+$", "stale_reads = 0", toml.read_text())
    assert n == 1
    toml.write_text(text)
    m = Machine(shm_prefix, cfg, tmp / "run")
    for p in (m.hal, m.cu):
        p.env["EVO_RT"] = rt
    return m


@pytest.mark.parametrize("rt", ["on", "off"])
def test_frozen_hal_caught_after_the_auto_threshold(fresh_prefix, tmp_path, rt):
    """SIGSTOP the HAL (its writer lock stays held: only the heartbeat can tell): the CU stops the
    machine with HAL_STALE after exactly the auto threshold of its scheduling — 50 cycles under
    SCHED_FIFO, 100 under normal scheduling — and its start-up log says which and why."""
    m = _machine(fresh_prefix, tmp_path, rt)
    m.start()
    try:
        out = m.cu.output()
        fifo = re.search(r"cycling: \d+ axes, SCHED_FIFO", out) is not None
        if rt == "on" and not fifo:
            pytest.skip("SCHED_FIFO not permitted here (needs root or CAP_SYS_NICE): the FIFO half cannot run")
        want = 50 if fifo else 100
        assert f"HAL stale after {want} cycles" in out, out[-3000:]
        assert f"CU stale after {want} cycles" in m.hal.output(), m.hal.output()[-3000:]
        rpc = m.rpc
        assert rpc.status()["safety_state"] != SafetyState.SAFETY_STOP
        os.kill(m.hal.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: rpc.status()["safety_state"] == SafetyState.SAFETY_STOP, 10, what="safety stop on a frozen HAL")
        finally:
            os.kill(m.hal.pid, signal.SIGCONT)
        assert int(rpc.status()["machine_errors"]) & MachineError.HAL_STALE
        deadline = time.monotonic() + 5
        while f"unchanged for {want} reads" not in m.cu.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"unchanged for {want} reads" in m.cu.output(), m.cu.output()[-3000:]
    finally:
        rc_cu, rc_hal = m.stop()
    assert rc_cu == 0 and rc_hal == 0, m.logs()
