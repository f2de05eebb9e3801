"""Wake signal (issue 15, fixed interface 3): a named POSIX semaphore per reader, posted by writers.

Real semaphores in /dev/shm, a real second process as the writer.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from common.shm.wake import WakePoster, WakeWaiter, unlink_wakes, wake_name
from tests.helpers import REPO, module_env, unique_prefix

POSTER_SCRIPT = """
import sys, time
from common.shm.wake import WakePoster
p = WakePoster(sys.argv[1], sys.argv[2])
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "post":
        p.post()
        print("posted", p.posts, p.skipped, flush=True)
    elif cmd == "quit":
        break
"""


@pytest.fixture
def prefix():
    p = unique_prefix("w")
    yield p
    unlink_wakes(p)


def _sem_file(prefix: str, dst: str) -> str:
    return "/dev/shm/sem." + wake_name(dst, prefix).lstrip("/")


class Poster:
    """A writer process driven line by line over stdin."""

    def __init__(self, dst: str, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", POSTER_SCRIPT, dst, prefix], cwd=REPO, env=module_env(prefix),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def post(self) -> tuple[int, int]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("post\n")
        self.proc.stdin.flush()
        parts = self.proc.stdout.readline().split()
        assert parts and parts[0] == "posted", parts
        return int(parts[1]), int(parts[2])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def poster_factory():
    made: list[Poster] = []

    def make(dst: str, prefix: str) -> Poster:
        p = Poster(dst, prefix)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_second_process_post_wakes_the_waiter(prefix, poster_factory):
    """Fixed interface 3: a writer process posts, the reader blocked in wait() wakes."""
    with WakeWaiter("mqt", prefix) as w:
        assert os.stat(_sem_file(prefix, "mqt")).st_mode & 0o777 == 0o600
        poster = poster_factory("mqt", prefix)
        assert poster.post() == (1, 0)
        assert w.wait(10.0) is True
        assert w.wakes == 1


def test_wait_times_out_without_a_post(prefix):
    """Fixed interface 3: wait(timeout) returns False after the time-out when nobody posts."""
    with WakeWaiter("rpc", prefix) as w:
        t0 = time.monotonic()
        assert w.wait(0.05) is False
        assert time.monotonic() - t0 >= 0.04


def test_count_never_grows_and_one_wait_is_one_wake(prefix, poster_factory):
    """Fixed interface 3: posting while a wake is pending adds nothing; a burst is one wake-up."""
    with WakeWaiter("re", prefix) as w:
        poster = poster_factory("re", prefix)
        for _ in range(50):
            poster.post()
        assert w.value == 1
        assert w.wait(5.0) is True
        assert w.value == 0
        assert w.wait(0.02) is False  # nothing left over from the burst


def test_extra_counts_are_drained_by_one_wait(prefix):
    """Fixed interface 3: counts from several writers are drained by one wait()."""
    with WakeWaiter("cu", prefix) as w:
        posters = [WakePoster("cu", prefix) for _ in range(3)]
        for p in posters:
            p._open(time.monotonic())
            p._sem.release()  # several writers racing past the pending check
        assert w.value == 3
        assert w.wait(1.0) is True
        assert w.value == 0
        for p in posters:
            p.close()


def test_restarted_reader_is_still_woken(prefix, poster_factory):
    """Fixed interface 3: a reader that restarts (new semaphore under the same name) still gets
    woken by a writer that opened the old one."""
    w1 = WakeWaiter("hal", prefix)
    poster = poster_factory("hal", prefix)
    poster.post()
    assert w1.wait(5.0)
    ino1 = os.stat(_sem_file(prefix, "hal")).st_ino
    w1.close()  # reader exits: its semaphore is unlinked
    w2 = WakeWaiter("hal", prefix)
    try:
        assert os.stat(_sem_file(prefix, "hal")).st_ino != ino1
        deadline = time.monotonic() + 10.0
        woken = False
        while not woken and time.monotonic() < deadline:
            poster.post()
            woken = w2.wait(0.1)
        assert woken, "the restarted reader was never woken"
    finally:
        w2.close()


def test_stale_semaphore_of_a_dead_reader_is_reused(prefix, poster_factory):
    """Fixed interface 3: a reader killed without close() leaves its semaphore; the next reader
    reuses it (same inode), so writers holding it carry on."""
    code = (
        "import sys, os; from common.shm.wake import WakeWaiter; "
        "w = WakeWaiter('mqt', sys.argv[1]); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, prefix], cwd=REPO, env=module_env(prefix), check=True, timeout=30)
    ino = os.stat(_sem_file(prefix, "mqt")).st_ino
    poster = poster_factory("mqt", prefix)
    assert poster.post() == (1, 0)
    with WakeWaiter("mqt", prefix) as w:
        assert os.stat(_sem_file(prefix, "mqt")).st_ino == ino
        assert w.wait(5.0) is True


def test_post_without_a_reader_neither_blocks_nor_raises(prefix):
    """Fixed interface 3: post() with no reader returns at once, does nothing, and retries the
    open at most every 0.5 s; once the reader appears it is woken."""
    p = WakePoster("rpc", prefix)
    for _ in range(1000):
        p.post()  # a blocking post would hang here
    assert p.posts == 0
    assert not os.path.exists(_sem_file(prefix, "rpc"))  # a poster never creates it
    with WakeWaiter("rpc", prefix) as w:
        deadline = time.monotonic() + 10.0
        while p.posts == 0 and time.monotonic() < deadline:
            p.post()
            time.sleep(0.01)
        assert p.posts == 1
        assert w.wait(1.0) is True
    p.post()  # reader gone again: no exception
    p.close()


def test_a_poster_apart_opens_and_follows_a_restarted_reader_only_in_maintain(prefix):
    """apart=True (the HAL's posters): post() makes no system call but the post itself — the open of an
    absent reader's semaphore and the check for a restarted reader's new one run in maintain(now), which
    the owner calls once per cycle after its commits, on the same 0.5 s / 0.1 s schedule."""
    p = WakePoster("re", prefix, apart=True)
    try:
        with WakeWaiter("re", prefix) as w:
            for _ in range(100):
                p.post()
            assert p.posts == 0  # never opened by post()
            p.maintain(time.monotonic())
            p.post()
            assert p.posts == 1 and w.wait(1.0) is True
        with WakeWaiter("re", prefix) as w2:  # the reader restarted: a new semaphore under the name
            p.post()
            assert w2.wait(0.05) is False  # posted to the old one
            p.maintain(time.monotonic() + 1.0)  # its check is due: the new one is opened
            p.post()
            assert w2.wait(1.0) is True
    finally:
        p.close()


def test_unlink_wakes_removes_the_instance_semaphores(prefix):
    """Cleanup: every wake semaphore of an instance goes, nothing of another instance."""
    other = unique_prefix("w")
    w1 = WakeWaiter("mqt", prefix)
    w2 = WakeWaiter("rpc", other)
    try:
        removed = unlink_wakes(prefix)
        assert removed == ["sem." + wake_name("mqt", prefix).lstrip("/")]
        assert os.path.exists(_sem_file(other, "rpc"))
    finally:
        w1.close()
        w2.close()


def test_wait_until_an_absolute_monotonic_deadline(prefix, poster_factory):
    """Issue 15 (the HAL sleeps to each cycle's deadline on its semaphore): wait_until(deadline) on
    perf_counter_ns's clock returns False not before the deadline when nobody posts, True at once
    on another process's post with every pending count taken, and a signal in between (SIGALRM,
    handled) does not end the wait early."""
    import signal

    with WakeWaiter("hal", prefix) as w:
        assert w._until.available, "glibc's sem_clockwait is expected on the supported platforms"
        deadline = time.perf_counter_ns() + 30_000_000
        assert w.wait_until(deadline) is False
        assert time.perf_counter_ns() >= deadline

        poster = poster_factory("hal", prefix)
        poster.post()
        t0 = time.perf_counter_ns()
        assert w.wait_until(t0 + 5_000_000_000) is True
        assert w.value == 0 and w.wakes == 1

        seen: list[int] = []
        old = signal.signal(signal.SIGALRM, lambda *_: seen.append(1))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            deadline = time.perf_counter_ns() + 100_000_000
            assert w.wait_until(deadline) is False
            assert time.perf_counter_ns() >= deadline, "the signal ended the wait early"
            assert seen, "the signal arrived during the wait"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
