"""CycleRunner: the CU's 1 kHz loop over the segments — attach hal_cu, create cu_hal / cu_mqt /
cu_re / cu_rpc, attach re_cu / rpc_cu when they appear, and run ControlCore every cycle.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import numpy as np

from common.config import ConfigError, EvoConfig, format_errors, load_config
from common.notify import WatchdogPinger, notify_ready, notify_stopping
from common.rt import CycleTimer, StopFlag, freeze_gc, setup_realtime
from common.shm.commands import CuCommand, ResultCode
from common.shm.p2p import (
    HeartbeatStale,
    ReadContention,
    SegmentNotFound,
    ShmError,
    TypedP2pReader,
    TypedP2pWriter,
    segment_name,
    shm_path,
)
from common.shm.rings import Command
from common.shm.segments import CU_TO_HAL, CU_TO_MQT, CU_TO_RE, CU_TO_RPC, HAL_TO_CU, RE_TO_CU, RPC_TO_CU
from common.states import CommandSource, MachineError, MachineState, SafetyState

from . import commands
from .core import ControlCore
from .diagnostics import StatusWriter, fill_pid
from .latch import FILE_NAME as LATCH_FILE, SafetyLatch
from .params import AxisParams

log = logging.getLogger(__name__)

SLOW_WRITER_STALE_S = 0.5  # RE / RPC heartbeat every <= 10 ms; stale after 0.5 s
PID_EVERY = 10  # PID diagnostics at 100 Hz (status and acks every cycle)
RT_SPIN_US = 150
WRITER_PROBE_EVERY = 5  # cycles between flock probes of the HAL's writer lock (a death seen within 5 ms)
OVERRUN_FLAG_PER_S = 10  # skipped ticks per second that make CYCLE_OVERRUN an operator-visible error


class ReloadJob:
    """Validates a configuration directory and builds its ControlCore off the cycle thread
    (load_config takes ~10 ms); the cycle only swaps it in."""

    def __init__(self, path: str, dt: float) -> None:
        self.path = path
        self.dt = dt
        self.result: EvoConfig | None = None
        self.core: ControlCore | None = None
        self.error = ""
        self.done = threading.Event()
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)  # the cycle thread gets the GIL back quickly
        threading.Thread(target=self._run, name="cu-reload", daemon=True).start()

    def _run(self) -> None:
        try:
            cfg = load_config(self.path)
            self.core = ControlCore(cfg, self.dt)
            self.result = cfg
        except ConfigError as e:
            self.error = format_errors(e) if callable(format_errors) else str(e)
        except Exception as e:  # noqa: BLE001 - reported in the ack
            self.error = f"{type(e).__name__}: {e}"
        finally:
            sys.setswitchinterval(self._old_switch)
            self.done.set()


class CycleRunner:
    """Owns the segments and the loop; `run()` returns the exit code."""

    def __init__(self, cfg: EvoConfig) -> None:
        self.cfg = cfg
        self.cu = cfg.system.cu
        self.dt = self.cu.cycle_time_us * 1e-6
        self.stop = StopFlag()
        self.core = ControlCore(cfg, self.dt)
        self.hal: TypedP2pReader | None = None
        self.writers: list[TypedP2pWriter] = []
        self.paths: list[commands.CommandPath] = []
        self.reload: ReloadJob | None = None
        self.rt_active = False
        self.hal_age = 0
        self._last_hal_hb = -1
        self._fb_obj: np.ndarray | None = None
        self._di_logical = np.zeros(16, dtype=np.uint64)
        self._nc_mask = cfg.io_registry.di_nc_mask
        self._hal_advanced = False
        self._overruns_seen = 0
        self._overrun_at = 0.0
        self.latch = SafetyLatch(cfg.run_dir() / LATCH_FILE)

    # --- setup ----------------------------------------------------------------------------------
    def _attach_hal(self) -> bool:
        name = segment_name("hal", "cu")
        deadline = time.monotonic() + self.cu.hal_attach_timeout_s
        while not self.stop.is_set():
            try:
                self.hal = TypedP2pReader.attach(name, "cu", HAL_TO_CU, stale_reads=self.cu.hal_stale_cycles)
                log.info("attached %s", name)
                return True
            except SegmentNotFound:
                pass
            if time.monotonic() > deadline:
                log.error("%s did not appear within %.1f s (hal_attach_timeout_s)", name,
                          self.cu.hal_attach_timeout_s)
                return False
            time.sleep(0.02)
        return False

    def _create_writers(self) -> None:
        mk = lambda dst, dt: TypedP2pWriter.create(segment_name("cu", dst), "cu", dst, dt)  # noqa: E731
        self.w_hal = mk("hal", CU_TO_HAL)
        self.writers.append(self.w_hal)
        self.w_mqt = mk("mqt", CU_TO_MQT)
        self.writers.append(self.w_mqt)
        self.w_re = mk("re", CU_TO_RE)
        self.writers.append(self.w_re)
        self.w_rpc = mk("rpc", CU_TO_RPC)
        self.writers.append(self.w_rpc)
        self.o_do = self.w_hal.local["do_bank"]
        self.status = StatusWriter(self.w_rpc.local["status"])
        self.pid = self.w_rpc.local["pid"]
        self.stats_rpc = self.w_rpc.local["stats"]
        self.stats_mqt = self.w_mqt.local["stats"]
        self.stats_rpc_u8 = _field_bytes(self.w_rpc.local, "stats")
        self.stats_mqt_u8 = _field_bytes(self.w_mqt.local, "stats")
        size = self.w_rpc.local["status"].dtype.itemsize
        u8 = lambda w: w.local.reshape(1).view(np.uint8)[:size]  # noqa: E731  (status is the first field)
        self.status_src, self.status_re, self.status_mqt = u8(self.w_rpc), u8(self.w_re), u8(self.w_mqt)
        stale = max(1, int(SLOW_WRITER_STALE_S / self.dt))
        interval = self.cu.optional_attach_interval_s
        self.paths = [
            commands.CommandPath(segment_name("re", "cu"), RE_TO_CU, CommandSource.RE, self.w_re.local["acks"],
                                 stale, interval),
            commands.CommandPath(segment_name("rpc", "cu"), RPC_TO_CU, CommandSource.RPC,
                                 self.w_rpc.local["acks"], stale, interval),
        ]
        self._bind_core()

    def _bind_core(self) -> None:
        core = self.core
        self._nc_mask = self.cfg.io_registry.di_nc_mask
        self.status.bind(core)
        self.w_hal.local["axis_count"] = core.n
        out = self.w_hal.local["axes"]
        out[:] = np.zeros((), dtype=out.dtype)
        n = core.n  # views sliced once: one copy per field per cycle
        self.o_tpos, self.o_tvel = out["target_position"][:n], out["target_velocity"][:n]
        self.o_torque, self.o_offset = out["calculated_torque"][:n], out["torque_offset"][:n]
        self.o_enable, self.o_brake = out["enable"][:n], out["brake_release"][:n]
        self._brake_bits = [(s, self.cfg.io_registry, role) for s, role in core.p.brake_out]

    # --- loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        self.stop.install()
        self.rt_active = setup_realtime(self.cu.rt_priority, self.cu.cpu)
        if not self._attach_hal():
            return 1 if not self.stop.is_set() else 0
        try:
            self._create_writers()
        except ShmError as e:
            log.error("cannot create CU segments: %s", e)
            self.hal.close()
            return 1
        verdict = self.latch.start()
        if verdict.required:  # before the first cycle: no frame ever shows this CU without its latch
            self.core.restore_latch(verdict.message)
        # Under SCHED_FIFO, busy-wait the last RT_SPIN_US before each deadline: wake p99 ~25 us instead
        # of ~100 us and a warm CPU for the cycle, for ~15 % of one core. Never without RT (it would
        # only steal time from the others).
        timer = CycleTimer(int(self.cu.cycle_time_us * 1000), spin_ns=RT_SPIN_US * 1000 if self.rt_active else 0)
        pinger = WatchdogPinger(0.5)
        freeze_gc()
        first = True
        clean = False
        try:
            while not self.stop.is_set():
                timer.wait()
                self.cycle(time.monotonic())
                timer.done()
                # Every overrun is counted in the published stats. The operator-facing flag means
                # "sustained": more than OVERRUN_FLAG_PER_S skipped ticks in the last second (a rare
                # skipped tick is harmless: the trajectory catches up), re-judged every second.
                now_m = time.monotonic()
                if now_m - self._overrun_at >= 1.0:
                    burst = timer.overruns - self._overruns_seen
                    self._overruns_seen, self._overrun_at = timer.overruns, now_m
                    if burst > OVERRUN_FLAG_PER_S:
                        self.core.m.errors |= MachineError.CYCLE_OVERRUN
                    else:
                        self.core.m.errors &= ~MachineError.CYCLE_OVERRUN
                timer.publish(self.stats_rpc, self.rt_active)
                np.copyto(self.stats_mqt_u8, self.stats_rpc_u8)  # same figures, one byte copy
                pinger.tick()
                if first:
                    first = False
                    notify_ready("control unit running")
                    log.info("first cycle done: %d axes, %s", self.core.n, "SCHED_FIFO" if self.rt_active
                             else "normal scheduling")
            clean = True
        finally:
            notify_stopping()
            self._shutdown()
            if clean:  # only a stop we asked for; an exception out of the loop is an unclean exit
                self.latch.clean_exit()
        log.info("stopped (signal %d)", self.stop.signum)
        return 0

    def cycle(self, now: float) -> None:
        core = self.core
        fb = None
        ok, missing = True, False
        try:
            fb = self.hal.read()
        except HeartbeatStale:
            ok = False
            missing = not os.path.exists(shm_path(self.hal.name))
        except ReadContention:
            fb = self.hal.local  # the last good copy
        if core.cycle % WRITER_PROBE_EVERY == 0 and not self.hal.writer_alive():
            # The HAL process is gone (its flock released), even if a successor has already taken the
            # segment over and continues its heartbeat: a HAL restart is a HAL loss (safety stop).
            ok = False
            missing = not os.path.exists(shm_path(self.hal.name))
            self._hal_advanced = False  # the new HAL counts once its heartbeat moves
        hb = self.hal.heartbeat
        if hb != self._last_hal_hb:
            if self._last_hal_hb >= 0:
                self._hal_advanced = True
            self._last_hal_hb = hb
            self.hal_age = 0
        else:
            self.hal_age += 1
        ok = ok and self._hal_advanced  # a frame counts once the HAL is seen cycling
        if fb is not None:
            if fb is not self._fb_obj:
                self._fb_obj, self._fb_axes, self._fb_di = fb, fb["axes"], fb["di_bank"]
            np.bitwise_xor(self._fb_di, self._nc_mask, out=self._di_logical)
            core.set_inputs(self._fb_axes, self._di_logical, ok, missing, self.hal_age)
        else:
            core.set_inputs(None, None, ok, missing)
        for path in self.paths:
            state = path.poll(now)
            if state == "lost":
                ids = core.source_lost(path.source)
                if ids and path.source == CommandSource.RE:
                    core.m.errors |= MachineError.RE_LOST
                    core.m.message = f"recipe executor lost while commanding axes {ids}: stopped"
                    log.warning(core.m.message)
                    if core.m.state == MachineState.ACTIVE:
                        core.m.state = MachineState.IDLE
            self._take_commands(path, now)
        core.step(now)
        # write-ahead: a SafetyStop (or its reset) is on disk before anyone can see it or its ack
        self.latch.update(core.m.safety == SafetyState.SAFETY_STOP, core.m.message)
        self._write_outputs()
        self.status.fill(core, hb, self.hal_age)
        if core.cycle % PID_EVERY == 0:
            fill_pid(self.pid, core)
        np.copyto(self.status_re, self.status_src)
        np.copyto(self.status_mqt, self.status_src)
        self.w_hal.commit()
        self.w_rpc.commit()
        self.w_re.commit()
        self.w_mqt.commit()

    def _take_commands(self, path: commands.CommandPath, now: float) -> None:
        if path.next_code() == CuCommand.RELOAD_CONFIG:
            if self.reload is None:
                slot_text = self._peek_text(path)
                if self.core.all_standstill():
                    self.reload = ReloadJob(slot_text or str(self.cfg.dir), self.dt)
                    return  # take it once validated
            elif not self.reload.done.is_set():
                return
        for cmd in path.take():
            if cmd.code == CuCommand.RELOAD_CONFIG:
                code, msg = self._apply_reload(cmd)
            else:
                code, msg = commands.execute(self.core, cmd, path.source, now)
            if code != ResultCode.OK:
                log.info("%s %s refused: %s", path.source.name, _code_name(cmd.code), msg)
            path.ack(cmd, code, msg)

    @staticmethod
    def _peek_text(path: commands.CommandPath) -> str:
        from common.shm.conversions import decode_str
        ring = path.local["ring"]
        consumed = int(path.acks["consumed"])
        return decode_str(ring["slots"][consumed % len(ring["slots"])]["text"])

    def _apply_reload(self, cmd: Command) -> tuple[ResultCode, str]:
        job, self.reload = self.reload, None
        core = self.core
        if job is None or not core.all_standstill():
            return ResultCode.STATE_FORBIDS, "config reload only at standstill"
        job.done.wait()
        if job.result is None:
            core.m.errors |= MachineError.CONFIG_RELOAD_FAILED
            core.m.message = "config reload refused: " + job.error.splitlines()[0] if job.error else ""
            log.error("config reload refused: %s", job.error)
            return ResultCode.INVALID_ARGUMENT, ("invalid config: " + job.error.replace("\n", "; "))[:95]
        new_cfg = job.result
        if new_cfg.system.cu.cycle_time_us != self.cu.cycle_time_us:
            return ResultCode.STATE_FORBIDS, "cycle_time_us cannot change while running (restart the CU)"
        new = job.core
        new.adopt(core)
        self.core = new
        self.cfg = new_cfg
        self._bind_core()
        new.m.errors &= ~MachineError.CONFIG_RELOAD_FAILED
        new.m.message = f"configuration reloaded from {new_cfg.dir}"
        log.info(new.m.message)
        return ResultCode.OK, f"config reloaded ({len(new_cfg.axes)} axes)"

    def _write_outputs(self) -> None:
        core = self.core
        ax, tr = core.ax, core.traj
        self.o_tpos[:] = tr.pos
        self.o_tvel[:] = tr.vel
        self.o_torque[:] = core.torque
        self.o_enable[:] = ax.enable
        self.o_brake[:] = ax.brake_release
        do = self.o_do
        for s, reg, role in self._brake_bits:
            reg.write_do(role, bool(ax.brake_release[s]), do)

    def _shutdown(self) -> None:
        """Last frame: drives disabled, brakes engaged; then close (unlink) every segment."""
        try:
            if self.writers:
                self.o_enable[:] = 0
                self.o_brake[:] = 0
                self.o_torque[:] = 0.0
                for s, reg, role in self._brake_bits:
                    reg.write_do(role, False, self.o_do)
                self.w_hal.commit()
        finally:
            for w in self.writers:
                w.close()
            for p in self.paths:
                p.close()
            if self.hal is not None:
                self.hal.close()


def _field_bytes(local: np.ndarray, field: str) -> np.ndarray:
    """Flat uint8 view of one top-level field of a writer's local payload."""
    dt, off = local.dtype.fields[field][:2]
    return local.reshape(1).view(np.uint8)[off: off + dt.itemsize]


def _code_name(code: int) -> str:
    try:
        return CuCommand(code).name
    except ValueError:
        return str(code)


def run(cfg: EvoConfig) -> int:
    """Entry point of `python -m control_unit`."""
    return CycleRunner(cfg).run()


__all__ = ["CycleRunner", "run", "AxisParams"]
