"""Issue 15, the compiled HAL cycle (hal/fused.py, kernels.hal_step) against the numpy reference cycle.

Two real HalCycles (own segments each) stepped in lock step by the same CU frames and commands; every
payload they publish compared after every cycle, and the commit decisions (heartbeats) too.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest

from common.config import IoType, load_config
from common.consts import BANK_WORDS, MAX_AO
from common.shm.commands import HalCommand
from common.shm.inbound import CommandOutbox, Inbound, InboundPolicy
from common.shm.p2p import TypedP2pReader, TypedP2pWriter, shm_path
from common.shm.segments import HAL_IO, SEGMENTS
from hal import kernels
from hal.cycle import HalCycle
from hal.drivers.sim import SimDriver
from hal.synthetic_config import write_config
from tests.helpers import REPO, remove_shm, unique_prefix

MS = 1_000_000
TOL = 1e-12
FLOAT_AXIS_FIELDS = ("position", "velocity", "torque_estimate")
EXACT_IO_FIELDS = ("di_bank", "do_bank", "axis_count", "driver_state", "hal_state", "cu_connected",
                   "drive_error_code", "hal_message")


class Side:
    """One HalCycle on its own prefix and run directory, with a CU writer (cu_hal) and an RPC command
    writer (rpc_hal + the outbox whose acks come back on hal_rpc), as the CU and the gRPC bridge are."""

    def __init__(self, cfg, engine: str, tmp, monkeypatch, python_driver: bool = False) -> None:
        self.prefix = unique_prefix("fz")
        monkeypatch.setenv("EVO_SHM_PREFIX", self.prefix)
        monkeypatch.setenv("EVO_RUN_DIR", str(tmp / self.prefix))
        monkeypatch.setenv("EVO_HAL_ENGINE", engine)
        driver = None
        if python_driver:  # a driver whose cycle is Python and that takes set-points (like EtherCAT's)
            driver = SimDriver(cfg, cfg.system.hal.driver_args, engine="numpy")
            driver.uses_targets = True
        self.hal = HalCycle(cfg, driver=driver)
        s = SEGMENTS["cu_hal"]
        self.cu = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
        r = SEGMENTS["rpc_hal"]
        self.rpc = TypedP2pWriter.create(r.name(), r.writer, r.reader, r.dtype)
        self.acks_in = Inbound.for_key("hal_rpc", InboundPolicy(stale_reads=10**6, retry_s=0.0))
        self.outbox = CommandOutbox(self.rpc.local["ring"], self.acks_in)
        self.acks: list[tuple[int, int, str]] = []
        # what readers see: each of the HAL's four segments, read as its reader would (not exclusive)
        self.seen = {name: TypedP2pReader.attach(w.name, w.dest, w.dtype, exclusive=False)
                     for name, w in (("w_cu", self.hal.w_cu), ("w_mqt", self.hal.w_mqt), ("w_rpc", self.hal.w_rpc),
                                     ("w_re", self.hal.w_re))}

    def check_published(self, k: int) -> None:
        """Every segment holds exactly its writer's `local` after a cycle (partial and heartbeat-only
        commits included): nothing a reader sees is stale or half-published."""
        for name, r in self.seen.items():
            w = getattr(self.hal, name)
            assert r.copy_in() == w.heartbeat & 0x7FFFFFFF, f"cycle {k}: {name} seq"
            assert r.local.tobytes() == w.local.tobytes(), f"cycle {k}: {name} payload differs from local"

    def step(self, now: int, frame: dict) -> None:
        ax = self.cu.local["axes"]
        ax["enable"][:] = frame["enable"]
        ax["brake_release"][:] = frame["brake"]
        ax["calculated_torque"][:] = frame["torque"]
        ax["torque_offset"][:] = 0.5
        ax["target_position"][:] = frame["torque"] * 2.0
        self.cu.local["do_bank"][:] = frame["bank"]
        self.cu.local["ao_values"][:] = frame["ao"]
        if frame["cu"]:
            self.cu.commit()
        for rid, code, pin, value in frame["commands"]:
            self.outbox.submit(code, rid, pin=pin, args=(value,))
        self.rpc.commit()
        self.hal.step(now, 0.001)
        self.hal.housekeeping(now)
        self._take_acks(now)
        if frame["between"]:  # submitted after the cycle: the bridge's post runs HalCycle.between
            for rid, code, pin, value in frame["between"]:
                self.outbox.submit(code, rid, pin=pin, args=(value,))
            self.rpc.commit()
            self.hal.between(now + MS // 2)
            self._take_acks(now + MS // 2)

    def _take_acks(self, now: int) -> None:
        self.acks_in.poll(now * 1e-9)
        self.acks += [(a.request_id, int(a.result), a.message) for a in self.outbox.poll_acks()]

    def close(self) -> None:
        for r in self.seen.values():
            r.close()
        self.acks_in.close()
        self.hal.close(save=False)
        self.cu.close()
        self.rpc.close()
        remove_shm(self.prefix)


def _frames(axes: int, n: int, rng: np.random.Generator, do_pins: list[int]) -> list[dict]:
    """Drives enabled at 20 ms, brakes released at 40 ms, sinusoidal torques; the CU toggles DO
    bits and AO values, goes stale for a while (its stale_reads) and comes back; SET_DO / SET_AO /
    PULSE_DO commands, valid and refused, now and then."""
    frames = []
    phase = np.linspace(0.0, 2 * math.pi, axes, endpoint=False)
    ao = np.zeros(MAX_AO)
    for k in range(n):
        torque = np.zeros(64)
        torque[:axes] = 40.0 * np.sin(k * 0.01 + phase)
        enable = np.zeros(64, np.uint8)
        enable[:axes] = k >= 20
        brake = np.zeros(64, np.uint8)
        brake[:axes] = k >= 40
        bank = np.zeros(BANK_WORDS, np.uint64)
        if k % 3 == 0:
            bank = rng.integers(0, 2**63, BANK_WORDS, dtype=np.int64).astype(np.uint64)
        if k % 17 == 0:
            ao = rng.uniform(-1.0, 11.0, MAX_AO)
        commands = []
        if k % 97 == 5:
            pin = do_pins[k % len(do_pins)]
            commands = [(k, int(HalCommand.SET_DO), pin, 1.0), (k + 100000, int(HalCommand.SET_AO), 0, 2.5),
                        (k + 200000, int(HalCommand.PULSE_DO), pin, 7.0), (k + 300000, int(HalCommand.SET_DO), 5000, 1.0)]
        between = []
        if k % 89 == 44:  # taken between cycles (HalCycle.between), also while the CU is stale
            pin = do_pins[(k // 89) % len(do_pins)]
            between = [(k + 400000, int(HalCommand.SET_DO), pin, float(k // 89 % 2)),
                       (k + 500000, int(HalCommand.SET_AO), 0, 1.0 + k % 7), (k + 600000, int(HalCommand.PULSE_DO), pin, 3.0),
                       (k + 700000, int(HalCommand.SET_AO), 0, 99.0)]
        frames.append({"enable": enable, "brake": brake, "torque": torque, "bank": bank, "ao": ao,
                       "cu": not (600 <= k < 760), "commands": commands, "between": between})
    return frames


def _compare(a: Side, b: Side, k: int) -> None:
    ia, ib = a.hal.w_mqt.local["io"], b.hal.w_mqt.local["io"]
    for f in FLOAT_AXIS_FIELDS:
        np.testing.assert_allclose(ia["axes"][f], ib["axes"][f], rtol=0, atol=TOL, err_msg=f"cycle {k}: axes.{f}")
    for f in ("drive_ready", "drive_fault", "referenced", "active"):
        assert np.array_equal(ia["axes"][f], ib["axes"][f]), f"cycle {k}: axes.{f}"
    for f in ("ai_values", "ao_values"):
        np.testing.assert_allclose(ia[f], ib[f], rtol=0, atol=TOL, err_msg=f"cycle {k}: {f}")
    for f in EXACT_IO_FIELDS:
        assert np.array_equal(ia[f], ib[f]), f"cycle {k}: {f}"
    for f in ("enable", "brake_release", "torque", "target_position", "target_velocity"):  # what drivers get
        np.testing.assert_allclose(getattr(a.hal.dio, f), getattr(b.hal.dio, f), rtol=0, atol=TOL,
                                   err_msg=f"cycle {k}: DriverIO.{f}")
    ca, cb = a.hal.w_cu.local, b.hal.w_cu.local
    for f in FLOAT_AXIS_FIELDS:
        np.testing.assert_allclose(ca["axes"][f], cb["axes"][f], rtol=0, atol=TOL, err_msg=f"cycle {k}: hal_cu {f}")
    np.testing.assert_allclose(ca["ai_values"], cb["ai_values"], rtol=0, atol=TOL, err_msg=f"cycle {k}: hal_cu ai")
    assert np.array_equal(ca["di_bank"], cb["di_bank"]) and ca["axis_count"] == cb["axis_count"], f"cycle {k}"
    # what hal_cu carries is what hal_mqt shows (the kernel's word copies against the field layout)
    assert np.array_equal(ca["di_bank"], ia["di_bank"]) and np.array_equal(ca["ai_values"], ia["ai_values"])
    assert np.array_equal(ca["axes"]["position"], ia["axes"]["position"])
    for name in ("w_cu", "w_mqt", "w_rpc", "w_re"):  # the same commits: the same publish decisions
        assert getattr(a.hal, name).heartbeat == getattr(b.hal, name).heartbeat, f"cycle {k}: {name} commits"
    aa, ab = a.hal.w_rpc.local["acks"], b.hal.w_rpc.local["acks"]  # epochs are per writer instance
    assert aa["consumed"] == ab["consumed"] and aa["count"] == ab["count"], f"cycle {k}: acks"
    for f in ("request_id", "seq", "result", "detail", "message"):  # done_ns: wall clock
        assert np.array_equal(aa["slots"][f], ab["slots"][f]), f"cycle {k}: ack {f}"


def _lockstep(cfg, tmp, monkeypatch, python_driver: bool, cycles: int) -> tuple[Side, Side]:
    axes = max(cfg.axis_ids)
    do_pins = [p.pin for p in cfg.io.points_of(IoType.DO) if p.role is None] or [0]
    frames = _frames(axes, cycles, np.random.default_rng(11), do_pins)
    a = Side(cfg, "compiled", tmp, monkeypatch, python_driver)
    try:
        b = Side(cfg, "numpy", tmp, monkeypatch, python_driver)
    except BaseException:
        a.close()
        raise
    assert a.hal.fused is not None and a.hal.fused.sim_in_kernel is (not python_driver)
    assert b.hal.fused is None and b.hal.proc.engine == "numpy"
    assert a.hal._targets is b.hal._targets is python_driver
    now = 10**12
    try:
        for k, frame in enumerate(frames):
            now += MS
            a.step(now, frame)
            b.step(now, frame)
            _compare(a, b, k)
            a.check_published(k)
            b.check_published(k)
    except BaseException:
        a.close()
        b.close()
        raise
    return a, b


@pytest.fixture(scope="module")
def machine64(tmp_path_factory):
    d = tmp_path_factory.mktemp("fused64")
    return load_config(write_config(d / "cfg", axes=64, points=1024, brakes=tuple(range(3, 65, 8))))


@pytest.mark.parametrize("python_driver", [False, True], ids=["sim-in-kernel", "driver-between-two-calls"])
def test_compiled_cycle_publishes_what_the_reference_publishes(machine64, tmp_path, monkeypatch, python_driver):
    """Issue 15 must-exist (numpy reference kept, both engines within 1e-12), for the fused cycle:
    64 axes and 1024 points, drives enabled and moving, brakes released, DO/AO frames from the CU,
    the CU stale and back, RPC commands (accepted and refused, at a cycle and between cycles) — every payload field of hal_mqt and
    hal_cu equal (floats within 1e-12) after every cycle, the same acks, and the same commits of all
    four segments (the change test and the beats decide alike). Also with a Python driver cycle
    between the kernel's two phases (how EtherCAT / CANopen run)."""
    a, b = _lockstep(machine64, tmp_path, monkeypatch, python_driver, 1000)
    try:
        assert np.count_nonzero(a.hal.dio.velocity[:64]) > 32, "the axes should move"
        assert np.count_nonzero(a.hal.dio.target_position[:64]) == (64 if python_driver else 0)
        assert a.hal.cu_connected and a.hal.w_rpc.heartbeat > 50
        assert len(a.acks) == len(b.acks) >= 30 and a.acks == b.acks
        assert a.hal.between_passes == b.hal.between_passes >= 10
        results = {r for _i, r, _m in a.acks}
        assert 0 in results and len(results) >= 2, "accepted and refused commands both exercised"
        assert a.hal.w_mqt.heartbeat < 1000, "unchanged status segments are not committed every cycle"
    finally:
        a.close()
        b.close()


