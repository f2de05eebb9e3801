"""The compiled HAL cycle: HalCycle's own arrays in one arena and the one call (hal.kernels.hal_step) per cycle.

With the sim driver the whole cycle's numerics are one call; another driver's Python cycle sits between two calls.
"""
from __future__ import annotations

import numpy as np

from common.consts import MAX_AI, MAX_AXES, MAX_DI, P2P_HEADER_SIZE
from common.jit_table import array_table
from common.shm.inbound import SharedStateInbound
from common.shm.inbound_jit import N_STATE
from common.shm.p2p import TypedP2pWriter
from common.shm.segments import CYCLE_STATS, HAL_IO, SEGMENTS
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


def spans(cu_dtype: np.dtype) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Per kernels.R_* mask: the byte span of HAL_IO covering the changed regions, and the span of
    hal_cu's payload (HAL_IO's axes + di_bank, then ai_values) they touch; (0, 0) for none."""
    f = HAL_IO.fields
    bounds = [(0, f["di_bank"][1]), (f["di_bank"][1], f["do_bank"][1]), (f["do_bank"][1], f["ai_values"][1]),
              (f["ai_values"][1], f["ao_values"][1]), (f["ao_values"][1], f["axis_count"][1]),
              (f["axis_count"][1], HAL_IO.itemsize)]  # R_AXES, R_DI, R_DO, R_AI, R_AO, R_TAIL
    cu_ai = cu_dtype.fields["ai_values"][1]
    cu_end = cu_ai + cu_dtype.fields["ai_values"][0].itemsize
    cu_parts = [(K.R_AXES | K.R_DI, (0, cu_ai)), (K.R_AI, (cu_ai, cu_end)),
                (K.R_TAIL, (cu_end, cu_dtype.itemsize))]  # the tail: axis_count (the first commit has it)
    io_span, cu_span = [], []
    for mask in range(K.R_ALL + 1):
        hit = [b for k, b in enumerate(bounds) if mask >> k & 1]
        io_span.append((min(b[0] for b in hit), max(b[1] for b in hit)) if hit else (0, 0))
        hit = [b for bits, b in cu_parts if mask & bits]
        cu_span.append((min(b[0] for b in hit), max(b[1] for b in hit)) if hit else (0, 0))
    return io_span, cu_span


POLLED = ("cu_hal", "re_hal", "rpc_hal")  # the inbound segments hal_step polls (FL_POLL), in kernels.P_* order


def _absent(key: str) -> np.ndarray:
    """The sources table's entry while a polled segment is not mapped: zeros of its size, read-only (the
    kernel does not read it then: its Inbound's row says ABSENT or PYTHON)."""
    a = np.zeros(P2P_HEADER_SIZE + SEGMENTS[key].dtype.itemsize, np.uint8)
    a.flags.writeable = False
    return a


_ABSENT = {key: _absent(key) for key in POLLED}


def _publish_constants(beat_ns: int) -> np.ndarray:
    """HB_PUB's row (kernels.U_*): the status payload's end, the three status segments' payload ends, the
    byte offsets of hal_rpc's / hal_re's ACK_RING and of re_hal's / rpc_hal's COMMAND_RING, from the segment
    table; the status segments' beat period (`beat_ns`), the first beat due at once."""
    u = np.zeros(K.N_PUB, np.int64)
    u[K.U_TAIL] = HAL_IO.itemsize
    u[K.U_BEAT_NS] = beat_ns
    for key, at in (("re_hal", K.U_RE_CMD), ("rpc_hal", K.U_RPC_CMD)):
        dt = SEGMENTS[key].dtype
        r_dt, r_off = dt.fields["ring"][:2]
        if r_off % 8 or r_dt.fields["epoch"] != (np.dtype("<u8"), K.CMD_EPOCH) or (
                r_dt.fields["count"] != (np.dtype("<u8"), K.CMD_COUNT)):
            raise AssertionError(f"hal.fused: {key}'s command ring no longer starts with epoch, count (aligned uint64)")
        u[at] = r_off
    for key, end, ring in (("hal_mqt", K.U_MQT_END, -1), ("hal_rpc", K.U_RPC_END, K.U_RPC_RING),
                           ("hal_re", K.U_RE_END, K.U_RE_RING)):
        dt = SEGMENTS[key].dtype
        if dt.fields["io"][1] != 0 or dt.fields["io"][0] != HAL_IO:
            raise AssertionError(f"hal.fused: {key} no longer starts with the status payload")
        u[end] = dt.itemsize
        if ring >= 0:
            a_dt, a_off = dt.fields["acks"][:2]
            head = ("epoch", "cmd_epoch_seen", "consumed", "count")
            if a_off % 8 or a_dt.names[:K.ACK_HEAD_WORDS] != head or any(
                    a_dt.fields[n] != (np.dtype("<u8"), 8 * i) for i, n in enumerate(head)) or dt.names[-1] != "acks" or (
                    a_dt.fields["count"][1] != K.ACK_COUNT or a_dt.fields["consumed"][1] != K.ACK_CONSUMED
                    or a_dt.fields["cmd_epoch_seen"][1] != K.ACK_SEEN):
                raise AssertionError(f"hal.fused: {key}'s ack ring no longer starts with {head} (aligned uint64) "
                                     "and ends the segment")
            u[ring] = a_off
    for key, at in (("hal_mqt", K.U_STATS_MQT), ("hal_rpc", K.U_STATS_RPC)):
        st_dt, st_off = SEGMENTS[key].dtype.fields["stats"][:2]
        if st_dt != CYCLE_STATS:
            raise AssertionError(f"hal.fused: {key}'s stats are no longer a CYCLE_STATS record")
        u[at] = st_off
    u[K.U_REC_N] = CYCLE_STATS.itemsize
    return u


