"""Point-to-point seqlock shared-memory segments, byte-compatible with upstream evo.

One writer per segment (flock on `<segment>.lock`), lock-free readers, 64-byte header.
"""
from __future__ import annotations

import enum
import errno
import fcntl
import mmap
import os
import platform
import struct
import time
from dataclasses import dataclass

import numpy as np

from common.consts import (
    DEFAULT_SHM_PREFIX,
    DEFAULT_STALE_READS,
    ENV_SHM_PREFIX,
    MAX_READ_RETRIES,
    P2P_HEADER_SIZE,
    P2P_PAYLOAD_ALIGN,
    P2P_SHM_MAGIC,
    SHM_DIR,
    SHM_MODE,
    SHM_PAGE_SIZE,
)
from common.shm.views import flat_bytes

# The seqlock below uses plain aligned numpy stores/loads for write_seq and relies on x86-64's
# total store order (stores are not reordered with other stores, loads not with other loads).
# On weaker memory models (ARM, POWER) the seq accesses need real acquire/release fences, which
# CPython cannot express; we refuse rather than return torn data silently.
_TSO_MACHINES = {"x86_64", "amd64", "i386", "i686"}
if platform.machine().lower() not in _TSO_MACHINES and os.environ.get("EVO_ALLOW_WEAK_MEMORY") != "1":
    raise ImportError(
        f"common.shm.p2p: seqlock needs a TSO CPU (x86-64); this is {platform.machine()}. "
        "Set EVO_ALLOW_WEAK_MEMORY=1 only for non-production experiments."
    )


# --- header layout (little-endian, 64 bytes) ---------------------------------------------------
OFF_MAGIC = 0
OFF_VERSION_HASH = 8
OFF_HEARTBEAT = 16
OFF_SOURCE = 24
OFF_DEST = 25
OFF_PAYLOAD_SIZE = 28
OFF_WRITE_SEQ = 32

HEADER_DTYPE = np.dtype(
    {
        "names": ["magic", "version_hash", "heartbeat", "source_module", "dest_module", "payload_size", "write_seq"],
        "formats": ["S8", "<u4", "<u8", "u1", "u1", "<u4", "<u4"],
        "offsets": [OFF_MAGIC, OFF_VERSION_HASH, OFF_HEARTBEAT, OFF_SOURCE, OFF_DEST, OFF_PAYLOAD_SIZE, OFF_WRITE_SEQ],
        "itemsize": P2P_HEADER_SIZE,
    }
)


class ModuleAbbrev(enum.IntEnum):
    """Module codes as stored in the header; names are the segment-name abbreviations."""

    CU = 0
    HAL = 1
    RE = 2
    MQT = 3
    RPC = 4

    @property
    def abbrev(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: "str | int | ModuleAbbrev") -> "ModuleAbbrev":
        if isinstance(value, ModuleAbbrev):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown module abbreviation {value!r} (expected one of cu, hal, re, mqt, rpc)") from None


# --- errors -------------------------------------------------------------------------------------
class ShmError(Exception):
    """Base of every shared-memory protocol error; `.segment` names the segment."""

    def __init__(self, segment: str, detail: str = "") -> None:
        self.segment = segment
        self.detail = detail
        super().__init__(f"{type(self).__name__}: {segment}" + (f": {detail}" if detail else ""))


class InvalidMagic(ShmError):
    pass


class VersionMismatch(ShmError):
    pass


class DestinationMismatch(ShmError):
    pass


class WriterAlreadyExists(ShmError):
    pass


class ReaderAlreadyConnected(ShmError):
    pass


class ReadContention(ShmError):
    pass


class SegmentNotFound(ShmError):
    pass


class PermissionDenied(ShmError):
    pass


class HeartbeatStale(ShmError):
    pass


# --- naming and sizes ---------------------------------------------------------------------------
def shm_prefix() -> str:
    """The instance prefix: `$EVO_SHM_PREFIX`, default `evo`."""
    return os.environ.get(ENV_SHM_PREFIX) or DEFAULT_SHM_PREFIX


