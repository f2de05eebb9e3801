"""Test support for the CU suites (no tests here): a command client on rpc_cu / re_cu that reads
acks and status back, HAL + CU subprocess pairs, and config-dir variations in tmp_path.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from common.shm.commands import CuCommand, ResultCode
from common.shm.p2p import ReadContention, TypedP2pReader, TypedP2pWriter, segment_name
from common.shm.rings import Ack, CommandRingWriter
from common.shm.segments import CU_TO_RE, CU_TO_RPC, RE_TO_CU, RPC_TO_CU
from tests.helpers import REPO, ModuleProcess, wait_for

__test__ = False  # nothing to collect here


class CuClient:
    """Writes commands into rpc_cu (or re_cu) with a 200 Hz heartbeat and reads the CU's answer
    segment (cu_rpc / cu_re) for acks and status."""

    def __init__(self, source: str = "rpc") -> None:
        self.source = source
        wdtype, rdtype = (RPC_TO_CU, CU_TO_RPC) if source == "rpc" else (RE_TO_CU, CU_TO_RE)
        self.writer = TypedP2pWriter.create(segment_name(source, "cu"), source, "cu", wdtype)
        self.ring = CommandRingWriter(self.writer.local["ring"])
        self.writer.commit()
        self.reader = wait_for(lambda: TypedP2pReader.attach(segment_name("cu", source), source, rdtype,
                                                             exclusive=False, stale_reads=1_000_000),
                               timeout=15, what=f"cu_{source} segment")
        self._lock = threading.Lock()
        self._acks: dict[int, Ack] = {}
        self._rid = 0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        # the CU attaches optional command segments once a second; commands submitted before it
        # has seen this writer would be skipped (NOT_EXECUTED) by design
        wait_for(lambda: int(self._read()["acks"]["cmd_epoch_seen"]) == self.ring.epoch, timeout=15,
                 what=f"CU attached to {source}_cu")

    def _beat(self) -> None:
        while not self._stop.wait(0.005):
            if self._paused.is_set():
                continue
            with self._lock:
                self.writer.commit()

    def pause_heartbeat(self, paused: bool = True) -> None:
        (self._paused.set if paused else self._paused.clear)()

    def _read(self) -> np.ndarray:
        for _ in range(200):
            try:
                return self.reader.read()
            except ReadContention:
                time.sleep(0.0002)
        raise ReadContention(self.reader.name, "persistent")

    def status(self) -> np.ndarray:
        with self._lock:
            return self._read()["status"].copy()

    def axis(self, axis_id: int) -> np.ndarray:
        return self.status()["axes"][axis_id - 1]

    def submit(self, code: CuCommand, axis: int = 0, pin: int = 0, args: tuple[float, ...] = (), text: str = "") -> int:
        with self._lock:
            self._rid += 1
            rid = self._rid
            self.ring.submit(int(code), rid, axis=axis, pin=pin, args=args, text=text)
            self.writer.commit()
        return rid

    def _poll(self) -> None:
        with self._lock:
            for a in self.ring.poll_acks(self._read()["acks"]):
                self._acks[a.request_id] = a

    def wait_ack(self, rid: int, timeout: float = 10.0) -> Ack:
        def got() -> Ack | None:
            self._poll()
            return self._acks.pop(rid, None)
        return wait_for(got, timeout=timeout, what=f"ack of request {rid}")

    def cmd(self, code: CuCommand, axis: int = 0, pin: int = 0, args: tuple[float, ...] = (), text: str = "",
            expect: ResultCode | None = ResultCode.OK) -> Ack:
        ack = self.wait_ack(self.submit(code, axis, pin, args, text))
        if expect is not None:
            assert ack.result == expect, f"{code.name} axis {axis}: {ack.result.name} {ack.message!r}"
        return ack

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.reader.close()
        self.writer.close()


def make_config(tmp: Path, edits: dict[str, dict[str, dict[str, object]]] | None = None,
                extra_io: str = "", run_dir: Path | None = None) -> Path:
    """Copy config/ into tmp and set TOML keys: edits = {"axis_01_x.toml": {"control": {"kp": 1.0}}}.
    A section that does not exist is appended; "-section" removes one."""
    dst = tmp / "config"
    shutil.copytree(REPO / "config", dst)
    for fname, sections in (edits or {}).items():
        path = dst / fname
        text = path.read_text()
        for section, keys in sections.items():
            if section.startswith("-"):
                text = re.sub(rf"(?ms)^\[{section[1:]}\]\n.*?(?=^\[|\Z)", "", text)
                continue
            if not re.search(rf"(?m)^\[{section}\]", text):
                text += f"\n[{section}]\n"
            for key, value in keys.items():
                lit = _toml(value)
                pat = rf"(?ms)(^\[{section}\]\n(?:(?!^\[).)*?)^{key}\s*=.*?$"
                if re.search(pat, text):
                    text = re.sub(pat, lambda m: f"{m.group(1)}{key} = {lit}", text, count=1)
                else:
                    text = re.sub(rf"(?m)^\[{section}\]\n", lambda m: f"{m.group(0)}{key} = {lit}\n", text, count=1)
        path.write_text(text)
    if extra_io:
        (dst / "io.toml").write_text((dst / "io.toml").read_text() + "\n" + extra_io + "\n")
    cfg = dst / "config.toml"
    # the HAL must not declare the CU stale on ordinary scheduling hiccups of a loaded test machine
    cfg.write_text(re.sub(r"(?m)^stale_reads = \d+", "stale_reads = 200", cfg.read_text()))
    if run_dir is not None:
        cfg = dst / "config.toml"
        cfg.write_text(re.sub(r'(?m)^run_dir = ""', f'run_dir = "{run_dir}"', cfg.read_text()))
    return dst


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


class Machine:
    """A real HAL + CU pair on one config dir and shm prefix, plus an RPC client."""

    def __init__(self, prefix: str, config_dir: Path, run_dir: Path) -> None:
        self.prefix, self.config_dir, self.run_dir = prefix, config_dir, run_dir
        # these machines ask for SCHED_FIFO in their config (rt_priority 40/41, see machine_test_config)
        # so that the stall and overrun tests judge the CU, not the load: the suite's EVO_RT=off
        # (tests/conftest.py) is lifted for them
        env = {"EVO_RUN_DIR": str(run_dir), "EVO_RT": "on"}
        self.hal = ModuleProcess("hal", prefix, ["--config", str(config_dir)], log_dir=run_dir, env=env)
        self.cu = ModuleProcess("control_unit", prefix, ["--config", str(config_dir)], log_dir=run_dir, env=env)
        self.rpc: CuClient | None = None

    def start(self) -> "Machine":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.hal.start()
        self.cu.start()
        try:
            self.rpc = CuClient("rpc")
            wait_for(lambda: int(self.rpc.status()["machine_state"]) == 2, timeout=20, what="CU Idle")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None
        return self

    def inject(self, data: dict) -> None:
        from hal.drivers.sim_inject import write_injection
        write_injection(self.run_dir / "hal_sim_inject.json", data)

    def stop(self) -> tuple[int | None, int | None]:
        """SIGTERM both; returns their exit codes (0 = clean exit, segments unlinked)."""
        if self.rpc is not None:
            self.rpc.close()
        rc_cu = self.cu.stop()
        rc_hal = self.hal.stop()
        return rc_cu, rc_hal

    def logs(self) -> str:
        return f"--- CU ---\n{self.cu.output()[-4000:]}\n--- HAL ---\n{self.hal.output()[-2000:]}"


def machine_test_config(tmp: Path, edits: dict | None = None, extra_io: str = "") -> Path:
    """make_config plus what every CU test machine uses: SCHED_FIFO when permitted (the suite runs
    on loaded 2-core machines), tolerant HAL staleness and lag limits, a short manual timeout."""
    base = {"config.toml": {"cu": {"rt_priority": 40, "manual_timeout_s": 1.5, "hal_stale_cycles": 100},
                            "hal": {"rt_priority": 41}},
            # functional tests, not tracking-accuracy tests: a starved 2-core runner must not turn a
            # scheduling stall into a lag error on the default axes (lag policies have their own test)
            "axis_01_x.toml": {"control": {"lag_error_limit": 25.0}},
            "axis_02_y.toml": {"control": {"lag_error_limit": 25.0}},
            "axis_03_z.toml": {"control": {"lag_error_limit": 25.0}}}
    for f, secs in (edits or {}).items():
        for sec, keys in secs.items():
            base.setdefault(f, {}).setdefault(sec, {}).update(keys)
    return make_config(tmp, base, extra_io)


machine_test_config.__test__ = False  # type: ignore[attr-defined]


def axis_errors(client: CuClient, axis_id: int) -> int:
    return int(client.axis(axis_id)["error_flags"])