class FusedStep:
    """The arrays DriverIO gets from the HAL (driver commands, raw inputs) as rows of one arena, the
    change test's copy of the status payload, the field offsets, and `run()`: one kernel call.

    Build it before the IoProcessor and the driver exist (DriverIO takes `enable`, `torque`, `di`, ...
    from it), then `bind()` them. `run()` returns the regions of the status payload (HAL_IO) that
    changed (kernels.R_*; the first call reports all of them)."""

    def __init__(self, configured: np.ndarray, uses_targets: bool, cu_local: np.ndarray, hal_local: np.ndarray,
                 out_local: np.ndarray, beat_ns: int = 10_000_000, polls: np.ndarray | None = None) -> None:
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
        io_span, cu_span = spans(out_local.dtype)
        b.block(K.HB_SPANS, np.array([[s[0] for s in cu_span], [s[1] for s in cu_span], [s[0] for s in io_span],
                                      [s[1] for s in io_span]], np.int64))
        b.block(K.HB_PUB, _publish_constants(beat_ns)[None, :])
        # the polls' first copies (seqlock: kept only once the sequence held)
        b.block(K.HB_SCRATCH, np.zeros((1, max(SEGMENTS[k].dtype.itemsize for k in POLLED)), np.uint8))
        self.arena, self._hal_lay = b.build()
        self.pub = b.views[K.HB_PUB][0]  # (the ack counts seen: HalCycle's, whichever path commits)
        # the loop's figures: the HAL's CycleLoop keeps its timer's record here (CycleLoop(record=...)), and
        # hal_publish copies it into hal_mqt's and hal_rpc's stats before it commits them
        self.figures = np.zeros((), CYCLE_STATS)
        self._cu_u8 = flat_bytes(cu_local)
        self._out_u8 = flat_bytes(out_local)
        self.kernel = self._kernels.checked("hal_step")
        self.tail: tuple = ()
        self.table = self.sources = np.zeros(0, np.int64)
        # the polled Inbounds' rows (SharedStateInbound(state=polls[k]), made before this: `polls`)
        self.polls = np.zeros((K.N_POLLS, N_STATE), np.int64) if polls is None else polls
        if self.polls.shape != (K.N_POLLS, N_STATE) or self.polls.dtype != np.int64 or not self.polls.flags.c_contiguous:
            raise TypeError(f"FusedStep: polls must be C-contiguous int64[{K.N_POLLS}, {N_STATE}]")
        self._in_locals: tuple[np.ndarray, np.ndarray] = (np.zeros((), SEGMENTS["re_hal"].dtype),
                                                          np.zeros((), SEGMENTS["rpc_hal"].dtype))
        self.sim_in_kernel = False
        self.publish = self._kernels.checked("hal_publish")
        self.publish_tail: tuple = ()

    def bind(self, io_arena: np.ndarray, io_lay: np.ndarray, sim: tuple[np.ndarray, np.ndarray] | None,
             writers: tuple[TypedP2pWriter, TypedP2pWriter, TypedP2pWriter, TypedP2pWriter],
             inbounds: tuple[SharedStateInbound, SharedStateInbound, SharedStateInbound] | None = None) -> None:
        """The IoProcessor's arena, when the driver is the compiled sim the plant's (run in the kernel), the
        writers of hal_cu, hal_mqt, hal_rpc, hal_re (the compiled commits: FL_COMMIT, `publish`) and the
        Inbounds of cu_hal, re_hal, rpc_hal made on rows of `polls` (FL_POLL; without them the kernel is
        never asked to poll)."""
        if inbounds is not None:
            cu_in, re_in, rpc_in = inbounds
            for k, inb in enumerate(inbounds):
                if inb.state.base is not self.polls or inb.state.ctypes.data != self.polls[k].ctypes.data:
                    raise AssertionError(f"hal.fused: {inb.name}'s poll state is not row {k} of FusedStep.polls")
            if cu_in.local.ctypes.data != self._cu_u8.ctypes.data:
                raise AssertionError("hal.fused: the cu_hal Inbound's payload is not the kernel's cu_hal copy")
            self._in_locals = (re_in.local, rpc_in.local)
        self.sim_in_kernel = sim is not None
        if sim is None:  # PHASE_PRE / PHASE_POST never look at the plant's arena
            sim = (np.zeros(64, np.uint8), np.zeros(4 * K.N_SIM_BLOCKS, np.int64))
        lays = np.concatenate([self._hal_lay, io_lay, sim[1]]).astype(np.int64)
        if len(lays) != K.N_LAYS:
            raise AssertionError(f"hal.fused: {len(lays)} layout entries, the kernel expects {K.N_LAYS}")
        w_cu, w_mqt, w_rpc, w_re = writers
        arrays = [None] * K.N_TABLE
        arrays[K.T_CU], arrays[K.T_HAL], arrays[K.T_OUT], arrays[K.T_H] = self._cu_u8, self._hal_u8, self._out_u8, self.arena
        arrays[K.T_LAYS], arrays[K.T_IO], arrays[K.T_SIM], arrays[K.T_CU_SEG] = lays, io_arena, sim[0], w_cu.segment
        arrays[K.T_RPC], arrays[K.T_RE] = flat_bytes(w_rpc.local), flat_bytes(w_re.local)
        arrays[K.T_MQT_SEG], arrays[K.T_RPC_SEG], arrays[K.T_RE_SEG] = w_mqt.segment, w_rpc.segment, w_re.segment
        arrays[K.T_REC] = flat_bytes(self.figures)
        arrays[K.T_POLL] = self.polls.reshape(-1)
        arrays[K.T_RE_IN], arrays[K.T_RPC_IN] = (flat_bytes(a) for a in self._in_locals)
        # one table for both kernels (common/jit_table.py): it holds every array it lists, and so does
        # whoever holds the table — HalCycle's step keeps `tail`
        self.table = array_table(arrays)
        self.publish_tail = (self.table,)
        self.set_sources(inbounds)
        # the tables are the same on every call and the scalars Python ints / floats: checked once here
        self.kernel = self._kernels.entry("hal_step", K.PHASE_ALL, K.FL_CONNECTED, 0, 0.001, *self.tail)
        self.publish = self._kernels.entry("hal_publish", 0, False, *self.publish_tail)

    def set_sources(self, inbounds: tuple[SharedStateInbound, ...] | None) -> None:
        """hal_step's second table: the polled Inbounds' current mappings (read-only; zeros for one not
        mapped), each Inbound told which mapping it lists (the kernel polls a segment only while that is its
        mapping). Called at bind and whenever one of them mapped another (HalCycle: `mapping_gen` moved)."""
        segs = [_ABSENT[key] for key in POLLED]
        gens = [0] * len(POLLED)
        for k, inb in enumerate(inbounds or ()):
            gens[k] = inb.mapping_gen
            if inb.segment is not None:
                segs[k] = inb.segment
        self.sources = array_table(segs, read_only=True)
        self.tail = (self.table, self.sources)
        for k, inb in enumerate(inbounds or ()):
            inb.table_built_for(gens[k])

    def run(self, phase: int, flags: int, now_ns: int, dt_s: float) -> int:
        """One call of the kernel (HalCycle inlines this call; kept for tests and tools)."""
        return self.kernel(phase, flags, now_ns, dt_s, *self.tail)

