"""HAL process lifecycle: SIGKILL + restart keeps positions and readers, clean SIGTERM, bad driver.

Real subprocesses and segments; the CU stand-in keeps running across the HAL restart.
"""
from __future__ import annotations

import json
import signal

import pytest

from common.shm.p2p import HeartbeatStale
from hal.synthetic_config import write_config
from tests.helpers import ModuleProcess, shm_entries, wait_for
from tests.hal_harness import FakeCu, read, reader, start_hal


def _state_position(path, axis_id: int) -> float | None:
    try:
        return json.loads(path.read_text())["axes"][str(axis_id)]["position"]
    except (OSError, ValueError, KeyError):
        return None


def test_sigkill_and_restart_keeps_positions_and_readers_carry_on(shm_prefix, tmp_path):
    cfg_dir = write_config(tmp_path / "config", axes=2, points=16)
    run_dir = tmp_path / "run"
    hal = start_hal(shm_prefix, cfg_dir, run_dir, tmp_path)
    cu = FakeCu()
    fb = reader("hal_cu", stale_reads=5)  # this reader object must survive the HAL restart
    hal2 = None
    try:
        def axis1():
            return read(fb)["axes"][0]

        start = float(axis1()["position"])
        cu.set_axis(1, enable=1, brake_release=1)
        wait_for(lambda: axis1()["drive_ready"] == 1, what="drive ready")
        cu.set_axis(1, calculated_torque=20.0)
        wait_for(lambda: axis1()["position"] > start + 20.0, what="axis moved")
        cu.set_axis(1, calculated_torque=0.0)
        wait_for(lambda: axis1()["velocity"] == 0.0, what="axis coasted to a stop")
        pos = float(axis1()["position"])
        state = run_dir / "hal_state.json"
        wait_for(lambda: _state_position(state, 1) == pos, what="state file up to date")

        hal.kill(signal.SIGKILL)

        def stale() -> bool:
            try:
                fb.read()
            except HeartbeatStale:
                return True
            return False

        wait_for(stale, what="reader sees the HAL heartbeat stop")
        hal2 = start_hal(shm_prefix, cfg_dir, run_dir, tmp_path)
        wait_for(lambda: fb.read() is not None, what="the same reader carries on")
        assert float(axis1()["position"]) == pos, "the axis must not teleport across a HAL restart"
        assert float(read(fb)["axes"][1]["position"]) == _state_position(state, 2)
        io = reader("hal_mqt")
        try:
            wait_for(lambda: bool(read(io)["io"]["cu_connected"]), what="restarted HAL re-attaches the CU")
        finally:
            io.close()
        wait_for(lambda: axis1()["drive_ready"] == 1, what="drive ready again under the running CU")
    finally:
        fb.close()
        cu.close()
        if hal2 is not None:
            assert hal2.stop() == 0, hal2.output()
        hal.stop()


def test_sigterm_exits_cleanly_and_unlinks_segments(shm_prefix, tmp_path):
    cfg_dir = write_config(tmp_path / "config", axes=1, points=8)
    hal = start_hal(shm_prefix, cfg_dir, tmp_path / "run", tmp_path)
    assert hal.stop() == 0, hal.output()
    left = [n for n in shm_entries(shm_prefix) if "_hal_" in n or n.endswith("_hal")]
    assert left == [], left
    assert _state_position(tmp_path / "run" / "hal_state.json", 1) is not None  # final state written


@pytest.mark.parametrize(
    "hal_cfg, driver_args, text",
    [
        ({"driver": "nope"}, None, "unknown driver 'nope'; known drivers: canopen, ethercat, sim"),
        ({}, {"ready_delay": 5}, "unknown option(s) ['ready_delay'] for the sim driver"),
    ],
)
def test_bad_driver_config_is_refused_at_start(shm_prefix, tmp_path, hal_cfg, driver_args, text):
    cfg_dir = write_config(tmp_path / "config", axes=1, points=8, hal=hal_cfg, driver_args=driver_args)
    hal = ModuleProcess("hal", shm_prefix, ["--config", str(cfg_dir)], log_dir=tmp_path,
                        env={"EVO_RUN_DIR": str(tmp_path / "run")}).start()
    try:
        assert hal.proc.wait(30) == 2
        assert text in hal.output()
    finally:
        hal.stop()
    assert [n for n in shm_entries(shm_prefix) if "_hal_" in n] == []