def segment_name(source: "ModuleAbbrev | str", dest: "ModuleAbbrev | str", prefix: str | None = None) -> str:
    """`<prefix>_<src>_<dst>`, e.g. `evo_hal_cu`."""
    return f"{prefix or shm_prefix()}_{ModuleAbbrev.parse(source).abbrev}_{ModuleAbbrev.parse(dest).abbrev}"


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def aligned_payload_size(dtype: np.dtype) -> int:
    """Payload size rounded up to the 64-byte alignment (what the header stores)."""
    size = np.dtype(dtype).itemsize
    return (size + P2P_PAYLOAD_ALIGN - 1) // P2P_PAYLOAD_ALIGN * P2P_PAYLOAD_ALIGN


def mapped_size(payload_size: int) -> int:
    """64-byte header + payload, rounded up to whole pages."""
    total = P2P_HEADER_SIZE + payload_size
    return (total + SHM_PAGE_SIZE - 1) // SHM_PAGE_SIZE * SHM_PAGE_SIZE


def version_hash(payload_size: int, align: int = P2P_PAYLOAD_ALIGN) -> int:
    """Upstream's `struct_version_hash`: (size * 0x9E3779B9) ^ (align * 0x517CC1B7), wrapping u32."""
    return ((payload_size * 0x9E3779B9) ^ (align * 0x517CC1B7)) & 0xFFFFFFFF


def dtype_version_hash(dtype: np.dtype) -> int:
    return version_hash(aligned_payload_size(dtype))


