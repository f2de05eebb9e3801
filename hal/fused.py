"""The compiled HAL cycle: HalCycle's own arrays in one arena and the one call (hal.kernels.hal_step) per cycle.

With the sim driver the whole cycle's numerics are one call; another driver's Python cycle sits between two calls.
"""
from __future__ import annotations

import numpy as np

from common.consts import MAX_AI, MAX_AXES, MAX_DI
from common.shm.segments import HAL_IO
from common.shm.views import flat_bytes

from . import kernels as K


def _field(dtype: np.dtype, name: str) -> int:
    return int(dtype.fields[name][1])


def _offsets(cu_dtype: np.dtype, out_dtype: np.dtype, uses_targets: bool) -> np.ndarray:
    """Byte offsets of every field the kernel reads or writes (kernels.O_*), from the dtypes."""
    cu_axes = cu_dtype.fields["axes"][0].base
    fb = HAL_IO.fields["axes"][0].base
    o = np.zeros(K.N_OFFSETS, np.int64)
    o[K.O_CU_AXES] = _field(cu_dtype, "axes")
    o[K.O_CU_STRIDE] = cu_axes.itemsize
    o[K.O_CU_TPOS] = _field(cu_axes, "target_position")
    o[K.O_CU_TVEL] = _field(cu_axes, "target_velocity")
    o[K.O_CU_TORQUE] = _field(cu_axes, "calculated_torque")
    o[K.O_CU_OFFSET] = _field(cu_axes, "torque_offset")
    o[K.O_CU_ENABLE] = _field(cu_axes, "enable")
    o[K.O_CU_BRAKE] = _field(cu_axes, "brake_release")
    o[K.O_CU_DO] = _field(cu_dtype, "do_bank")
    o[K.O_CU_AO] = _field(cu_dtype, "ao_values")
    o[K.O_AXES] = _field(HAL_IO, "axes")
    o[K.O_STRIDE] = fb.itemsize
    o[K.O_POS] = _field(fb, "position")
    o[K.O_VEL] = _field(fb, "velocity")
    o[K.O_TQ] = _field(fb, "torque_estimate")
    o[K.O_READY] = _field(fb, "drive_ready")
    o[K.O_FAULT] = _field(fb, "drive_fault")
    o[K.O_DI_BANK] = _field(HAL_IO, "di_bank")
    o[K.O_DO_BANK] = _field(HAL_IO, "do_bank")
    o[K.O_AI] = _field(HAL_IO, "ai_values")
    o[K.O_AO] = _field(HAL_IO, "ao_values")
    o[K.O_STATE] = _field(HAL_IO, "driver_state")
    o[K.O_ERR] = _field(HAL_IO, "drive_error_code")
    o[K.O_CONNECTED] = _field(HAL_IO, "cu_connected")
    o[K.O_N_IO] = HAL_IO.itemsize
    o[K.O_OUT_AI] = _field(out_dtype, "ai_values")
    o[K.O_HEAD] = o[K.O_OUT_AI]  # hal_cu = HAL_IO's axes + di_bank, then ai_values
    o[K.O_N_AI] = out_dtype.fields["ai_values"][0].itemsize
    o[K.O_TARGETS] = uses_targets
    o[K.O_TAIL] = _field(HAL_IO, "axis_count")  # everything after ao_values
    o[K.O_FORCE] = 1  # the first call compares (and so reports) every region
    if o[K.O_TAIL] != o[K.O_AO] + HAL_IO.fields["ao_values"][0].itemsize or o[K.O_TAIL] % 8:
        raise AssertionError("hal.fused: HAL_IO's tail no longer follows ao_values on a word boundary")
    # the kernel copies and compares whole 8-byte words, and views the feedback rows as float64
    if (o[[K.O_N_IO, K.O_HEAD, K.O_OUT_AI, K.O_AI, K.O_N_AI, K.O_STRIDE, K.O_CU_STRIDE, K.O_DO_BANK, K.O_DI_BANK,
           K.O_CU_DO, K.O_CU_AO, K.O_AO]] % 8).any() or o[K.O_ERR] % 4:
        raise AssertionError("hal.fused: a segment layout is not word aligned where the kernel needs it")
    if _field(HAL_IO, "di_bank") != _field(out_dtype, "di_bank") or _field(out_dtype, "axes") != o[K.O_AXES]:
        raise AssertionError("hal.fused: hal_cu's head is no longer HAL_IO's axes + di_bank")
    return o


