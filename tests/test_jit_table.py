"""common/jit_table.py: many arrays as one kernel argument — what the table lists, what it refuses, that it
holds its arrays (and a segment mapping) alive, and a compiled kernel reading and writing through it; the
HAL's cycle kernels get their arrays this way (hal/fused.py)."""
from __future__ import annotations

import gc
import mmap
import weakref

import numpy as np
import pytest

from common import jit_table
from common.jit_table import array_table, table_arrays


def test_the_table_lists_each_arrays_address_and_size_and_is_read_only():
    a, b = np.zeros(10, np.uint8), np.zeros(3, np.float64)
    t = array_table([a, b])
    assert t.dtype == np.int64 and t.shape == (4,) and not t.flags.writeable and t.flags.c_contiguous
    assert list(t) == [a.ctypes.data, 10, b.ctypes.data, 24]
    assert table_arrays(t)[0] is a and table_arrays(t)[1] is b
    with pytest.raises(ValueError):
        t[0] = 0


@pytest.mark.parametrize("bad, why", [
    (np.zeros(8, np.uint8)[::2], r"\(strided\)"),
    ("read-only", r"\(read-only\)"),
    (b"bytes", r"\(bytes\)"),
])
def test_an_array_a_kernel_could_not_write_in_place_is_refused_by_name(bad, why):
    if isinstance(bad, str):
        bad = np.zeros(8, np.uint8)
        bad.setflags(write=False)
    with pytest.raises(TypeError, match=why) as e:
        array_table([np.zeros(4, np.uint8), bad])
    assert "entry 1" in str(e.value)


def test_the_table_holds_its_arrays_and_a_mapping_cannot_close_under_it():
    a = np.arange(16, dtype=np.uint8)
    gone = weakref.ref(a)
    mm = mmap.mmap(-1, 4096)
    view = np.frombuffer(mm, np.uint8)
    t = array_table([a, view])
    del a, view
    gc.collect()
    assert gone() is not None, "the table must keep its arrays alive"
    with pytest.raises(BufferError):
        mm.close()  # the listed view still exports the mapping: no kernel can write into an unmapped page
    addr = int(t[0])
    assert table_arrays(t)[0].ctypes.data == addr
    del t
    gc.collect()
    assert gone() is None, "released with the table"
    mm.close()


@pytest.fixture(scope="module")
def table_bytes():
    """The intrinsic, bound as numba's (the HAL set's JIT binds every @kernel / intrinsic of its modules)."""
    from hal.kernels import KERNELS

    KERNELS.load("jit")
    return jit_table.table_bytes


def test_a_compiled_kernel_reads_and_writes_the_listed_arrays_in_place(table_bytes):
    import numba

    @numba.njit
    def through(tab):
        src = table_bytes(tab, 0)
        dst = table_bytes(tab, 1).view(np.float64)
        for i in range(dst.shape[0]):
            dst[i] = src[i] * 2.0
        ints = table_bytes(tab, 2).view(np.int64)
        ints[1] += 5
        return table_bytes(tab, 0).shape[0] + 1000 * table_bytes(tab, 1).shape[0]

    src = np.arange(4, dtype=np.uint8)
    dst = np.zeros(4, np.float64)
    ints = np.array([7, 8, 9], np.int64)
    t = array_table([src, dst, ints])
    assert through(t) == 4 + 1000 * 32
    assert list(dst) == [0.0, 2.0, 4.0, 6.0]
    assert list(ints) == [7, 13, 9]
    assert list(src) == [0, 1, 2, 3]  # read, not written
