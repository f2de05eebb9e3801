"""Status and diagnostics the CU publishes: CU_STATUS (machine, safety, every per-axis state and
error flag), cycle statistics and per-axis PID state, written into preallocated segment views.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.consts import ACK_MESSAGE_LEN, NAME_LEN
from common.shm.conversions import encode_str
from common.shm.segments import CU_STATUS
from common.shm.views import ChangeDetector, without

if TYPE_CHECKING:
    from .core import ControlCore

_AXIS_FIELDS = ("position", "velocity", "target_position", "setpoint_position", "setpoint_velocity", "lag_error",
                "torque", "error_flags", "power", "motion", "mode", "coupling", "gearbox", "loading", "referenced",
                "in_position", "enabled", "brake_released", "lock_source", "safe_stop", "homing_phase",
                "master_axis")


class StatusWriter:
    """Fills one CU_STATUS view from a ControlCore (views cached once; no per-cycle lookups) and tells
    whether what it shows changed: `fill()` is True when a byte other than hal_heartbeat /
    hal_age_cycles (they move every cycle and mean nothing to the status readers) differs from the
    last fill, and on the first fill after `bind()`."""

    def __init__(self, status: np.ndarray) -> None:
        self.status = status
        self.v: dict[str, np.ndarray] = {}
        self._message = ""
        self._kernel = None  # the compiled fill (a core with the compiled engine), on the record's bytes
        self._bytes: np.ndarray | None = None
        self._arena: np.ndarray | None = None
        self._layout: np.ndarray | None = None
        self._fresh = True
        self._change: ChangeDetector | None = None

    def bind(self, core: "ControlCore") -> None:
        """Static fields (ids, names); call again after a config reload."""
        axes = self.status["axes"]
        axes[:] = np.zeros((), dtype=axes.dtype)
        n = core.n
        ids = np.arange(1, n + 1)
        axes["id"][:n] = np.where(core.p.configured, ids, 0)
        for s, name in enumerate(core.p.names):
            axes["name"][s] = encode_str(name, NAME_LEN)
        self.status["axis_count"] = n
        self.v = {f: axes[f][:n] for f in _AXIS_FIELDS}  # sliced once: one copy per field per cycle
        self._message = None  # type: ignore[assignment]
        self._fresh = True
        st = self.status
        hb, age = CU_STATUS.fields["hal_heartbeat"][1], CU_STATUS.fields["hal_age_cycles"][1]
        raw = st.reshape(1).view(np.uint8)
        self._change = ChangeDetector(raw, without(raw.size, (hb, age + 4)))  # the numpy fill's change test
        if core._kernels is not None and st.dtype == CU_STATUS and st.ndim == 0:
            self._bytes = st.reshape(1).view(np.uint8)
            self._arena, self._layout = core._arena, core._layout
            self._kernel = core._kernels.entry("fill_status", self._bytes, self._arena, self._layout, 0, 0)
        else:
            self._kernel = None

    def fill(self, core: "ControlCore", hal_heartbeat: int, hal_age: int) -> bool:
        """Fill the status; True when what it shows changed (see the class docstring)."""
        if self._kernel is not None and core._arena is self._arena:
            changed = self._kernel(self._bytes, self._arena, self._layout, int(hal_heartbeat), int(hal_age))  # ints
            m = core.m
            if m.message != self._message:
                self._message = m.message
                self.status["message"] = encode_str(m.message, ACK_MESSAGE_LEN)
                changed = True
        else:
            self.fill_numpy(core, hal_heartbeat, hal_age)
            changed = self._change.changed()  # type: ignore[union-attr]
        if self._fresh:
            self._fresh = False
            return True
        return changed

    def fill_numpy(self, core: "ControlCore", hal_heartbeat: int, hal_age: int) -> None:
        """The vectorised fill (the reference; a core with the numpy engine uses it)."""
        ax, tr, v, st = core.ax, core.traj, self.v, self.status
        m = core.m
        st["machine_state"] = int(m.state)
        st["safety_state"] = int(m.safety)
        st["estop"] = m.estop
        st["reduced_speed"] = m.reduced
        st["manual_allowed"] = m.manual_allowed
        st["machine_errors"] = int(m.errors)
        st["hal_heartbeat"] = hal_heartbeat
        st["hal_age_cycles"] = min(hal_age, 0xFFFFFFFF)
        if m.message != self._message:
            self._message = m.message
            st["message"] = encode_str(m.message, ACK_MESSAGE_LEN)
        v["position"][:] = core.pos
        v["velocity"][:] = core.vel
        v["target_position"][:] = tr.target
        v["setpoint_position"][:] = tr.pos
        v["setpoint_velocity"][:] = tr.vel
        v["lag_error"][:] = ax.lag
        v["torque"][:] = core.torque
        v["error_flags"][:] = ax.errors
        v["power"][:] = ax.power
        v["motion"][:] = ax.motion
        v["mode"][:] = ax.mode
        v["coupling"][:] = ax.coupling
        v["gearbox"][:] = ax.gearbox
        v["loading"][:] = ax.loading
        v["referenced"][:] = ax.referenced
        v["in_position"][:] = ax.in_position
        v["enabled"][:] = ax.enable
        v["brake_released"][:] = ax.brake_release
        v["lock_source"][:] = ax.lock
        v["safe_stop"][:] = ax.safe_stop
        v["homing_phase"][:] = ax.homing_phase
        v["master_axis"][:] = core.cpl.master + 1


def fill_pid(pid: np.ndarray, core: "ControlCore") -> None:
    """PID_STATE[MAX_AXES] view: error, integral, derivative, output, feedforward, DOB estimate."""
    n, law = core.n, core.law
    for name, src in (("error", law.error), ("integral", law.integral), ("derivative", law.derivative),
                      ("output", law.output), ("feedforward", law.feedforward), ("dob_estimate", law.dob)):
        pid[name][:n] = src
