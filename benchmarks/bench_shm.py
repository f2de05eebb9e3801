"""Cross-process cost of evo's seqlock segments beside iceoryx2, multiprocessing.Queue and plain copies.

Run: `.venv/bin/python -m benchmarks.bench_shm [--ops N] [--quick] [--out PATH]` -> table + results/shm.json.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import mmap
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import shutil
import sys
import time
import traceback
import uuid
from typing import Any, Callable

import numpy as np

from benchmarks._stats import machine_info, print_table, ratio, summarize, timer_overhead_ns, write_json

METHOD = (
    "A writer process and a reader process move the same payload bytes in lockstep: the writer does op i, "
    "then the reader does op i; they hand over through a shared counter, spinning with sched_yield, untimed. "
    "Each side times its own op with perf_counter_ns around it; nothing is subtracted (the timer row is the "
    "timer's own cost). The copies (c) and (d) run in one process on cache-hot buffers; (d), np.copyto on "
    "flat uint8 views, is the floor. (d') is the same np.copyto into / out of a bare shared mapping across "
    "the two processes: the copy without any protocol."
)
PAYLOADS = ("hal_cu", "re_mqt")  # the 10 KB active segment and a small status segment
AIM_FLOOR_RATIO = 4.0  # hal_cu write and read each within 4x of the memcpy floor
AIM_IOX_SPEEDUP = 3.0  # evo write+read at least 3x cheaper than iceoryx2 publish+receive
AIM_WRITE_PAYLOAD_RATIO = 2.0  # issue 15: TypedP2pWriter.write(payload) within 2x of the memcpy floor

# Slots of the lockstep counter shared by a writer/reader pair.
W_DONE, R_DONE, W_READY, R_READY, ABORT = range(5)
PAIR_TIMEOUT_S = 120.0

ROW_LABELS = {
    "timer": "timer: perf_counter_ns pair (no op)",
    "memcpy": "(d) memcpy floor: np.copyto on uint8 views",
    "struct_copy": "(c) structured copy: dst[...] = src",
    "evo_write": "evo write: TypedP2pWriter.commit()",
    "evo_write_payload": "evo write(payload), in-process: one flat copy",
    "evo_write_payload_old": "evo write(payload) before issue 15: dtype assign + commit",
    "evo_commit_inproc": "evo commit() of local, in-process",
    "change_same": "wake test: ChangeDetector, bytes unchanged",
    "change_diff": "wake test: ChangeDetector, one byte changed",
    "wake_post": "wake: post() + the reader draining it (2 syscalls)",
    "wake_post_pending": "wake: WakePoster.post(), wake pending",
    "evo_read": "evo read: TypedP2pReader.read()",
    "iox_publish": "(a) iceoryx2 publish: loan+copy+send",
    "iox_receive": "(a) iceoryx2 receive: take+copy+release",
    "raw_write": "(d') raw copy into shm (cross-process)",
    "raw_read": "(d') raw copy out of shm (cross-process)",
    "queue_put": "(b) mp.Queue put(bytes)",
    "queue_get": "(b) mp.Queue get()+copy",
}
CROSS_KINDS = {
    "evo": ("evo_write", "evo_read"),
    "raw": ("raw_write", "raw_read"),
    "iox": ("iox_publish", "iox_receive"),
    "queue": ("queue_put", "queue_get"),
}


def _dtype(payload: str) -> np.dtype:
    from common.shm.segments import SEGMENTS

    return SEGMENTS[payload].dtype


def _pattern(nbytes: int) -> np.ndarray:
    """Deterministic non-zero payload bytes; the reader checks it got exactly these."""
    return (np.arange(nbytes, dtype=np.uint32) % 251 + 1).astype(np.uint8)


# --- the two sides of a cross-process pair (run in child processes) -----------------------------
class _Side:
    """One side's prepared operation: `op()` is what gets timed; it returns False for 'nothing
    there yet' (iceoryx2 receive before the connection is up), anything else for done."""

    op: Callable[[], Any]

    def verified(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class _EvoWriter(_Side):
    def __init__(self, payload: str) -> None:
        from common.shm.p2p import TypedP2pWriter, segment_name
        from common.shm.segments import SEGMENTS

        spec = SEGMENTS[payload]
        self.w = TypedP2pWriter.create(segment_name(spec.writer, spec.reader), spec.writer, spec.reader, spec.dtype)
        self.w.local.reshape(1).view(np.uint8)[:] = _pattern(spec.dtype.itemsize)
        self.op = self.w.commit

    def close(self) -> None:
        self.w.close()


class _EvoReader(_Side):
    def __init__(self, payload: str) -> None:
        from common.shm.p2p import TypedP2pReader, segment_name
        from common.shm.segments import SEGMENTS

        spec = SEGMENTS[payload]
        self.r = TypedP2pReader.attach(segment_name(spec.writer, spec.reader), spec.reader, spec.dtype,
                                       stale_reads=1 << 30)
        self.op = self.r.read

    def verified(self) -> bool:
        return bool(np.array_equal(self.r.local.reshape(1).view(np.uint8), _pattern(self.r.dtype.itemsize)))

    def stats(self) -> dict[str, Any]:
        return {"read_contention": self.r.contention_count}

    def close(self) -> None:
        self.r.close()


class _RawCopy(_Side):
    """Context for the floor: the same bytes copied into / out of a bare shared mapping, no protocol.
    Shows how much of a cross-process op is the copy itself (cache lines moving between cores)."""

    def __init__(self, payload: str, writer: bool) -> None:
        n = _dtype(payload).itemsize
        self.path = f"/dev/shm/{os.environ['EVO_SHM_PREFIX']}_rawcopy_{payload}"
        self.writer = writer
        fd = os.open(self.path, (os.O_RDWR | os.O_CREAT) if writer else os.O_RDONLY, 0o600)
        try:
            if writer:
                os.ftruncate(fd, n)
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writer else 0)
            self.mm = mmap.mmap(fd, n, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        self.shm = np.frombuffer(self.mm, dtype=np.uint8, count=n)
        self.local = _pattern(n) if writer else np.zeros(n, dtype=np.uint8)
        dst, src = (self.shm, self.local) if writer else (self.local, self.shm)
        self.op = functools.partial(np.copyto, dst, src)

    def verified(self) -> bool:
        return bool(np.array_equal(self.local, _pattern(self.local.size)))

    def close(self) -> None:
        del self.op, self.shm
        self.mm.close()
        if self.writer:
            os.unlink(self.path)


def _iox_service(tag: str, nbytes: int):  # -> (iox2 module, node, service)
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    cfg = iox2.config.default()
    g = cfg.global_cfg  # a live handle: setting its fields changes cfg
    g.prefix = iox2.FileName.new(tag + "_")
    g.root_path = iox2.Path.new(f"/tmp/{tag}/")
    node = (iox2.NodeBuilder.new().config(cfg).signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc))
    payload_type = ctypes.c_uint8 * nbytes  # fixed-size payload, like a #[repr(C)] struct
    svc = (node.service_builder(iox2.ServiceName.new(f"evo_bench/{tag}/{nbytes}"))
           .publish_subscribe(payload_type).history_size(0).subscriber_max_buffer_size(1)
           .open_or_create())
    return iox2, node, svc


