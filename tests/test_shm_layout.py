"""Byte-level layout: header offsets, version hash, mapped size, and the two upstream payloads
(HalToCuSegment / CuToHalSegment) checked field by field against upstream's offsets."""
from __future__ import annotations

import os
import struct

import numpy as np

from common.consts import MAX_AXES, P2P_SHM_MAGIC
from common.shm import p2p
from common.shm.p2p import TypedP2pWriter, mapped_size, segment_name, shm_path, version_hash
from common.shm.segments import (
    ACK_PATH,
    CU_AXIS_COMMAND,
    CU_TO_HAL,
    HAL_AXIS_FEEDBACK,
    HAL_TO_CU,
    SEGMENTS,
)


def test_version_hash_formula():
    for size in (64, 10432, 10944, 4352):
        expected = ((size * 0x9E3779B9) ^ (64 * 0x517CC1B7)) & 0xFFFFFFFF
        assert version_hash(size) == expected
    assert version_hash(10432) == 0x0B905F00  # pinned: upstream's HalToCuSegment hash


def test_upstream_payload_offsets():
    assert HAL_AXIS_FEEDBACK.itemsize == 32
    assert [HAL_AXIS_FEEDBACK.fields[f][1] for f in ("position", "velocity", "torque_estimate", "drive_ready", "drive_fault", "referenced", "active")] == [0, 8, 16, 24, 25, 26, 27]
    assert CU_AXIS_COMMAND.itemsize == 40
    assert [CU_AXIS_COMMAND.fields[f][1] for f in ("target_position", "target_velocity", "calculated_torque", "torque_offset", "enable", "brake_release")] == [0, 8, 16, 24, 32, 33]
    assert HAL_TO_CU.itemsize == 10432
    assert {k: HAL_TO_CU.fields[k][1] for k in HAL_TO_CU.names} == {"axes": 0, "di_bank": 2048, "ai_values": 2176, "axis_count": 10368}
    assert CU_TO_HAL.itemsize == 10944
    assert {k: CU_TO_HAL.fields[k][1] for k in CU_TO_HAL.names} == {"axes": 0, "do_bank": 2560, "ao_values": 2688, "axis_count": 10880}
    assert HAL_TO_CU.fields["axes"][0].shape == (MAX_AXES,)


def test_header_bytes_and_payload_bytes_on_disk(fresh_prefix):
    """Write known values and check the raw bytes of /dev/shm/<name> at upstream's offsets."""
    name = segment_name("hal", "cu")
    with TypedP2pWriter.create(name, "hal", "cu", HAL_TO_CU) as w:
        w.local["axes"]["position"][2] = 12.5
        w.local["axes"]["drive_ready"][2] = 1
        w.local["di_bank"][1] = 0xDEADBEEF
        w.local["ai_values"][5] = -3.25
        w.local["axis_count"] = 3
        w.commit()
        w.commit()
        raw = open(shm_path(name), "rb").read()
    assert len(raw) == mapped_size(10432) == 12288
    assert raw[0:8] == P2P_SHM_MAGIC
    assert struct.unpack_from("<I", raw, 8)[0] == version_hash(10432)
    assert struct.unpack_from("<Q", raw, 16)[0] == 2  # heartbeat after two writes
    assert raw[24] == 1 and raw[25] == 0  # source hal=1, dest cu=0
    assert struct.unpack_from("<I", raw, 28)[0] == 10432
    assert struct.unpack_from("<I", raw, 32)[0] == 4  # write_seq = 2*heartbeat: even, consistent
    assert raw[36:64] == bytes(28)
    base = 64
    assert struct.unpack_from("<d", raw, base + 2 * 32 + 0)[0] == 12.5
    assert raw[base + 2 * 32 + 24] == 1
    assert struct.unpack_from("<Q", raw, base + 2048 + 8)[0] == 0xDEADBEEF
    assert struct.unpack_from("<d", raw, base + 2176 + 5 * 8)[0] == -3.25
    assert raw[base + 10368] == 3


def test_segment_table_is_complete_and_consistent():
    assert len(SEGMENTS) == 15
    pairs = {(s.writer.abbrev, s.reader.abbrev) for s in SEGMENTS.values()}
    assert len(pairs) == 15
    for key, s in SEGMENTS.items():
        assert key == f"{s.writer.abbrev}_{s.reader.abbrev}"
        assert s.dtype.itemsize % 64 == 0, key
        assert p2p.aligned_payload_size(s.dtype) == s.dtype.itemsize
    for cmd, ack in ACK_PATH.items():
        assert "ring" in SEGMENTS[cmd].dtype.names
        assert "acks" in SEGMENTS[ack].dtype.names
        assert SEGMENTS[cmd].writer == SEGMENTS[ack].reader and SEGMENTS[cmd].reader == SEGMENTS[ack].writer


def test_module_codes():
    assert [(m.abbrev, int(m)) for m in p2p.ModuleAbbrev] == [("cu", 0), ("hal", 1), ("re", 2), ("mqt", 3), ("rpc", 4)]


def test_prefix_from_environment(monkeypatch):
    monkeypatch.setenv("EVO_SHM_PREFIX", "abc")
    assert segment_name("hal", "cu") == "abc_hal_cu"
    monkeypatch.delenv("EVO_SHM_PREFIX")
    assert segment_name("hal", "cu") == "evo_hal_cu"


def test_every_segment_round_trips(fresh_prefix):
    from common.shm.p2p import TypedP2pReader

    for key, s in SEGMENTS.items():
        name = s.name()
        with TypedP2pWriter.create(name, s.writer, s.reader, s.dtype) as w:
            raw = w.local.reshape(1).view(np.uint8)
            raw[:] = np.arange(raw.size) % 251
            w.commit()
            with TypedP2pReader.attach(name, s.reader, s.dtype) as r:
                got = r.read().reshape(1).view(np.uint8)
                assert np.array_equal(got, raw), key
        assert not os.path.exists(shm_path(name))
