"""Recipe executor with the simulated HAL and the CU as real subprocesses: a recipe runs to
Completed where it says, pause / resume, abort, wait_di timeout, LOAD refusals, RE killed mid-run.

The test plays the gRPC bridge (writer of rpc_re and rpc_cu, reader of re_rpc and cu_mqt).
"""
from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from common.shm.commands import CuCommand, ReCommand, ResultCode
from common.shm.conversions import decode_str
from common.shm.p2p import TypedP2pReader, TypedP2pWriter, segment_name, writer_alive
from common.shm.rings import Ack, CommandRingWriter
from common.shm.segments import CU_TO_MQT, CU_TO_RPC, HAL_TO_MQT, RE_TO_RPC, RPC_TO_CU, RPC_TO_RE
from common.states import AxisError, MachineError, MotionState, ReState, StepResult
from tests.helpers import REPO, ModuleProcess, wait_for

pytestmark = pytest.mark.timeout(240)
SETTLE = 0.5  # mm: the closed loop still settles after the set-point reports standstill

TEST_RECIPES = {
    "long_move": """
[recipe]
description = "enable X, then one slow move far away (pause / abort / kill tests)"
[[step]]
type = "enable"
axes = ["X"]
[[step]]
type = "move"
targets = { X = 400.0 }
velocity = 15.0
""",
    "move_back": """
[[step]]
type = "enable"
axes = ["X"]
[[step]]
type = "move"
targets = { X = 60.0 }
velocity = 20.0
""",
    "wait_start": """
[recipe]
description = "waits for the cycle start button, which nobody presses"
[[step]]
type = "set_do"
pin = 21
value = true
[[step]]
type = "wait_di"
pin = 50
timeout = 0.3
""",
    "bad_axis": """
[[step]]
type = "dwell"
seconds = 0.1
[[step]]
type = "move"
targets = { W = 1.0 }
""",
}


class CommandClient:
    """Writer of a command segment (heartbeat every 3 ms from a thread) + reader of its ack segment."""

    def __init__(self, src: str, dst: str, dtype: np.dtype, ack_dtype: np.dtype) -> None:
        self.w = TypedP2pWriter.create(segment_name(src, dst), src, dst, dtype)
        self.ring = CommandRingWriter(self.w.local["ring"])
        self.lock = threading.Lock()
        self.acks: dict[int, Ack] = {}
        self.rid = 0
        # stale after ~0.3 s of pumping: then p2p re-attaches a segment a restarted consumer re-created
        self.r = wait_for(lambda: TypedP2pReader.attach(segment_name(dst, src), src, ack_dtype, exclusive=False,
                                                        stale_reads=100), 20, what=f"{dst}_{src}")
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self.w.commit()
                d = self.r.try_read()
                if d is not None:
                    for a in self.ring.poll_acks(d["acks"]):
                        self.acks[a.request_id] = a
            time.sleep(0.003)

    def followed(self) -> bool:
        with self.lock:
            return int(self.r.local["acks"]["cmd_epoch_seen"]) == self.ring.epoch

    def send(self, code: int, timeout: float = 10.0, **kw) -> Ack:
        wait_for(self.followed, 20, what="consumer following our ring")
        with self.lock:
            self.rid += 1
            rid = self.rid
            self.ring.submit(int(code), rid, **kw)
        return wait_for(lambda: self.acks.get(rid), timeout, what=f"ack of command {code}")

    def status(self) -> np.ndarray:
        with self.lock:
            return self.r.local["status"].copy()

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.w.close()
        self.r.close()