def test_default_machine_lockstep(tmp_path, monkeypatch):
    """The same on the default machine (config/): 4 axes, its io.toml and brakes."""
    cfg = load_config(REPO / "config")
    a, b = _lockstep(cfg, tmp_path, monkeypatch, False, 900)
    try:
        assert np.count_nonzero(a.hal.dio.velocity[:4]) >= 1
    finally:
        a.close()
        b.close()


def test_fused_offsets_follow_the_segment_layouts():
    """The kernel's byte offsets come from the segment dtypes (a layout change moves them with it)."""
    from hal.fused import _offsets

    cu, out = SEGMENTS["cu_hal"].dtype, SEGMENTS["hal_cu"].dtype
    o = _offsets(cu, out, True)
    assert o[kernels.O_CU_DO] == cu.fields["do_bank"][1] == 2560
    assert o[kernels.O_AI] == HAL_IO.fields["ai_values"][1]
    assert o[kernels.O_OUT_AI] == out.fields["ai_values"][1] == 2176
    assert o[kernels.O_N_IO] == HAL_IO.itemsize and o[kernels.O_TARGETS] == 1


CU_SCRIPT = r"""
import sys
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import SEGMENTS
s = SEGMENTS["cu_hal"]
w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
w.local["axes"]["enable"][:4] = 1
w.local["axes"]["brake_release"][:4] = 1
w.local["axes"]["calculated_torque"][:4] = 5.0
print("ready", flush=True)
for line in sys.stdin:
    w.commit()
    print("ok", flush=True)
"""


