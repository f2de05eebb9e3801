"""Fault-injection helpers (issue 16): the default machine under a real `evo up` on free loopback ports,
a load (a recipe loop + an operator client) whose every gRPC answer is recorded and judged, and the
checks that nothing of an instance is left. The short tests and the long `make soak` runs share them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import statistics
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import psutil

from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from tests.fixtures.progs.evo_harness import EvoUp, instance_processes
from tests.grpc_support import Stubs, make_config, wait_serving
from tests.helpers import REPO, free_port, remove_shm, shm_entries, wait_for

SOAK = os.environ.get("EVO_SOAK") == "1"  # the long versions run only under `make soak`
SOAK_REASON = "long fault-injection run: `make soak` (EVO_SOAK=1) runs it"
SOAK_RESULTS = REPO / "benchmarks" / "results" / "fault_soak.json"

CALL_DEADLINE_S = 6.0  # every call of the load must be answered before this (command_timeout_s is 2 s)
# Reconnect fast after the bridge is restarted (grpc's default back-off grows to 120 s).
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500), ("grpc.enable_retries", 0))

# Codes that are a clear answer; UNKNOWN, INTERNAL, DATA_LOSS and a client-side deadline never are.
CLEAR_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
               grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
               grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
               grpc.StatusCode.UNAUTHENTICATED}

LOOP_RECIPE = "fault_loop"
LOOP_RECIPE_TOML = """\
# The fault-injection load (tests/fault_support.py): X back and forth and the clamp valve toggled, for ever.
[recipe]
name = "fault_loop"
description = "X between 10 and 20 mm, clamp valve toggled, endlessly"
on_error = "abort"

[[step]]
type = "enable"
axes = ["X"]

[[step]]
type = "repeat"
count = 1000000

  [[step.steps]]
  type = "move"
  targets = { X = 20.0 }
  velocity = 40.0

  [[step.steps]]
  type = "set_do"
  pin = 10
  value = true

  [[step.steps]]
  type = "move"
  targets = { X = 10.0 }
  velocity = 40.0

  [[step.steps]]
  type = "set_do"
  pin = 10
  value = false
"""


@dataclass(frozen=True)
class Outcome:
    """One gRPC call of the load: what, the code, how long it took and the server's ResultCode."""

    method: str
    code: str
    elapsed_s: float
    details: str = ""
    result: str = ""  # the evo-result trailing metadata (ResultCode name), when the server sent one

    @property
    def clear(self) -> bool:
        """Answered with a clear code before the deadline."""
        if self.elapsed_s >= CALL_DEADLINE_S:
            return False
        if self.code == grpc.StatusCode.DEADLINE_EXCEEDED.name:  # only the CU's own time-out, said so
            return self.result == "TIMEOUT"
        return self.code in {c.name for c in CLEAR_CODES}


def call(stub_method: Callable[..., Any], request: Any, name: str, timeout: float = CALL_DEADLINE_S) -> tuple[Outcome, Any]:
    """Call once; the outcome and the reply (None on error)."""
    t0 = time.monotonic()
    try:
        reply = stub_method(request, timeout=timeout)
        return Outcome(name, "OK", time.monotonic() - t0), reply
    except grpc.RpcError as e:
        result = dict(e.trailing_metadata() or ()).get("evo-result", "")
        return Outcome(name, e.code().name, time.monotonic() - t0, (e.details() or "")[:200], result), None


@dataclass
class MachinePorts:
    grpc: int
    mqtt: int
    hmi: int


