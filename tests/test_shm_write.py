"""TypedP2pWriter.write(payload) (issue 15: within 2x of memcpy): one flat copy, same seqlock commit.

Real segments; a reader attached through the ordinary protocol sees exactly the payload's bytes.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.shm.p2p import TypedP2pReader, TypedP2pWriter
from common.shm.segments import SEGMENTS


def _pair(key: str):
    spec = SEGMENTS[key]
    w = TypedP2pWriter.create(spec.name(), spec.writer, spec.reader, spec.dtype)
    r = TypedP2pReader.attach(spec.name(), spec.reader, spec.dtype, stale_reads=1 << 30)
    return w, r


def test_write_publishes_the_payload_bytes_with_a_commit(shm_prefix):
    """Issue 15 write(payload): the reader gets the payload's bytes; heartbeat and write_seq advance
    exactly as with commit(); `local` is left alone."""
    w, r = _pair("hal_cu")
    try:
        p = np.zeros((), w.dtype)
        p["axes"]["position"][:4] = [1.5, -2.0, 3.25, 4.0]
        p["di_bank"][3] = 0xDEADBEEF
        p["axis_count"] = 4
        hb = w.heartbeat
        w.write(p)
        got = r.read()
        assert got.tobytes() == p.tobytes()
        assert w.heartbeat == hb + 1 and int(r.heartbeat) == hb + 1
        assert w._map.write_seq[0] == 2 * (hb + 1)
        assert not w.local["axes"]["position"].any()  # local untouched
        p["axis_count"] = 7  # the same array again: the cached view sees its new content
        w.write(p)
        assert int(r.read()["axis_count"]) == 7 and w.heartbeat == hb + 2
        w.commit()  # commit() still publishes local
        assert int(r.read()["axis_count"]) == 0
    finally:
        r.close()
        w.close()


def test_write_accepts_a_one_element_array_and_a_non_contiguous_view(shm_prefix):
    """write(payload) takes a 0-d value, a (1,) array or a strided element of a larger array."""
    w, r = _pair("re_mqt")
    try:
        many = np.zeros(3, w.dtype)
        many["status"]["current_step"] = [1, 2, 3]
        w.write(many[1:2])
        assert int(r.read()["status"]["current_step"]) == 2
        w.write(many[::2][1])  # numpy scalar record view
        assert int(r.read()["status"]["current_step"]) == 3
    finally:
        r.close()
        w.close()


def test_write_refuses_a_payload_of_another_layout(shm_prefix):
    """Bad input: a payload of another dtype (or several values) is refused by name, nothing written."""
    w, r = _pair("re_mqt")
    try:
        hb = w.heartbeat
        with pytest.raises(TypeError, match="re_mqt: payload must be one value"):
            w.write(np.zeros((), SEGMENTS["cu_mqt"].dtype))
        with pytest.raises(TypeError, match="one value"):
            w.write(np.zeros(2, w.dtype))
        assert w.heartbeat == hb
    finally:
        r.close()
        w.close()
