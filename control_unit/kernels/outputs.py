"""The CU cycle's output glue as numba kernels: the HAL command frame (cu_hal axes + brake DO bits)
from the core's arrays, and the cycle's commits (the status fill, with its change test, is step.fill_status).

Kept apart from step.py so that this small kernel compiles in seconds and a change here does not
invalidate step.py's cached cycle. Everything they need comes in as arguments or as the constants
below, checked against the segment layout at import (numba's cache would not notice a change).
"""
from __future__ import annotations

import numpy as np

from common.jit import Arg, Sig, kernel
from common.jit_table import TABLE_ARG, array_table, table_bytes
from common.shm.segments import CU_AXIS_COMMAND, CU_TO_HAL
from common.shm.seqlock_jit import commit_spans, copy_bytes
from common.shm.views import flat_bytes

_JIT = dict(cache=True, nogil=True)

# CuAxisCommand (upstream's #[repr(C)] layout): 40-byte records at the start of CuToHalSegment
AX_SIZE = 40
AX_TPOS, AX_TVEL, AX_TORQUE, AX_ENABLE, AX_BRAKE = 0, 8, 16, 32, 33
_f = CU_AXIS_COMMAND.fields
if (CU_AXIS_COMMAND.itemsize, _f["target_position"][1], _f["target_velocity"][1], _f["calculated_torque"][1],
        _f["enable"][1], _f["brake_release"][1], CU_TO_HAL.fields["axes"][1]) != (AX_SIZE, AX_TPOS, AX_TVEL,
                                                                                 AX_TORQUE, AX_ENABLE, AX_BRAKE, 0):
    raise ImportError("control_unit.kernels.outputs: CU_AXIS_COMMAND layout changed; update the constants")


# write_hal_outputs' arrays, the same on every call: one common/jit_table.py table (HalOutputs.bind), in
# this order — cu_hal's payload bytes, the trajectory's position and velocity, the torque, enable, brake
# release, the payload's do_bank, then the brake DO roles' axis, word, set / clear masks and inversion
(W_OUT, W_POS, W_VEL, W_TORQUE, W_ENABLE, W_BRAKE, W_DO, W_B_AXIS, W_B_WORD, W_B_SET, W_B_CLEAR, W_B_INV) = range(12)


@kernel(**_JIT)
def write_hal_outputs(tab):
    """_write_hal_outputs over the arrays of `tab` (W_*): one array argument for numba's entry point."""
    _write_hal_outputs(table_bytes(tab, W_OUT), table_bytes(tab, W_POS).view(np.float64),
                       table_bytes(tab, W_VEL).view(np.float64), table_bytes(tab, W_TORQUE).view(np.float64),
                       table_bytes(tab, W_ENABLE).view(np.bool_), table_bytes(tab, W_BRAKE).view(np.bool_),
                       table_bytes(tab, W_DO).view(np.uint64), table_bytes(tab, W_B_AXIS).view(np.int64),
                       table_bytes(tab, W_B_WORD).view(np.int64), table_bytes(tab, W_B_SET).view(np.uint64),
                       table_bytes(tab, W_B_CLEAR).view(np.uint64), table_bytes(tab, W_B_INV).view(np.bool_))


