"""Snapshot (segment copies) -> proto messages: MachineStatus, IoStatus, RecipeStatus.

Built once per sample and shared by every caller of that tick (Snapshot.cached).
"""
from __future__ import annotations

import numpy as np

from common.config import EvoConfig, IoPoint, IoType
from common.drive_errors import drive_error_text
from common.shm.conversions import decode_str
from common.shm.io_helpers import unpack_bank
from common.shm.segments import JITTER_BUCKET_US
from common.states import AXIS_ERROR_TEXT, MACHINE_ERROR_TEXT

from .protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2
from .shm_link import Snapshot, SourceSample


def _reasons(flags: int, table: dict) -> list[machine_pb2.ErrorReason]:
    return [machine_pb2.ErrorReason(code=f.name, text=t) for f, t in table.items() if flags & f]


def _cycle(c: machine_pb2.CycleStats, stats: np.ndarray) -> None:
    """Fill a CycleStats from a segment's CYCLE_STATS record."""
    c.cycle_count = int(stats["cycle_count"])
    c.cycle_time_ns = int(stats["cycle_time_ns"])
    c.last_cycle_ns = int(stats["last_cycle_ns"])
    c.max_cycle_ns = int(stats["max_cycle_ns"])
    c.last_wake_jitter_ns = int(stats["last_wake_jitter_ns"])
    c.max_wake_jitter_ns = int(stats["max_wake_jitter_ns"])
    c.overruns = int(stats["overruns"])
    c.rt_active = bool(stats["rt_active"])
    c.jitter_hist.extend(stats["jitter_hist"].tolist())
    c.jitter_bucket_us = JITTER_BUCKET_US


def source_status(src: "SourceSample") -> str:
    """"live", or why the source's values are not current (its reason as the link judged it)."""
    return "live" if src.ok else (src.reason or "not live")


