"""Zenoh queries on the connector: a bounded queryable inbox and a querier that matches its replies.

The framework only carries the correlation id (REQ_0204/0290); the querier mints and matches it.
"""
from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.connector.codec import PayloadCodec
from common.connector.errors import CodecError, NotConnected
from common.connector.health import DroppedInbound

if TYPE_CHECKING:  # pragma: no cover
    from common.connector.zenoh import ZenohConnector

CORRELATION_ID_BYTES = 16  # printable as 32 hex characters = the envelope's 32-byte correlation_id
MAX_REPLY_BYTES = 1 << 20


def mint_correlation_id() -> bytes:
    """A fresh query id: 32 lower-case hex characters (ASCII, fits the envelope's 32 bytes)."""
    return secrets.token_hex(CORRELATION_ID_BYTES).encode("ascii")


def parse_parameters(text: str) -> dict[str, str]:
    """`a=1;b=x` or `a=1&b=x` (Zenoh selector parameters) to a dict; a bare name maps to ""."""
    out: dict[str, str] = {}
    for part in text.replace("&", ";").split(";"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One query waiting in a queryable's inbox. `ticket` names it for reply/terminate."""

    ticket: int
    correlation_id: bytes  # the querier's id (echoed on every reply), or one minted here
    key_expr: str
    parameters: dict[str, str]
    selector: str
    value: Any  # the query's decoded payload, None without one
    received_ns: int


@dataclass(slots=True)
class _Pending:
    query: Any  # zenoh.Query: dropping it ends the reply stream for the querier
    correlation_id: bytes
    deadline: float


@dataclass(slots=True)
class QueryableStats:
    received: int = 0
    answered: int = 0
    busy: int = 0  # refused: the inbox was full
    expired: int = 0  # not terminated within the time-out: answered with an error
    replies: int = 0


class ZenohQueryable:
    """Queries on `key_expr`, delivered through a bounded inbox to the owner's thread.

    The owner polls `try_recv()`, answers with `reply()` zero or more times and ends the stream
    with `terminate()`. A full inbox answers at once with an error ("busy", never a silent
    drop) and emits `DroppedInbound`; a query not terminated within `timeout_s` is answered with
    a time-out error by the gateway thread.
    """

    def __init__(self, connector: ZenohConnector, key_expr: str, capacity: int, timeout_s: float) -> None:
        self.connector = connector
        self.key_expr = key_expr
        self.capacity = capacity
        self.timeout_s = timeout_s
        self.stats = QueryableStats()
        self.handle: Any = None  # the declared zenoh.Queryable (backend-owned)
        self._inbox: collections.deque[QueryRequest] = collections.deque()
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._next_ticket = 1
        self._codec: PayloadCodec = connector.codec
        self._buf = bytearray(MAX_REPLY_BYTES)
        self._encoding = "application/json" if self._codec.format_name == "json" else None
        self.closed = False

    # --- zenoh thread ---
    def _on_query(self, query: Any) -> None:
        att = query.attachment
        cid = att.to_bytes()[:32] if att is not None else b""
        if not cid:
            cid = mint_correlation_id()
        value = None
        if query.payload is not None:
            try:
                value = self._codec.decode(memoryview(query.payload.to_bytes()))
            except CodecError as exc:
                self._error_reply(query, cid, f"cannot decode the query payload: {exc}")
                return
        with self._lock:
            if self.closed:
                return
            self.stats.received += 1
            if len(self._inbox) >= self.capacity:
                self.stats.busy += 1
                busy = True
            else:
                busy = False
                ticket = self._next_ticket
                self._next_ticket += 1
                self._pending[ticket] = _Pending(query, cid, time.monotonic() + self.timeout_s)
                self._inbox.append(QueryRequest(ticket, cid, str(query.key_expr), parse_parameters(str(query.parameters)),
                                                str(query.selector), value, time.time_ns()))
                self._arrived.notify()
        if busy:
            self._error_reply(query, cid, f"busy: {self.capacity} queries already waiting on {self.key_expr}")
            mon = self.connector.monitor
            mon.emit(DroppedInbound(mon.connector, f"query:{self.key_expr}", 1, mon.now_ns()))

    def _error_reply(self, query: Any, cid: bytes, message: str, detail: dict[str, Any] | None = None) -> None:
        # a Zenoh error reply has no attachment: the correlation id travels in its body
        body = {"error": message, **(detail or {}), "correlation_id": cid.decode("ascii", "replace")}
        try:
            query.reply_err(self._encode(body), encoding=self._encoding)
        finally:
            query.drop()

    # --- owner's thread ---
    def try_recv(self) -> QueryRequest | None:
        with self._lock:
            return self._inbox.popleft() if self._inbox else None

    def recv(self, timeout: float) -> QueryRequest | None:
        """The next query, waiting at most `timeout` seconds (None: none arrived, or closed)."""
        with self._arrived:
            if not self._inbox and not self.closed:
                self._arrived.wait(timeout)
            return self._inbox.popleft() if self._inbox else None

    def _encode(self, value: Any) -> bytes:
        n = self._codec.encode(value, memoryview(self._buf))
        return bytes(self._buf[:n])

    def reply(self, ticket: int, key_expr: str, value: Any) -> bool:
        """One reply on `key_expr` (must match the query's key expression); False once the query
        is gone (terminated or timed out). `CodecError` if `value` cannot be encoded."""
        with self._lock:
            p = self._pending.get(ticket)
            if p is None:
                return False
            data = self._encode(value)
            p.query.reply(key_expr, data, attachment=p.correlation_id, encoding=self._encoding)
            self.stats.replies += 1
            return True

    def reply_err(self, ticket: int, message: str, **detail: Any) -> bool:
        """An error reply ({"error": message, ...}) that ends the query."""
        with self._lock:
            p = self._pending.pop(ticket, None)
        if p is None:
            return False
        self.stats.answered += 1
        self._error_reply(p.query, p.correlation_id, message, detail)
        return True

    def terminate(self, ticket: int) -> None:
        """End the reply stream (the querier's `get` completes once every queryable ended)."""
        with self._lock:
            p = self._pending.pop(ticket, None)
        if p is not None:
            self.stats.answered += 1
            p.query.drop()

    # --- gateway thread ---
    def expire(self, now: float) -> float | None:
        """Answer overdue queries with a time-out error; seconds until the next deadline."""
        with self._lock:
            overdue = [(t, p) for t, p in self._pending.items() if p.deadline <= now]
            for t, _ in overdue:
                del self._pending[t]
            self._inbox = collections.deque(r for r in self._inbox if r.ticket in self._pending)
            nxt = min((p.deadline for p in self._pending.values()), default=None)
        for _, p in overdue:
            self.stats.expired += 1
            self._error_reply(p.query, p.correlation_id, f"not answered within {self.timeout_s:g} s")
        return None if nxt is None else max(0.0, nxt - now)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._arrived.notify_all()
            pending = list(self._pending.values())
            self._pending.clear()
            self._inbox.clear()
        for p in pending:
            try:
                self._error_reply(p.query, p.correlation_id, "the queryable is closing")
            except Exception:  # noqa: BLE001 - the session may already be gone
                pass


@dataclass(frozen=True, slots=True)
class QueryReply:
    """One reply: `value` decoded by the codec (an error reply: `error` set, `ok` False)."""

    key: str
    value: Any
    ok: bool = True

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        return str(self.value.get("error")) if isinstance(self.value, dict) else str(self.value)


@dataclass(slots=True)
class QueryResult:
    """What one `query()` collected: replies carrying our correlation id, in arrival order."""

    correlation_id: bytes
    selector: str
    replies: list[QueryReply] = field(default_factory=list)
    mismatched: int = 0  # replies with another (or no) correlation id: not ours, dropped
    undecodable: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> list[QueryReply]:
        return [r for r in self.replies if r.ok]

    @property
    def errors(self) -> list[QueryReply]:
        return [r for r in self.replies if not r.ok]


def run_query(session: Any, codec: PayloadCodec, selector: str, timeout_s: float, value: Any = None,
              correlation_id: bytes | None = None) -> QueryResult:
    """`get(selector)` stamped with a fresh correlation id; every reply is checked against it.
    Returns when every queryable ended its stream or after `timeout_s` (Zenoh's own time-out)."""
    if session is None:
        raise NotConnected("no Zenoh session")
    cid = correlation_id or mint_correlation_id()
    payload = None
    if value is not None:
        buf = bytearray(MAX_REPLY_BYTES)
        n = codec.encode(value, memoryview(buf))
        payload = bytes(buf[:n])
    result = QueryResult(cid, selector)
    t0 = time.monotonic()
    for reply in session.get(selector, payload=payload, attachment=cid, timeout=timeout_s):
        sample = reply.ok
        ok = sample is not None
        body = sample if ok else reply.err
        if ok and (body.attachment is None or body.attachment.to_bytes() != cid):
            result.mismatched += 1
            continue
        try:
            decoded = codec.decode(memoryview(body.payload.to_bytes()))
        except CodecError:
            result.undecodable += 1
            continue
        if not ok and not (isinstance(decoded, dict) and decoded.get("correlation_id") == cid.decode("ascii")):
            result.mismatched += 1  # an error reply carries the id in its body
            continue
        key = str(sample.key_expr) if ok else ""
        result.replies.append(QueryReply(key, decoded, ok))
    result.elapsed_s = time.monotonic() - t0
    return result
