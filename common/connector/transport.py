"""Bounded envelope bridges between the application side and the protocol (gateway) side.

`RingLink` is the in-process bridge: a ring of preallocated slots, one envelope per slot.
`coalesced_wakes()` batches the gateway wake-ups of many sends into one per gateway.
"""
from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import Iterator, Protocol

_batch = threading.local()  # .pending: the Wakers a coalesced_wakes() block of this thread owes a wake


@contextlib.contextmanager
def coalesced_wakes() -> Iterator[None]:
    """Within the block, this thread's `Waker.wake()` calls are deferred and each Waker is woken once
    at the end (e.g. a bridge scan that sends 20 messages wakes its gateway thread once, not 20
    times: every eventfd write hands the GIL to the gateway thread and back). Other threads' wakes
    are not deferred. Nested blocks join the outermost one."""
    if getattr(_batch, "pending", None) is not None:
        yield
        return
    pending: dict[int, Waker] = {}
    _batch.pending = pending
    try:
        yield
    finally:
        _batch.pending = None
        for w in pending.values():
            w.wake()


class Waker:
    """An eventfd the gateway loop can select() on; `wake()` is safe from any thread."""

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.wakes = 0  # eventfd writes made (coalesced wakes count once)

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        pending = getattr(_batch, "pending", None)
        if pending is not None:  # inside coalesced_wakes(): once, at the end of the block
            pending[id(self)] = self
            return
        self.wakes += 1
        try:
            os.eventfd_write(self._fd, 1)
        except (BlockingIOError, OSError):  # counter saturated or closed: already awake
            pass

    def clear(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout: float | None) -> bool:
        """Block until woken or `timeout`; True if woken (the wake is consumed)."""
        r, _, _ = select.select([self._fd], [], [], timeout)
        if r:
            self.clear()
            return True
        return False

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


class EnvelopeSender(Protocol):
    """Producer end of a bridge: loan a slot, encode in place, commit."""

    def loan(self) -> memoryview | None:
        """A writable slot, or None when the bridge is full (no state changes)."""
        ...

    def commit(self, length: int) -> bool:
        """Publish the loaned slot's first `length` bytes; False if nobody could take it."""
        ...

    def abort(self) -> None:
        """Give the loaned slot back unsent."""
        ...

    def connected(self) -> bool:
        """True if a receiver is attached."""
        ...

    def attach_space_waker(self, waker: Waker) -> None:
        """Wake `waker` when a full bridge regains room (best effort)."""
        ...

    def close(self) -> None: ...


class EnvelopeReceiver(Protocol):
    """Consumer end of a bridge: peek the oldest envelope, then release it."""

    def peek(self) -> memoryview | None: ...

    def release(self) -> None: ...

    def wait(self, timeout: float | None) -> bool:
        """Block until an envelope may be available or `timeout`."""
        ...

    def attach_waker(self, waker: Waker) -> None:
        """Wake `waker` whenever an envelope is committed."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Creates the two ends of a named bridge; in-process or across processes."""

    def open_sender(self, service: str, capacity: int, slot_size: int, notify: str) -> EnvelopeSender: ...

    def open_receiver(self, service: str, capacity: int, slot_size: int, listen: str) -> EnvelopeReceiver: ...


class RingLink:
    """Fixed ring of `capacity` slots of `slot_size` bytes; one producer at a time, one consumer."""

    def __init__(self, capacity: int, slot_size: int) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be >= 1")
        self.capacity = capacity
        self.slot_size = slot_size
        self._storage = bytearray(capacity * slot_size)
        view = memoryview(self._storage)
        self._slots = [view[i * slot_size : (i + 1) * slot_size] for i in range(capacity)]
        self._lengths = [0] * capacity
        self._head = 0
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self._has_receiver = False
        self._commit_wakers: list[Waker] = []
        self._space_wakers: list[Waker] = []
        self.sender = _RingSender(self)
        self.receiver = _RingReceiver(self)

    def __len__(self) -> int:
        return self._count


class _RingSender:
    def __init__(self, ring: RingLink) -> None:
        self._ring = ring
        self._tail: int | None = None

    def loan(self) -> memoryview | None:
        ring = self._ring
        with ring._cond:
            if ring._count >= ring.capacity:
                return None
            self._tail = (ring._head + ring._count) % ring.capacity
        # the consumer never touches the tail slot until commit bumps the count
        return ring._slots[self._tail]

    def commit(self, length: int) -> bool:
        ring = self._ring
        idx = self._tail
        if idx is None:
            raise RuntimeError("commit without loan")
        self._tail = None
        with ring._cond:
            ring._lengths[idx] = length
            ring._count += 1
            ring._cond.notify_all()
            wakers = ring._commit_wakers
        for w in wakers:
            w.wake()
        return True

    def abort(self) -> None:
        self._tail = None

    def connected(self) -> bool:
        return self._ring._has_receiver and not self._ring._closed

    def attach_space_waker(self, waker: Waker) -> None:
        with self._ring._cond:
            self._ring._space_wakers = [*self._ring._space_wakers, waker]

    def close(self) -> None:
        pass


class _RingReceiver:
    def __init__(self, ring: RingLink) -> None:
        self._ring = ring

    def peek(self) -> memoryview | None:
        ring = self._ring
        with ring._cond:
            if ring._count == 0:
                return None
            head = ring._head
            return ring._slots[head][: ring._lengths[head]]

    def release(self) -> None:
        ring = self._ring
        with ring._cond:
            if ring._count == 0:
                return
            was_full = ring._count == ring.capacity
            ring._head = (ring._head + 1) % ring.capacity
            ring._count -= 1
            wakers = ring._space_wakers if was_full else ()
        for w in wakers:
            w.wake()

    def wait(self, timeout: float | None) -> bool:
        ring = self._ring
        deadline = None if timeout is None else time.monotonic() + timeout
        with ring._cond:
            while ring._count == 0 and not ring._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                ring._cond.wait(remaining)
            return ring._count > 0

    def attach_waker(self, waker: Waker) -> None:
        with self._ring._cond:
            self._ring._commit_wakers = [*self._ring._commit_wakers, waker]
            pending = self._ring._count > 0
        if pending:
            waker.wake()

    def close(self) -> None:
        ring = self._ring
        with ring._cond:
            ring._closed = True
            ring._cond.notify_all()


class InProcessTransport:
    """Bridges inside one process: both ends of a service name share one `RingLink`."""

    def __init__(self) -> None:
        self._rings: dict[str, RingLink] = {}
        self._lock = threading.Lock()

    def ring(self, service: str, capacity: int, slot_size: int) -> RingLink:
        with self._lock:
            ring = self._rings.get(service)
            if ring is None:
                ring = self._rings[service] = RingLink(capacity, slot_size)
            elif ring.capacity != capacity or ring.slot_size != slot_size:
                raise ValueError(f"bridge {service!r} already exists with another shape")
            return ring

    def open_sender(self, service: str, capacity: int, slot_size: int, notify: str = "") -> _RingSender:
        return self.ring(service, capacity, slot_size).sender

    def open_receiver(self, service: str, capacity: int, slot_size: int, listen: str = "") -> _RingReceiver:
        ring = self.ring(service, capacity, slot_size)
        ring._has_receiver = True
        return ring.receiver

    def forget(self, service: str) -> None:
        with self._lock:
            ring = self._rings.pop(service, None)
        if ring is not None:
            ring.receiver.close()
