"""What the CU cycle writes besides the status: the HAL command frame (cu_hal) — one compiled call
with the compiled engine, the numpy code otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.config.registry import IoRegistry
from common.jit_table import array_table
from common.shm.views import flat_bytes

if TYPE_CHECKING:
    from .core import ControlCore


class HalOutputs:
    """Fills the CU_TO_HAL payload `local` from a core: per axis set-point, velocity, torque, enable,
    brake release, and the brake DO roles' bits. `bind()` again after a config reload."""

    def __init__(self, local: np.ndarray) -> None:
        self.local = local
        self.do = local["do_bank"]
        self._bytes = flat_bytes(local)
        self._kernel = None
        self._tab: np.ndarray | None = None

    def bind(self, core: "ControlCore", reg: IoRegistry) -> None:
        self.core = core
        local = self.local
        local["axis_count"] = core.n
        out = local["axes"]
        out[:] = np.zeros((), dtype=out.dtype)
        n = core.n  # views sliced once: one copy per field per cycle
        self.o_tpos, self.o_tvel = out["target_position"][:n], out["target_velocity"][:n]
        self.o_torque, self.o_offset = out["calculated_torque"][:n], out["torque_offset"][:n]
        self.o_enable, self.o_brake = out["enable"][:n], out["brake_release"][:n]
        self._brake_roles = [(s, reg, role) for s, role in core.p.brake_out]
        bits = [(s, *reg.do_bit(role)) for s, role in core.p.brake_out]
        self._b_axis = np.array([b[0] for b in bits], dtype=np.int64)
        self._b_word = np.array([b[1] for b in bits], dtype=np.int64)
        self._b_set = np.array([b[2] for b in bits], dtype=np.uint64)
        self._b_clear = np.array([b[3] for b in bits], dtype=np.uint64)
        self._b_inv = np.array([b[4] for b in bits], dtype=bool)
        tr, ax = core.traj, core.ax
        self._args = (tr.pos, tr.vel, core.torque, ax.enable, ax.brake_release)
        kernels = core._kernels
        plain = all(a.flags.c_contiguous and a.ndim == 1 for a in self._args) and \
            tr.pos.dtype == core.torque.dtype == np.float64 and ax.enable.dtype == ax.brake_release.dtype == bool
        self._kernel = None
        if kernels is not None and plain:  # the entry point, checked once against these very arrays
            # one table of the arrays (common/jit_table.py; it holds them), in the kernel's W_* order
            self._tab = array_table([self._bytes, *self._args, self.do, self._b_axis, self._b_word, self._b_set,
                                     self._b_clear, self._b_inv])
            self._kernel = kernels.entry("write_hal_outputs", self._tab)

    def write(self) -> None:
        """This cycle's outputs into `local` (the caller commits)."""
        if self._kernel is not None:
            self._kernel(self._tab)
            return
        self.write_numpy()

    def write_numpy(self) -> None:
        """The numpy reference of `write`."""
        core = self.core
        ax, tr = core.ax, core.traj
        self.o_tpos[:] = tr.pos
        self.o_tvel[:] = tr.vel
        self.o_torque[:] = core.torque
        self.o_enable[:] = ax.enable
        self.o_brake[:] = ax.brake_release
        do = self.do
        for s, reg, role in self._brake_roles:
            reg.write_do(role, bool(ax.brake_release[s]), do)

    def safe(self) -> None:
        """The last frame of a stopping CU: drives disabled, no torque, brakes engaged."""
        self.o_enable[:] = 0
        self.o_brake[:] = 0
        self.o_torque[:] = 0.0
        for _, reg, role in self._brake_roles:
            reg.write_do(role, False, self.do)