class Rig:
    def __init__(self, cfg: Path, run_dir: Path, prefix: str) -> None:
        self.cfg, self.run_dir, self.prefix = cfg, run_dir, prefix
        self.env = {"EVO_RUN_DIR": str(run_dir)}
        self.procs: list[ModuleProcess] = []
        self.re: ModuleProcess | None = None

    def start(self, package: str, ready_segment: str) -> ModuleProcess:
        p = ModuleProcess(package, self.prefix, ["--config", str(self.cfg)], env=self.env).start()
        self.procs.append(p)
        name = f"{self.prefix}_{ready_segment}"
        wait_for(lambda: writer_alive(name) or not p.alive(), 30, what=f"{package} up")
        assert p.alive(), p.output()
        return p

    def start_re(self) -> ModuleProcess:
        self.re = self.start("recipe_executor", "re_rpc")
        return self.re

    # --- views ---
    def re_status(self) -> dict:
        s = self.rpc.status()
        return {
            "state": ReState(int(s["re_state"])), "step": int(s["current_step"]), "steps": int(s["step_count"]),
            "result": StepResult(int(s["step_result"])), "error": int(s["error_code"]),
            "cycles": int(s["cycle_count"]), "progress": float(s["progress"]),
            "program": decode_str(s["program_name"]), "kind": decode_str(s["step_kind"]),
            "message": decode_str(s["message"]),
        }

    def cu(self) -> np.ndarray:
        return self.cu_reader.read()["status"]

    def axis(self, axis_id: int) -> np.ndarray:
        return self.cu()["axes"][axis_id - 1]

    def wait_state(self, *states: ReState, timeout: float = 60.0) -> dict:
        return wait_for(lambda: (s := self.re_status())["state"] in states and s, timeout,
                        what=f"RE state {[x.name for x in states]} (now {self.re_status()})")

    def assert_at(self, axis_id: int, where: float) -> None:
        """The axis is in position at `where` (the CU's in_position_window); the closed loop of a
        starved CPU wanders around it, so a moment inside the window is waited for."""
        window = {1: 0.05, 2: 0.05, 3: 0.02}[axis_id]
        wait_for(lambda: abs(float(self.axis(axis_id)["position"]) - where) <= window, 5,
                 what=f"axis {axis_id} at {where} (now {float(self.axis(axis_id)['position'])})")

    def settled(self, axis_id: int, tol: float = 0.05) -> float:
        """The axis position once the closed loop has settled after a stop: two readings 100 CU
        cycles apart within `tol` (a starved box still pulls the lag in after the set-point stopped)."""
        last = [float(self.axis(axis_id)["position"])]

        def still() -> bool:
            self.wait_cu_cycles(100)
            now = float(self.axis(axis_id)["position"])
            done = abs(now - last[0]) <= tol
            last[0] = now
            return done

        wait_for(still, 10, what=f"axis {axis_id} settled (now {last[0]})")
        return last[0]

    def wait_cu_cycles(self, n: int) -> None:
        hb = self.cu_reader.heartbeat
        wait_for(lambda: self.cu_reader.heartbeat >= hb + n, 10, what=f"{n} CU cycles")

    def re_cmd(self, code: ReCommand, text: str = "") -> Ack:
        return self.rpc.send(int(code), text=text)

    def machine_ok(self) -> None:
        """Clear a safety stop / axis errors left by an earlier test (the operator's reset)."""
        cu = self.cu()
        if int(cu["safety_state"]) or any(int(cu["axes"][a]["error_flags"]) & ~int(AxisError.NOT_REFERENCED)
                                          for a in range(4)):
            self.op.send(int(CuCommand.RESET_ERROR))
            for a in range(1, 5):
                self.op.send(int(CuCommand.RESET_ERROR), axis=a)

    def reset(self) -> None:
        st = self.re_status()["state"]
        if st in (ReState.COMPLETED, ReState.ABORTED, ReState.ERROR, ReState.LOADED):
            assert self.re_cmd(ReCommand.RESET).ok


@pytest.fixture(scope="module")
def rig(shm_prefix, tmp_path_factory):
    base = tmp_path_factory.mktemp("re_rig")
    cfg = base / "config"
    shutil.copytree(REPO / "config", cfg)
    # The RE is under test, not the HAL/CU staleness thresholds: with the defaults (3 and 10 missed
    # 1 kHz heartbeats) a loaded 2-core CI machine trips safe states at random.
    text = (cfg / "config.toml").read_text()
    # HAL and CU at 500 Hz halve their CPU share on a 2-core machine shared with other suites.
    text = re.sub(r"(?m)^stale_reads = \d+", "stale_reads = 250", text)
    text = re.sub(r"(?m)^hal_stale_cycles = \d+", "hal_stale_cycles = 250", text)
    text = re.sub(r"(?m)^cycle_time_us = \d+", "cycle_time_us = 2000", text)
    (cfg / "config.toml").write_text(text)
    # A starved CPU makes the loops overrun and the following error spike: a wider lag limit.
    for f in cfg.glob("axis_0[123]_*.toml"):
        f.write_text(re.sub(r"(?m)^lag_error_limit = .*$", "lag_error_limit = 10.0", f.read_text()))
    for name, body in TEST_RECIPES.items():
        (cfg / "recipes" / f"{name}.toml").write_text(body)
    r = Rig(cfg, base / "run", shm_prefix)
    clients = []
    try:
        r.start("hal", "hal_cu")
        r.start("control_unit", "cu_re")
        r.start_re()
        r.rpc = CommandClient("rpc", "re", RPC_TO_RE, RE_TO_RPC)
        clients.append(r.rpc)
        r.op = CommandClient("rpc", "cu", RPC_TO_CU, CU_TO_RPC)
        clients.append(r.op)
        r.cu_reader = TypedP2pReader.attach(segment_name("cu", "mqt"), "mqt", CU_TO_MQT, exclusive=False,
                                            stale_reads=1_000_000)
        r.hal_reader = TypedP2pReader.attach(segment_name("hal", "mqt"), "mqt", HAL_TO_MQT, exclusive=False,
                                             stale_reads=1_000_000)
        yield r
    finally:
        for c in clients:
            c.close()
        for rd in ("cu_reader", "hal_reader"):
            if hasattr(r, rd):
                getattr(r, rd).close()
        for p in reversed(r.procs):
            p.stop()
        for p in r.procs:
            if p.alive():
                p.kill()


