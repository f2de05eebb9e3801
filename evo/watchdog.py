"""The supervision loop: ordered start, exit detection by pidfd, readiness and liveness, restarts, ordered stop.

Runs on the main thread (PR_SET_PDEATHSIG follows the thread that forked); other threads post work with `call()`.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from common.consts import ENV_CONFIG_DIR, ENV_RUN_DIR, ENV_SHM_PREFIX, ENV_START_GATE_FD
from common.shm.discovery import unlink_all
from common.shm.p2p import ShmError, read_header

from evo.child import Child, child_env, launcher_argv
from evo.instance import MODULES_FILE, write_json_atomic
from evo.logcapture import Console, ModuleLog
from evo.modules import ModuleSpec
from evo.state import ExitInfo, ModuleState, backoff_s

log = logging.getLogger("evo.watchdog")

CHECK_FAST_S = 0.005  # while a module waits for a heartbeat or a TCP port
CHECK_SLOW_S = 0.2  # liveness of running modules: a hang is found within watchdog_timeout_s + 0.2 s
# (at 0.05 s the idle watchdog cost 1.0 % of a core, at 0.2 s 0.45 %: four segment headers read per check)
S = ModuleState


@dataclass(frozen=True)
class Policy:
    """The [watchdog] figures the loop uses."""

    max_restarts: int = 5
    initial_backoff_ms: int = 100
    max_backoff_s: float = 30.0
    stable_run_s: float = 60.0
    sigterm_timeout_s: float = 2.0
    standby: bool = True  # a preloaded spare per preloadable module: a crash costs only its gate

    @classmethod
    def from_config(cls, wd: Any) -> "Policy":
        return cls(wd.max_restarts, wd.initial_backoff_ms, float(wd.max_backoff_s), float(wd.stable_run_s),
                   float(wd.sigterm_timeout_s), bool(getattr(wd, "standby", True)))


class Timers:
    """A heap of one-shot callbacks on the monotonic clock; cancel() leaves a tombstone."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()

    def call_at(self, when: float, fn: Callable[[], None]) -> list[Any]:
        entry = [when, next(self._seq), fn]
        heapq.heappush(self._heap, entry)
        return entry

    @staticmethod
    def cancel(entry: list[Any] | None) -> None:
        if entry is not None:
            entry[2] = None

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2] is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, fn = heapq.heappop(self._heap)
            if fn is not None:
                fn()


EXIT_CONFIG_REFUSED = 2  # common.module_main: the module's configuration (or its driver's) was refused
STANDBY_DELAY_S = 0.5  # after a module is ready (or boot ends) before its spare is preloaded
STANDBY_RETRY_S = 5.0  # a spare that died while waiting is replaced after this
STANDBY_MAX_FAILURES = 3  # spares dying in a row: stop keeping one (logged)


@dataclass(eq=False)
class Runtime:
    """What the loop knows about one module (mutated only on the loop thread)."""

    spec: ModuleSpec
    log: ModuleLog
    state: ModuleState = S.STOPPED
    reason: str = ""
    since: float = field(default_factory=time.time)
    child: Child | None = None
    restarts: int = 0  # automatic restarts since the last operator start
    consecutive: int = 0  # for backoff / max_restarts; reset after stable_run_s
    last_exit: ExitInfo | None = None
    started_mono: float = 0.0
    ready_mono: float = 0.0
    last_ping: float = 0.0  # READY=1 / WATCHDOG=1, monotonic
    notified_ready: bool = False
    status: str = ""
    hb: dict[str, list[Any]] = field(default_factory=dict)  # key -> [value|None, changed_mono, advanced]
    intent: str = ""  # why we stop it: "stop", "restart", "shutdown"
    kill_reason: str = ""  # set when we SIGKILL a hung / never-ready module
    timer: list[Any] | None = None
    held: bool = False  # stopped by an operator: boot does not start it
    boot_spawned: bool = False
    fds: set[int] = field(default_factory=set)
    gate_w: int | None = None  # preloaded and held at its start gate: writing b"1" lets it start
    # the spare: preloaded (imports + config done) and waiting at its own gate; a crash promotes it
    standby: Child | None = None
    standby_gate: int | None = None
    standby_fds: set[int] = field(default_factory=set)
    standby_timer: list[Any] | None = None
    standby_failures: int = 0  # spares that died while waiting, in a row
    standby_loaded: bool = False  # the spare reported LOADED=1: its imports and config load are done

    @property
    def name(self) -> str:
        return self.spec.name


