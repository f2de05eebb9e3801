"""Issue 15, command round trip: how an ack reaches a gRPC handler, and what a submit leaves out.

The link runs in this process against consumers in threads (tests/grpc_support.FakeConsumer: real
/dev/shm segments, real rings, real POSIX wake semaphores); the handler side is a real asyncio loop.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from common.shm.commands import HalCommand, ResultCode
from grpc_bridge.loop_bell import AckFuture, LoopBell
from grpc_bridge.shm_link import HAL
from grpc_bridge.status_map import CommandError
from tests.grpc_support import FakeConsumer, running_link
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def link(fresh_prefix: str):  # noqa: ANN201
    with running_link(fresh_prefix) as lf:
        yield lf


def test_an_ack_resolves_the_handlers_future_on_its_loop_through_the_eventfd(link) -> None:  # noqa: ANN001
    """Must exist (command round trip): the consumer's ack reaches the waiting handler as an asyncio
    future resolved on the handler's own loop (the link thread rings an eventfd the loop watches; no
    thread-pool future in between), in order, each with its own ack, and with the link thread's stamp."""
    lk, fakes = link

    async def run() -> list:
        lk.bind_loop(asyncio.get_running_loop())
        bell = lk._bell
        assert bell is not None and bell.rings == 0
        futs = [lk.submit_async(HAL, HalCommand.SET_DO, 500 + i, pin=20, args=(float(i & 1),)) for i in range(4)]
        assert all(isinstance(f, AckFuture) and not f.done() for f in futs)
        acks = await asyncio.wait_for(asyncio.gather(*futs), 10)
        assert 1 <= bell.rings <= 4  # the link thread rang the loop's eventfd (once per batch of acks)
        assert all(f.noticed_ns > 0 for f in futs)
        return acks

    acks = asyncio.run(run())
    assert [a.request_id for a in acks] == [500, 501, 502, 503] and all(a.ok for a in acks)
    assert [c.request_id for c in fakes["hal"].taken[-4:]] == [500, 501, 502, 503]


def test_submit_async_needs_a_bound_loop(link) -> None:  # noqa: ANN001
    lk, fakes = link
    with pytest.raises(RuntimeError, match="bind_loop"):
        lk.submit_async(HAL, HalCommand.SET_DO, 1, pin=20, args=(1.0,))
    assert not fakes["hal"].taken


def test_a_consumer_found_dead_at_submit_answers_at_once_and_its_successor_never_runs_it(
        link, fresh_prefix: str) -> None:  # noqa: ANN001
    """Must exist (command round trip): the exact writer-lock probe moved after the ring write (off the
    round trip) keeps "a crash shows at once": a command for a consumer whose process is gone is
    answered NOT_EXECUTED (UNAVAILABLE, "not running") within a moment, never after the deadline, and
    the consumer's successor does not execute what was written for its dead predecessor."""
    lk, fakes = link
    hal = fakes["hal"]
    hal._stop.set()  # the HAL "dies": no more cycles, its writer lock released, the segment left behind
    hal._thread.join(5)
    hal.writer.close(unlink=False)
    hal.wake.close()

    async def run() -> tuple[str, float]:
        lk.bind_loop(asyncio.get_running_loop())
        t0 = time.monotonic()
        try:
            fut = lk.submit_async(HAL, HalCommand.SET_DO, 777, pin=20, args=(1.0,))
        except CommandError as e:  # the link's own tick saw it first: refused before any write
            return f"refused: {e.message}", time.monotonic() - t0
        ack = await asyncio.wait_for(fut, 5)
        assert ack.result == ResultCode.NOT_EXECUTED, ack
        return f"not executed: {ack.message}", time.monotonic() - t0

    outcome, took = asyncio.run(run())
    # at once: no ack to wait for, answered well before a command's default deadline (2 s)
    assert "HAL is not running" in outcome and took < 2.0, (outcome, took)
    successor = FakeConsumer("hal", fresh_prefix)
    fakes["hal"] = successor  # closed by the fixture
    wait_for(lambda: lk.source_ok(HAL)[0], 20, what="the restarted HAL live and following our ring")
    time.sleep(0.05)  # a few of its cycles: proving an absence
    assert all(c.request_id != 777 for c in successor.taken)


def test_a_caller_that_gives_up_leaves_nothing_pending(link) -> None:  # noqa: ANN001
    """The deadline is a timer on the handler's own future (no asyncio.wait_for wrapper): when it
    fires, or the call is cancelled, the link forgets the future; a late ack is then dropped."""
    lk, fakes = link
    fakes["hal"].consuming.clear()

    async def run() -> None:
        lk.bind_loop(asyncio.get_running_loop())
        fut = lk.submit_async(HAL, HalCommand.SET_DO, 901, pin=20, args=(1.0,))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), 0.05)
        fut.cancel()
        lk.forget(HAL, fut)
        assert not lk._sources["hal"].futures

    asyncio.run(run())
    fakes["hal"].consuming.set()
    wait_for(lambda: any(c.request_id == 901 for c in fakes["hal"].taken), 10, what="the late command taken")
    wait_for(lambda: lk._sources["hal"].outbox.in_flight == 0, 10, what="the late ack read and dropped")


def test_the_bell_resolves_what_it_still_queues_when_closed() -> None:
    """Shutdown: results queued but not yet drained are not lost when the bell closes."""

    async def run() -> None:
        bell = LoopBell(asyncio.get_running_loop())
        fut = asyncio.get_running_loop().create_future()
        bell.deliver([(fut, "ack")])
        bell.close()
        assert fut.done() and fut.result() == "ack"
        bell.deliver([(asyncio.get_running_loop().create_future(), "late")])  # after close: ignored, no raise

    asyncio.run(run())


def test_a_command_for_the_hal_posts_the_hals_wake_semaphore(link, fresh_prefix: str) -> None:  # noqa: ANN001
    """Command round trip: after the ring write the bridge posts the HAL's wake semaphore (as it does
    the RE's), so a HAL that blocks on it between cycles takes the command at once; a HAL that
    does not wait on it is unaffected (the post finds nothing to wake)."""
    from common.shm.wake import WakeWaiter

    lk, _ = link
    fut = lk.submit(HAL, HalCommand.SET_DO, 610, pin=20, args=(1.0,))  # before any waiter exists: no error
    assert fut.result(timeout=10).ok
    waiter = WakeWaiter("hal", fresh_prefix)
    try:
        waiter.wait(0)  # drain anything earlier
        assert not waiter.wait(0.05), "woken with no command sent"
        wait_for(lambda: (lk.submit(HAL, HalCommand.SET_DO, 611, pin=20, args=(0.0,)).result(timeout=10)
                          and waiter.wait(0.2)), 10, what="a HAL command's post on the hal semaphore")
    finally:
        waiter.close()