@kernel(**_JIT)
def _write_hal_outputs(out, pos, vel, torque, enable, brake, do_bank, brake_axis, brake_word, brake_set,
                       brake_clear, brake_inv):
    """CycleRunner._write_outputs: `out` the CU_TO_HAL payload as bytes; per axis the set-point
    position and velocity, the torque, enable and brake release; then each brake DO role's bit
    (`brake_axis[k]`'s release XOR `brake_inv[k]`: set `brake_set[k]` in word `brake_word[k]`, else
    keep only `brake_clear[k]`). Torque offset and the rest of the frame are left as they are."""
    of = out.view(np.float64)
    for s in range(pos.shape[0]):
        base = s * AX_SIZE
        w = base // 8
        of[w + AX_TPOS // 8] = pos[s]
        of[w + AX_TVEL // 8] = vel[s]
        of[w + AX_TORQUE // 8] = torque[s]
        out[base + AX_ENABLE] = enable[s]
        out[base + AX_BRAKE] = brake[s]
    for k in range(brake_axis.shape[0]):
        if brake[brake_axis[k]] != brake_inv[k]:
            do_bank[brake_word[k]] |= brake_set[k]
        else:
            do_bank[brake_word[k]] &= brake_clear[k]


WRITE_HAL_OUTPUTS_SIG = Sig("void", (TABLE_ARG,))


# cu_publish's `which`: the status segments due this cycle (cu_hal is committed every cycle)
PUB_RPC, PUB_RE, PUB_MQT = 1, 2, 4
# cu_publish's `offs`: the `status` field's byte offset in cu_rpc, cu_re, cu_mqt, and its size
N_PUB_OFFS = 4
# cu_publish's table (publish_args): `offs`, then each writer's payload bytes and mapping
P_OFFS, P_HAL, P_HAL_SEG, P_RPC, P_RPC_SEG, P_RE, P_RE_SEG, P_MQT, P_MQT_SEG = range(9)


@kernel(**_JIT)
def cu_publish(which, tab):
    """_cu_publish over the arrays of `tab` (P_*): one array argument for numba's entry point."""
    _cu_publish(which, table_bytes(tab, P_OFFS).view(np.int64), table_bytes(tab, P_HAL), table_bytes(tab, P_HAL_SEG),
                table_bytes(tab, P_RPC), table_bytes(tab, P_RPC_SEG), table_bytes(tab, P_RE), table_bytes(tab, P_RE_SEG),
                table_bytes(tab, P_MQT), table_bytes(tab, P_MQT_SEG))


@kernel(**_JIT)
def _cu_publish(which, offs, hal, hal_seg, rpc, rpc_seg, re, re_seg, mqt, mqt_seg):
    """CycleRunner's commits in one call: cu_hal every cycle, then cu_rpc / cu_re / cu_mqt when `which`
    says (PUB_*): their status copied from cu_rpc's (`offs`), each a whole commit (TypedP2pWriter.commit:
    heartbeat + 1, sequence odd, the payload, sequence even; common/shm/seqlock_jit.py)."""
    commit_spans(hal_seg, hal, 0, hal.shape[0], 0, 0)
    if which & PUB_RPC:
        commit_spans(rpc_seg, rpc, 0, rpc.shape[0], 0, 0)
    if which & PUB_RE:
        copy_bytes(re, offs[1], rpc, offs[0], offs[3])
        commit_spans(re_seg, re, 0, re.shape[0], 0, 0)
    if which & PUB_MQT:
        copy_bytes(mqt, offs[2], rpc, offs[0], offs[3])
        commit_spans(mqt_seg, mqt, 0, mqt.shape[0], 0, 0)


CU_PUBLISH_SIG = Sig("void", (Arg("int64", 0), TABLE_ARG))


def publish_args(w_hal, w_rpc, w_re, w_mqt) -> tuple:  # noqa: ANN001 - TypedP2pWriter (or alike: local, segment, dtype)
    """cu_publish's arguments after `which`, the same on every call: one table (P_*) of the status offsets
    (`offs`), then each writer's payload bytes and mapping (cu_hal, cu_rpc, cu_re, cu_mqt)."""
    st = [w.dtype.fields["status"] for w in (w_rpc, w_re, w_mqt)]
    if len({f[0] for f in st}) != 1:
        raise AssertionError("cu_publish: cu_rpc / cu_re / cu_mqt no longer share one status layout")
    offs = np.array([f[1] for f in st] + [st[0][0].itemsize], np.int64)
    return (array_table([offs] + [a for w in (w_hal, w_rpc, w_re, w_mqt) for a in (flat_bytes(w.local), w.segment)]),)
