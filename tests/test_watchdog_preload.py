"""Preloading: the second module is spawned with the first; once the first has done its imports
(LOADED=1), the modules after them are spawned, load while the ones before them start, and wait at their start gate for their turn (real
`evo up`, real subprocesses)."""
from __future__ import annotations


import psutil

from tests.fixtures.progs.evo_harness import EvoUp, pid_gone, prog_module, stop_and_check_clean
from tests.helpers import unique_prefix, wait_for


def _first(events, what: str, name: str) -> int:
    return next(t for w, n, t, _ in events if (w, n) == (what, name))


def _names(events, what: str) -> list[str]:
    return [n for w, n, _, _ in events if w == what]


def _up(tmp, tag: str, mods) -> EvoUp:
    up = EvoUp(tmp, unique_prefix(tag), mods).start()
    up.wait_api()
    return up


def _cleanup(up: EvoUp) -> None:
    stop_and_check_clean(up)


def test_preloaded_modules_load_while_the_first_starts_and_start_in_order(tmp_path):
    ev, go, once = tmp_path / "events", tmp_path / "go", tmp_path / "b.crashed"
    mods = [
        prog_module("a", "--setup", "--segment", "hal_cu", "--ready-when-exists", str(go), events=ev,
                    ready_segments=["hal_cu"], wrap=False),
        prog_module("b", "--setup", "--crash-at-load-once", str(once), events=ev, preload=True, wrap=False),
        prog_module("c", "--setup", events=ev, preload=True, wrap=False, wait_ready=False),
        prog_module("d", "--setup", events=ev, preload=True, wrap=False),
    ]
    up = _up(tmp_path, "pre", mods)
    try:
        # a is held not ready; b (after dying once while loading), c and d have loaded meanwhile
        wait_for(lambda: {"b", "c", "d"} <= set(_names(up.events(ev), "loaded")), 20,
                 what=f"preloads ({up.output()[-1500:]})")
        st = up.status()
        assert _names(up.events(ev), "load-crash") == ["b"] and st["b"]["restarts"] == 1
        for n in ("b", "c", "d"):
            assert st[n]["state"] == "starting" and "preloaded" in st[n]["reason"], st[n]
            assert st[n]["pid"] > 0 and psutil.pid_exists(st[n]["pid"])
        assert not {"b", "c", "d"} & set(_names(up.events(ev), "start"))  # nobody passed its gate early
        go.touch()
        up.wait_all_running()
        e = up.events(ev)
        assert _first(e, "ready", "a") < _first(e, "start", "b")
        assert _first(e, "ready", "b") < _first(e, "start", "c")
        out = up.output()
        # c has wait_ready = false: the watchdog opens c's gate, then d's at once (the two children's
        # own "start" events may then land in either order)
        assert out.index("c: started pid") < out.index("d: started pid")
        assert _first(e, "ready", "b") < _first(e, "start", "d")
        # the first module and the one after it (the HAL and the CU: the start-up's critical path)
        # spawn at once; the others preload once the first reports LOADED=1
        assert out.index("a: started pid") < out.index("b: preloading pid") < out.index("a: ready in")
        assert out.index("b: preloading pid") < out.index("c: preloading pid")
        assert out.index("c: preloading pid") < out.index("a: ready in")
        assert out.index("a: ready in") < out.index("b: started pid") < out.index("b: ready in")
        r = up.cli("down")
        assert r.returncode == 0, r.stderr
    finally:
        _cleanup(up)


def test_down_while_modules_wait_at_their_gate(tmp_path):
    ev, go = tmp_path / "events", tmp_path / "go"
    mods = [
        prog_module("a", "--setup", "--ready-when-exists", str(go), events=ev, wrap=False),
        prog_module("b", "--setup", events=ev, preload=True, wrap=False),
        prog_module("c", "--setup", events=ev, preload=True, wrap=False),
    ]
    up = _up(tmp_path, "pre", mods)
    try:
        wait_for(lambda: {"b", "c"} <= set(_names(up.events(ev), "loaded")), 20, what="preloads")
        pids = [m["pid"] for m in up.status().values()]
        r = up.cli("down")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: all(pid_gone(p) for p in pids), 10, what="every module gone")
        assert not {"b", "c"} & set(_names(up.events(ev), "start"))  # b and c never started
    finally:
        _cleanup(up)


def test_modules_at_their_gate_leave_when_the_watchdog_dies(tmp_path):
    ev, go = tmp_path / "events", tmp_path / "go"
    mods = [
        prog_module("a", "--setup", "--ready-when-exists", str(go), events=ev, wrap=False),
        # no process_setup: nothing but the closed gate tells them the watchdog is gone
        prog_module("b", events=ev, preload=True, wrap=False),
        prog_module("c", events=ev, preload=True, wrap=False),
    ]
    up = _up(tmp_path, "pre", mods)
    try:
        wait_for(lambda: {"b", "c"} <= set(_names(up.events(ev), "loaded")), 20, what="preloads")
        pids = {n: m["pid"] for n, m in up.status().items()}
        up.proc.kill()
        up.proc.wait()
        wait_for(lambda: all(pid_gone(p) for p in pids.values()), 10, what="every module gone")
        assert sorted(_names(up.events(ev), "cancelled")) == ["b", "c"]
        assert not {"b", "c"} & set(_names(up.events(ev), "start"))
    finally:
        _cleanup(up)