class _IoxPublisher(_Side):
    def __init__(self, payload: str, tag: str) -> None:
        n = _dtype(payload).itemsize
        self.iox2, self.node, self.svc = _iox_service(tag, n)
        self.pub = self.svc.publisher_builder().create()
        self.src = _pattern(n)
        src_addr, pub, memmove = self.src.ctypes.data, self.pub, ctypes.memmove

        def publish() -> None:
            sample = pub.loan_uninit()
            memmove(sample.payload_ptr, src_addr, n)
            sample.assume_init().send()

        self.op = publish

    def close(self) -> None:
        del self.op, self.pub, self.svc, self.node


class _IoxSubscriber(_Side):
    def __init__(self, payload: str, tag: str) -> None:
        n = _dtype(payload).itemsize
        self.iox2, self.node, self.svc = _iox_service(tag, n)
        self.sub = self.svc.subscriber_builder().buffer_size(1).create()
        self.dst = np.zeros(n, dtype=np.uint8)
        dst_addr, sub, memmove = self.dst.ctypes.data, self.sub, ctypes.memmove

        def receive() -> bool:
            sample = sub.receive()
            if sample is None:
                return False
            memmove(dst_addr, sample.payload_ptr, n)
            sample.delete()
            return True

        self.op = receive

    def verified(self) -> bool:
        return bool(np.array_equal(self.dst, _pattern(self.dst.size)))

    def close(self) -> None:
        del self.op, self.sub, self.svc, self.node


