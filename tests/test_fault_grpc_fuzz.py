"""gRPC fuzz (issue 16, "The fault-injection suite": gRPC fuzz): every method of evo.v1.Machine, Io and
Recipes, found from the service descriptors, called on a real `evo up` machine with out-of-range, NaN/inf,
huge, empty, non-UTF-8 and garbage inputs (encoded by hand where protobuf would refuse to). Every call is
answered before its deadline with OK or a clear code (never UNKNOWN / INTERNAL); a refused request writes
nothing (no command in any ring, HAL outputs and CU axis commands unchanged); no module restarts.
The short catalogue runs in `make test`; `make soak` adds thousands of seeded random mutations.
"""
from __future__ import annotations

import math
import random
import struct
import time
from dataclasses import dataclass
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor as D
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from common.shm.p2p import TypedP2pReader
from common.shm.segments import SEGMENTS
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2
from tests.fault_support import SOAK, SOAK_REASON, FaultMachine, write_soak_results
from tests.grpc_support import health_status
from tests.helpers import unique_prefix, wait_for

pytestmark = pytest.mark.timeout(900)

SERVICES = (machine_pb2.DESCRIPTOR.services_by_name["Machine"], io_pb2.DESCRIPTOR.services_by_name["Io"],
            recipes_pb2.DESCRIPTOR.services_by_name["Recipes"])
DEADLINE_S = 10.0
REFUSALS_BEFORE_THE_RING = {"INVALID_ARGUMENT", "OUT_OF_RANGE"}  # decided by the bridge: no command written
CLEAR = {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "ABORTED",
         "NOT_FOUND", "OUT_OF_RANGE", "UNAVAILABLE"}
RINGS = ("rpc_cu", "rpc_hal", "rpc_re")
# A valid base for the fields a mutation leaves alone, so that the mutated field is the one judged.
BASE = {"axis": 2, "pin": 11, "name": "home_all", "velocity": 10.0, "position": 5.0, "rate_hz": 5.0}
BASE_BY_METHOD = {"SetAnalogOutput": {"pin": 0}, "ResetFaults": {"axis": 2}}


# ---- hand-made protobuf wire format (to send what the protobuf library itself refuses to encode)
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data


@dataclass(frozen=True)
class Case:
    method: str
    label: str
    body: bytes


def base_message(method: D.MethodDescriptor) -> Any:
    cls = GetMessageClass(method.input_type)
    msg = cls()
    for f in method.input_type.fields:
        value = {**BASE, **BASE_BY_METHOD.get(method.name, {})}.get(f.name)
        if value is not None:
            setattr(msg, f.name, value)
    return msg


def field_values(f: D.FieldDescriptor, full: bool) -> Iterator[tuple[str, bytes]]:
    """(label, encoded field) for one field: every hostile value of its type (`full`: the 3.9 MB string too)."""
    n = f.number
    if f.type in (f.TYPE_DOUBLE, f.TYPE_FLOAT):
        fmt, wire = ("<d", 1) if f.type == f.TYPE_DOUBLE else ("<f", 5)
        for v in (math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -1.0, 0.0):
            if f.type == f.TYPE_FLOAT and abs(v) > 3e38:
                v = math.copysign(math.inf, v)
            yield f"{f.name}={v!r}", key(n, wire) + struct.pack(fmt, v)
    elif f.type in (f.TYPE_UINT32, f.TYPE_UINT64, f.TYPE_INT32, f.TYPE_INT64, f.TYPE_ENUM):
        for v in (0, 65, 1024, 2**31 - 1, 2**32 - 1, 2**63 - 1, -1):
            yield f"{f.name}={v}", key(n, 0) + varint(v)
    elif f.type == f.TYPE_BOOL:
        yield f"{f.name}=2", key(n, 0) + varint(2)
    elif f.type == f.TYPE_STRING:
        for label, data in (("empty", b""), ("non-UTF-8", b"\xff\xfe\xfd"), ("lone surrogate", b"\xed\xa0\x80"),
                            ("NUL and newline", b"a\x00b\nINFO forged line"), ("../ path", b"../../etc/passwd"),
                            ("1 MB", b"x" * 1_000_000), *((("3.9 MB", b"y" * 3_900_000),) if full else ())):
            yield f"{f.name} {label}", length_delimited(n, data)
    # the wrong wire type for the field, and the field cut short
    yield f"{f.name} wrong wire type", length_delimited(n, b"abc") if f.type != f.TYPE_STRING else key(n, 0) + varint(7)
    yield f"{f.name} truncated", key(n, 1 if f.type == f.TYPE_DOUBLE else 2) + b"\x05"


