"""The p2p seqlock (common/shm/p2p.py) for compiled cycle kernels: a writer's commit of byte spans of its
payload and a reader's copy, the same loads and stores in the same order, that order made explicit.

CPython keeps p2p.py's loads and stores in program order and x86-64 (TSO) keeps them in that order for
other CPUs. LLVM may reorder plain accesses to different addresses, so here the sequence word is written
with release stores (a release fence after the odd one) and read with acquire loads (an acquire fence
before the second): on x86-64 these are plain moves (no fence instruction, no cost), they only forbid the
compiler to move the payload's accesses across them.
The intrinsics are numba's, made when a kernel set is compiled (`@kernel_intrinsic`): importing this
module costs no numba.
"""
from __future__ import annotations

from typing import Any

from common.consts import MAX_READ_RETRIES, P2P_HEADER_SIZE
from common.jit import kernel, kernel_intrinsic

OFF_HEARTBEAT = 16  # p2p.py's header layout (p2p.OFF_*; tests/test_seqlock_jit.py checks they agree)
OFF_WRITE_SEQ = 32
_jit = dict(cache=True, nogil=True, boundscheck=False)


def _word_ptr(context: Any, builder: Any, aryty: Any, ary: Any, offset: Any, bits: int) -> Any:
    """A pointer to the `bits`-wide word at byte `offset` of a uint8 array's data."""
    from llvmlite import ir
    from numba.core import cgutils

    data = builder.bitcast(context.make_array(aryty)(context, builder, ary).data, cgutils.voidptr_t)
    return builder.bitcast(builder.gep(data, [offset]), ir.IntType(bits).as_pointer())


@kernel_intrinsic
def load_u64(typingctx: Any, seg: Any, offset: Any) -> Any:
    """The little-endian u64 at byte `offset` of `seg` (8-byte aligned), as int64: one load."""
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.load(_word_ptr(context, builder, sig.args[0], args[0], args[1], 64), align=8)

    return types.int64(seg, types.int64), codegen


@kernel_intrinsic
def store_u64(typingctx: Any, seg: Any, offset: Any, value: Any) -> Any:
    """seg[offset:offset+8] = value (little-endian u64, 8-byte aligned): one store."""
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.store(args[2], _word_ptr(context, builder, sig.args[0], args[0], args[1], 64), align=8)
        return context.get_dummy_value()

    return types.void(seg, types.int64, types.int64), codegen


@kernel_intrinsic
def copy_bytes(typingctx: Any, dst: Any, dst_offset: Any, src: Any, src_offset: Any, n: Any) -> Any:
    """`n` bytes from byte `src_offset` of contiguous array `src` to byte `dst_offset` of `dst`, as one memcpy
    (numba's slice assignment of uint8 arrays copies byte by byte, ~5x slower); the caller keeps the ranges
    inside both arrays."""
    from numba.core import cgutils, types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        d = builder.bitcast(context.make_array(sig.args[0])(context, builder, args[0]).data, cgutils.voidptr_t)
        s = builder.bitcast(context.make_array(sig.args[2])(context, builder, args[2]).data, cgutils.voidptr_t)
        cgutils.raw_memcpy(builder, builder.gep(d, [args[1]]), builder.gep(s, [args[3]]), args[4], 1)
        return context.get_dummy_value()

    return types.void(dst, types.int64, src, types.int64, types.int64), codegen


@kernel_intrinsic
def store_u32_release(typingctx: Any, seg: Any, offset: Any, value: Any) -> Any:
    """seg[offset:offset+4] = value (little-endian u32), a release store: no earlier load or store of
    this thread is moved after it."""
    from llvmlite import ir
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1], 32)
        builder.store_atomic(builder.trunc(args[2], ir.IntType(32)), ptr, "release", 4)
        return context.get_dummy_value()

    return types.void(seg, types.int64, types.int64), codegen


@kernel_intrinsic
def load_u32_acquire(typingctx: Any, seg: Any, offset: Any) -> Any:
    """The little-endian u32 at byte `offset` of `seg`, as int64, an acquire load: no later load or store
    of this thread is moved before it."""
    from llvmlite import ir
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        v = builder.load_atomic(_word_ptr(context, builder, sig.args[0], args[0], args[1], 32), "acquire", 4)
        return builder.zext(v, ir.IntType(64))

    return types.int64(seg, types.int64), codegen


@kernel_intrinsic
def fence_acquire(typingctx: Any) -> Any:
    """No load after this point is moved before the loads ahead of it (the sequence word's second load
    after the payload's copy)."""
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.fence("acquire")
        return context.get_dummy_value()

    return types.void(), codegen


@kernel_intrinsic
def fence_release(typingctx: Any) -> Any:
    """No store after this point is moved before the stores ahead of it (the payload after the odd
    sequence word)."""
    from numba.core import types

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.fence("release")
        return context.get_dummy_value()

    return types.void(), codegen


@kernel(**_jit)
def commit_spans(seg, local, lo, hi, lo2, hi2):
    """One seqlock commit of `local` (the payload) into `seg` (the writer's mapping: header + payload)
    when only bytes [lo, hi) and [lo2, hi2) changed since the last commit (TypedP2pWriter.commit_part:
    heartbeat + 1, sequence odd, the copy, sequence even). The writer's first commit must have been
    whole (TypedP2pWriter does it); returns the new heartbeat."""
    hb = load_u64(seg, OFF_HEARTBEAT) + 1
    store_u64(seg, OFF_HEARTBEAT, hb)
    even = (hb << 1) & 0xFFFFFFFF
    store_u32_release(seg, OFF_WRITE_SEQ, (even - 1) & 0xFFFFFFFF)
    fence_release()
    if hi > lo:
        copy_bytes(seg, P2P_HEADER_SIZE + lo, local, lo, hi - lo)
    if hi2 > lo2:
        copy_bytes(seg, P2P_HEADER_SIZE + lo2, local, lo2, hi2 - lo2)
    store_u32_release(seg, OFF_WRITE_SEQ, even)
    return hb


READ_UNCHANGED, READ_CONTENDED = -1, -2  # read_commit's results besides a commit's write_seq


@kernel(**_jit)
def read_commit(seg, local, scratch, seen):
    """The reader's seqlock copy (TypedP2pReader.copy_in / Inbound.poll's): the payload of `seg` (a reader's
    mapping: header + payload) into `local` when the segment holds a commit other than `seen` (the write_seq
    of the commit in `local`). The copy lands in `scratch` first and reaches `local` only once the sequence
    held: returns that commit's write_seq, READ_UNCHANGED (it is `seen`; nothing copied) or, after
    MAX_READ_RETRIES attempts that found a commit in progress or tore, READ_CONTENDED (`local` untouched)."""
    n = local.shape[0]
    for _ in range(MAX_READ_RETRIES):
        s1 = load_u32_acquire(seg, OFF_WRITE_SEQ)
        if s1 == seen:
            return READ_UNCHANGED
        if s1 & 1:
            continue
        copy_bytes(scratch, 0, seg, P2P_HEADER_SIZE, n)
        fence_acquire()
        if load_u32_acquire(seg, OFF_WRITE_SEQ) == s1:
            copy_bytes(local, 0, scratch, 0, n)
            return s1
    return READ_CONTENDED