class _QueuePut(_Side):
    """put() only enqueues: the queue's feeder thread pickles and sends the bytes afterwards."""

    def __init__(self, payload: str, q: Any) -> None:
        self.q = q
        src = _pattern(_dtype(payload).itemsize)
        self.op = lambda: q.put(src.tobytes())  # a snapshot, as a sender of live numpy data must

    def close(self) -> None:
        self.q.close()
        self.q.join_thread()


class _QueueGet(_Side):
    def __init__(self, payload: str, q: Any) -> None:
        self.dst = np.zeros(_dtype(payload).itemsize, dtype=np.uint8)
        dst, frombuffer, copyto, u8 = self.dst, np.frombuffer, np.copyto, np.uint8
        self.op = lambda: copyto(dst, frombuffer(q.get(), dtype=u8))

    def verified(self) -> bool:
        return bool(np.array_equal(self.dst, _pattern(self.dst.size)))


def _make_side(kind: str, writer: bool, payload: str, extra: Any) -> _Side:
    if kind == "evo":
        return _EvoWriter(payload) if writer else _EvoReader(payload)
    if kind == "raw":
        return _RawCopy(payload, writer)
    if kind == "iox":
        return _IoxPublisher(payload, extra) if writer else _IoxSubscriber(payload, extra)
    if kind == "queue":
        return _QueuePut(payload, extra) if writer else _QueueGet(payload, extra)
    raise ValueError(kind)


class _Aborted(Exception):
    pass


def _wait_until(sync: np.ndarray, slot: int, target: int, deadline: float) -> None:
    """Spin until sync[slot] >= target; sched_yield releases the GIL (a queue's feeder thread needs it)."""
    yield_ = os.sched_yield
    while sync[slot] < target:
        yield_()
        if sync[ABORT]:
            raise _Aborted("the other side aborted")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited > {PAIR_TIMEOUT_S}s for slot {slot} to reach {target}")


def _side_main(kind: str, writer: bool, payload: str, ops: int, warmup: int, sync_raw: Any,
               conn: mpc.Connection, extra: Any) -> None:
    """Child process body: set up one side, run warmup + timed ops in lockstep, send the latencies."""
    sync = np.frombuffer(sync_raw, dtype=np.uint64)
    me, other = (W_DONE, R_DONE) if writer else (R_DONE, W_DONE)
    deadline = time.monotonic() + PAIR_TIMEOUT_S
    side: _Side | None = None
    op: Any = None
    try:
        if writer:
            side = _make_side(kind, True, payload, extra)
            sync[W_READY] = 1
            _wait_until(sync, R_READY, 1, deadline)
        else:
            _wait_until(sync, W_READY, 1, deadline)
            side = _make_side(kind, False, payload, extra)
            sync[R_READY] = 1
        op, pc = side.op, time.perf_counter_ns
        lat = np.empty(ops, dtype=np.int64)
        misses = 0
        total = warmup + ops
        gc.collect()
        gc.disable()
        for i in range(total):
            _wait_until(sync, other, i if writer else i + 1, deadline)
            t0 = pc()
            got = op()
            t1 = pc()
            if got is False and i >= warmup:  # timed receive found nothing yet: retry, count it
                give_up = time.monotonic() + 5.0
                while got is False:
                    misses += 1
                    if time.monotonic() > give_up:
                        raise TimeoutError("the sample never arrived (sent before the connection was up?)")
                    t0 = pc()
                    got = op()
                    t1 = pc()
            if i >= warmup:
                lat[i - warmup] = t1 - t0
            sync[me] = i + 1
        gc.enable()
        if writer:  # keep the writer's resources alive until the reader has taken the last sample
            _wait_until(sync, R_DONE, total, deadline)
        conn.send({"lat": lat, "misses": misses, "verified": side.verified(), "stats": side.stats()})
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the run
        sync[ABORT] = 1
        conn.send({"error": f"{kind} {'writer' if writer else 'reader'} {payload}: {e!r}\n{traceback.format_exc()}"})
    finally:
        op = None  # drop the last reference to the side's buffers before it unmaps them
        if side is not None:
            side.close()
        conn.close()


