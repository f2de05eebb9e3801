"""Test-side stand-ins for the HAL's peers: a CU writing cu_hal, RE/RPC command writers, readers.

Imported by the HAL test modules (no tests here); everything started is stopped by its owner.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.config import load_config
from common.shm.commands import ResultCode
from common.shm.io_helpers import get_bit
from common.shm.p2p import ReadContention, TypedP2pReader, TypedP2pWriter
from common.shm.rings import Ack, CommandRingWriter
from common.shm.segments import SEGMENTS
from hal.drivers.sim_inject import write_injection
from tests.helpers import ModuleProcess, wait_for

NEVER_STALE = 10**9


def reader(key: str, stale_reads: int = NEVER_STALE) -> TypedP2pReader:
    s = SEGMENTS[key]
    return TypedP2pReader.attach(s.name(), s.reader, s.dtype, exclusive=False, stale_reads=stale_reads)


def read(r: TypedP2pReader) -> np.ndarray:
    """read() that retries torn reads (a descheduled test process can lose 3 races in a row)."""
    for _ in range(1000):
        try:
            return r.read()
        except ReadContention:
            time.sleep(0.0002)
    return r.read()


class PeriodicWriter:
    """A segment writer committed by a background thread every `period_s` (a peer's heartbeat).
    Change `local` inside `with w.lock:`; `freeze()` stops the heartbeat (a hung peer)."""

    def __init__(self, key: str, period_s: float) -> None:
        s = SEGMENTS[key]
        self.w = TypedP2pWriter.create(s.name(), s.writer, s.reader, s.dtype)
        self.local = self.w.local
        self.lock = threading.Lock()
        self.period_s = period_s
        self._run = threading.Event()
        self._run.set()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            self._run.wait()
            with self.lock:
                if not self._stop and self._run.is_set():
                    self.w.commit()
            time.sleep(self.period_s)

    def commit(self) -> None:
        with self.lock:
            self.w.commit()

    @property
    def heartbeat(self) -> int:
        return self.w.heartbeat

    def freeze(self) -> None:
        with self.lock:
            self._run.clear()

    def resume(self) -> None:
        self._run.set()

    def close(self) -> None:
        self._stop = True
        self._run.set()
        self._thread.join(2)
        self.w.close()


class FakeCu(PeriodicWriter):
    """cu_hal at ~1 kHz, as the CU would write it."""

    def __init__(self) -> None:
        super().__init__("cu_hal", 0.001)
        self.axes = self.local["axes"]

    def set_axis(self, axis_id: int, **fields: float) -> None:
        with self.lock:
            for k, v in fields.items():
                self.axes[k][axis_id - 1] = v

    def set_do(self, pin: int, physical: bool) -> None:
        with self.lock:
            bank = self.local["do_bank"]
            w, b = divmod(pin, 64)
            cur = int(bank[w])
            bank[w] = (cur | (1 << b)) if physical else (cur & ~(1 << b) & (2**64 - 1))

    def set_ao(self, pin: int, value: float) -> None:
        with self.lock:
            self.local["ao_values"][pin] = value


class CommandClient:
    """A command path into the HAL (re_hal or rpc_hal) with its ack segment (hal_re / hal_rpc)."""

    def __init__(self, key: str, ack_key: str) -> None:
        self.seg = PeriodicWriter(key, 0.005)
        with self.seg.lock:
            self.ring = CommandRingWriter(self.seg.local["ring"])
        self.acks = reader(ack_key)
        self._rid = 0
        self.received: list[Ack] = []

    def wait_attached(self, timeout: float = 10.0) -> None:
        """The HAL has seen this writer instance (commands sent before would be skipped)."""
        wait_for(lambda: int(read(self.acks)["acks"]["cmd_epoch_seen"]) == self.ring.epoch, timeout,
                 what=f"HAL to attach {self.seg.w.name}")

    def send(self, code: int, pin: int = 0, args: tuple[float, ...] = (0.0,), axis: int = 0) -> int:
        self._rid += 1
        with self.seg.lock:
            self.ring.submit(int(code), self._rid, pin=pin, args=args, axis=axis)
            self.seg.w.commit()
        return self._rid

    def poll(self) -> list[Ack]:
        new = self.ring.poll_acks(read(self.acks)["acks"])
        self.received += new
        return new

    def call(self, code: int, pin: int = 0, args: tuple[float, ...] = (0.0,), timeout: float = 10.0) -> Ack:
        rid = self.send(code, pin, args)

        def got() -> Ack | None:
            self.poll()
            return next((a for a in self.received if a.request_id == rid), None)

        return wait_for(got, timeout, what=f"ack of request {rid}")

    def close(self) -> None:
        self.acks.close()
        self.seg.close()


class HalView:
    """Readers of the HAL's four outbound segments plus the config's IoRegistry for decoding."""

    def __init__(self, config_dir: Path) -> None:
        self.cfg = load_config(config_dir)
        self.reg = self.cfg.io_registry
        self.cu = reader("hal_cu")
        self.mqt = reader("hal_mqt")
        self.rpc = reader("hal_rpc")
        self.re = reader("hal_re")

    def io(self) -> np.ndarray:
        return read(self.mqt)["io"]

    def di(self, pin: int) -> bool:
        """Logical value of a DI pin as the CU sees it (hal_cu bank through the registry)."""
        return self.reg.read_di_pin(pin, read(self.cu)["di_bank"])

    def do_phys(self, pin: int) -> bool:
        return get_bit(self.io()["do_bank"], pin)

    def do(self, pin: int) -> bool:
        """Logical value of a DO pin as applied."""
        p = self.cfg.io.point("do", pin)
        return self.do_phys(pin) ^ bool(p is not None and p.inverted)

    def ai(self, pin: int) -> float:
        return float(read(self.cu)["ai_values"][pin])

    def ao(self, pin: int) -> float:
        return float(self.io()["ao_values"][pin])

    def axis(self, axis_id: int) -> dict[str, Any]:
        a = read(self.cu)["axes"][axis_id - 1]
        return {k: a[k].item() for k in a.dtype.names}

    def cu_connected(self) -> bool:
        return bool(self.io()["cu_connected"])

    def close(self) -> None:
        for r in (self.cu, self.mqt, self.rpc, self.re):
            r.close()


class Injector:
    """Writes the sim driver's injection file; `clear()` removes every override."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def set(self, **sections: dict) -> None:
        for k, v in sections.items():
            self.data.setdefault(k, {}).update({str(p): val for p, val in v.items()})
        write_injection(self.path, self.data)

    def clear(self) -> None:
        self.data = {}
        write_injection(self.path, {})


def start_hal(prefix: str, config_dir: Path, run_dir: Path, log_dir: Path) -> ModuleProcess:
    """A HAL subprocess; returns once its hal_cu heartbeat moves."""
    hal = ModuleProcess("hal", prefix, ["--config", str(config_dir)], log_dir=log_dir,
                        env={"EVO_RUN_DIR": str(run_dir)}).start()

    def cycling() -> bool:
        assert hal.alive(), hal.output()
        r = reader("hal_cu")
        try:
            hb = r.read() is not None and r.heartbeat
            return wait_for(lambda: r.heartbeat > hb, 2.0, what="hal_cu heartbeat") is not None
        finally:
            r.close()

    wait_for(cycling, 20.0, interval=0.05, what="HAL to start cycling")
    return hal


def ok(ack: Ack) -> Ack:
    assert ack.result == ResultCode.OK, (ack.result, ack.message)
    return ack