class StatusBuilder:
    """Turns snapshots into protos; knows the configured axes and I/O points."""

    def __init__(self, cfg: EvoConfig) -> None:
        self.cfg = cfg
        self._axes = [(a.id, a.name) for a in cfg.axes]
        self._io = {t: cfg.io.points_of(t) for t in IoType}

    # -- machine ------------------------------------------------------------------------------------
    def machine(self, snap: Snapshot) -> machine_pb2.MachineStatus:
        cu = snap.sources["cu"]
        hal = snap.sources["hal"]
        msg = machine_pb2.MachineStatus(
            hal_heartbeat_age_s=hal.heartbeat_age_s, cu_heartbeat_age_s=cu.heartbeat_age_s,
            hal_ok=hal.ok, cu_ok=cu.ok, sample_seq=snap.seq, sampled_at_unix_ns=snap.unix_ns,
            cu_status=source_status(cu), hal_status=source_status(hal),
        )
        if hal.payload is not None:
            _cycle(msg.hal_cycle, hal.payload["stats"])
        if cu.payload is None:
            msg.message = cu.reason
            msg.axes.extend(machine_pb2.AxisStatus(id=i, name=n) for i, n in self._axes)
            return msg
        st = cu.payload["status"]
        flags = int(st["machine_errors"])
        msg.machine_state = int(st["machine_state"])
        msg.safety_state = int(st["safety_state"])
        msg.estop = bool(st["estop"])
        msg.reduced_speed = bool(st["reduced_speed"])
        msg.manual_allowed = bool(st["manual_allowed"])
        msg.machine_error_flags = flags
        msg.machine_errors.extend(_reasons(flags, MACHINE_ERROR_TEXT))
        msg.message = decode_str(st["message"]) if cu.ok else cu.reason
        msg.cu_hal_age_cycles = int(st["hal_age_cycles"])
        _cycle(msg.cu_cycle, cu.payload["stats"])
        axes = st["axes"]
        hio = hal.payload["io"] if hal.payload is not None else None
        if hio is not None:
            msg.hal_driver_state = int(hio["hal_state"])
            msg.hal_driver_message = decode_str(hio["hal_message"])
        for axis_id, name in self._axes:
            a = axes[axis_id - 1]
            ef = int(a["error_flags"])
            msg.axes.append(machine_pb2.AxisStatus(
                id=axis_id, name=name,
                position=float(a["position"]), velocity=float(a["velocity"]),
                target_position=float(a["target_position"]),
                setpoint_position=float(a["setpoint_position"]),
                setpoint_velocity=float(a["setpoint_velocity"]),
                lag_error=float(a["lag_error"]), torque=float(a["torque"]),
                power=int(a["power"]), motion=int(a["motion"]), mode=int(a["mode"]),
                coupling=int(a["coupling"]), gearbox=int(a["gearbox"]), loading=int(a["loading"]),
                referenced=bool(a["referenced"]), in_position=bool(a["in_position"]),
                enabled=bool(a["enabled"]), brake_released=bool(a["brake_released"]),
                lock_source=int(a["lock_source"]), safe_stop=int(a["safe_stop"]),
                homing_phase=int(a["homing_phase"]), master_axis=int(a["master_axis"]),
                error_flags=ef, errors=_reasons(ef, AXIS_ERROR_TEXT), live=cu.ok,
            ))
            if hio is not None:
                fb = hio["axes"][axis_id - 1]
                code = int(hio["drive_error_code"][axis_id - 1])
                ax = msg.axes[-1]
                ax.drive_ready = bool(fb["drive_ready"])
                ax.drive_fault = bool(fb["drive_fault"])
                ax.driver_state = int(hio["driver_state"][axis_id - 1])
                if code:
                    ax.drive_error_code = code
                    ax.drive_error = drive_error_text(code)
        return msg

    # -- I/O -----------------------------------------------------------------------------------------
    @staticmethod
    def _digital(points: tuple[IoPoint, ...], bits: np.ndarray | None, live: bool) -> list[io_pb2.DigitalPoint]:
        # The banks carry physical levels; operators see logical values (DI: XOR NC, DO: XOR inverted).
        return [
            io_pb2.DigitalPoint(pin=p.pin, value=bool(bits[p.pin]) ^ p.inverts_logic if bits is not None else False,
                                name=p.name, role=p.role or "", group=p.group, live=live and bits is not None)
            for p in points
        ]

    @staticmethod
    def _analog(points: tuple[IoPoint, ...], values: np.ndarray | None, live: bool) -> list[io_pb2.AnalogPoint]:
        return [
            io_pb2.AnalogPoint(pin=p.pin, value=float(values[p.pin]) if values is not None else 0.0,
                               name=p.name, role=p.role or "", group=p.group, unit=p.unit,
                               min=p.min, max=p.max, live=live and values is not None)
            for p in points
        ]

    def io(self, snap: Snapshot) -> io_pb2.IoStatus:
        hal = snap.sources["hal"]
        io = None if hal.payload is None else hal.payload["io"]
        di = None if io is None else unpack_bank(io["di_bank"])
        do = None if io is None else unpack_bank(io["do_bank"])
        return io_pb2.IoStatus(
            digital_inputs=self._digital(self._io[IoType.DI], di, hal.ok),
            digital_outputs=self._digital(self._io[IoType.DO], do, hal.ok),
            analog_inputs=self._analog(self._io[IoType.AI], None if io is None else io["ai_values"], hal.ok),
            analog_outputs=self._analog(self._io[IoType.AO], None if io is None else io["ao_values"], hal.ok),
            hal_heartbeat_age_s=hal.heartbeat_age_s, hal_ok=hal.ok,
            cu_connected=bool(io["cu_connected"]) if io is not None else False,
            sample_seq=snap.seq, sampled_at_unix_ns=snap.unix_ns,
        )

    # -- recipes -------------------------------------------------------------------------------------
    @staticmethod
    def recipe(snap: Snapshot) -> recipes_pb2.RecipeStatus:
        re = snap.sources["re"]
        msg = recipes_pb2.RecipeStatus(
            re_heartbeat_age_s=re.heartbeat_age_s, re_ok=re.ok,
            sample_seq=snap.seq, sampled_at_unix_ns=snap.unix_ns,
        )
        if re.payload is None:
            msg.message = re.reason
            return msg
        st = re.payload["status"]
        msg.state = int(st["re_state"])
        msg.step_result = int(st["step_result"])
        msg.current_step = int(st["current_step"])
        msg.step_count = int(st["step_count"])
        msg.error_code = int(st["error_code"])
        msg.cycle_count = int(st["cycle_count"])
        msg.progress = float(st["progress"])
        msg.program_name = decode_str(st["program_name"])
        msg.step_kind = decode_str(st["step_kind"])
        msg.message = decode_str(st["message"]) if re.ok else re.reason
        return msg