def _run_pair(ctx: Any, kind: str, payload: str, ops: int, warmup: int, extra: Any) -> tuple[dict, dict]:
    sync_raw = ctx.RawArray("Q", 8)
    procs, conns = [], []
    for writer in (True, False):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_side_main, args=(kind, writer, payload, ops, warmup, sync_raw, child_end, extra),
                        name=f"bench-{kind}-{'w' if writer else 'r'}")
        p.start()
        child_end.close()
        procs.append(p)
        conns.append(parent_end)
    results: list[dict | None] = [None, None]
    deadline = time.monotonic() + PAIR_TIMEOUT_S + 30
    try:
        pending = list(conns)
        while pending:
            ready = mpc.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{kind}/{payload}: no result within {PAIR_TIMEOUT_S + 30}s")
            for c in ready:
                try:
                    results[conns.index(c)] = c.recv()
                except EOFError:
                    results[conns.index(c)] = {"error": f"{kind}/{payload}: a side died without a result"}
                pending.remove(c)
    finally:
        np.frombuffer(sync_raw, dtype=np.uint64)[ABORT] = 1 if None in results else 0
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in conns:
            c.close()
    errors = [r["error"] for r in results if r and "error" in r]
    errors += [f"{p.name} exited with {p.exitcode}" for p in procs if p.exitcode != 0]
    if errors:
        raise RuntimeError("\n".join(errors))
    return results[0], results[1]  # type: ignore[return-value]


# --- in-process rows -----------------------------------------------------------------------------
def _time_local(op: Callable[[], Any], ops: int, warmup: int) -> np.ndarray:
    pc = time.perf_counter_ns
    lat = np.empty(ops, dtype=np.int64)
    for _ in range(warmup):
        op()
    gc.collect()
    gc.disable()
    try:
        for i in range(ops):
            t0 = pc()
            op()
            t1 = pc()
            lat[i] = t1 - t0
    finally:
        gc.enable()
    return lat


def _local_rows(payload: str, ops: int, warmup: int) -> dict[str, np.ndarray]:
    dt = _dtype(payload)
    src_s, dst_s = np.zeros((), dtype=dt), np.zeros((), dtype=dt)
    src_s.reshape(1).view(np.uint8)[:] = _pattern(dt.itemsize)
    src_u8, dst_u8 = _pattern(dt.itemsize), np.zeros(dt.itemsize, dtype=np.uint8)
    rows = {
        # bound C callables: no Python frame inside the timed window, same as w.commit / r.read
        "memcpy": _time_local(functools.partial(np.copyto, dst_u8, src_u8), ops, warmup),
        "struct_copy": _time_local(functools.partial(dst_s.__setitem__, Ellipsis, src_s), ops, warmup),
    }
    # issue 15: write(payload) beside the floor and beside commit(), same process, same bytes; and the
    # old write (structured assignment into local, then commit) for the before/after ratio
    from common.shm.p2p import TypedP2pWriter
    from common.shm.segments import SEGMENTS

    spec = SEGMENTS[payload]
    w = TypedP2pWriter.create(f"{os.environ['EVO_SHM_PREFIX']}_inproc_{payload}", spec.writer, spec.reader, dt)
    try:
        w.local.reshape(1).view(np.uint8)[:] = _pattern(dt.itemsize)

        def old_write(p: np.ndarray = src_s) -> None:
            w.local[...] = p.reshape(())
            w.commit()

        rows["evo_write_payload"] = _time_local(functools.partial(w.write, src_s), ops, warmup)
        rows["evo_commit_inproc"] = _time_local(w.commit, ops, warmup)
        rows["evo_write_payload_old"] = _time_local(old_write, ops, warmup)
        rows.update(_wake_rows(w, ops, warmup))
    finally:
        w.close()
    return rows


def _wake_rows(w: Any, ops: int, warmup: int) -> dict[str, np.ndarray]:
    """What the HAL / CU add to a cycle to wake the bridges (issue 15): the byte comparison of what a
    reader shows (memcmp against a private copy) and the semaphore post."""
    from common.shm.views import ChangeDetector, flat_bytes
    from common.shm.wake import WakePoster, WakeWaiter

    local = flat_bytes(w.local)
    det = ChangeDetector(local)
    det.changed()
    rows = {"change_same": _time_local(det.changed, ops, warmup)}

    def flip() -> bool:
        local[-1] ^= 1
        return det.changed()

    rows["change_diff"] = _time_local(flip, ops, warmup)
    waiter = WakeWaiter("cu")  # no cycle module waits on "cu": free for a benchmark
    poster = WakePoster("cu")
    try:
        def post_drained() -> None:
            poster.post()
            waiter.drain()  # the reader consumed it: the next post is a real sem_post

        rows["wake_post"] = _time_local(post_drained, ops, warmup)
        poster.post()
        rows["wake_post_pending"] = _time_local(poster.post, ops, warmup)
    finally:
        poster.close()
        waiter.close()
    return rows