@pytest.fixture(autouse=True)
def _healthy_machine(rig):
    rig.machine_ok()
    yield


def logs(rig: Rig) -> str:
    return "\n".join(f"--- {p.package}\n{p.output()[-3000:]}" for p in rig.procs)


# --- tests (module order matters: they share one machine) ------------------------------------
def test_load_refusals_are_acked_with_reasons(rig):
    a = rig.re_cmd(ReCommand.LOAD, "bad_axis")
    assert a.result == ResultCode.INVALID_ARGUMENT
    assert a.message.startswith("bad_axis: step 2, targets.W: unknown axis 'W'")
    a = rig.re_cmd(ReCommand.LOAD, "no_such_recipe")
    assert a.result == ResultCode.NOT_FOUND and "no_such_recipe" in a.message
    a = rig.re_cmd(ReCommand.START)
    assert a.result == ResultCode.STATE_FORBIDS and "Idle" in a.message
    assert rig.re_status()["state"] == ReState.IDLE


def test_example_recipe_runs_to_completed_and_axes_end_where_it_says(rig):
    a = rig.re_cmd(ReCommand.LOAD, "demo_cycle")
    assert a.ok and a.message == "loaded demo_cycle: 9 steps"
    assert rig.re_status()["state"] == ReState.LOADED
    assert rig.re_cmd(ReCommand.START).ok
    seen: set[int] = set()

    def finished():
        s = rig.re_status()
        seen.add(s["step"])
        return s["state"] not in (ReState.RUNNING,) and s

    s = wait_for(finished, 90, interval=0.01, what="demo_cycle to finish")
    assert s["state"] == ReState.COMPLETED, f"{s}\n{logs(rig)}"
    assert (s["progress"], s["cycles"], s["program"], s["error"]) == (100.0, 1, "demo_cycle", 0)
    assert {4, 5, 6, 7} <= seen
    for axis_id, where in ((1, 10.0), (2, 5.0), (3, -2.0)):
        rig.assert_at(axis_id, where)
        assert int(rig.axis(axis_id)["motion"]) == MotionState.STANDSTILL
    io = rig.hal_reader.read()["io"]
    assert not (int(io["do_bank"][0]) >> 20) & 1  # green lamp off again
    assert float(io["ao_values"][0]) == 0.0  # spindle reference back to 0
    assert int(rig.axis(4)["motion"]) == MotionState.STANDSTILL
    rig.reset()


def test_pause_stops_motion_and_resume_finishes_the_move(rig):
    assert rig.re_cmd(ReCommand.LOAD, "move_back").ok
    assert rig.re_cmd(ReCommand.START).ok
    wait_for(lambda: rig.re_status()["step"] == 2 and abs(float(rig.axis(1)["velocity"])) > 5.0, 20,
             what="X moving")
    a = rig.re_cmd(ReCommand.PAUSE)
    assert a.ok and "stopping X" in a.message, a.message
    assert rig.re_status()["state"] == ReState.PAUSED
    wait_for(lambda: int(rig.axis(1)["motion"]) == MotionState.STANDSTILL, 10, what="X stopped")
    held = float(rig.axis(1)["position"])
    rig.wait_cu_cycles(300)
    assert rig.re_status()["state"] == ReState.PAUSED
    assert abs(float(rig.axis(1)["position"]) - held) < SETTLE and abs(held - 60.0) > 1.0
    a = rig.re_cmd(ReCommand.RESUME)
    assert a.ok, a.message
    s = rig.wait_state(ReState.COMPLETED, ReState.ERROR)
    assert s["state"] == ReState.COMPLETED, f"{s}\n{logs(rig)}"
    rig.assert_at(1, 60.0)
    rig.reset()