def fault_config(dest: Path, *, mqtt: bool = True, max_restarts: int = 1000) -> tuple[Path, MachinePorts]:
    """The default machine on free loopback ports (gRPC, MQTT, HMI, Zenoh), with the loop recipe, and a
    restart policy that lets a storm of kills be survived (max_restarts, short back-off, stable after 1 s)
    and readiness/liveness limits wide enough for a loaded machine. The HAL/CU stale thresholds are the
    shipped ones: the safe state must come with what users run."""
    ports = MachinePorts(free_port(), free_port(), free_port())
    shipped = tomllib.loads((REPO / "config" / "config.toml").read_text())  # the stale thresholds users run
    cfg = make_config(dest, ports.grpc, mqtt=mqtt, hal_stale_reads=int(shipped["hal"]["stale_reads"]),
                      cu_hal_stale_cycles=int(shipped["cu"]["hal_stale_cycles"]))
    path = cfg / "config.toml"
    text = path.read_text()
    subs = {r"(?m)^port = 1883$": f"port = {ports.mqtt}", r"(?ms)(^\[hmi\]\n(?:(?!^\[).)*?)^port = \d+$": rf"\g<1>port = {ports.hmi}",
            r"(?m)^max_restarts = \d+$": f"max_restarts = {max_restarts}",
            r"(?m)^initial_backoff_ms = \d+$": "initial_backoff_ms = 50",
            r"(?m)^max_backoff_s = \d+$": "max_backoff_s = 1", r"(?m)^stable_run_s = \d+$": "stable_run_s = 1",
            # generous readiness and liveness limits: the 2-core CI box is busy, a slow start is not a fault here
            r"(?m)^hal_ready_timeout_s = [\d.]+$": "hal_ready_timeout_s = 30.0",
            r"(?m)^watchdog_timeout_s = [\d.]+$": "watchdog_timeout_s = 10.0"}
    for pattern, new in subs.items():
        text, n = re.subn(pattern, new, text)
        assert n <= 1, pattern
    path.write_text(text)
    (cfg / "recipes" / f"{LOOP_RECIPE}.toml").write_text(LOOP_RECIPE_TOML)
    return cfg, ports