@pytest.mark.parametrize("phase", range(5))
def test_a_killed_cu_is_seen_within_the_probe_bound_and_outputs_go_safe(tmp_path, monkeypatch, phase):
    """Issue 15 (safety kept): the compiled HAL sees a CU process that died (SIGKILL, its segment left
    behind with a heartbeat that looks fine) within WRITER_PROBE_EVERY cycles — by the writer-lock probe
    on the kept descriptor, run in housekeeping() after each cycle's commits, long before stale_reads —
    and the cycle after the probe found it disables the drives, zeroes torque and engages the brakes
    (at most WRITER_PROBE_EVERY + 1 cycles after the kill, whatever cycle the kill lands in)."""
    import signal

    from common.stale import stale_threshold
    from hal.cycle import WRITER_PROBE_EVERY

    with _hal_beside_a_cu(tmp_path, monkeypatch, "compiled") as (hal, cu, cycle):
        hal_cfg = hal.config.system.hal  # the shortest threshold the shipped config can resolve to (SCHED_FIFO)
        assert stale_threshold(hal_cfg.stale_reads, hal_cfg.cycle_time_us, True).cycles > 5 * WRITER_PROBE_EVERY
        for _ in range(3 * WRITER_PROBE_EVERY + phase):  # the kill lands at each point of the probe rotation
            cycle(True)
        assert hal.cu_connected and hal.dio.enable[:4].all() and (hal.dio.torque[:4] == 5.0).all()
        cu.send_signal(signal.SIGKILL)
        cu.wait(10)
        steps = 0
        while hal.cu_connected and steps < 100:
            cycle(False)
            steps += 1
        assert steps <= WRITER_PROBE_EVERY + 1, f"the dead CU was seen after {steps} cycles"
        assert "writer process gone" in hal.cu_in.reason
        _assert_outputs_safe(hal)