GARBAGE = (("garbage", bytes(range(256)) * 4), ("truncated varint", b"\x08\xff\xff"), ("zero field number", b"\x00\x01"),
           ("field 2^29-1", key(2**29 - 1, 0) + b"\x01"), ("group wire type", b"\x0b\x0c"),
           ("length past the end", b"\x0a\xff\xff\xff\x0f"), ("5 MB", b"\x0a" + varint(5_000_000) + b"z" * 5_000_000))


def catalogue(full: bool = False) -> list[Case]:
    """Every method x every hostile value of each of its fields, garbage and an unknown field. The 5 MB
    body (over grpc's 4 MB limit) goes to the first method of each service, to all of them when `full`."""
    out = []
    for svc in SERVICES:
        for i, m in enumerate(svc.methods):
            base = base_message(m).SerializeToString()
            out.append(Case(m.name, "empty", b""))
            for f in m.input_type.fields:
                others = base_message(m)
                others.ClearField(f.name)
                for label, enc in field_values(f, full):
                    out.append(Case(m.name, label, others.SerializeToString() + enc))
            for label, body in GARBAGE:
                if full or i == 0 or len(body) < 1_000_000:
                    out.append(Case(m.name, label, body))
            out.append(Case(m.name, "unknown field 999", base + key(999, 2) + varint(3) + b"abc"))
    return out


def random_cases(seed: int, count: int) -> list[Case]:
    """Seeded mutations of valid encodings: flipped bytes, cut, spliced, repeated."""
    rnd = random.Random(seed)
    methods = [m for svc in SERVICES for m in svc.methods]
    out = []
    for i in range(count):
        m = rnd.choice(methods)
        body = bytearray(base_message(m).SerializeToString() + rnd.randbytes(rnd.randint(0, 24)))
        for _ in range(rnd.randint(1, 4)):
            if body and rnd.random() < 0.6:
                body[rnd.randrange(len(body))] = rnd.randrange(256)
            elif body and rnd.random() < 0.5:
                body = body[: rnd.randrange(len(body))]
            else:
                body += rnd.randbytes(rnd.randint(1, 8))
        out.append(Case(m.name, f"random #{i}", bytes(body)))
    return out


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    m = FaultMachine(tmp_path_factory.mktemp("fault-grpc"), unique_prefix("fg"), mqtt=False)
    try:
        m.start()
        m.wait_status(lambda s: s.cu_ok and s.hal_ok, 30, "CU and HAL live")
        yield m
        m.down_and_check_nothing_left()
    finally:
        m.teardown()


class Segments:
    """What a refused request must not change: the command rings, the HAL's outputs, the CU's axis commands."""

    def __init__(self, prefix: str) -> None:
        self.readers = {}
        for k in (*RINGS, "hal_rpc", "cu_hal"):
            spec = SEGMENTS[k]
            self.readers[k] = TypedP2pReader.attach(spec.name(prefix), spec.reader, spec.dtype, exclusive=False,
                                                    stale_reads=1 << 30)

    def read(self, k: str) -> np.ndarray:
        return wait_for(self.readers[k].try_read, 5, 0.001, f"a consistent read of {k}").copy()

    def snapshot(self) -> dict[str, Any]:
        hal, cu = self.read("hal_rpc"), self.read("cu_hal")
        return {**{k: int(self.read(k)["ring"]["count"]) for k in RINGS},
                "do": hal["io"]["do_bank"].tobytes(), "ao": hal["io"]["ao_values"].tobytes(),
                "cu_axes": [(int(a["enable"]), float(a["target_position"])) for a in cu["axes"][:8]]}

    def close(self) -> None:
        for r in self.readers.values():
            r.close()