class UnknownModule(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.message = f"unknown module {name!r} (modules: {', '.join(known)})"

    def __str__(self) -> str:
        return self.message


class NotApplicable(RuntimeError):
    """The request does not apply (e.g. a disabled module)."""


class ShuttingDown(RuntimeError):
    pass


class Watchdog:
    """Supervises `specs` in table order. `run()` blocks (main thread) until shut down."""

    def __init__(self, specs: list[ModuleSpec], *, policy: Policy, run_dir: Path, log_dir: Path, prefix: str,
                 config_dir: Path | None = None, console: Console | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.policy = policy
        self.run_dir = Path(run_dir)
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.config_dir = config_dir
        self.console = console or Console(width=max([9, *(len(s.name) for s in specs)]))
        self.env = dict(os.environ if env is None else env)
        self.modules: dict[str, Runtime] = {}
        for spec in specs:
            rt = Runtime(spec=spec, log=ModuleLog(spec.name, self.log_dir, self.console))
            rt.state = S.STOPPED if spec.enabled else S.DISABLED
            rt.reason = "" if spec.enabled else "disabled in the config"
            self.modules[spec.name] = rt
        self.pid = os.getpid()
        self.started_unix = time.time()
        self.t0 = time.monotonic()
        self.boot_s: float | None = None
        self.exit_code = 0  # what run() returns: EXIT_CONFIG_REFUSED when a module refused its config at boot
        self.shutdown_s: float | None = None
        self._timers = Timers()
        self._sel = selectors.DefaultSelector()
        self._calls: "queue.SimpleQueue[tuple[Callable[..., Any], tuple, Future]]" = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._call_lock = threading.Lock()
        self._closed = False  # no more calls accepted (the loop has ended)
        self._boot_queue: list[Runtime] = list(self.modules.values())
        self._preloaded = False
        self._stop_queue: list[Runtime] = []
        self._shutting_down = False
        self._shutdown_t0 = 0.0
        self._done = False
        self._waiters: list[tuple[Runtime, frozenset[ModuleState], Future, frozenset[ModuleState]]] = []
        self._subs: list[tuple["queue.Queue[Any]", frozenset[str]]] = []
        self._next_check = 0.0
        self.json_path = self.run_dir / MODULES_FILE

    # ---------------------------------------------------------------- thread-safe entry points
    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` on the loop thread; the Future carries its result or exception."""
        fut: Future = Future()
        with self._call_lock:
            if self._closed:
                fut.set_exception(ShuttingDown("the watchdog has shut down"))
                return fut
            self._calls.put((fn, args, fut))
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # already awake
        return fut

    def request_shutdown(self, reason: str = "requested") -> Future:
        return self.call(self.begin_shutdown, reason)

    # ---------------------------------------------------------------- the loop
    def run(self, after_first_spawn: Callable[[], None] | None = None) -> int:
        """Supervise until shut down (SIGINT/SIGTERM or Shutdown). Returns the exit code.
        `after_first_spawn` runs on the loop once the first module is spawned (slow set-up such as
        the control API then overlaps that module's own start-up)."""
        sig_r, sig_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        old_wakeup = signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        old_handlers = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self._sel.register(sig_r, selectors.EVENT_READ, lambda: self._on_signals(sig_r))
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        try:
            self._write_json()
            log.info("supervising %d modules (%s); instance %s, run dir %s", len(self.modules),
                     ", ".join(rt.name + ("" if rt.spec.enabled else " [disabled]") for rt in self.modules.values()),
                     self.prefix, self.run_dir)
            self._guard(self._advance_boot)
            self._guard(self._preload_second)
            if after_first_spawn is not None:
                try:
                    after_first_spawn()
                except Exception:  # noqa: BLE001
                    log.exception("start-up failed; shutting down")
                    self.begin_shutdown("start-up failure")
            while not self._done:
                now = time.monotonic()
                self._sel_wait(now)
                now = time.monotonic()
                self._guard(self._timers.run_due, now)
                if now >= self._next_check:
                    self._guard(self._check, now)
                    self._next_check = now + self._check_interval()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self._sel.close()
            for fd in (sig_r, sig_w):
                os.close(fd)
            with self._call_lock:
                self._closed = True
                self._drain_calls()
                for fd in (self._wake_r, self._wake_w):
                    os.close(fd)
            self._close_subscribers()
            for rt in self.modules.values():
                rt.log.close()
        return self.exit_code

    def _sel_wait(self, now: float) -> None:
        deadline = self._timers.next_deadline()
        if self._check_needed():
            deadline = self._next_check if deadline is None else min(deadline, self._next_check)
        timeout = None if deadline is None else max(0.0, deadline - now)
        for key, _ in self._sel.select(timeout):
            self._guard(key.data)

    @staticmethod
    def _guard(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a bug in one handler must not stop supervision
            log.exception("internal error in the watchdog loop (continuing)")

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                fn, args, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def _drain_calls(self) -> None:
        while True:
            try:
                _, _, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(ShuttingDown("the watchdog has shut down"))

    def _on_signals(self, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self.begin_shutdown(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                log.info("SIGHUP ignored (restart modules with `evo restart MODULE`)")

    # ---------------------------------------------------------------- periodic checks
    def _check_needed(self) -> bool:
        return any(rt.state in (S.STARTING, S.RUNNING) for rt in self.modules.values())

    def _check_interval(self) -> float:
        fast = any(rt.state == S.STARTING and (rt.spec.ready_segments or rt.spec.tcp) for rt in self.modules.values())
        return CHECK_FAST_S if fast else CHECK_SLOW_S

    def _check(self, now: float) -> None:
        for rt in self.modules.values():
            if rt.child is None or rt.kill_reason or rt.gate_w is not None:
                continue
            if rt.state == S.STARTING:
                self._sample_heartbeats(rt, now)
                self._check_ready(rt, now)
            elif rt.state == S.RUNNING:
                self._sample_heartbeats(rt, now)
                self._check_alive(rt, now)

    def _sample_heartbeats(self, rt: Runtime, now: float) -> None:
        for key, entry in rt.hb.items():
            try:
                hb = read_header(f"{self.prefix}_{key}").heartbeat
            except (ShmError, OSError):
                continue
            if hb != entry[0]:
                if entry[0] is not None:
                    entry[2] = True
                entry[0] = hb
                entry[1] = now

    def _check_ready(self, rt: Runtime, now: float) -> None:
        spec = rt.spec
        if spec.notify and not rt.notified_ready:
            return
        if not all(rt.hb[k][2] for k in spec.ready_segments):
            return
        if spec.tcp and not _tcp_accepts(*spec.tcp):
            return
        self._became_ready(rt, now)

    def _check_alive(self, rt: Runtime, now: float) -> None:
        to = rt.spec.watchdog_timeout_s
        if to <= 0:
            return
        if rt.spec.notify and now - rt.last_ping > to:
            self._kill(rt, f"hung: no WATCHDOG=1 for {now - rt.last_ping:.1f} s")
            return
        for key in rt.spec.liveness_segments:
            age = now - rt.hb[key][1]
            if age > to:
                self._kill(rt, f"hung: {key} heartbeat frozen for {age:.1f} s")
                return

    def _ready_waiting_for(self, rt: Runtime) -> str:
        spec, missing = rt.spec, []
        if spec.notify and not rt.notified_ready:
            missing.append("READY=1")
        missing += [f"{k} heartbeat" for k in spec.ready_segments if not rt.hb[k][2]]
        if spec.tcp and not _tcp_accepts(*spec.tcp):
            missing.append(f"TCP {spec.tcp[0]}:{spec.tcp[1]}")
        return ", ".join(missing) or "nothing"

    # ---------------------------------------------------------------- spawning and child I/O
    def _argv_env(self, spec: ModuleSpec) -> tuple[list[str], dict[str, str]]:
        argv = list(spec.argv)
        if spec.wrap:
            argv = launcher_argv(argv)
        extra = {ENV_SHM_PREFIX: self.prefix, ENV_RUN_DIR: str(self.run_dir), "EVO_WATCHDOG_PID": str(self.pid),
                 **({ENV_CONFIG_DIR: str(self.config_dir)} if self.config_dir else {}), **spec.env}
        return argv, extra

    def _begin_start(self, rt: Runtime, now: float) -> bool:
        """Reset what a start judges; False (and a failure recorded) when its port is taken."""
        spec = rt.spec
        rt.started_mono = now
        rt.notified_ready = False
        rt.kill_reason = ""
        rt.intent = ""
        rt.status = ""
        self._reset_heartbeats(rt, now)
        if spec.tcp and _tcp_accepts(*spec.tcp):
            # Someone else already serves the port: starting would fail ("address in use") and,
            # worse, the port check would call our module ready while the other program answers.
            why = f"{spec.tcp[0]}:{spec.tcp[1]} is already in use by another program"
            log.error("%s: not started: %s", rt.name, why)
            rt.log.note(f"not started: {why}")
            self._after_failure(rt, why, now)
            return False
        return True

    def _spawn(self, rt: Runtime, preload: bool = False) -> None:
        """Start the module's process. `preload`: it imports and loads its config now but waits at
        its start gate (touching no segment) until `_open_gate` — its turn in the start order."""
        spec = rt.spec
        argv, extra = self._argv_env(spec)
        now = time.monotonic()
        if not self._begin_start(rt, now):
            return
        gate_r = gate_w = -1
        if preload:
            gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
            extra[ENV_START_GATE_FD] = str(gate_r)
        try:
            child = Child(argv, child_env(self.env, extra), pass_fds=(gate_r,) if preload else ())
        except OSError as e:
            if preload:
                os.close(gate_w)
            log.error("%s: cannot start %s: %s", rt.name, argv[0], e)
            rt.log.note(f"cannot start {argv[0]}: {e}")
            self._after_failure(rt, f"cannot start: {e.strerror or e}", now)
            return
        finally:
            if preload:
                os.close(gate_r)
        self._adopt_child(rt, child)
        Timers.cancel(rt.timer)
        rt.timer = None
        if preload:
            rt.gate_w = gate_w
            log.info("%s: preloading pid %d (%s); starts in its turn", rt.name, child.pid, spec.kind)
            rt.log.note(f"preloading pid {child.pid}: {' '.join(argv)}")
            self._set_state(rt, S.STARTING, "preloaded: waiting for its turn in the start order")
            return
        log.info("%s: started pid %d (%s)", rt.name, child.pid, spec.kind)
        rt.log.note(f"started pid {child.pid}: {' '.join(argv)}")
        self._await_ready(rt, now)

    def _adopt_child(self, rt: Runtime, child: Child) -> None:
        rt.child = child
        for fd, handler in ((child.pidfd, lambda: self._on_exit(rt)), (child.notify_fd, lambda: self._on_notify(rt)),
                            (child.out_fd, lambda: self._on_output(rt))):
            self._sel.register(fd, selectors.EVENT_READ, handler)
            rt.fds.add(fd)

    # ---------------------------------------------------------------- standby (a preloaded spare)
    def _want_standby(self, rt: Runtime, delay: float = STANDBY_DELAY_S) -> None:
        """Keep a spare of `rt` waiting at its gate once the machine is up (never during boot: its
        imports would compete with the modules starting)."""
        p = self.policy
        if (not p.standby or not rt.spec.preload or rt.standby is not None or rt.standby_timer is not None
                or self._shutting_down or self.boot_s is None or rt.held or rt.state != S.RUNNING
                or rt.standby_failures >= STANDBY_MAX_FAILURES):
            return
        rt.standby_timer = self._timers.call_at(time.monotonic() + delay, lambda: self._spawn_standby(rt))

    def _spawn_standby(self, rt: Runtime) -> None:
        rt.standby_timer = None
        if rt.standby is not None or self._shutting_down or rt.held or rt.state != S.RUNNING:
            return
        argv, extra = self._argv_env(rt.spec)
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
        extra[ENV_START_GATE_FD] = str(gate_r)
        try:
            child = Child(argv, child_env(self.env, extra), pass_fds=(gate_r,))
        except OSError as e:
            os.close(gate_w)
            log.warning("%s: cannot start a standby: %s", rt.name, e)
            return
        finally:
            os.close(gate_r)
        rt.standby, rt.standby_gate = child, gate_w
        for fd, handler in ((child.pidfd, lambda: self._on_standby_exit(rt)),
                            (child.notify_fd, lambda: self._on_standby_notify(rt)),
                            (child.out_fd, lambda: self._on_standby_output(rt))):
            self._sel.register(fd, selectors.EVENT_READ, handler)
            rt.standby_fds.add(fd)
        rt.log.note(f"standby pid {child.pid} preloaded (promoted if pid {rt.child.pid if rt.child else 0} dies)")
        log.info("%s: standby pid %d preloaded", rt.name, child.pid)
        self._write_json()

    def _on_standby_notify(self, rt: Runtime) -> None:
        if rt.standby is None:
            return
        lines, _ = rt.standby.read_notify()
        if "LOADED=1" in lines and not rt.standby_loaded:
            rt.standby_loaded = True
            self._write_json()  # the spare is ready to take over: status shows it from now

    def _on_standby_output(self, rt: Runtime) -> None:
        if rt.standby is not None:
            lines, _ = rt.standby.read_output()
            for line in lines:
                rt.log.output(f"[standby] {line}")

    def _release_standby(self, rt: Runtime) -> Child | None:
        """Detach the spare from its standby handlers (and its gate, returned in rt.gate_w by the caller)."""
        child = rt.standby
        for fd in list(rt.standby_fds):
            rt.standby_fds.discard(fd)
            self._sel.unregister(fd)
        rt.standby = None
        rt.standby_loaded = False
        return child

    def _on_standby_exit(self, rt: Runtime) -> None:
        child = self._release_standby(rt)
        if child is None:
            return
        rc = child.reap()
        for line in child.read_output()[0]:
            rt.log.output(f"[standby] {line}")
        child.close()
        if rt.standby_gate is not None:
            os.close(rt.standby_gate)
            rt.standby_gate = None
        if self._shutting_down:
            return
        rt.standby_failures += 1
        log.warning("%s: standby pid %d exited while waiting (%s)%s", rt.name, child.pid, ExitInfo.from_returncode(rc),
                    "; no more standbys" if rt.standby_failures >= STANDBY_MAX_FAILURES else "")
        self._write_json()
        self._want_standby(rt, STANDBY_RETRY_S)

    def _drop_standby(self, rt: Runtime) -> None:
        """No spare for now (operator stop/restart, shutdown): close its gate, it leaves by itself."""
        Timers.cancel(rt.standby_timer)
        rt.standby_timer = None
        child = self._release_standby(rt)
        if rt.standby_gate is not None:
            os.close(rt.standby_gate)  # EOF at the gate: the spare exits without starting
            rt.standby_gate = None
        if child is not None:
            child.send_signal(signal.SIGKILL)
            try:
                child.proc.wait(2)
            except Exception:  # noqa: BLE001 - reaped or not, it is gone from our books
                pass
            child.close()

    def _promote_standby(self, rt: Runtime) -> None:
        """A crash restart with a spare at hand: the spare becomes the module (its imports and
        config load are done), a new spare is preloaded once it is ready."""
        now = time.monotonic()
        if not self._begin_start(rt, now):
            return
        child = self._release_standby(rt)
        assert child is not None
        rt.gate_w, rt.standby_gate = rt.standby_gate, None
        rt.standby_failures = 0
        self._adopt_child(rt, child)
        Timers.cancel(rt.timer)
        rt.timer = None
        log.info("%s: promoting standby pid %d", rt.name, child.pid)
        self._open_gate(rt)

    def _open_gate(self, rt: Runtime) -> None:
        """A preloaded module's turn: let it start, and judge its readiness from now."""
        assert rt.child is not None and rt.gate_w is not None
        try:
            os.write(rt.gate_w, b"1")
        except OSError:
            pass  # it is gone already: its pidfd reports the exit
        self._close_gate(rt)
        now = time.monotonic()
        rt.started_mono = now
        self._reset_heartbeats(rt, now)
        log.info("%s: started pid %d (%s, preloaded)", rt.name, rt.child.pid, rt.spec.kind)
        rt.log.note(f"started pid {rt.child.pid} (preloaded)")
        self._await_ready(rt, now)

    def _close_gate(self, rt: Runtime) -> None:
        if rt.gate_w is not None:
            os.close(rt.gate_w)
            rt.gate_w = None

    def _await_ready(self, rt: Runtime, now: float) -> None:
        spec = rt.spec
        self._set_state(rt, S.STARTING, f"waiting for {spec.readiness}")
        Timers.cancel(rt.timer)
        rt.timer = self._timers.call_at(now + spec.ready_timeout_s, lambda: self._ready_timeout(rt))
        self._next_check = now  # sample heartbeats / ports right away
        if spec.readiness == "none":
            self._became_ready(rt, now)

    def _reset_heartbeats(self, rt: Runtime, now: float) -> None:
        """Heartbeats as of now: readiness needs them to advance after this."""
        rt.hb = {k: [self._heartbeat(k), now, False] for k in (*rt.spec.ready_segments, *rt.spec.liveness_segments)}

    def _heartbeat(self, key: str) -> int | None:
        try:
            return read_header(f"{self.prefix}_{key}").heartbeat
        except (ShmError, OSError):
            return None

    def _unregister(self, rt: Runtime, fd: int) -> None:
        if fd in rt.fds:
            rt.fds.discard(fd)
            self._sel.unregister(fd)

    def _on_output(self, rt: Runtime) -> None:
        child = rt.child
        if child is None:
            return
        lines, eof = child.read_output()
        for line in lines:
            rt.log.output(line)
        if eof:
            self._unregister(rt, child.out_fd)

    def _on_notify(self, rt: Runtime) -> None:
        child = rt.child
        if child is None:
            return
        lines, eof = child.read_notify()
        if eof:
            self._unregister(rt, child.notify_fd)
        now = time.monotonic()
        for line in lines:
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                rt.notified_ready = True
                rt.last_ping = now
            elif key == "WATCHDOG" and value == "1":
                rt.last_ping = now
            elif key == "STATUS":
                rt.status = value
                self._emit(rt, "status", rt.state)
            elif key == "STOPPING" and value == "1":
                rt.log.note("module reports STOPPING=1")
            elif key == "LOADED" and value == "1":
                self._preload()
        if rt.state == S.STARTING and rt.notified_ready and not rt.kill_reason:
            self._sample_heartbeats(rt, now)
            self._check_ready(rt, now)

    def _became_ready(self, rt: Runtime, now: float) -> None:
        Timers.cancel(rt.timer)
        rt.timer = None
        rt.ready_mono = now
        rt.last_ping = now
        for entry in rt.hb.values():
            entry[1] = now
        took = now - rt.started_mono
        log.info("%s: ready in %.3f s%s", rt.name, took, f" ({rt.status})" if rt.status else "")
        rt.log.note(f"ready in {took:.3f} s")
        self._set_state(rt, S.RUNNING, f"ready in {took:.3f} s")
        self._preload()
        self._advance_boot()
        self._want_standby(rt)

    def _ready_timeout(self, rt: Runtime) -> None:
        rt.timer = None
        if rt.state == S.STARTING and rt.child is not None and not rt.kill_reason:
            why = f"not ready within {rt.spec.ready_timeout_s:g} s (waiting for {self._ready_waiting_for(rt)})"
            self._kill(rt, why)

    def _kill(self, rt: Runtime, why: str) -> None:
        log.error("%s: %s; killing pid %d (SIGKILL) to restart it", rt.name, why, rt.child.pid if rt.child else 0)
        rt.log.note(f"{why}; SIGKILL")
        rt.kill_reason = why
        if rt.child is not None:
            rt.child.send_signal(signal.SIGKILL)

    def _on_exit(self, rt: Runtime) -> None:
        child = rt.child
        if child is None:
            return
        detected = time.time()  # the moment the loop learnt of the exit (pidfd readable)
        rc = child.reap()
        if rc is None:  # pidfd readable but not reapable yet (cannot happen for our own child)
            rc = child.proc.wait()
        now = time.monotonic()
        for line in child.read_output()[0]:
            rt.log.output(line)
        self._on_notify(rt)
        for fd in list(rt.fds):
            self._unregister(rt, fd)
        child.close()
        rt.child = None
        self._close_gate(rt)
        Timers.cancel(rt.timer)
        rt.timer = None
        info = ExitInfo.from_returncode(rc)
        rt.last_exit = info
        uptime = now - rt.started_mono
        intent, rt.intent = rt.intent, ""
        rt.log.note(f"pid {child.pid} exited: {info} after {uptime:.3f} s")
        if intent in ("stop", "shutdown") or self._shutting_down:
            log.info("%s: stopped (%s)", rt.name, info)
            self._set_state(rt, S.STOPPED, f"stopped ({info})", at=detected)
            if self._shutting_down:
                self._advance_shutdown()
            return
        if intent == "restart":
            log.info("%s: stopped (%s); starting again", rt.name, info)
            self._set_state(rt, S.STOPPED, f"restarting ({info})", at=detected)
            rt.restarts = rt.consecutive = 0
            self._spawn(rt)
            return
        if info.code == EXIT_CONFIG_REFUSED and self.boot_s is None and not rt.kill_reason:
            # A module that refuses its configuration at start-up (a bad driver network file, a
            # SubDevice or node that is not the one configured): nothing of the machine starts.
            log.critical("%s refused its configuration during start-up (exit 2): nothing started; stopping "
                         "(its log says why: `evo logs %s`)", rt.name, rt.name)
            self._set_state(rt, S.FAILED, "refused its configuration (exit 2)", at=detected)
            self.exit_code = EXIT_CONFIG_REFUSED
            self.begin_shutdown("configuration refused at start-up")
            return
        why = rt.kill_reason or f"exited unexpectedly ({info})"
        if uptime >= self.policy.stable_run_s:
            rt.consecutive = 0
        self._after_failure(rt, why, now, detected)

    def _after_failure(self, rt: Runtime, why: str, now: float, at: float | None = None) -> None:
        """A module died or could not start: restart after the backoff, or give up past max_restarts."""
        rt.kill_reason = ""
        p = self.policy
        if rt.consecutive >= p.max_restarts:
            log.critical("%s: %s; gave up after %d restarts: module left down, machine degraded "
                         "(`evo start %s` to try again)", rt.name, why, rt.consecutive, rt.name)
            rt.log.note(f"{why}; gave up after {rt.consecutive} restarts")
            self._set_state(rt, S.FAILED, f"{why}; gave up after {rt.consecutive} restarts", at=at)
        else:
            delay = backoff_s(rt.consecutive, p.initial_backoff_ms, p.max_backoff_s)
            rt.consecutive += 1
            rt.restarts += 1
            log.warning("%s: %s; restart #%d in %.3f s", rt.name, why, rt.restarts, delay)
            self._set_state(rt, S.BACKOFF, f"{why}; restart #{rt.restarts} in {delay:.3f} s", at=at)
            rt.timer = self._timers.call_at(now + delay, lambda: self._restart_due(rt))
        self._preload()
        self._advance_boot()

    def _restart_due(self, rt: Runtime) -> None:
        rt.timer = None
        if rt.state == S.BACKOFF and not self._shutting_down:
            if rt.standby is not None and not self._before_its_turn(rt):
                self._promote_standby(rt)
            else:
                self._spawn(rt, preload=self._before_its_turn(rt))

    # ---------------------------------------------------------------- start order / stop order
    def _before_its_turn(self, rt: Runtime) -> bool:
        return rt.spec.preload and not rt.boot_spawned and rt in self._boot_queue

    def _preload(self) -> None:
        """Spawn every preloadable module not yet started, once: their imports (most of a Python
        module's start-up) overlap with each other and with the first module's own start, and
        each waits at its gate until the modules before it are ready. Called when the first
        module has done its imports (LOADED=1), or is ready, or failed — so its own imports never
        compete with the others' and its ready timeout is not charged for them."""
        if self._preloaded or self._shutting_down:
            return
        self._preloaded = True
        for rt in self._boot_queue:
            if rt.spec.preload and not rt.boot_spawned and rt.state == S.STOPPED and not rt.held:
                self._spawn(rt, preload=True)

    def _preload_second(self) -> None:
        """Spawn the module after the first (the CU after the HAL) at once, not at the first's
        LOADED=1: its imports and kernel load are the next step of the start-up's critical path and
        run on the second core beside the first module's; the rest wait for LOADED as before."""
        queue = [rt for rt in self._boot_queue if rt.state != S.DISABLED]
        if len(queue) < 2 or self._preloaded or self._shutting_down:
            return
        rt = queue[1]
        if rt.spec.preload and not rt.boot_spawned and rt.state == S.STOPPED and not rt.held:
            self._spawn(rt, preload=True)

    def _advance_boot(self) -> None:
        while self._boot_queue and not self._shutting_down:
            rt = self._boot_queue[0]
            if rt.state == S.DISABLED or (rt.held and not rt.state.alive):
                self._boot_queue.pop(0)
                continue
            if not rt.boot_spawned:
                rt.boot_spawned = True
                if rt.gate_w is not None:
                    self._open_gate(rt)
                elif rt.state == S.STOPPED:
                    self._spawn(rt)
                continue
            if rt.state in (S.RUNNING, S.FAILED, S.STOPPED) or not rt.spec.wait_ready:
                self._boot_queue.pop(0)
                continue
            return  # STARTING / BACKOFF / STOPPING: the next one waits
        if self.boot_s is None and not self._boot_queue and not self._shutting_down:
            if any(rt.state in (S.STARTING, S.BACKOFF) and rt.boot_spawned for rt in self.modules.values()):
                return  # some module started without a gate is not ready yet
            self.boot_s = time.monotonic() - self.t0
            failed = [rt.name for rt in self.modules.values() if rt.state == S.FAILED]
            running = sum(rt.state == S.RUNNING for rt in self.modules.values())
            if failed:
                log.warning("start-up finished in %.3f s, degraded: %s failed", self.boot_s, ", ".join(failed))
            else:
                log.info("all %d modules ready in %.3f s", running, self.boot_s)
            for i, other in enumerate(self.modules.values()):  # one after the other: spread their imports
                self._want_standby(other, STANDBY_DELAY_S * (i + 1))

    def begin_shutdown(self, reason: str) -> str:
        if self._shutting_down:
            if reason in ("SIGINT", "SIGTERM"):
                log.warning("%s again: killing every module now (SIGKILL)", reason)
                for rt in self.modules.values():
                    if rt.child is not None:
                        rt.child.send_signal(signal.SIGKILL)
            return "already shutting down"
        self._shutting_down = True
        self._shutdown_t0 = time.monotonic()
        for rt in self.modules.values():
            self._drop_standby(rt)
        log.info("shutting down (%s): stopping modules in reverse order", reason)
        self._boot_queue.clear()
        self._stop_queue = list(reversed(self.modules.values()))
        self._advance_shutdown()
        return "shutting down"

    def _advance_shutdown(self) -> None:
        while self._stop_queue:
            rt = self._stop_queue[0]
            if rt.state in (S.STARTING, S.RUNNING):
                self._stop(rt, "shutdown")
                return
            if rt.state == S.STOPPING:
                rt.intent = "shutdown"
                return
            if rt.state == S.BACKOFF:
                Timers.cancel(rt.timer)
                rt.timer = None
                self._set_state(rt, S.STOPPED, "stopped (shutdown during backoff)")
            self._stop_queue.pop(0)
        if not self._done:
            self._finish()

    def _finish(self) -> None:
        removed = unlink_all(self.prefix)
        self.shutdown_s = time.monotonic() - self._shutdown_t0
        log.info("all modules stopped, %d segments unlinked; shut down in %.3f s", len(removed), self.shutdown_s)
        self._write_json()
        self._done = True

    def _stop(self, rt: Runtime, intent: str) -> None:
        if rt.child is None:
            return
        rt.intent = intent
        Timers.cancel(rt.timer)
        self._close_gate(rt)  # a preloaded module leaves at its gate if the signal finds it there
        to = self.policy.sigterm_timeout_s
        rt.child.send_signal(signal.SIGTERM)
        rt.log.note(f"SIGTERM ({intent})")
        self._set_state(rt, S.STOPPING, f"SIGTERM sent ({intent})")
        rt.timer = self._timers.call_at(time.monotonic() + to, lambda: self._sigterm_expired(rt))

    def _sigterm_expired(self, rt: Runtime) -> None:
        rt.timer = None
        if rt.state == S.STOPPING and rt.child is not None:
            log.warning("%s: still running %.1f s after SIGTERM; SIGKILL", rt.name, self.policy.sigterm_timeout_s)
            rt.log.note("no exit after SIGTERM; SIGKILL")
            rt.child.send_signal(signal.SIGKILL)

    # ---------------------------------------------------------------- operator commands (loop thread)
    def module(self, name: str) -> Runtime:
        try:
            return self.modules[name]
        except KeyError:
            raise UnknownModule(name, self.modules) from None

    def _check_accepting(self) -> None:
        if self._shutting_down:
            raise ShuttingDown("the watchdog is shutting down")

    def op_start(self, name: str) -> tuple[str, Future]:
        rt = self.module(name)
        self._check_accepting()
        if rt.state == S.DISABLED:
            raise NotApplicable(f"{name} is disabled in the config ([watchdog.modules.{name}] enabled = false)")
        rt.held = False
        settled = {S.RUNNING, S.FAILED, S.STOPPED}
        if rt.state in (S.STARTING, S.RUNNING):
            return f"{name} is already running", self._waiter(rt, settled)
        if rt.state == S.STOPPING:
            rt.intent = "restart"
            return f"{name} is stopping; it will start again", self._waiter(rt, settled, after={S.STOPPED})
        log.info("%s: start requested by an operator", name)
        self._drop_standby(rt)
        Timers.cancel(rt.timer)
        rt.timer = None
        rt.restarts = rt.consecutive = 0
        self._spawn(rt)
        return f"{name} started", self._waiter(rt, settled)

    def op_stop(self, name: str) -> tuple[str, Future]:
        rt = self.module(name)
        self._check_accepting()
        rt.held = True
        settled = {S.STOPPED, S.FAILED, S.DISABLED}
        self._drop_standby(rt)
        if rt.state in (S.STARTING, S.RUNNING):
            log.info("%s: stop requested by an operator", name)
            self._stop(rt, "stop")
            return f"{name} stopped", self._waiter(rt, settled)
        if rt.state == S.STOPPING:
            rt.intent = "stop"
            return f"{name} is already stopping", self._waiter(rt, settled)
        if rt.state == S.BACKOFF:
            Timers.cancel(rt.timer)
            rt.timer = None
            self._set_state(rt, S.STOPPED, "stopped by an operator (during backoff)")
            return f"{name} stopped (restart cancelled)", self._waiter(rt, settled)
        return f"{name} is not running ({rt.state.value})", self._waiter(rt, settled)

    def op_restart(self, name: str) -> tuple[str, Future]:
        rt = self.module(name)
        self._check_accepting()
        if rt.state in (S.STARTING, S.RUNNING):
            log.info("%s: restart requested by an operator", name)
            rt.held = False
            self._drop_standby(rt)  # an operator restart reads the config anew
            self._stop(rt, "restart")
            return f"{name} restarted", self._waiter(rt, {S.RUNNING, S.FAILED, S.STOPPED}, after={S.STOPPED})
        return self.op_start(name)

    def _waiter(self, rt: Runtime, states: set[ModuleState], after: set[ModuleState] | None = None) -> Future:
        """A Future completed (with the state) when `rt` enters one of `states` (once it has been
        through `after`, if given); immediately if it is there now."""
        fut: Future = Future()
        if after is None and rt.state in states:
            fut.set_result(rt.state)
        else:
            self._waiters.append((rt, frozenset(states), fut, frozenset(after or ())))
        return fut

    # ---------------------------------------------------------------- state, events, snapshots
    def _set_state(self, rt: Runtime, state: ModuleState, reason: str, at: float | None = None) -> None:
        """Record a state change (at wall time `at`, default now), write modules.json, tell watchers."""
        prev = rt.state
        rt.state = state
        rt.reason = reason
        rt.since = time.time() if at is None else at
        self._write_json()
        self._emit(rt, "state", prev)
        keep = []
        for w in self._waiters:
            wrt, states, fut, after = w
            if wrt is rt and after and state in after:
                w = (wrt, states, fut, frozenset())
            elif wrt is rt and not after and state in states:
                if not fut.done():
                    fut.set_result(state)
                continue
            keep.append(w)
        self._waiters = keep

    def info(self, rt: Runtime, now: float | None = None) -> dict[str, Any]:
        """A snapshot of one module (loop thread)."""
        now = time.monotonic() if now is None else now
        hb_ages = [now - rt.hb[k][1] for k in rt.spec.liveness_segments if k in rt.hb] if rt.child else []
        return {
            "name": rt.name,
            "state": rt.state.value,
            "pid": rt.child.pid if rt.child else 0,
            "restarts": rt.restarts,
            "uptime_s": (now - rt.started_mono) if rt.child else 0.0,
            "last_exit_code": rt.last_exit.code if rt.last_exit else None,
            "last_exit_signal": rt.last_exit.signal if rt.last_exit else None,
            "last_exit": str(rt.last_exit) if rt.last_exit else "",
            "heartbeat_age_s": max(hb_ages) if hb_ages else -1.0,
            "watchdog_age_s": (now - rt.last_ping) if rt.child and rt.spec.notify and rt.last_ping else -1.0,
            "status": rt.status,
            "reason": rt.reason,
            "enabled": rt.spec.enabled,
            "since": rt.since,
            "kind": rt.spec.kind,
            "standby_pid": rt.standby.pid if rt.standby and rt.standby_loaded else 0,
        }

    def snapshot(self, names: Iterable[str] = ()) -> list[dict[str, Any]]:
        names = list(names)
        for n in names:
            self.module(n)
        now = time.monotonic()
        return [self.info(rt, now) for rt in self.modules.values() if not names or rt.name in names]

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def degraded(self) -> bool:
        return any(rt.state == S.FAILED for rt in self.modules.values())

    def _write_json(self) -> None:
        mods = [{"name": rt.name, "state": rt.state.value, "pid": rt.child.pid if rt.child else 0,
                 "restarts": rt.restarts, "since": rt.since, "last_exit": str(rt.last_exit) if rt.last_exit else "",
                 "reason": rt.reason, "enabled": rt.spec.enabled, "standby_pid": rt.standby.pid if rt.standby and rt.standby_loaded else 0}
                for rt in self.modules.values()]
        data = {"watchdog_pid": self.pid, "instance": self.prefix, "updated": time.time(),
                "degraded": self.degraded(), "modules": mods}
        try:
            write_json_atomic(self.json_path, data)
        except OSError as e:
            log.warning("cannot write %s: %s", self.json_path, e)

    def subscribe(self, names: Iterable[str] = ()) -> tuple["queue.Queue[Any]", list[dict[str, Any]]]:
        """Register an event queue (loop thread); returns it and the current snapshot."""
        names = frozenset(names)
        for n in names:
            self.module(n)
        q: "queue.Queue[Any]" = queue.Queue(maxsize=10_000)
        self._subs.append((q, names))
        return q, self.snapshot(names)

    def unsubscribe(self, q: "queue.Queue[Any]") -> None:
        self._subs = [(sq, n) for sq, n in self._subs if sq is not q]

    def _emit(self, rt: Runtime, kind: str, prev: ModuleState) -> None:
        if not self._subs:
            return
        ev = {"timestamp_unix": rt.since if kind == "state" else time.time(), "name": rt.name, "kind": kind, "state": rt.state.value,
              "previous_state": prev.value, "pid": rt.child.pid if rt.child else 0, "restarts": rt.restarts,
              "reason": rt.reason, "last_exit": str(rt.last_exit) if rt.last_exit else "", "status": rt.status}
        for q, names in self._subs:
            if not names or rt.name in names:
                try:
                    q.put_nowait(ev)
                except queue.Full:
                    pass  # a client that does not read loses events, never stalls the loop

    def _close_subscribers(self) -> None:
        for q, _ in self._subs:
            try:
                q.put_nowait(None)
            except queue.Full:
                pass
        self._subs = []

    def kill_all(self) -> None:
        """Emergency: SIGKILL every child (used when the loop itself fails)."""
        for rt in self.modules.values():
            if rt.standby is not None:
                rt.standby.send_signal(signal.SIGKILL)
            if rt.child is not None:
                rt.child.send_signal(signal.SIGKILL)
                try:
                    rt.child.proc.wait(5)
                except Exception:  # noqa: BLE001
                    pass


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
