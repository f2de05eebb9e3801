"""Envelope bridges across processes over iceoryx2 publish-subscribe (zero-copy loans).

Each bridge is one pub-sub service of u8 slices plus an event service used for wake-ups.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
import weakref

import iceoryx2 as iox2

from common.connector.errors import ConfigurationError
from common.connector.transport import Waker

iox2.set_log_level(iox2.LogLevel.Error)

_WAIT_SLICE = iox2.Duration.from_millis(100)  # listener threads re-check their stop flag this often
ENV_ROOT = "EVO_IOX2_ROOT"  # a name: iceoryx2's files as /dev/shm/<name>_* and under /tmp/<name>/ (tests)


def _node_config() -> "iox2.Config":
    """iceoryx2's defaults, or with $EVO_IOX2_ROOT its files under their own name, so that a test run's
    (its node management file included, which iceoryx2 keeps after the last node) can be removed whole."""
    cfg = iox2.config.default()
    root = os.environ.get(ENV_ROOT, "")
    if root:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", root):
            raise ConfigurationError(f"{ENV_ROOT}={root!r}: letters, digits, '-' and '_' only")
        g = cfg.global_cfg  # a live handle: setting its fields changes cfg
        g.prefix = iox2.FileName.new(root + "_")
        g.root_path = iox2.Path.new(f"/tmp/{root}/")
    return cfg


def _duration(seconds: float) -> "iox2.Duration":
    return iox2.Duration.from_micros(max(0, int(seconds * 1_000_000)))


class Iceoryx2Transport:
    """One iceoryx2 node per transport; service names are `<prefix>/<service>`."""

    def __init__(self, prefix: str = "evo") -> None:
        self.prefix = prefix
        self._node = (
            iox2.NodeBuilder.new()
            .config(_node_config())
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)  # Python owns SIGINT/SIGTERM
            .create(iox2.ServiceType.Ipc)
        )
        self._lock = threading.RLock()
        self._events: dict[str, object] = {}
        self._notifiers: dict[str, object] = {}
        self._pumps: dict[str, _WakePump] = {}
        self._closed = False

    def _name(self, service: str) -> "iox2.ServiceName":
        return iox2.ServiceName.new(f"{self.prefix}/{service}")

    def _pubsub(self, service: str, capacity: int):
        try:
            return (
                self._node.service_builder(self._name(service))
                .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)  # a full reader must refuse, not overwrite
                .subscriber_max_buffer_size(capacity)
                .history_size(0)
                .max_publishers(4)
                .max_subscribers(4)
                .open_or_create()
            )
        except Exception as exc:  # iceoryx2 raises its own error classes
            raise ConfigurationError(f"iceoryx2 service {service!r}: {exc!r}") from exc

    def event_service(self, name: str):
        with self._lock:
            ev = self._events.get(name)
            if ev is None:
                ev = self._node.service_builder(self._name(name)).event().open_or_create()
                self._events[name] = ev
            return ev

    def notifier(self, name: str):
        with self._lock:
            n = self._notifiers.get(name)
        if n is None:
            n = self.event_service(name).notifier_builder().create()
            with self._lock:
                self._notifiers.setdefault(name, n)
                n = self._notifiers[name]
        return n

    def open_sender(self, service: str, capacity: int, slot_size: int, notify: str = "") -> "IoxSender":
        svc = self._pubsub(service, capacity)
        pub = (
            svc.publisher_builder()
            .initial_max_slice_len(slot_size)
            .backpressure_strategy(iox2.BackpressureStrategy.DiscardData)
            .create()
        )
        return IoxSender(svc, pub, slot_size, self.notifier(notify or f"{service}.ev"))

    def open_receiver(self, service: str, capacity: int, slot_size: int, listen: str = "") -> "IoxReceiver":
        svc = self._pubsub(service, capacity)
        sub = svc.subscriber_builder().buffer_size(capacity).create()
        listen = listen or f"{service}.ev"
        listener = self.event_service(listen).listener_builder().create()
        return IoxReceiver(self, sub, listener, listen)

    def wake_pump(self, listen: str, waker: Waker) -> None:
        """Forward notifications on event service `listen` to `waker` from one helper thread."""
        with self._lock:
            pump = self._pumps.get(listen)
            if pump is None:
                pump = self._pumps[listen] = _WakePump(self, listen)
        pump.add(waker)

    def close(self) -> None:
        with self._lock:
            pumps = list(self._pumps.values())
            self._pumps.clear()
            self._closed = True
        for p in pumps:
            p.stop()


class _WakePump:
    def __init__(self, transport: Iceoryx2Transport, listen: str) -> None:
        self._listener = transport.event_service(listen).listener_builder().create()
        self._wakers: list[Waker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"iox-wake:{listen}", daemon=True)
        self._thread.start()

    def add(self, waker: Waker) -> None:
        self._wakers = [*self._wakers, waker]
        waker.wake()  # envelopes may already be waiting

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._listener.timed_wait(_WAIT_SLICE):
                for w in self._wakers:
                    w.wake()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class IoxSender:
    """Loans a slice from the publisher's shared memory; the codec encodes straight into it."""

    def __init__(self, svc, pub, slot_size: int, notifier) -> None:
        self._svc = svc
        self._pub = pub
        self._slot_size = slot_size
        self._notifier = notifier
        self._sample = None

    def loan(self) -> memoryview | None:
        try:
            sample = self._pub.loan_slice_uninit(self._slot_size)
        except Exception:  # LoanError: every sample is still held by readers
            return None
        self._sample = sample
        ptr = sample.payload().as_ptr()
        return memoryview((ctypes.c_uint8 * self._slot_size).from_address(ptr)).cast("B")

    def commit(self, length: int) -> bool:
        sample, self._sample = self._sample, None
        if sample is None:
            raise RuntimeError("commit without loan")
        delivered = sample.assume_init().send()
        if delivered:
            self._notifier.notify()
        return bool(delivered)

    def abort(self) -> None:
        sample, self._sample = self._sample, None
        if sample is not None:
            sample.delete()

    def connected(self) -> bool:
        return self._svc.dynamic_config.number_of_subscribers > 0

    def attach_space_waker(self, waker: Waker) -> None:
        pass  # cross-process: the gateway retries on its tick instead

    def close(self) -> None:
        self.abort()
        self._pub.delete()


class IoxReceiver:
    """Holds at most one received sample between `peek` and `release`."""

    def __init__(self, transport: Iceoryx2Transport, sub, listener, listen: str) -> None:
        self._transport = weakref.ref(transport)
        self._sub = sub
        self._listener = listener
        self._listen = listen
        self._sample = None
        self._view: memoryview | None = None

    def peek(self) -> memoryview | None:
        if self._view is not None:
            return self._view
        sample = self._sub.receive()
        if sample is None:
            return None
        payload = sample.payload()
        self._sample = sample
        self._view = memoryview((ctypes.c_uint8 * payload.len()).from_address(payload.as_ptr())).cast("B")
        return self._view

    def release(self) -> None:
        sample, self._sample, self._view = self._sample, None, None
        if sample is not None:
            sample.delete()

    def wait(self, timeout: float | None) -> bool:
        if self._view is not None or self._sub.has_samples():
            return True
        if timeout is None:
            self._listener.blocking_wait()
        else:
            self._listener.timed_wait(_duration(timeout))
        return self._sub.has_samples()

    def attach_waker(self, waker: Waker) -> None:
        transport = self._transport()
        if transport is not None:
            transport.wake_pump(self._listen, waker)

    def close(self) -> None:
        self._view = None
        self.release()
        self._sub.delete()
