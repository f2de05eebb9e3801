"""Fan-out of samples to Watch* streams (unit): latest-value semantics, rate bound, one build per sample.

A stub context stands in for grpc's; the streams are the real Streamer over a real Broadcast.
"""
from __future__ import annotations

import asyncio

import pytest

from grpc_bridge.shm_link import Snapshot, SourceSample
from grpc_bridge.status_map import CommandError
from grpc_bridge.watch import RATE_METADATA_KEY, Broadcast, Streamer


class StubContext:
    def __init__(self) -> None:
        self.metadata: tuple = ()
        self.aborted: tuple | None = None

    async def send_initial_metadata(self, md) -> None:  # noqa: ANN001
        self.metadata = md

    def set_trailing_metadata(self, md) -> None:  # noqa: ANN001
        pass

    async def abort(self, code, details) -> None:  # noqa: ANN001
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def snap(seq: int) -> Snapshot:
    return Snapshot(seq, seq, {"cu": SourceSample(None, 0.0, True, "")})


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_slow_watcher_gets_the_latest_sample_not_a_backlog() -> None:
    async def go() -> list[int]:
        bc = Broadcast(asyncio.get_running_loop())
        stream = Streamer(bc, max_hz=1000).stream(0, StubContext(), "seq", lambda s: s.seq)
        bc._publish(snap(1))
        first = await stream.__anext__()
        for seq in range(2, 50):  # the client does not read meanwhile
            bc._publish(snap(seq))
        second = await stream.__anext__()
        bc._publish(snap(50))
        third = await stream.__anext__()
        await stream.aclose()
        return [first, second, third]

    assert run(go()) == [1, 49, 50]


def test_one_build_per_sample_whatever_the_watchers() -> None:
    builds: list[int] = []

    def build(s: Snapshot) -> int:
        builds.append(s.seq)
        return s.seq

    async def go() -> list[int]:
        bc = Broadcast(asyncio.get_running_loop())
        streamer = Streamer(bc, max_hz=1000)
        streams = [streamer.stream(0, StubContext(), "machine", build) for _ in range(10)]
        bc._publish(snap(1))
        return [await s.__anext__() for s in streams]

    assert run(go()) == [1] * 10
    assert builds == [1]


def test_rate_is_bounded_by_max_watch_hz() -> None:
    async def go() -> tuple:
        bc = Broadcast(asyncio.get_running_loop())
        ctx = StubContext()
        stream = Streamer(bc, max_hz=50).stream(1e6, ctx, "seq", lambda s: s.seq)
        bc._publish(snap(1))
        await stream.__anext__()
        await stream.aclose()
        return ctx.metadata

    assert run(go()) == ((RATE_METADATA_KEY, "50"),)
    s = Streamer(None, max_hz=50)  # type: ignore[arg-type]
    assert s.rate(0) == 50 and s.rate(10) == 10
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(CommandError):
            s.rate(bad)


def test_closing_the_broadcast_ends_every_stream() -> None:
    async def go() -> list:
        bc = Broadcast(asyncio.get_running_loop())
        stream = Streamer(bc, max_hz=1000).stream(0, StubContext(), "seq", lambda s: s.seq)
        bc._publish(snap(1))
        out = [await stream.__anext__()]
        bc.close()
        out += [x async for x in stream]
        return out

    assert run(go()) == [1]


def test_watchers_are_counted_so_the_link_samples_only_while_watched() -> None:
    """Issue 15: the sampler runs only while someone watches — every Watch* stream (and HMI page,
    the same paced()) counts itself in Broadcast.watchers while it runs and tells the link."""
    seen: list[int] = []

    async def go() -> tuple[int, int]:
        bc = Broadcast(asyncio.get_running_loop())
        bc.on_watchers = seen.append
        streamer = Streamer(bc, max_hz=1000)
        a = streamer.stream(0, StubContext(), "seq", lambda s: s.seq)
        b = streamer.stream(0, StubContext(), "seq", lambda s: s.seq)
        bc._publish(snap(1))
        await a.__anext__()
        await b.__anext__()
        during = bc.watchers
        await a.aclose()
        await b.aclose()
        return during, bc.watchers

    assert run(go()) == (2, 0)
    assert seen == [1, 2, 1, 0]