# --- locks --------------------------------------------------------------------------------------
def _open_lock(path: str, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(path, flags, SHM_MODE)


def writer_alive(name: str) -> bool:
    """Liveness probe: a non-blocking shared lock on `<name>.lock` fails exactly when a live writer holds it."""
    try:
        fd = os.open(shm_path(name) + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # someone else's live instance; never claim it is dead
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class HeaderInfo:
    """A decoded header, as seen by tools (discovery, `evo shm`, the watchdog)."""

    magic: bytes
    version_hash: int
    heartbeat: int
    source_module: int
    dest_module: int
    payload_size: int
    write_seq: int


def read_header(name: str) -> HeaderInfo:
    """Read the 64-byte header without attaching (no lock taken)."""
    path = shm_path(name)
    try:
        with open(path, "rb") as f:
            raw = f.read(P2P_HEADER_SIZE)
    except FileNotFoundError:
        raise SegmentNotFound(name) from None
    except PermissionError:
        raise PermissionDenied(name) from None
    if len(raw) < P2P_HEADER_SIZE:
        raise InvalidMagic(name, "segment shorter than its header")
    h = np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]
    return HeaderInfo(
        magic=bytes(raw[0:8]),
        version_hash=int(h["version_hash"]),
        heartbeat=int(h["heartbeat"]),
        source_module=int(h["source_module"]),
        dest_module=int(h["dest_module"]),
        payload_size=int(h["payload_size"]),
        write_seq=int(h["write_seq"]),
    )


class _Mapping:
    """An mmap of a segment plus preallocated numpy views on its header and payload."""

    def __init__(self, fd: int, size: int, payload_size: int, writable: bool) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        self.inode = os.fstat(fd).st_ino
        # A read-only mmap yields a read-only buffer; numpy views on it are read-only too.
        buf = memoryview(self.mm)
        self.u8 = np.frombuffer(buf, dtype=np.uint8, count=size)
        self.header_u8 = self.u8[:P2P_HEADER_SIZE]
        # Header words through memoryview casts: single aligned loads/stores like the numpy views,
        # but ~4x cheaper per access than numpy scalar indexing (measured in bench_shm).
        self.heartbeat = buf[OFF_HEARTBEAT : OFF_HEARTBEAT + 8].cast("Q")
        self.write_seq = buf[OFF_WRITE_SEQ : OFF_WRITE_SEQ + 4].cast("I")
        self.payload_u8 = self.u8[P2P_HEADER_SIZE : P2P_HEADER_SIZE + payload_size]

    def close(self) -> None:
        # Drop every view before closing the mmap, else BufferError.
        self.heartbeat.release()
        self.write_seq.release()
        del self.u8, self.header_u8, self.heartbeat, self.write_seq, self.payload_u8
        try:
            self.mm.close()
        except BufferError:
            pass  # an outside view still exports the buffer; the mapping dies with it


# --- writer -------------------------------------------------------------------------------------
class TypedP2pWriter:
    """The single writer of a segment.

    Fill `self.local` (a preallocated payload of `dtype`; cache field views once, outside the
    loop) and call `commit()`, or call `write(payload)` with a payload array of the same dtype.
    """

    def __init__(self) -> None:  # use create()
        raise TypeError("use TypedP2pWriter.create(name, source, dest, dtype)")

    @classmethod
    def create(
        cls,
        name: str,
        source: "ModuleAbbrev | str",
        dest: "ModuleAbbrev | str",
        dtype: np.dtype,
    ) -> "TypedP2pWriter":
        self = object.__new__(cls)
        self.name = name
        self.source = ModuleAbbrev.parse(source)
        self.dest = ModuleAbbrev.parse(dest)
        self.dtype = np.dtype(dtype)
        self.payload_size = aligned_payload_size(self.dtype)
        self.size = mapped_size(self.payload_size)
        self.version_hash = version_hash(self.payload_size)
        self._closed = False
        path = shm_path(name)
        try:
            self._lock_fd = _open_lock(path + ".lock", create=True)
        except PermissionError:
            raise PermissionDenied(name, "cannot open the writer lock") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WriterAlreadyExists(name, "another live writer holds the lock") from None
        try:
            fd, heartbeat = self._open_or_take_over(path)
            try:
                self._map = _Mapping(fd, self.size, self.payload_size, writable=True)
            finally:
                os.close(fd)
        except BaseException:
            os.close(self._lock_fd)
            raise
        # the heartbeat lives in the header only (a compiled commit, common/shm/seqlock_jit.py, moves it too)
        assert int(self._map.heartbeat[0]) == heartbeat
        self._whole_once = False  # commit_part copies everything until one whole commit was made
        self.local = np.zeros((), dtype=self.dtype)
        self._local_u8 = flat_bytes(self.local)[: self.dtype.itemsize]
        self._dst = self._map.payload_u8[: self.dtype.itemsize]
        self._src_obj: np.ndarray | None = None  # write(): the last payload and its byte view
        self._src_u8 = self._local_u8
        self._hbv, self._seqv = self._map.heartbeat, self._map.write_seq  # one attribute hop less per commit
        return self

    def _open_or_take_over(self, path: str) -> tuple[int, int]:
        """Reuse a segment a dead writer left (same inode: attached readers just carry on) when its
        layout matches; otherwise build a fresh one and rename it into place atomically."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        except PermissionError:
            raise PermissionDenied(self.name, "existing segment is not ours") from None
        if fd >= 0:
            ok = os.fstat(fd).st_size == self.size
            if ok:
                raw = os.pread(fd, P2P_HEADER_SIZE, 0)
                h = np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]
                ok = (
                    raw[:8] == P2P_SHM_MAGIC
                    and int(h["version_hash"]) == self.version_hash
                    and int(h["source_module"]) == self.source
                    and int(h["dest_module"]) == self.dest
                    and int(h["payload_size"]) == self.payload_size
                )
            if ok:
                # Continue the heartbeat so readers see it advance again. A writer killed inside its
                # copy left write_seq odd over a torn payload: it stays odd (readers keep retrying,
                # nothing is shown) until our first commit rewrites the payload; making it even here
                # would publish the torn bytes as a new commit.
                hb = int(h["heartbeat"])
                seq = struct.unpack_from("<I", raw, OFF_WRITE_SEQ)[0]
                if not seq & 1:
                    os.pwrite(fd, struct.pack("<I", (2 * hb) & 0xFFFFFFFF), OFF_WRITE_SEQ)
                return fd, hb
            os.close(fd)
        tmp = f"{path}.new-{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SHM_MODE)
        try:
            os.fchmod(fd, SHM_MODE)  # umask must not widen or narrow the protocol's mode
            os.ftruncate(fd, self.size)
            header = bytearray(P2P_HEADER_SIZE)
            header[0:8] = P2P_SHM_MAGIC
            struct.pack_into("<I", header, OFF_VERSION_HASH, self.version_hash)
            struct.pack_into("<Q", header, OFF_HEARTBEAT, 0)
            header[OFF_SOURCE] = int(self.source)
            header[OFF_DEST] = int(self.dest)
            struct.pack_into("<I", header, OFF_PAYLOAD_SIZE, self.payload_size)
            struct.pack_into("<I", header, OFF_WRITE_SEQ, 0)
            os.pwrite(fd, bytes(header), 0)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return fd, 0

    @property
    def heartbeat(self) -> int:
        return self._hb_closed if self._closed else self._hbv[0]

    @property
    def whole_committed(self) -> bool:
        """A whole commit was made: the segment holds this writer's bytes everywhere, so partial commits
        (commit_part, or a compiled commit of byte spans into `segment`) are enough from here."""
        return self._whole_once

    @property
    def segment(self) -> np.ndarray:
        """The writable mapping (header + payload) as uint8, for a compiled commit (common/shm/seqlock_jit.py)."""
        return self._map.u8

    def commit(self) -> None:
        """Publish `self.local`: heartbeat+1, seq odd, copy, seq even. No allocation, no syscall."""
        self._publish(self._local_u8)

    def write(self, payload: np.ndarray) -> None:
        """Publish `payload` (one value of the segment's dtype): the same seqlock commit as
        `commit()`, with ONE flat byte copy straight from `payload` into the segment (a
        structured-dtype assignment into `local` first cost 9-17x a memcpy). `self.local` is left
        as it is: use either `local` + `commit()` or `write()`. The byte view of the last payload
        object is cached, so writing the same array again costs no allocation."""
        if payload is not self._src_obj:
            if payload.dtype != self.dtype or payload.size != 1:
                raise TypeError(f"{self.name}: payload must be one value of the segment's dtype")
            if not payload.flags.c_contiguous:
                payload = np.ascontiguousarray(payload)
            self._src_u8 = flat_bytes(payload)
            self._src_obj = payload
        self._publish(self._src_u8)

    def commit_part(self, start: int, stop: int, start2: int = 0, stop2: int = 0) -> None:
        """Publish `self.local` when only its bytes [start, stop) and [start2, stop2) changed since
        the last commit: the same seqlock commit (heartbeat+1, seq odd, copy, seq even) copying just
        those ranges — the segment already holds the rest. Empty ranges publish a heartbeat alone
        (an unchanged payload). The caller vouches that nothing else in `local` changed; a reader
        sees exactly what `commit()` would have shown it. The first commit of a writer is always whole
        (a segment taken over from a dead writer holds its bytes, possibly torn)."""
        if not self._whole_once:
            self._publish(self._local_u8)
        else:
            self._publish(None, start, stop, start2, stop2)

    def _publish(self, src_u8: np.ndarray | None, start: int = 0, stop: int = 0, start2: int = 0,
                 stop2: int = 0) -> None:
        """The one seqlock write (DESIGN.md): heartbeat+1, seq odd, the copy, seq even. The copy is
        all of `src_u8` (one flat byte copy), or with `src_u8` None the byte ranges of `local` given."""
        hb = self._hbv[0] + 1
        self._hbv[0] = hb
        seq = self._seqv
        even = (hb << 1) & 0xFFFFFFFF
        seq[0] = (even - 1) & 0xFFFFFFFF
        if src_u8 is not None:
            self._dst[...] = src_u8  # a flat byte copy; half of np.copyto's cost (no dispatch wrapper)
            self._whole_once = True
        else:
            if stop > start:
                self._dst[start:stop] = self._local_u8[start:stop]
            if stop2 > start2:
                self._dst[start2:stop2] = self._local_u8[start2:stop2]
        seq[0] = even

    def close(self, unlink: bool = True) -> None:
        """Unmap; on a clean exit unlink the segment and its lock, then release the lock."""
        if self._closed:
            return
        self._closed = True
        self._hb_closed = int(self._hbv[0])  # `heartbeat` after close: the last commit's
        del self._dst, self._hbv, self._seqv
        self._src_obj = self._src_u8 = None
        self._map.close()
        if unlink:
            for suffix in ("", ".lock"):
                try:
                    os.unlink(shm_path(self.name) + suffix)
                except FileNotFoundError:
                    pass
        os.close(self._lock_fd)

    def __enter__(self) -> "TypedP2pWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reader -------------------------------------------------------------------------------------
class TypedP2pReader:
    """A reader of one segment. `read()` returns `self.local` (overwritten by the next read).

    `exclusive=True` (default) takes `<name>.rlock` so there is one reader; tools pass False.
    `stale_reads`: heartbeat unchanged for this many consecutive reads raises HeartbeatStale.
    """

    def __init__(self) -> None:
        raise TypeError("use TypedP2pReader.attach(name, my_module, dtype)")

    @classmethod
    def attach(
        cls,
        name: str,
        my_module: "ModuleAbbrev | str",
        dtype: np.dtype,
        *,
        exclusive: bool = True,
        stale_reads: int = DEFAULT_STALE_READS,
    ) -> "TypedP2pReader":
        self = object.__new__(cls)
        self.name = name
        self.my_module = ModuleAbbrev.parse(my_module)
        self.dtype = np.dtype(dtype)
        self.payload_size = aligned_payload_size(self.dtype)
        self.size = mapped_size(self.payload_size)
        self.expected_hash = version_hash(self.payload_size)
        self.stale_reads = max(1, int(stale_reads))
        self.exclusive = exclusive
        self.contention_count = 0
        self.reattach_count = 0
        self._closed = False
        self._rlock_fd = -1
        if exclusive:
            try:
                self._rlock_fd = _open_lock(shm_path(name) + ".rlock", create=True)
            except PermissionError:
                raise PermissionDenied(name, "cannot open the reader lock") from None
            try:
                fcntl.flock(self._rlock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._rlock_fd)
                raise ReaderAlreadyConnected(name) from None
        try:
            self._map = self._open_and_validate()
        except BaseException:
            if self._rlock_fd >= 0:
                try:
                    os.unlink(shm_path(name) + ".rlock")  # ours, held exclusively: leave nothing behind
                except FileNotFoundError:
                    pass
                os.close(self._rlock_fd)
            raise
        self.local = np.zeros((), dtype=self.dtype)
        self._local_u8 = flat_bytes(self.local)[: self.dtype.itemsize]
        # every copy lands here first and goes to `local` only once the sequence held: a torn copy
        # never overwrites the last consistent one
        self._scratch_u8 = np.zeros(self.dtype.itemsize, np.uint8)
        self._bind()
        self._last_hb = -1
        self._same_hb = 0
        self._hb_changed_at = time.monotonic()
        return self

    def _open_and_validate(self) -> _Mapping:
        path = shm_path(self.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SegmentNotFound(self.name) from None
        except PermissionError:
            raise PermissionDenied(self.name) from None
        try:
            st = os.fstat(fd)
            if st.st_size < P2P_HEADER_SIZE:
                raise InvalidMagic(self.name, "segment shorter than its header")
            raw = os.pread(fd, P2P_HEADER_SIZE, 0)
            if raw[:8] != P2P_SHM_MAGIC:
                raise InvalidMagic(self.name, f"magic {raw[:8]!r}")
            h = np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]
            if int(h["dest_module"]) != int(self.my_module):
                raise DestinationMismatch(
                    self.name, f"segment is for module {int(h['dest_module'])}, reader is {self.my_module.abbrev}"
                )
            if int(h["version_hash"]) != self.expected_hash or int(h["payload_size"]) != self.payload_size:
                raise VersionMismatch(
                    self.name,
                    f"version hash {int(h['version_hash']):#010x} (payload {int(h['payload_size'])} B), "
                    f"expected {self.expected_hash:#010x} ({self.payload_size} B)",
                )
            if st.st_size < self.size:
                raise VersionMismatch(self.name, f"mapped size {st.st_size} < {self.size}")
            return _Mapping(fd, self.size, self.payload_size, writable=False)
        finally:
            os.close(fd)

    def _bind(self) -> None:
        self._src = self._map.payload_u8[: self.dtype.itemsize]
        self._seq = self._map.write_seq
        self._hbv = self._map.heartbeat

    @property
    def heartbeat(self) -> int:
        return self._hbv[0]

    @property
    def segment(self) -> np.ndarray:
        """The read-only mapping (header + payload) as uint8, for a compiled read (common/shm/seqlock_jit.py);
        a new array after a re-attach."""
        return self._map.u8

    def heartbeat_age_s(self) -> float:
        """Seconds since this reader last saw the heartbeat change."""
        return time.monotonic() - self._hb_changed_at

    def writer_alive(self) -> bool:
        return writer_alive(self.name)

    def read(self) -> np.ndarray:
        """Seqlock read into `self.local`. Raises ReadContention after MAX_READ_RETRIES torn
        attempts and HeartbeatStale when the heartbeat has not moved for `stale_reads` reads
        (the copy is still in `self.local`; a replaced segment is re-attached transparently)."""
        seq = self._seq
        for _ in range(MAX_READ_RETRIES):
            s1 = seq[0]
            if s1 & 1:
                continue
            self._scratch_u8[...] = self._src
            if seq[0] == s1:
                self._local_u8[...] = self._scratch_u8
                break
        else:
            self.contention_count += 1
            raise ReadContention(self.name, f"{MAX_READ_RETRIES} torn attempts")
        hb = self._hbv[0]
        if hb != self._last_hb:
            self._last_hb = hb
            self._same_hb = 0
            self._hb_changed_at = time.monotonic()
            return self.local
        self._same_hb += 1
        if self._same_hb >= self.stale_reads:
            if self._try_reattach():
                return self.read()
            raise HeartbeatStale(self.name, f"heartbeat {hb} unchanged for {self._same_hb} reads")
        return self.local

    def copy_in(self) -> int:
        """The seqlock copy alone: payload into `self.local`; returns the commit number of that copy
        (write_seq / 2: the heartbeat modulo 2**31, exact for this copy, unlike a separate heartbeat
        load), or -1 after MAX_READ_RETRIES torn attempts. No staleness logic, no exception, no
        allocation (common/shm/inbound.py judges liveness itself)."""
        seq = self._seq
        for _ in range(MAX_READ_RETRIES):
            s1 = seq[0]
            if s1 & 1:
                continue
            self._scratch_u8[...] = self._src
            if seq[0] == s1:
                self._local_u8[...] = self._scratch_u8
                return s1 >> 1
        self.contention_count += 1
        return -1

    def copy_in_if_moved(self, last: int) -> int:
        """`copy_in()` unless the segment still holds commit `last` (the one already in `local`):
        then nothing is copied and `last` is returned. A slow writer's segment polled every cycle
        costs one load instead of a payload copy."""
        if self._seq[0] == ((last << 1) & 0xFFFFFFFF) and last >= 0:
            return last
        return self.copy_in()

    def use_buffer(self, local: np.ndarray) -> None:
        """Read into `local` (an array of this dtype the caller keeps) instead of our own."""
        if local.dtype != self.dtype or local.shape != ():
            raise TypeError(f"{self.name}: buffer must be a 0-d array of the segment's dtype")
        self.local = local
        self._local_u8 = flat_bytes(local)[: self.dtype.itemsize]

    def reattach_if_replaced(self) -> bool:
        """Map the segment now under our name if it is a new one (new inode, a restarted writer);
        `self.local` stays the same array. True when re-attached."""
        return self._try_reattach()

    @property
    def inode(self) -> int:
        return self._map.inode

    def try_read(self) -> np.ndarray | None:
        """read() that returns None on contention or staleness (for non-RT readers)."""
        try:
            return self.read()
        except (ReadContention, HeartbeatStale):
            return None

    def _try_reattach(self) -> bool:
        """If the writer was replaced by a new segment (new inode), map the new one."""
        try:
            st = os.stat(shm_path(self.name))
        except FileNotFoundError:
            return False
        if st.st_ino == self._map.inode:
            return False
        try:
            new = self._open_and_validate()
        except ShmError:
            return False
        old = self._map
        self._map = new
        self._bind()
        old.close()
        self._last_hb = -1
        self._same_hb = 0
        self.reattach_count += 1
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        del self._src, self._seq, self._hbv
        self._map.close()
        if self._rlock_fd >= 0:
            try:
                os.unlink(shm_path(self.name) + ".rlock")  # we hold it exclusively
            except FileNotFoundError:
                pass
            os.close(self._rlock_fd)

    def __enter__(self) -> "TypedP2pReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unlink_segment(name: str) -> None:
    """Remove a segment and its lock objects (for cleanup of a dead instance)."""
    for suffix in ("", ".lock", ".rlock"):
        try:
            os.unlink(shm_path(name) + suffix)
        except FileNotFoundError:
            pass
        except OSError as e:  # pragma: no cover - permission problems are reported, not hidden
            if e.errno != errno.ENOENT:
                raise
