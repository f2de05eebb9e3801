"""A preloaded standby per module (issue 16 "Module restart under load"): once the machine is up, the
watchdog keeps a spare of every preloadable module waiting at its start gate (imports and config
done); a crash promotes the spare, so a restart costs only the gate. Real `evo up`, real processes."""
from __future__ import annotations

import os
import signal

import psutil

from tests.fixtures.progs.evo_harness import EvoUp, pid_gone, prog_module, stop_and_check_clean
from tests.helpers import unique_prefix, wait_for


def _names(events, what: str, name: str) -> list[int]:
    return [pid for w, n, _, pid in events if (w, n) == (what, name)]


def test_a_crash_promotes_the_standby_and_a_new_one_is_preloaded(tmp_path):
    ev = tmp_path / "events"
    mods = [prog_module("a", "--setup", events=ev, wrap=False),
            prog_module("b", "--setup", events=ev, preload=True, wrap=False)]
    up = EvoUp(tmp_path, unique_prefix("sb"), mods).start()
    try:
        up.wait_api()
        up.wait_all_running()
        st = wait_for(lambda: (s := up.status())["b"]["standby_pid"] and s, 20, what="b's standby preloaded")
        assert st["a"]["standby_pid"] == 0  # not preloadable: no spare
        main, spare, a_pid = st["b"]["pid"], st["b"]["standby_pid"], st["a"]["pid"]
        wait_for(lambda: spare in _names(up.events(ev), "loaded", "b"), 10, what="the spare did its imports")
        assert spare not in _names(up.events(ev), "start", "b")  # and waits at its gate
        os.kill(main, signal.SIGKILL)
        st = wait_for(lambda: (s := up.status())["b"]["state"] == "running" and s["b"]["pid"] != main and s, 20,
                      what="b running again")
        assert st["b"]["pid"] == spare and st["b"]["restarts"] == 1  # the spare became b
        assert spare in _names(up.events(ev), "start", "b")
        assert st["a"]["pid"] == a_pid  # nobody else restarted
        assert "promoting standby" in up.output()
        new = wait_for(lambda: (p := up.status()["b"]["standby_pid"]) not in (0, spare) and p, 20,
                       what="a new spare")
        assert psutil.pid_exists(new)
        # an operator stop takes the spare down too (a fresh start reads the config anew)
        r = up.cli("stop", "b")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: pid_gone(new), 10, what="the spare gone with the stop")
        assert up.status()["b"]["standby_pid"] == 0
    finally:
        stop_and_check_clean(up)


def test_standby_off_restarts_from_scratch(tmp_path):
    ev = tmp_path / "events"
    mods = [prog_module("b", "--setup", events=ev, preload=True, wrap=False)]
    up = EvoUp(tmp_path, unique_prefix("sn"), mods, watchdog={"standby": False}).start()
    try:
        up.wait_api()
        st = up.wait_all_running()
        main = st["b"]["pid"]
        os.kill(main, signal.SIGKILL)
        st = wait_for(lambda: (s := up.status())["b"]["state"] == "running" and s["b"]["pid"] != main and s, 20,
                      what="b running again")
        assert st["b"]["standby_pid"] == 0 and "promoting standby" not in up.output()
    finally:
        stop_and_check_clean(up)