def invoke(channel: grpc.Channel, case: Case) -> tuple[str, str, float]:
    """Send the raw bytes; (code name, details, seconds). A stream's first message counts as its answer."""
    svc = next(s for s in SERVICES if case.method in s.methods_by_name)
    method = svc.methods_by_name[case.method]
    path = f"/{svc.full_name}/{case.method}"
    t0 = time.monotonic()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(case.body, timeout=DEADLINE_S)
            try:
                next(stream)
            finally:
                stream.cancel()
        else:
            channel.unary_unary(path)(case.body, timeout=DEADLINE_S)
        return "OK", "", time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code().name, e.details() or "", time.monotonic() - t0


def fuzz(m: FaultMachine, cases: list[Case]) -> dict[str, Any]:
    """Run every case; returns the failures (unclear answers, writes by a refused request) and the tally."""
    seg = Segments(m.prefix)
    before_mods = {n: (x["pid"], x["restarts"]) for n, x in m.up.status().items()}
    unclear, written, tally = [], [], {}
    try:
        for case in cases:
            snap = seg.snapshot()
            code, details, took = invoke(m.channel, case)
            tally[code] = tally.get(code, 0) + 1
            if code not in CLEAR or took >= DEADLINE_S:
                unclear.append((case.method, case.label, code, details[:160]))
            if code in ("OK", "UNAVAILABLE"):
                continue
            after = seg.snapshot()
            rings_same = all(after[k] == snap[k] for k in RINGS)
            if (code in REFUSALS_BEFORE_THE_RING and not rings_same) or \
                    (after["do"], after["ao"], after["cu_axes"]) != (snap["do"], snap["ao"], snap["cu_axes"]):
                written.append((case.method, case.label, code, details[:120]))
    finally:
        seg.close()
    after_mods = {n: (x["pid"], x["restarts"]) for n, x in m.up.status().items()}
    return {"unclear": unclear, "written": written, "tally": tally, "restarted":
            [n for n in before_mods if before_mods[n] != after_mods.get(n)]}


def test_every_method_answers_hostile_input_clearly_and_writes_nothing(machine):
    """Must exist (issue 16): gRPC fuzz — every method with out-of-range, NaN/inf, huge, empty, non-UTF-8
    and garbage inputs: no UNKNOWN/INTERNAL, nothing written, no restart."""
    cases = catalogue()
    assert {c.method for c in cases} == {m.name for s in SERVICES for m in s.methods}
    r = fuzz(machine, cases)
    assert not r["restarted"], r["restarted"]
    assert r["tally"].get("INVALID_ARGUMENT", 0) > len(cases) // 4, r["tally"]
    assert not r["written"], f"{len(r['written'])} refused requests changed the machine: {r['written'][:10]}"
    assert not r["unclear"], f"{len(r['unclear'])} of {len(cases)} without a clear code: {r['unclear'][:15]}"
    assert health_status(machine.channel) == health_pb2.HealthCheckResponse.SERVING


def test_non_utf8_strings_are_invalid_argument(machine):
    """Must exist (issue 16, "Bad input"): undecodable request bytes (invalid UTF-8 in a string field,
    garbage) are INVALID_ARGUMENT, not UNKNOWN with a DecodeError text."""
    for case in (Case("LoadRecipe", "non-UTF-8 name", length_delimited(1, b"\xff\xfe")),
                 Case("EmergencyStop", "non-UTF-8 reason", length_delimited(1, b"stop \xc3\x28")),
                 Case("MoveTo", "garbage", b"\x0a\xff\xff\xff\x0f")):
        code, details, _ = invoke(machine.channel, case)
        assert code == "INVALID_ARGUMENT", (case.label, code, details)
        assert "Traceback" not in details and details, details


@pytest.mark.skipif(not SOAK, reason=SOAK_REASON)
@pytest.mark.timeout(3600)
def test_soak_grpc_fuzz_random_mutations(machine):
    """Long version: the catalogue plus 5 000 seeded random mutations of valid requests."""
    cases = catalogue(full=True) + random_cases(16, 5000)
    t0 = time.monotonic()
    r = fuzz(machine, cases)
    write_soak_results("grpc_fuzz", {"calls": len(cases), "wall_s": round(time.monotonic() - t0, 1),
                                     "codes": dict(sorted(r["tally"].items())), "unclear": len(r["unclear"]),
                                     "unclear_examples": r["unclear"][:10], "refused_but_written": len(r["written"]),
                                     "restarted": r["restarted"]})
    assert not r["restarted"] and not r["written"] and not r["unclear"], {k: r[k] for k in ("restarted", "written", "unclear")}