class FaultMachine:
    """`evo up` of the default machine, a gRPC channel to it, and the bookkeeping of what it ran."""

    def __init__(self, tmp: Path, prefix: str, *, mqtt: bool = True, config: Path | None = None,
                 ports: MachinePorts | None = None, run_dir: Path | None = None) -> None:
        if config is None:
            config, ports = fault_config(tmp / "config", mqtt=mqtt)
        assert ports is not None
        self.ports = ports
        self.up = EvoUp(tmp, prefix, None)
        self.up.config_dir = config
        if run_dir is not None:  # another instance's run dir (the next `evo up` after a killed one)
            self.up.run_dir = run_dir
            self.up.env["EVO_RUN_DIR"] = str(run_dir)
        self.prefix = prefix
        self.seen_pids: set[int] = set()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{ports.grpc}", options=CHANNEL_OPTIONS)
        self.stubs = Stubs(self.channel)

    @property
    def run_dir(self) -> Path:
        return self.up.run_dir

    def start(self, timeout: float = 120.0) -> "FaultMachine":
        self.up.start()
        self.up.wait_api(timeout)
        self.up.wait_all_running(timeout)
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes"):
            wait_serving(self.channel, svc, timeout=timeout)
        self.remember_pids()
        return self

    def pids(self) -> dict[str, int]:
        return {n: m["pid"] for n, m in self.up.status().items() if m["state"] != "disabled"}

    def remember_pids(self) -> dict[str, int]:
        p = self.pids()
        self.seen_pids |= {x for x in p.values() if x}
        return p

    def status(self, timeout: float = 5.0) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), timeout=timeout)

    def wait_status(self, pred: Callable[[machine_pb2.MachineStatus], bool], timeout: float, what: str) -> machine_pb2.MachineStatus:
        def ok() -> machine_pb2.MachineStatus | None:
            s = self.status()
            return s if pred(s) else None
        return wait_for(ok, timeout, 0.01, what)

    def reset(self, timeout: float = 30.0) -> None:
        """Operator reset until the machine is SAFE again (the inputs are healthy)."""
        def ok() -> bool:
            self.stubs.machine.ResetFaults(machine_pb2.AxisRequest(axis=0), timeout=5)
            return self.status().safety_state == types_pb2.SAFETY_STATE_SAFE
        wait_for(ok, timeout, 0.1, "SAFE after an operator reset")

    def down_and_check_nothing_left(self) -> None:
        """`evo down`: exit 0, every process this instance ever ran gone, no segment of its prefix."""
        self.channel.close()
        r = self.up.down(timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert self.up.proc is not None and self.up.proc.returncode == 0, self.up.output()[-3000:]
        wait_for(lambda: not [p for p in self.seen_pids if alive(p)], 15, 0.05,
                 f"every process of the instance gone ({[p for p in self.seen_pids if alive(p)]})")
        left = instance_processes(self.prefix)
        assert not left, f"processes of the instance left after evo down: {describe(left)}"
        assert shm_entries(self.prefix) == []

    def teardown(self) -> None:
        """Whatever happened: nothing of this instance is left (and leftovers are an error)."""
        self.channel.close()
        self.up.stop()
        left = instance_processes(self.prefix)
        what = describe(left)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        remove_shm(self.prefix)
        assert not left, f"processes left behind: {what}"


def describe(pids: list[int]) -> list[str]:
    """`pid: cmdline (parent pid)` of each, for an assertion message."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid}: {' '.join(p.cmdline())[:120]} (ppid {p.ppid()})")
        except psutil.NoSuchProcess:
            out.append(f"{pid}: gone")
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Load:
    """The load of a kill storm: a recipe loop (reloaded and restarted whenever it ended or failed) and an
    operator client (status, I/O, outputs, a second axis moving) — every answer kept as an Outcome.
    `resets` may be cleared to hold the operator resets (so that a test can see the safe state first)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: list[Outcome] = []
        self.recipe_starts = 0
        self.resets = threading.Event()
        self.resets.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._guard, args=(f,), daemon=True, name=f.__name__)
                         for f in (self._operator, self._recipe_loop)]
        self.crashed: list[str] = []

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CALL_DEADLINE_S + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not end"
        assert not self.crashed, self.crashed

    def _guard(self, fn: Callable[[Stubs], None]) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=CHANNEL_OPTIONS)
        try:
            fn(Stubs(channel))
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.crashed.append(f"{fn.__name__}: {e!r}")
        finally:
            channel.close()

    def _keep(self, o: Outcome) -> None:
        with self._lock:
            self.outcomes.append(o)

    def _operator(self, s: Stubs) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            y = 5.0 if i % 2 else 15.0
            for name, fn, req in (
                ("GetStatus", s.machine.GetStatus, machine_pb2.GetStatusRequest()),
                ("GetIo", s.io.GetIo, io_pb2.GetIoRequest()),
                ("SetDigitalOutput", s.io.SetDigitalOutput, io_pb2.SetDigitalOutputRequest(pin=11, value=bool(i % 2))),
                ("SetAnalogOutput", s.io.SetAnalogOutput, io_pb2.SetAnalogOutputRequest(pin=0, value=float(i % 100))),
                ("EnableAxis", s.machine.EnableAxis, machine_pb2.AxisRequest(axis=2)),
                ("MoveTo", s.machine.MoveTo, machine_pb2.MoveToRequest(axis=2, position=y, velocity=20.0)),
                ("GetRecipeStatus", s.recipes.GetRecipeStatus, recipes_pb2.GetRecipeStatusRequest()),
            ):
                if self._stop.is_set():
                    return
                self._keep(call(fn, req, name)[0])
            self._stop.wait(0.02)

    def _recipe_loop(self, s: Stubs) -> None:
        idle = {recipes_pb2.RecipeStatus.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_name[n].number
                for n in ("RE_STATE_IDLE", "RE_STATE_LOADED", "RE_STATE_COMPLETED", "RE_STATE_ABORTED", "RE_STATE_ERROR")}
        while not self._stop.wait(0.1):
            o, st = call(s.recipes.GetRecipeStatus, recipes_pb2.GetRecipeStatusRequest(), "GetRecipeStatus")
            self._keep(o)
            if st is None or st.state not in idle:
                continue
            o, ms = call(s.machine.GetStatus, machine_pb2.GetStatusRequest(), "GetStatus")
            self._keep(o)
            if ms is None:
                continue
            failed = st.state in idle - {st.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_name["RE_STATE_IDLE"].number,
                                          st.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_name["RE_STATE_LOADED"].number}
            if ms.safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP or ms.machine_error_flags or failed:
                if not self.resets.is_set():
                    continue
                self._keep(call(s.machine.ResetFaults, machine_pb2.AxisRequest(axis=0), "ResetFaults")[0])
            o, _ = call(s.recipes.LoadRecipe, recipes_pb2.LoadRecipeRequest(name=LOOP_RECIPE), "LoadRecipe")
            self._keep(o)
            if o.code == "OK":
                o, _ = call(s.recipes.StartRecipe, recipes_pb2.StartRecipeRequest(), "StartRecipe")
                self._keep(o)
                self.recipe_starts += o.code == "OK"

    def unclear(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if not o.clear]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for o in self.outcomes:
                out[o.code] = out.get(o.code, 0) + 1
        return dict(sorted(out.items()))