@contextlib.contextmanager
def _hal_beside_a_cu(tmp_path, monkeypatch, engine: str):  # noqa: ANN202
    """A HalCycle of config/ on `engine` and a real CU writer process (CU_SCRIPT: 4 axes enabled, torque
    5); yields (hal, the CU process, cycle(commit)): one HAL cycle (step, then housekeeping, 1 ms on),
    after a CU commit when `commit`. Everything is removed afterwards."""
    import subprocess
    import sys

    from tests.helpers import module_env

    prefix = unique_prefix("fc")
    monkeypatch.setenv("EVO_SHM_PREFIX", prefix)
    monkeypatch.setenv("EVO_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("EVO_HAL_ENGINE", engine)
    cu = subprocess.Popen([sys.executable, "-c", CU_SCRIPT], cwd=REPO, env=module_env(prefix),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hal = None
    try:
        assert cu.stdout.readline().split() == ["ready"]
        hal = HalCycle(load_config(REPO / "config"))
        now = 10**12

        def cycle(commit: bool) -> None:
            nonlocal now
            if commit:
                cu.stdin.write("c\n")
                cu.stdin.flush()
                assert cu.stdout.readline().split() == ["ok"]
            now += MS
            hal.step(now, 0.001)
            hal.housekeeping(now)

        yield hal, cu, cycle
    finally:
        if cu.poll() is None:
            cu.kill()
            cu.wait(10)
        if hal is not None:
            hal.close(save=False)
        remove_shm(prefix)


def test_the_cycle_kernels_get_their_arrays_in_one_table_the_step_holds(tmp_path, monkeypatch):
    """hal_step and hal_publish take one common/jit_table.py table (numba converts one array argument per
    call instead of twelve): it lists the payloads and mappings the cycle reads and writes in kernels.T_*
    order, and HalCycle's step holds it, so none of them can go while the step can run; hal_step's second
    table lists the polled segments' mappings (kernels.P_*: cu_hal's, zeros for re_hal / rpc_hal, absent)."""
    from common.jit_table import table_arrays

    with _hal_beside_a_cu(tmp_path, monkeypatch, "compiled") as (hal, _cu, cycle):
        for _ in range(3):
            cycle(True)
        f = hal.fused
        assert hal.step == hal._step_polled
        assert len(hal._k_tail) == 2 and hal._k_tail[0] is f.table and f.publish_tail[0] is f.table
        sources = table_arrays(hal._k_tail[1])
        assert sources[kernels.P_CU] is hal.cu_in.segment and not sources[kernels.P_RPC].any()
        assert not sources[kernels.P_RE].flags.writeable
        arrays = table_arrays(f.table)
        assert len(arrays) == kernels.N_TABLE
        for k, w in ((kernels.T_CU_SEG, hal.w_cu), (kernels.T_MQT_SEG, hal.w_mqt), (kernels.T_RPC_SEG, hal.w_rpc),
                     (kernels.T_RE_SEG, hal.w_re)):
            assert arrays[k] is w.segment
        for k, payload in ((kernels.T_CU, hal.cu_in.local), (kernels.T_HAL, hal.w_mqt.local),
                           (kernels.T_OUT, hal.w_cu.local), (kernels.T_RPC, hal.w_rpc.local),
                           (kernels.T_RE, hal.w_re.local)):
            assert arrays[k].ctypes.data == payload.ctypes.data and arrays[k].nbytes == payload.nbytes
        assert arrays[kernels.T_H] is f.arena and len(arrays[kernels.T_LAYS]) == kernels.N_LAYS
        assert arrays[kernels.T_POLL].ctypes.data == f.polls.ctypes.data == hal.cu_in.state.ctypes.data
        for k, inb in ((kernels.T_RE_IN, hal.re_cmds.inbound), (kernels.T_RPC_IN, hal.rpc_cmds.inbound)):
            assert arrays[k].ctypes.data == inb.local.ctypes.data and arrays[k].nbytes == inb.local.nbytes
        assert hal.w_cu.heartbeat >= 2 and hal.cu_connected  # the kernel committed hal_cu through the table


def _assert_outputs_safe(hal: HalCycle) -> None:
    """Drives disabled, torque 0, brakes engaged, and the status says the CU is not connected."""
    assert not hal.dio.enable.any() and not hal.dio.brake_release.any() and not hal.dio.torque.any()
    assert hal.w_mqt.local["io"]["cu_connected"] == 0


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_a_command_taken_between_cycles_is_acked_with_its_output_in_the_same_commit(tmp_path, monkeypatch, engine):
    """Issue 15, command round trip: a command the bridge posts between two cycles is executed at
    once (HalCycle.between, no cycle stepped) and hal_rpc's commit that carries its ack already shows
    the output it set (read-your-writes: an HMI that sees the ack never sees the old level). A refused
    one is acked alike and changes nothing."""
    cfg = load_config(REPO / "config")
    pin = next(p.pin for p in cfg.io.points_of(IoType.DO) if p.role is None and not p.init)
    side = Side(cfg, engine, tmp_path, monkeypatch)
    try:
        frame = {"enable": np.zeros(64, np.uint8), "brake": np.zeros(64, np.uint8), "torque": np.zeros(64),
                 "bank": np.zeros(BANK_WORDS, np.uint64), "ao": np.zeros(MAX_AO), "cu": True, "commands": [],
                 "between": []}
        now = 10**12
        for _ in range(5):
            now += MS
            side.step(now, frame)
        assert side.hal.cu_connected
        seen = side.seen["w_rpc"]
        seen.copy_in()
        word, bit = pin >> 6, np.uint64(1) << np.uint64(pin & 63)
        before = seen.local["io"]["do_bank"][word] & bit
        cycles, acks_before = side.hal.cycles, int(seen.local["acks"]["count"])

        side.outbox.submit(int(HalCommand.SET_DO), 7, pin=pin, args=(1.0,))
        side.outbox.submit(int(HalCommand.SET_DO), 8, pin=4999, args=(1.0,))  # refused: out of range
        side.rpc.commit()
        side.hal.between(now + MS // 2)

        assert side.hal.cycles == cycles, "no cycle was stepped for the command"
        seen.copy_in()
        acks = seen.local["acks"]
        assert int(acks["count"]) == acks_before + 2, "both acks are in hal_rpc's commit"
        assert seen.local["io"]["do_bank"][word] & bit != before, f"do {pin} set in the commit with its ack"
        side._take_acks(now + MS // 2)
        assert [(rid, res) for rid, res, _m in side.acks[-2:]] == [(7, 0), (8, 1)]  # OK, INVALID_ARGUMENT
        # the next cycle exchanges it and keeps it
        now += MS
        side.step(now, frame)
        seen.copy_in()
        assert seen.local["io"]["do_bank"][word] & bit != before
        side.check_published(0)
    finally:
        side.close()


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_a_cu_that_stops_committing_is_stale_after_exactly_stale_reads_cycles(tmp_path, monkeypatch, engine):
    """Issue 15 (safety kept, the cu_hal copy made by the kernel): a CU that is alive (its writer lock
    held) but stops committing — frozen, hung — is STALE after exactly stale_reads unchanged cycles with
    either engine, and that cycle's outputs are safe. The compiled engine polls cu_hal in its kernel while
    the poll needs nothing else (common/shm/inbound_jit.py): Inbound.poll() is then not called at all on a
    live CU, and the stale count is kept the same (the last unchanged poll, the one that makes it STALE,
    is Python's)."""
    with _hal_beside_a_cu(tmp_path, monkeypatch, engine) as (hal, _cu, cycle):
        polls = 0
        real_poll = hal.cu_in.poll

        def counted(now: float):  # noqa: ANN202
            nonlocal polls
            polls += 1
            return real_poll(now)

        hal.cu_in.poll = counted
        for _ in range(10):
            cycle(True)
        assert hal.cu_connected and hal.dio.enable[:4].all() and (hal.dio.torque[:4] == 5.0).all()
        polls = 0
        for _ in range(20):
            cycle(True)
        assert polls == (0 if engine == "compiled" else 20), polls
        stale = hal.cu_in._stale_reads
        assert 10 < stale < 1000
        steps = 0
        while hal.cu_connected and steps < 2 * stale:
            cycle(False)
            steps += 1
        assert steps == stale, f"stale after {steps} unchanged cycles, the threshold is {stale}"
        assert f"unchanged for {stale} reads" in hal.cu_in.reason, hal.cu_in.reason
        _assert_outputs_safe(hal)
        for _ in range(3):  # it commits again: LIVE once its heartbeat moved, the outputs follow it again
            cycle(True)
        assert hal.cu_connected and hal.dio.enable[:4].all()


def test_the_kernel_polls_every_segment_and_leaves_python_only_the_edges(tmp_path, monkeypatch):
    """Issue 15, the HAL's polls in its kernel: with the CU and both command writers alive and beating, every
    cycle is the one kernel call (no Python poll); a command is taken by Python in the cycle its commit
    arrives (the kernel stops for it: CMD_RPC) and acked there with its output; a killed CU is Python's
    (the loss, the safe outputs); its restarted successor's new segment is mapped, the kernel's table of
    mappings made again, and the kernel polls it — the outputs follow the new CU."""
    import subprocess
    import sys

    from common.jit_table import table_arrays
    from tests.helpers import module_env

    with _hal_beside_a_cu(tmp_path, monkeypatch, "compiled") as (hal, cu, cycle):
        writers = {}
        for key in ("re_hal", "rpc_hal"):
            s = SEGMENTS[key]
            writers[key] = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
            writers[key].commit()
        acks_in = Inbound.for_key("hal_rpc", InboundPolicy(stale_reads=10**6, retry_s=0.0))
        outbox = CommandOutbox(writers["rpc_hal"].local["ring"], acks_in)
        glue: list[int] = []
        real_glue = hal._step_glue

        def counted(now_ns, dt_s, stopped=kernels.NEED_PYTHON):  # noqa: ANN001, ANN202
            glue.append(stopped)
            return real_glue(now_ns, dt_s, stopped)

        hal._step_glue = counted
        py_polls = []
        for inb in (hal.cu_in, hal.re_cmds.inbound, hal.rpc_cmds.inbound):
            real = inb.poll
            inb.poll = lambda now, _real=real, _name=inb.name: (py_polls.append(_name), _real(now))[1]
        n = 0

        def beat() -> None:  # the bridges commit every <= 10 ms, and follow hal_rpc
            nonlocal n
            n += 1
            acks_in.poll(n * 1e-3)
            if n % 5 == 0:
                for w in writers.values():
                    w.commit()

        try:
            for _ in range(12):  # attach, LIVE (Python's edges), then the kernel's
                beat()
                cycle(True)
            assert hal.step == hal._step_polled and hal.re_cmds.status.value == "live" == hal.rpc_cmds.status.value
            glue.clear()
            py_polls.clear()
            for _ in range(30):
                beat()
                cycle(True)
            assert glue == [] and py_polls == [], (glue, py_polls)
            pin = next(p.pin for p in hal.config.io.points_of(IoType.DO) if p.role is None and not p.init)
            word, bit = pin >> 6, np.uint64(1) << np.uint64(pin & 63)
            outbox.submit(int(HalCommand.SET_DO), 41, pin=pin, args=(1.0,))
            writers["rpc_hal"].commit()
            cycle(True)
            assert glue == [kernels.CMD_RPC] and py_polls == [], (glue, py_polls)
            beat()
            assert [(a.request_id, int(a.result)) for a in outbox.poll_acks()] == [(41, 0)]
            assert acks_in.local["io"]["do_bank"][word] & bit, "the ack's commit shows the output it set"
            glue.clear()
            cycle(True)
            assert glue == [] and hal.step == hal._step_polled
            # the CU dies: Python's (the loss is an edge); outputs safe
            cu.kill()
            cu.wait(10)
            for _ in range(WRITER_PROBE_EVERY_BOUND):
                beat()
                cycle(False)
                if not hal.cu_connected:
                    break
            assert not hal.cu_connected and hal.step == hal._step_glue
            _assert_outputs_safe(hal)
            old = hal.cu_in.segment
            os.unlink(shm_path(SEGMENTS["cu_hal"].name()))  # cleaned up: its successor makes a new segment
            cu2 = subprocess.Popen([sys.executable, "-c", CU_SCRIPT], cwd=REPO, env=module_env(os.environ["EVO_SHM_PREFIX"]),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert cu2.stdout.readline().split() == ["ready"]
                for _ in range(400):  # re-attached within the retry period (0.1 s), then LIVE once it moves
                    cu2.stdin.write("c\n")
                    cu2.stdin.flush()
                    assert cu2.stdout.readline().split() == ["ok"]
                    beat()
                    cycle(False)
                    if hal.cu_connected and hal.step == hal._step_polled:
                        break
                assert hal.cu_connected and hal.cu_in.segment is not old and hal.cu_in.reattaches == 1
                assert table_arrays(hal._k_tail[1])[kernels.P_CU] is hal.cu_in.segment
                glue.clear()
                py_polls.clear()
                for _ in range(5):
                    cu2.stdin.write("c\n")
                    cu2.stdin.flush()
                    assert cu2.stdout.readline().split() == ["ok"]
                    cycle(False)
                assert glue == [] and py_polls == [], (glue, py_polls)
                assert hal.dio.enable[:4].all() and (hal.dio.torque[:4] == 5.0).all()
            finally:
                cu2.kill()
                cu2.wait(10)
        finally:
            acks_in.close()
            for w in writers.values():
                w.close()


WRITER_PROBE_EVERY_BOUND = 10  # cycles a dead writer is seen within (WRITER_PROBE_EVERY + 1, with margin)
