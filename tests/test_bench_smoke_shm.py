"""Smoke test of benchmarks/bench_shm.py: a --quick run completes, its JSON has every row, nothing is left over.

No timing is asserted here; the figures live in benchmarks/results/shm.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, unique_prefix

ROW_KEYS = {"timer", "memcpy", "struct_copy", "evo_write", "evo_read", "raw_write", "raw_read",
            "iox_publish", "iox_receive", "queue_put", "queue_get",
            "evo_write_payload", "evo_write_payload_old", "evo_commit_inproc",  # issue 15: write(payload)
            "change_same", "change_diff", "wake_post", "wake_post_pending"}  # issue 15: the wake's cost
PAYLOAD_BYTES = {"hal_cu": 10432, "re_mqt": 192}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "shm.json"
    prefix = unique_prefix("bsm")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("EVO_SHM_PREFIX", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_shm", "--quick", "--out", str(out), "--shm-prefix", prefix],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    yield proc, out, prefix
    for name in os.listdir("/dev/shm"):  # only if the run failed half-way
        if name.startswith(prefix):
            os.unlink(os.path.join("/dev/shm", name))


def test_quick_run_succeeds_and_prints_the_table(quick_run):
    proc, _, _ = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "memcpy floor" in proc.stdout and "iceoryx2" in proc.stdout and "aims:" in proc.stdout


def test_json_has_machine_info_and_every_row(quick_run):
    proc, out, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["benchmark"] == "shm"
    for key in ("platform", "cpu_model", "cores", "python", "numpy"):
        assert key in data["machine"]
    assert data["config"]["quick"] is True and data["config"]["ops_per_row"] == 200
    rows = {(r["key"], r["payload"]): r for r in data["rows"]}
    expected = {("timer", None)} | {(k, p) for k in ROW_KEYS - {"timer"} for p in PAYLOAD_BYTES}
    assert set(rows) == expected
    for (key, payload), row in rows.items():
        for field in ("op", "bytes", "n", "p50_ns", "p99_ns", "ratio_to_floor"):
            assert field in row, (key, payload, field)
        assert row["n"] == 200 and row["p50_ns"] > 0 and row["p99_ns"] >= row["p50_ns"]
        if payload:
            assert row["bytes"] == PAYLOAD_BYTES[payload]
            assert row["ratio_to_floor"] > 0
    for key in ("evo_read", "raw_read", "iox_receive", "queue_get"):
        for payload in PAYLOAD_BYTES:
            assert rows[(key, payload)]["verified"] is True, (key, payload)
    for payload in PAYLOAD_BYTES:
        summary = data["summary"][payload]
        for field in ("write_to_floor", "read_to_floor", "evo_write_read_p50_ns", "iox_publish_receive_p50_ns",
                      "iox_over_evo", "queue_over_evo", "evo_over_raw_copy"):
            assert summary[field] > 0, (payload, field)
    assert set(data["summary"]["aims"]) == {"hal_cu_write_within_4x_floor", "hal_cu_read_within_4x_floor",
                                            "hal_cu_3x_cheaper_than_iceoryx2",
                                            "hal_cu_write_payload_within_2x_floor",
                                            "re_mqt_write_payload_within_2x_floor"}


def test_nothing_left_in_dev_shm_or_tmp(quick_run):
    proc, _, prefix = quick_run
    assert proc.returncode == 0, proc.stderr
    assert [n for n in os.listdir("/dev/shm") if n.startswith(prefix)] == []
    assert not os.path.exists(f"/tmp/{prefix}iox")