@dataclass
class KillRecord:
    module: str
    old_pid: int
    new_pid: int
    recovery_s: float  # SIGKILL -> the watchdog reports the module running (ready) again
    safe_state: str = ""  # for HAL / CU: how the safe state showed


@dataclass
class StormReport:
    kills: list[KillRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "kill N (module): what was not as the issue asks"

    def per_module(self) -> dict[str, dict[str, float]]:
        out = {}
        for name in sorted({k.module for k in self.kills}):
            ts = sorted(k.recovery_s for k in self.kills if k.module == name)
            out[name] = {"kills": len(ts), "recovery_p50_s": round(statistics.median(ts), 3),
                         "recovery_max_s": round(ts[-1], 3)}
        return out


HAL_SAW_CU_GONE = "CU absent or stale: drives disabled"
SAFE_STATE_WAIT_S = 20.0  # the SafetyStop shows within a second when it comes; generous for a loaded box


def kill_and_recover(m: FaultMachine, load: Load | None, victim: str, timeout: float = 60.0) -> KillRecord:
    """SIGKILL one module under load and prove the issue's points for it: it comes back (a new pid, one
    more restart), no other module's pid or restart count changed, and when HAL or CU died the safe
    state came (SafetyStop on the CU — for a killed CU, its successor's latched one)."""
    before = m.up.status()
    old = before[victim]["pid"]
    assert old and before[victim]["state"] == "running", before[victim]
    hal_saw = m.up.output().count(HAL_SAW_CU_GONE)
    if load is not None:
        load.resets.clear()  # no operator reset until the safe state was seen
    try:
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        def back() -> dict[str, Any] | None:
            mod = m.up.status()[victim]
            return mod if mod["state"] == "running" and mod["restarts"] > before[victim]["restarts"] else None
        st = wait_for(back, timeout, 0.01, f"{victim} running again after SIGKILL")
        recovery = time.monotonic() - t0
        assert st["pid"] != old
        m.seen_pids.add(st["pid"])
        after = m.up.status()
        for name, mod in before.items():
            if name != victim and mod["state"] != "disabled":
                assert (after[name]["pid"], after[name]["restarts"]) == (mod["pid"], mod["restarts"]), \
                    f"{name} changed when {victim} was killed: {mod} -> {after[name]}"
        safe = ""
        if victim in ("hal", "cu"):
            s = m.wait_status(lambda s: s.cu_ok and s.safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP,
                              SAFE_STATE_WAIT_S, f"SafetyStop after {victim} was killed")
            safe = f"SafetyStop ({s.message})"
            # A CU back (from its preloaded spare) before the HAL's stale threshold ran out leaves the HAL
            # nothing to do: the new CU's latched SafetyStop is the safe state then. Recorded, not required.
            if victim == "cu" and m.up.output().count(HAL_SAW_CU_GONE) > hal_saw:
                safe += "; HAL: drives disabled"
        return KillRecord(victim, old, st["pid"], recovery, safe)
    finally:
        if load is not None:
            load.resets.set()


def write_soak_results(section: str, doc: dict[str, Any]) -> None:
    """Merge one soak test's figures into benchmarks/results/fault_soak.json."""
    try:
        data = json.loads(SOAK_RESULTS.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    data[section] = {**doc, "finished_unix": round(time.time(), 1), "host": os.uname().nodename,
                     "cpus": os.cpu_count()}
    SOAK_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    SOAK_RESULTS.write_text(json.dumps(data, indent=1) + "\n")