class FusedStep:
    """The arrays DriverIO gets from the HAL (driver commands, raw inputs) as rows of one arena, the
    change test's copy of the status payload, the field offsets, and `run()`: one kernel call.

    Build it before the IoProcessor and the driver exist (DriverIO takes `enable`, `torque`, `di`, ...
    from it), then `bind()` them. `run()` returns the regions of the status payload (HAL_IO) that
    changed (kernels.R_*; the first call reports all of them)."""

    def __init__(self, configured: np.ndarray, uses_targets: bool, cu_local: np.ndarray, hal_local: np.ndarray,
                 out_local: np.ndarray) -> None:
        self._kernels = K.load()
        self.torque = np.zeros(MAX_AXES)
        self.target_position = np.zeros(MAX_AXES)
        self.target_velocity = np.zeros(MAX_AXES)
        self.enable = np.zeros(MAX_AXES, np.bool_)
        self.brake_release = np.zeros(MAX_AXES, np.bool_)
        self.configured = configured.astype(np.bool_)
        self.di = np.zeros(MAX_DI, np.bool_)
        self.ai = np.zeros(MAX_AI)
        self._hal_u8 = flat_bytes(hal_local)
        words = self._hal_u8[: HAL_IO.itemsize].view(np.uint64)
        self.prev = ~words  # the first call reports every region changed
        self.offsets = _offsets(cu_local.dtype, out_local.dtype, uses_targets)
        b = K.ArenaBuilder()
        b.slab(K.HB_F, self, ("torque", "target_position", "target_velocity"), np.float64, MAX_AXES)
        b.slab(K.HB_B, self, ("enable", "brake_release", "configured"), np.bool_, MAX_AXES)
        b.slab(K.HB_DI, self, ("di",), np.bool_, MAX_DI)
        b.slab(K.HB_AI, self, ("ai",), np.float64, MAX_AI)
        b.slab(K.HB_PREV, self, ("prev",), np.uint64, len(words))
        b.slab(K.HB_OFF, self, ("offsets",), np.int64, K.N_OFFSETS)
        self.arena, self._hal_lay = b.build()
        self._cu_u8 = flat_bytes(cu_local)
        self._out_u8 = flat_bytes(out_local)
        self.kernel = self._kernels.checked("hal_step")
        self.tail: tuple = ()
        self.sim_in_kernel = False

    def bind(self, io_arena: np.ndarray, io_lay: np.ndarray, sim: tuple[np.ndarray, np.ndarray] | None) -> None:
        """The IoProcessor's arena and, when the driver is the compiled sim, the plant's (run in the kernel)."""
        self.sim_in_kernel = sim is not None
        if sim is None:  # PHASE_PRE / PHASE_POST never look at the plant's arena
            sim = (np.zeros(64, np.uint8), np.zeros(4 * K.N_SIM_BLOCKS, np.int64))
        lays = np.concatenate([self._hal_lay, io_lay, sim[1]]).astype(np.int64)
        if len(lays) != K.N_LAYS:
            raise AssertionError(f"hal.fused: {len(lays)} layout entries, the kernel expects {K.N_LAYS}")
        self.tail = (self._cu_u8, self._hal_u8, self._out_u8, self.arena, lays, io_arena, sim[0])
        # the arrays are the same on every call and the scalars Python ints / floats: checked once here
        self.kernel = self._kernels.entry("hal_step", K.PHASE_ALL, K.FL_CONNECTED, 0, 0.001, *self.tail)

    def run(self, phase: int, flags: int, now_ns: int, dt_s: float) -> int:
        """One call of the kernel (HalCycle inlines this call; kept for tests and tools)."""
        return self.kernel(phase, flags, now_ns, dt_s, *self.tail)