# --- orchestration -------------------------------------------------------------------------------
def _cleanup(prefix: str, iox_tag: str) -> None:
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix + "_") or name.startswith(iox_tag + "_"):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except FileNotFoundError:
                pass
    shutil.rmtree(f"/tmp/{iox_tag}", ignore_errors=True)


def _row(key: str, payload: str | None, nbytes: int, lat: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"key": key, "op": ROW_LABELS[key], "payload": payload, "bytes": nbytes, **summarize(lat), **extra}


def run(ops: int, warmup: int, quick: bool = False, out: str | None = None, prefix: str | None = None) -> dict[str, Any]:
    """Measure every row, write the JSON, return the result. Everything created in /dev/shm (and
    iceoryx2's /tmp/<prefix>iox/) starts with `prefix` and is removed at the end."""
    prefix = prefix or f"bsh{uuid.uuid4().hex[:10]}"
    iox_tag = f"{prefix}iox"
    old_prefix = os.environ.get("EVO_SHM_PREFIX")
    os.environ["EVO_SHM_PREFIX"] = prefix  # inherited by the spawned sides
    ctx = mp.get_context("spawn")
    t_start = time.monotonic()
    info = machine_info()
    rows: list[dict[str, Any]] = [_row("timer", None, 0, timer_overhead_ns(ops))]
    try:
        for payload in PAYLOADS:
            nbytes = _dtype(payload).itemsize
            for key, lat in _local_rows(payload, ops, warmup).items():
                rows.append(_row(key, payload, nbytes, lat))
            for kind, (wkey, rkey) in CROSS_KINDS.items():
                extra: Any = iox_tag if kind == "iox" else ctx.Queue() if kind == "queue" else None
                w, r = _run_pair(ctx, kind, payload, ops, warmup, extra)
                rows.append(_row(wkey, payload, nbytes, w["lat"], **w["stats"]))
                rows.append(_row(rkey, payload, nbytes, r["lat"], verified=r["verified"], misses=r["misses"],
                                 **r["stats"]))
                if kind == "queue":
                    extra.close()
                    extra.join_thread()
    finally:
        _cleanup(prefix, iox_tag)
        if old_prefix is None:
            os.environ.pop("EVO_SHM_PREFIX", None)
        else:
            os.environ["EVO_SHM_PREFIX"] = old_prefix

    by = {(r["key"], r["payload"]): r for r in rows}
    for r in rows:
        floor = by.get(("memcpy", r["payload"]))
        r["ratio_to_floor"] = ratio(r["p50_ns"], floor["p50_ns"]) if floor else None
        r["p99_ratio_to_floor"] = ratio(r["p99_ns"], floor["p99_ns"]) if floor else None
    summary: dict[str, Any] = {}
    for payload in PAYLOADS:
        evo = by[("evo_write", payload)]["p50_ns"] + by[("evo_read", payload)]["p50_ns"]
        iox = by[("iox_publish", payload)]["p50_ns"] + by[("iox_receive", payload)]["p50_ns"]
        q = by[("queue_put", payload)]["p50_ns"] + by[("queue_get", payload)]["p50_ns"]
        raw = by[("raw_write", payload)]["p50_ns"] + by[("raw_read", payload)]["p50_ns"]
        summary[payload] = {
            "write_payload_to_floor": by[("evo_write_payload", payload)]["ratio_to_floor"],
            "write_payload_old_to_floor": by[("evo_write_payload_old", payload)]["ratio_to_floor"],
            "commit_inproc_to_floor": by[("evo_commit_inproc", payload)]["ratio_to_floor"],
            "write_to_floor": by[("evo_write", payload)]["ratio_to_floor"],
            "read_to_floor": by[("evo_read", payload)]["ratio_to_floor"],
            "evo_write_read_p50_ns": evo,
            "iox_publish_receive_p50_ns": iox,
            "queue_put_get_p50_ns": q,
            "raw_copy_write_read_p50_ns": raw,
            "evo_over_raw_copy": ratio(evo, raw),
            "iox_over_evo": ratio(iox, evo),
            "queue_over_evo": ratio(q, evo),
        }
    hal = summary["hal_cu"]
    summary["aims"] = {
        "hal_cu_write_within_4x_floor": hal["write_to_floor"] <= AIM_FLOOR_RATIO,
        "hal_cu_read_within_4x_floor": hal["read_to_floor"] <= AIM_FLOOR_RATIO,
        "hal_cu_3x_cheaper_than_iceoryx2": hal["iox_over_evo"] >= AIM_IOX_SPEEDUP,
        **{f"{p}_write_payload_within_2x_floor": summary[p]["write_payload_to_floor"] <= AIM_WRITE_PAYLOAD_RATIO
           for p in PAYLOADS},
    }
    result = {
        "benchmark": "shm",
        "machine": info,
        "config": {
            "ops_per_row": ops,
            "warmup_per_row": warmup,
            "quick": quick,
            "method": METHOD,
            "iceoryx2": "Ipc service, fixed-size ctypes c_uint8 array payload, history 0, buffer 1",
            "duration_s": round(time.monotonic() - t_start, 2),
        },
        "rows": rows,
        "summary": summary,
    }
    result["path"] = str(write_json("shm", result, out))
    return result


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nshm benchmark — {m['cpu_model']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}; "
          f"{result['config']['ops_per_row']} ops per row, lockstep across two processes\n")
    print_table(result["rows"], [
        ("op", "op", ""), ("payload", "payload", ""), ("bytes", "bytes", ""),
        ("p50 ns", "p50_ns", ".0f"), ("p99 ns", "p99_ns", ".0f"), ("x floor p50", "ratio_to_floor", ".2f"),
        ("x floor p99", "p99_ratio_to_floor", ".2f"),
    ])
    print()
    for payload in PAYLOADS:
        s = result["summary"][payload]
        print(f"{payload}: write(payload) {s['write_payload_to_floor']:.2f}x floor (aim <= "
              f"{AIM_WRITE_PAYLOAD_RATIO:.0f}x; before issue 15 {s['write_payload_old_to_floor']:.2f}x), "
              f"commit() in-process {s['commit_inproc_to_floor']:.2f}x")
        print(f"{payload}: evo write {s['write_to_floor']:.2f}x floor, read {s['read_to_floor']:.2f}x floor"
              + (f" (aim <= {AIM_FLOOR_RATIO:.0f}x)" if payload == "hal_cu" else ""))
        print(f"{payload}: evo write+read {s['evo_write_read_p50_ns']:.0f} ns vs iceoryx2 publish+receive "
              f"{s['iox_publish_receive_p50_ns']:.0f} ns -> {s['iox_over_evo']:.1f}x cheaper"
              + (f" (aim >= {AIM_IOX_SPEEDUP:.0f}x)" if payload == "hal_cu" else "")
              + f"; mp.Queue put+get {s['queue_put_get_p50_ns']:.0f} ns ({s['queue_over_evo']:.0f}x)")
        print(f"{payload}: the bare cross-process copies (d') alone take {s['raw_copy_write_read_p50_ns']:.0f} ns: "
              f"evo's protocol adds {s['evo_write_read_p50_ns'] - s['raw_copy_write_read_p50_ns']:.0f} ns "
              f"({s['evo_over_raw_copy']:.2f}x)")
    aims = result["summary"]["aims"]
    print("aims: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in aims.items()))
    print(f"results: {result['path']} ({result['config']['duration_s']} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_shm", description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000, help="timed ops per row (default 20000)")
    ap.add_argument("--warmup", type=int, default=1_000, help="untimed ops before each row (default 1000)")
    ap.add_argument("--quick", action="store_true", help="tiny counts for the smoke test (200 ops, 50 warmup)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/shm.json)")
    ap.add_argument("--shm-prefix", default=None, help="EVO_SHM_PREFIX to use (default: a unique one)")
    args = ap.parse_args(argv)
    ops, warmup = (200, 50) if args.quick else (args.ops, args.warmup)
    report(run(ops, warmup, quick=args.quick, out=args.out, prefix=args.shm_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
