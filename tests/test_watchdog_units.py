"""Pure parts of the watchdog: backoff rule, exit texts, line splitting, module tables, timers,
the instance lock, run/log dir resolution and log tailing (no subprocesses).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from evo.child import LineSplitter
from common.rundir import default_run_dir
from evo.instance import AlreadyRunning, InstanceLock, lock_holder, log_dir_for, run_dir_for
from evo.logread import follow, merged_tail, tail
from evo.modules import ModuleTableError, default_modules, load_module_table
from evo.state import ExitInfo, backoff_s
from evo.watchdog import Timers

REPO = Path(__file__).resolve().parent.parent


def test_backoff_doubles_from_initial_and_caps():
    assert [backoff_s(k, 100, 30) for k in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff_s(20, 100, 30) == 30.0
    assert backoff_s(10_000, 100, 30) == 30.0  # no overflow


def test_exit_info_text():
    assert str(ExitInfo.from_returncode(0)) == "exit 0"
    assert str(ExitInfo.from_returncode(3)) == "exit 3"
    assert str(ExitInfo.from_returncode(-signal.SIGKILL)) == "SIGKILL"
    assert ExitInfo.from_returncode(-9).signal == 9 and ExitInfo.from_returncode(-9).code is None


def test_line_splitter_keeps_partial_lines():
    s = LineSplitter()
    assert s.feed(b"one\ntw") == ["one"]
    assert s.feed(b"o\r\nthree") == ["two"]
    assert s.flush() == ["three"]
    assert s.feed("é\n".encode()) == ["é"]
    assert len(s.feed(b"x" * 40000)) == 2  # over-long lines are cut, not buffered forever


def test_module_table_file(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[[module]]\nname = "a"\npackage = "hal"\n\n'
                 '[[module]]\nname = "b"\nargv = ["{python}", "x.py", "{config}"]\ntcp = "127.0.0.1:1234"\n'
                 'notify = false\nwatchdog_timeout_s = 0\nenabled = false\n')
    a, b = load_module_table(p, Path("/cfg"), 3.0)
    assert a.argv[1:] == ("-m", "hal", "--config", "/cfg") and a.notify and a.watchdog_timeout_s == 3.0
    assert not a.wrap and a.kind == "python -m hal" and a.readiness == "notify"
    assert b.argv[1:] == ("x.py", "/cfg") and b.tcp == ("127.0.0.1", 1234) and b.wrap and not b.enabled
    assert b.readiness == "tcp"


@pytest.mark.parametrize("body, needle", [
    ('[[module]]\nname = "a"\n', "exactly one of"),
    ('[[module]]\nname = "a"\nargv = ["x"]\nfoo = 1\n', "foo"),
    ('[[module]]\nname = "a"\nargv = ["x"]\n[[module]]\nname = "a"\nargv = ["y"]\n', "duplicate"),
    ('x = 1\n', "[[module]]"),
    ('[[module]\n', "m.toml"),
    ('[[module]]\nname = "a"\nargv = ["x"]\nliveness_segments = ["hal_xx"]\n', "unknown segment 'hal_xx'"),
    ('[[module]]\nname = "a"\nargv = ["x"]\ntcp = "host:port"\n', "(a)"),
])
def test_module_table_errors_name_the_problem(tmp_path, body, needle):
    p = tmp_path / "m.toml"
    p.write_text(body)
    with pytest.raises(ModuleTableError, match=None) as e:
        load_module_table(p, tmp_path)
    assert needle in str(e.value)


def test_default_table_follows_the_config(tmp_path):
    from common.config import load_config

    import shutil

    shutil.copytree(REPO / "config", tmp_path / "cfg")
    cfg_toml = tmp_path / "cfg" / "config.toml"
    cfg_toml.write_text("[watchdog]\nhal_ready_timeout_s = 3.0\n[watchdog.modules.re]\nenabled = false\n"
                        "[mqtt]\nembedded_broker = true\nport = 18830\n")
    mods = {m.name: m for m in default_modules(load_config(tmp_path / "cfg"))}
    assert list(mods) == ["hal", "cu", "re", "grpc", "mosquitto", "mqtt"]
    assert mods["hal"].ready_segments == ("hal_cu",) and mods["hal"].ready_timeout_s == 3.0
    assert mods["cu"].liveness_segments == ("cu_hal",) and not mods["re"].enabled
    assert mods["mosquitto"].tcp == ("127.0.0.1", 18830) and mods["mosquitto"].wrap
    cfg_toml.write_text("[mqtt]\nembedded_broker = false\n")
    assert "mosquitto" not in {m.name for m in default_modules(load_config(tmp_path / "cfg"))}


def test_timers_run_in_order_and_cancel():
    t = Timers()
    out = []
    t.call_at(2.0, lambda: out.append("b"))
    h = t.call_at(1.5, lambda: out.append("x"))
    t.call_at(1.0, lambda: out.append("a"))
    Timers.cancel(h)
    assert t.next_deadline() == 1.0
    t.run_due(1.7)
    assert out == ["a"] and t.next_deadline() == 2.0
    t.run_due(5)
    assert out == ["a", "b"] and t.next_deadline() is None


def test_instance_lock_is_exclusive(tmp_path):
    assert lock_holder(tmp_path) is None
    lock = InstanceLock(tmp_path).acquire()
    try:
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(AlreadyRunning, match=str(os.getpid())):
            InstanceLock(tmp_path).acquire()
    finally:
        lock.release()
    assert lock_holder(tmp_path) is None


def test_run_and_log_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("EVO_RUN_DIR", raising=False)
    monkeypatch.setenv("EVO_SHM_PREFIX", "pfx")
    assert run_dir_for(None) == default_run_dir() and default_run_dir().name.startswith("evo-pfx")
    monkeypatch.setenv("EVO_RUN_DIR", str(tmp_path / "r"))
    assert run_dir_for(tmp_path) == tmp_path / "r" and log_dir_for(tmp_path) == tmp_path / "r" / "log"
    (tmp_path / "config.toml").write_text('[watchdog]\nrun_dir = "/x/run"\nlog_dir = "/x/log"\n')
    assert run_dir_for(tmp_path) == Path("/x/run") and log_dir_for(tmp_path) == Path("/x/log")


def test_tail_merge_and_follow(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(f"2024-01-01 00:00:0{i}.000 a{i}\n" for i in range(0, 10, 2)))
    b.write_text("".join(f"2024-01-01 00:00:0{i}.000 b{i}\n" for i in range(1, 10, 2)))
    assert tail(a, 2) == ["2024-01-01 00:00:06.000 a6", "2024-01-01 00:00:08.000 a8"]
    assert tail(a, 100)[0].endswith("a0") and tail(tmp_path / "none.log", 3) == []
    merged = merged_tail({"a": a, "b": b}, 4)
    assert [line.split()[-1] for _, line in merged] == ["a6", "b7", "a8", "b9"]
    got: list[tuple[str, str]] = []
    calls = 0

    def stop() -> bool:  # called once per follow iteration, after the initial positions are taken
        nonlocal calls
        calls += 1
        if calls == 1:
            with open(a, "a") as f:
                f.write("new1\n")
        elif calls == 2:
            a.rename(tmp_path / "a.log.1")  # rotation: the follower reopens the new file
            a.write_text("new2\n")
        return len(got) >= 2 or calls > 50

    follow({"a": a}, lambda name, line: got.append((name, line)), stop, 0.001)
    assert got == [("a", "new1"), ("a", "new2")]
