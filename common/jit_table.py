"""Many arrays as one argument of a compiled kernel: `array_table` lists the arrays' (address, size) in one
read-only int64 array that holds them alive; `table_bytes(tab, k)`, in a kernel, is array k again (uint8).

numba's entry point converts each array argument on every call: ~0.1 us back to back, but ~0.5 us after the
1 ms sleep of a cycle loop, when its code and the arrays' headers have gone cold (`bench_hal.py --parts`).
A cycle kernel over a dozen arrays that are the same on every call paid that a dozen times per cycle; with
the table it pays once. The arrays are borrowed, never copied: the table's buffer belongs to an object that
keeps a reference to every listed array, so none of them can be freed, and no segment mapping closed (mmap
refuses while a view exists), while anything — a kernel's caller included — still holds the table.
The intrinsic is numba's, made when a kernel set is compiled (`@kernel_intrinsic`): importing this module
costs no numba.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any, Sequence

import numpy as np

from common.jit import Arg, kernel_intrinsic

TABLE_ARG = Arg("int64", readonly=True)  # a kernel signature's argument for an `array_table`


@functools.lru_cache(maxsize=None)
def _table_type(n: int) -> type:
    """int64[n] as a ctypes array subclass: its instances take attributes (the borrowed arrays)."""
    return type(f"_Table{n}", (ctypes.c_int64 * n,), {})


def array_table(arrays: Sequence[np.ndarray], *, read_only: bool = False) -> np.ndarray:
    """The table of `arrays` (each C-contiguous, and writable: a kernel may write any of them through it;
    with `read_only` a kernel only reads them, and read-only arrays — a reader's segment mapping — are
    accepted): int64[2 * len(arrays)] = address, size in bytes per array; read-only; its base holds the arrays."""
    for k, a in enumerate(arrays):
        what = (type(a).__name__ if not isinstance(a, np.ndarray) else "strided" if not a.flags.c_contiguous
                else "read-only" if not (a.flags.writeable or read_only) else "")
        if what:
            raise TypeError(f"array_table: entry {k} is not a C-contiguous {'' if read_only else 'writable '}"
                            f"numpy array ({what})")

    owner = _table_type(2 * len(arrays))(*[v for a in arrays for v in (a.ctypes.data, a.nbytes)])
    owner.arrays = tuple(arrays)  # the borrow: alive as long as the table (its numpy view's base) is
    table = np.frombuffer(owner, np.int64)
    table.setflags(write=False)
    return table


def table_arrays(table: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays `table` lists, in order (for tests and tools)."""
    return table.base.arrays


@kernel_intrinsic
def table_bytes(typingctx: Any, tab: Any, k: Any) -> Any:
    """Array `k` of an `array_table` as a C-contiguous uint8 array over its bytes (borrowed: no owner, no
    copy); the caller keeps `k` inside the table."""
    from llvmlite import ir
    from numba.core import types
    from numba.np.arrayobj import populate_array

    aryty = types.Array(types.uint8, 1, "C")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        t = context.make_array(sig.args[0])(context, builder, args[0])
        i64 = ir.IntType(64)
        i = builder.mul(args[1], ir.Constant(i64, 2))
        addr = builder.load(builder.gep(t.data, [i]))
        n = builder.load(builder.gep(t.data, [builder.add(i, ir.Constant(i64, 1))]))
        out = context.make_array(aryty)(context, builder)
        populate_array(out, data=builder.inttoptr(addr, out.data.type), shape=[n], strides=[ir.Constant(i64, 1)],
                       itemsize=ir.Constant(i64, 1), meminfo=None)
        return out._getvalue()

    return aryty(tab, types.int64), codegen