def test_abort_stops_motion(rig):
    assert rig.re_cmd(ReCommand.LOAD, "long_move").ok
    assert rig.re_cmd(ReCommand.START).ok
    wait_for(lambda: abs(float(rig.axis(1)["velocity"])) > 5.0, 20, what="X moving")
    a = rig.re_cmd(ReCommand.ABORT)
    assert a.ok and a.message == "aborting: stopping X"
    s = rig.wait_state(ReState.ABORTED, ReState.ERROR, timeout=20)
    assert s["state"] == ReState.ABORTED and s["message"] == "aborted by operator at step 2", s
    ax = rig.axis(1)
    assert int(ax["motion"]) == MotionState.STANDSTILL
    held = float(ax["position"])
    rig.wait_cu_cycles(300)
    assert abs(float(rig.axis(1)["position"]) - held) < SETTLE and held < 390.0
    rig.reset()


def test_wait_di_timeout_ends_in_error_with_message(rig):
    assert rig.re_cmd(ReCommand.LOAD, "wait_start").ok
    assert rig.re_cmd(ReCommand.START).ok
    s = rig.wait_state(ReState.ERROR, ReState.COMPLETED, timeout=20)
    assert s["state"] == ReState.ERROR
    assert s["error"] == ResultCode.TIMEOUT and s["result"] == StepResult.FAILED and s["step"] == 2
    assert s["message"] == "wait_start step 2 wait_di: DI 50 (Cycle start button) not on within 0.3 s"
    assert rig.re_cmd(ReCommand.START).result == ResultCode.STATE_FORBIDS
    rig.reset()
    assert rig.re_status()["state"] == ReState.IDLE


def test_re_killed_mid_recipe_axes_stopped_and_restart_comes_back_in_error(rig):
    assert rig.re_cmd(ReCommand.LOAD, "long_move").ok
    assert rig.re_cmd(ReCommand.START).ok
    wait_for(lambda: rig.re_status()["step"] == 2 and abs(float(rig.axis(1)["velocity"])) > 5.0, 20,
             what="X moving")
    rig.re.kill(signal.SIGKILL)
    # the CU notices the RE's heartbeat is gone and stops the axes the RE commanded
    wait_for(lambda: int(rig.axis(1)["motion"]) == MotionState.STANDSTILL, 10, what="CU stops X after RE loss")
    assert int(rig.cu()["machine_errors"]) & MachineError.RE_LOST, decode_str(rig.cu()["message"])
    held = rig.settled(1)
    assert held < 390.0, f"X at {held}: the CU did not stop it short of the recipe's 400"
    rig.start_re()
    s = rig.wait_state(ReState.ERROR, timeout=20)  # a fresh segment reads Idle (zeros) before the first tick
    assert s["state"] == ReState.ERROR and s["error"] == ResultCode.NOT_EXECUTED
    assert s["message"] == "restarted while running 'long_move' at step 2 (move); not resumed"
    rig.wait_cu_cycles(300)
    assert int(rig.axis(1)["motion"]) == MotionState.STANDSTILL
    assert abs(float(rig.axis(1)["position"]) - held) < SETTLE  # nothing was re-run
    assert rig.re_cmd(ReCommand.START).result == ResultCode.STATE_FORBIDS
    assert rig.re_cmd(ReCommand.RESET).ok
    assert rig.re_status()["state"] == ReState.IDLE


def test_sigterm_mid_recipe_stops_the_axes_and_exits_cleanly(rig):
    # a move far away: the previous test leaves X wherever the CU stopped it on the RE's loss (within
    # ~50 ms since issue 15's writer-lock probe), possibly a few mm from move_back's 60 — too short a
    # move to tell a STOP from an arrival on a loaded box
    assert rig.re_cmd(ReCommand.LOAD, "long_move").ok
    assert rig.re_cmd(ReCommand.START).ok
    wait_for(lambda: rig.re_status()["step"] == 2 and abs(float(rig.axis(1)["velocity"])) > 5.0, 20,
             what="X moving")
    assert rig.re.stop() == 0, rig.re.output()[-2000:]
    for seg in ("re_cu", "re_hal", "re_mqt", "re_rpc"):
        assert not writer_alive(f"{rig.prefix}_{seg}")
    wait_for(lambda: int(rig.axis(1)["motion"]) == MotionState.STANDSTILL, 10, what="X stopped by the RE's STOP")
    assert abs(float(rig.axis(1)["position"]) - 400.0) > 1.0
    assert "shutting down while RUNNING long_move at step 2: stopping axes [1]" in rig.re.output()
    rig.start_re()
    s = rig.wait_state(ReState.ERROR, timeout=20)  # a fresh segment reads Idle (zeros) before the first tick
    assert s["message"] == "restarted while running 'long_move' at step 2 (move); not resumed"
    assert rig.re_cmd(ReCommand.RESET).ok