# ---- the HMI's HTTP/JSON face of the same methods (issue 17): same rules, said in HTTP
HTTP_CLEAR = {200, 400, 403, 404, 405, 409, 413, 429, 503}
JSON_BODIES = (("empty", b""), ("not JSON", b"{axis: 1"), ("NaN literal", b'{"axis": NaN, "position": NaN, "value": NaN}'),
               ("Infinity literal", b'{"velocity": Infinity, "rate_hz": -Infinity}'), ("1e400", b'{"position": 1e400, "value": 1e400}'),
               ("wrong types", b'{"axis": "x", "pin": [1], "value": {"a": 1}, "name": 5}'), ("array", b"[1, 2]"),
               ("string", b'"text"'), ("null", b"null"), ("unknown field", b'{"zz_unknown": 1}'),
               ("negative axis", b'{"axis": -1, "pin": -5}'), ("2^64 axis", b'{"axis": 18446744073709551616}'),
               ("non-UTF-8", b'{"name": "\xff\xfe", "reason": "\xc3\x28"}'), ("lone surrogate", b'{"name": "\\udc80"}'),
               ("NUL and newline", b'{"name": "a\\u0000b\\nINFO forged", "reason": "x\\ny"}'),
               ("10 000-deep array", b'{"axis": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
               ("100 KB body", b'{"reason": "' + b"x" * 100_000 + b'"}'))


def http_cases() -> list[tuple[str, str, bytes]]:
    return [(f"/api/v1/{svc.full_name}/{m.name}", label, body)
            for svc in SERVICES for m in svc.methods if not m.server_streaming for label, body in JSON_BODIES]


def http_post(port: int, path: str, body: bytes) -> tuple[int, dict[str, Any] | None, float]:
    import json as _json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        doc = _json.loads(raw)
    except ValueError:
        doc = None
    return status, doc if isinstance(doc, dict) else None, time.monotonic() - t0


def test_the_http_face_answers_hostile_json_clearly_and_writes_nothing(machine):
    """Must exist (issue 16, gRPC fuzz "and the HTTP face"): every method of the HMI's HTTP/JSON API with
    malformed, non-finite, out-of-range, non-UTF-8, deep and oversized bodies — a 4xx/200 with a JSON error
    naming a clear code (never 500, UNKNOWN or INTERNAL, never a hang), nothing written, no restart."""
    wait_for(lambda: http_post(machine.ports.hmi, "/api/v1/evo.v1.Machine/GetStatus", b"")[0] == 200, 30, 0.1,
             "the HTTP face serving")
    seg = Segments(machine.prefix)
    before_mods = {n: (x["pid"], x["restarts"]) for n, x in machine.up.status().items()}
    bad = []
    try:
        for path, label, body in http_cases():
            snap = seg.snapshot()
            status, doc, took = http_post(machine.ports.hmi, path, body)
            code = (doc or {}).get("code", "OK" if status == 200 else "?")
            if status not in HTTP_CLEAR or code not in CLEAR or took >= DEADLINE_S:
                bad.append((path, label, status, code, str((doc or {}).get("message", ""))[:120]))
            if status != 200 and code != "UNAVAILABLE":
                after = seg.snapshot()
                if (code in REFUSALS_BEFORE_THE_RING and any(after[k] != snap[k] for k in RINGS)) or \
                        (after["do"], after["ao"], after["cu_axes"]) != (snap["do"], snap["ao"], snap["cu_axes"]):
                    bad.append((path, label, status, code, "refused but the machine changed"))
    finally:
        seg.close()
    after_mods = {n: (x["pid"], x["restarts"]) for n, x in machine.up.status().items()}
    assert before_mods == after_mods
    assert not bad, f"{len(bad)} of {len(http_cases())}: {bad[:15]}"
