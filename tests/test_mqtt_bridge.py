"""The MQTT bridge as a real process against a real mosquitto, fed by test writers on /dev/shm.

Topics and payloads, retained state, on-change, stale sources, kill -9 (last will), broker restart.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from common.shm.io_helpers import set_bit
from common.shm.p2p import TypedP2pWriter, segment_name
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from common.states import MachineState, PowerState, ReState, SafetyState
from tests.connector.observer import Observer
from tests.helpers import REPO, ModuleProcess, free_port, module_env, wait_for, zenoh_isolated
from tests.mosquitto_broker import start_broker

MID = "testcell"
ROOT = f"evo/{MID}"


class LiveWriter:
    """A test writer of one *_mqt segment whose heartbeat keeps moving (200 Hz) until paused."""

    def __init__(self, src: str, dtype: np.dtype) -> None:
        self.src = src
        self.dtype = dtype
        self.w = TypedP2pWriter.create(segment_name(src, "mqt"), src, "mqt", dtype)
        self.local = self.w.local
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            if not self.paused.is_set():
                with self.lock:
                    self.w.commit()

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(2)
            self.w.close()


def _fill(cu: LiveWriter, hal: LiveWriter, re_: LiveWriter) -> None:
    with cu.lock:
        st = cu.local["status"]
        st["machine_state"] = MachineState.IDLE
        st["safety_state"] = SafetyState.SAFE
        st["axis_count"] = 4
        ax = st["axes"][0]
        ax["id"] = 1
        ax["power"] = PowerState.STANDBY
        ax["position"] = 12.5
        ax["velocity"] = 0.0
        ax["referenced"] = 1
    with hal.lock:
        io = hal.local["io"]
        set_bit(io["di_bank"], 0, True)  # "Main E-Stop": NC contact, physical 1 = circuit closed = not pressed
        io["ai_values"][0] = 6.2  # "Air pressure" in bar
        io["axes"][0]["drive_ready"] = 1
    with re_.lock:
        s = re_.local["status"]
        s["re_state"] = ReState.RUNNING
        s["program_name"] = b"demo_cycle"
        s["current_step"] = 2
        s["step_count"] = 5
        s["progress"] = 40.0


@pytest.fixture
def writers(shm_prefix):
    ws = {"cu": LiveWriter("cu", CU_TO_MQT), "hal": LiveWriter("hal", HAL_TO_MQT), "re": LiveWriter("re", RE_TO_MQT)}
    _fill(ws["cu"], ws["hal"], ws["re"])
    yield ws
    for w in ws.values():
        w.close()


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.close()


def _config_dir(tmp_path: Path, port: int) -> Path:
    """The packaged machine with [mqtt] pointed at the test broker and a private run dir."""
    d = tmp_path / "config"
    shutil.copytree(REPO / "config", d)
    text = (d / "config.toml").read_text()
    text = re.sub(r'(?m)^port = 1883$', f"port = {port}", text)
    text = re.sub(r'(?m)^machine_id = ""$', f'machine_id = "{MID}"', text)
    text = re.sub(r"(?m)^telemetry_hz = 10.0$", "telemetry_hz = 20.0", text)
    text = re.sub(r"(?m)^homeassistant_discovery = false$", "homeassistant_discovery = true", text)
    text = re.sub(r'(?m)^run_dir = ""$', f'run_dir = "{tmp_path / "run"}"', text)
    (d / "config.toml").write_text(zenoh_isolated(text))
    (tmp_path / "run").mkdir(exist_ok=True)
    return d


def _write_modules(run_dir: Path, modules: list[dict]) -> None:
    tmp = run_dir / "modules.json.tmp"
    tmp.write_text(json.dumps({"watchdog_pid": 1, "instance": "t", "updated": 0.0, "modules": modules}))
    tmp.replace(run_dir / "modules.json")


def _module(name: str, state: str, restarts: int = 0) -> dict:
    return {"name": name, "state": state, "pid": 100, "restarts": restarts, "since": 1.0, "last_exit": "",
            "reason": "", "enabled": True}


@pytest.fixture
def bridge_env(tmp_path, broker, shm_prefix):
    cfg = _config_dir(tmp_path, broker.port)
    _write_modules(tmp_path / "run", [_module("hal", "running"), _module("cu", "running")])
    procs: list[ModuleProcess] = []

    def start() -> ModuleProcess:
        p = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
        procs.append(p)
        return p

    yield {"config": cfg, "run": tmp_path / "run", "start": start, "broker": broker}
    for p in procs:
        p.stop()


@pytest.fixture
def observer(broker):
    o = Observer(broker.host, broker.port)
    o.subscribe(f"{ROOT}/#", qos=1)
    o.subscribe("homeassistant/#", qos=1)
    yield o
    o.close()


def _last(o: Observer, topic: str):
    msgs = o.on(topic)
    return json.loads(msgs[-1].payload) if msgs else None


def _wait_last(o: Observer, topic: str, pred, timeout: float = 10.0, what: str = ""):
    """Wait until the last message on `topic` satisfies `pred`; return its decoded body."""
    seen = []

    def check() -> bool:
        v = _last(o, topic)
        if v is not None and pred(v):
            seen.append(v)
            return True
        return False

    wait_for(check, timeout, what=what or topic)
    return seen[-1]


def test_topics_and_payloads_appear(writers, bridge_env, observer) -> None:
    bridge = bridge_env["start"]()
    _wait_last(observer, f"{ROOT}/online", lambda v: v is True)
    all_live = {"cu": "live", "hal": "live", "re": "live"}
    state = _wait_last(observer, f"{ROOT}/state", lambda v: v["live"] and v["sources"] == all_live)
    assert state["machine_state"] == "IDLE" and state["safety_state"] == "SAFE"
    assert isinstance(state["ts"], float)
    # the HAL's drive feedback joins the axis once the bridge has seen hal_mqt live
    ax = _wait_last(observer, f"{ROOT}/axes/1", lambda v: v["live"] and "drive" in v)
    assert ax["position"] == {"value": 12.5, "unit": "mm"} and ax["velocity"]["unit"] == "mm/s"
    assert ax["power"] == "STANDBY" and ax["referenced"] is True and ax["drive"]["ready"] is True
    assert _wait_last(observer, f"{ROOT}/axes/4", lambda v: v["live"])["position"]["unit"] == "deg"
    di = _wait_last(observer, f"{ROOT}/io/di", lambda v: v["live"])
    # logical values: the NC E-stop's closed circuit reads "not pressed" (the dashboard must not say pressed)
    assert di["points"]["Main E-Stop"] is False and di["points"]["Guard door closed"] is False
    ai = _wait_last(observer, f"{ROOT}/io/ai", lambda v: v["live"])
    assert ai["points"]["Air pressure"] == {"value": 6.2, "unit": "bar"}
    _wait_last(observer, f"{ROOT}/io/do", lambda v: v["live"])
    _wait_last(observer, f"{ROOT}/io/ao", lambda v: v["live"])
    recipe = _wait_last(observer, f"{ROOT}/recipe", lambda v: v["live"])
    assert recipe["state"] == "RUNNING" and recipe["program"] == "demo_cycle"
    assert recipe["step"]["current"] == 2 and recipe["progress"] == {"value": 40.0, "unit": "%"}
    assert _wait_last(observer, f"{ROOT}/modules/hal", lambda v: True)["state"] == "running"
    health = _wait_last(observer, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up")
    assert [(e["from"], e["to"]) for e in health["events"]][:2] == [("Down", "Connecting"), ("Connecting", "Up")]
    ha = _wait_last(observer, f"homeassistant/sensor/{MID}_machine_state/config", lambda v: True)
    assert ha["state_topic"] == f"{ROOT}/state" and ha["availability_topic"] == f"{ROOT}/online"
    retained = {m.topic for m in observer.messages if m.retain}
    assert not retained  # the observer was subscribed before: live deliveries carry no retain flag
    assert bridge.alive()
    assert Path(f"/proc/{bridge.pid}/cmdline").read_bytes().startswith(b"evo-mqtt")  # process title


def test_late_subscriber_gets_retained_state(writers, bridge_env, observer) -> None:
    bridge_env["start"]()
    _wait_last(observer, f"{ROOT}/recipe", lambda v: v["live"])
    _wait_last(observer, f"{ROOT}/modules/cu", lambda v: True)
    _wait_last(observer, f"{ROOT}/io/ai", lambda v: v["live"])
    late = Observer(bridge_env["broker"].host, bridge_env["broker"].port)
    try:
        late.subscribe(f"{ROOT}/#")
        want = {f"{ROOT}/{t}" for t in ("online", "state", "io/di", "io/do", "io/ai", "io/ao", "recipe",
                                         "modules/hal", "modules/cu", "health/mqtt")}
        wait_for(lambda: want <= {m.topic for m in late.messages if m.retain}, what="every retained topic at once")
        assert json.loads(late.on(f"{ROOT}/state")[0].payload)["machine_state"] == "IDLE"
        assert not any(m.retain for m in late.messages if "/axes/" in m.topic)  # telemetry is not retained
    finally:
        late.close()


def test_on_change_semantics(writers, bridge_env, observer) -> None:
    bridge_env["start"]()
    # the state names its sources: it settles once all three are live
    _wait_last(observer, f"{ROOT}/state", lambda v: v["live"] and set(v["sources"].values()) == {"live"})
    _wait_last(observer, f"{ROOT}/modules/hal", lambda v: True)
    _wait_last(observer, f"{ROOT}/modules/cu", lambda v: True)  # both initial module messages are in
    n_state, n_hal, n_cu = (len(observer.on(f"{ROOT}/{t}")) for t in ("state", "modules/hal", "modules/cu"))
    # axes telemetry is periodic: use it as the clock for "several scans went by"
    base = len(observer.on(f"{ROOT}/axes/1"))
    wait_for(lambda: len(observer.on(f"{ROOT}/axes/1")) >= base + 5, what="five telemetry periods")
    assert len(observer.on(f"{ROOT}/state")) == n_state  # nothing changed: nothing re-sent
    with writers["cu"].lock:
        writers["cu"].local["status"]["machine_state"] = MachineState.ACTIVE
    _wait_last(observer, f"{ROOT}/state", lambda v: v["machine_state"] == "ACTIVE")
    base = len(observer.on(f"{ROOT}/axes/1"))
    wait_for(lambda: len(observer.on(f"{ROOT}/axes/1")) >= base + 5)
    assert len(observer.on(f"{ROOT}/state")) == n_state + 1  # exactly one message per change
    _write_modules(bridge_env["run"], [_module("hal", "running"), _module("cu", "backoff", restarts=1)])
    _wait_last(observer, f"{ROOT}/modules/cu", lambda v: v["state"] == "backoff" and v["restarts"] == 1)
    assert len(observer.on(f"{ROOT}/modules/hal")) == n_hal  # unchanged module: not re-sent
    assert len(observer.on(f"{ROOT}/modules/cu")) == n_cu + 1


def test_stale_and_restarted_writers(writers, bridge_env, observer) -> None:
    bridge_env["start"]()
    _wait_last(observer, f"{ROOT}/state", lambda v: v["live"])
    writers["cu"].paused.set()  # heartbeat frozen: the CU hangs
    state = _wait_last(observer, f"{ROOT}/state", lambda v: not v["live"], what="state marked stale")
    assert state["status"] == "stale" and state["machine_state"] is None and state["sources"]["cu"] == "stale"
    _wait_last(observer, f"{ROOT}/axes/1", lambda v: not v["live"] and v["status"] == "stale")
    writers["cu"].paused.clear()
    _wait_last(observer, f"{ROOT}/state", lambda v: v["live"] and v["machine_state"] == "IDLE", what="live again")
    writers["hal"].close()  # clean exit: segment unlinked
    io = _wait_last(observer, f"{ROOT}/io/di", lambda v: not v["live"], what="io without HAL")
    assert io["points"] is None
    writers["hal"] = LiveWriter("hal", HAL_TO_MQT)  # a restarted HAL: new segment, new inode
    with writers["hal"].lock:
        set_bit(writers["hal"].local["io"]["di_bank"], 1, True)
    di = _wait_last(observer, f"{ROOT}/io/di", lambda v: v["live"], what="re-attached to the new HAL")
    assert di["points"]["Guard door closed"] is True


def test_bridge_killed_9_broker_publishes_offline(writers, bridge_env, observer) -> None:
    bridge = bridge_env["start"]()
    _wait_last(observer, f"{ROOT}/online", lambda v: v is True)
    bridge.kill(signal.SIGKILL)
    _wait_last(observer, f"{ROOT}/online", lambda v: v is False, what="last will online=false")
    late = Observer(bridge_env["broker"].host, bridge_env["broker"].port)
    try:
        late.subscribe(f"{ROOT}/online")
        wait_for(lambda: late.on(f"{ROOT}/online") and late.on(f"{ROOT}/online")[0].payload == b"false")
        assert late.on(f"{ROOT}/online")[0].retain
    finally:
        late.close()


def test_clean_stop_publishes_offline(writers, bridge_env, observer) -> None:
    bridge = bridge_env["start"]()
    _wait_last(observer, f"{ROOT}/online", lambda v: v is True)
    assert bridge.stop() == 0
    _wait_last(observer, f"{ROOT}/online", lambda v: v is False, what="online=false on a clean stop")


def test_broker_restart_reconnects_and_republishes(writers, bridge_env, observer) -> None:
    bridge = bridge_env["start"]()
    broker = bridge_env["broker"]
    _wait_last(observer, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up")
    _wait_last(observer, f"{ROOT}/modules/hal", lambda v: True)
    observer.close()
    broker.kill()
    broker.start()  # same port, no persistence: every retained message is gone
    fresh = Observer(broker.host, broker.port)
    try:
        fresh.subscribe(f"{ROOT}/#")
        # the payload that tells of the outage: a body queued before the kill may reach the new broker first
        health = _wait_last(fresh, f"{ROOT}/health/mqtt",
                            lambda v: v["state"] == "Up" and any(e["to"] == "Down" for e in v["events"]), 15,
                            "health after restart")
        steps = [(e["from"], e["to"]) for e in health["events"]]
        # Up -> (Degraded, if the outbound bridge filled first) -> Down -> Connecting (retries fold
        # into this one entry) -> Up, possibly via Degraded while the republish burst drains
        first_out = next((i for i, st in enumerate(steps) if st[0] == "Up"), None)
        assert first_out is not None, steps
        rest = steps[first_out:]
        assert rest[0][1] in ("Down", "Degraded"), steps
        down = next(i for i, st in enumerate(rest) if st[1] == "Down")
        assert rest[down + 1] == ("Down", "Connecting"), steps
        assert rest[down + 2] in (("Connecting", "Up"), ("Connecting", "Degraded")) and steps[-1][1] == "Up", steps
        assert health["link"]["connects"] >= 2 and health["link"]["failures"] >= 1, health["link"]
        # retained state is republished into the empty broker
        _wait_last(fresh, f"{ROOT}/online", lambda v: v is True)
        _wait_last(fresh, f"{ROOT}/state", lambda v: v["live"])
        _wait_last(fresh, f"{ROOT}/modules/hal", lambda v: True)
        assert bridge.alive()
    finally:
        fresh.close()


def test_starts_without_a_broker_and_connects_later(writers, tmp_path, shm_prefix) -> None:
    port = free_port()
    cfg = _config_dir(tmp_path, port)
    r, w = os.pipe()
    env = module_env(shm_prefix, EVO_NOTIFY_FD=str(w))
    log = open(tmp_path / "bridge.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mqtt_bridge", "--config", str(cfg)], cwd=REPO, env=env,
                            pass_fds=(w,), stdout=log, stderr=subprocess.STDOUT)
    os.close(w)
    broker = None
    try:
        notes = b""

        def saw(token: bytes) -> bool:
            nonlocal notes
            notes += os.read(r, 4096)
            return token in notes

        wait_for(lambda: saw(b"READY=1"), 15, what="READY while the broker is unreachable")
        assert b"STATUS=mqtt Down" in notes or b"STATUS=mqtt Connecting" in notes
        notes = b""
        wait_for(lambda: saw(b"WATCHDOG=1"), 5, what="watchdog pings")
        assert proc.poll() is None  # stays up
        broker = start_broker(tmp_path / "late-broker", port=port)
        o = Observer(broker.host, port)
        try:
            o.subscribe(f"{ROOT}/#")
            _wait_last(o, f"{ROOT}/state", lambda v: v["live"], 15, "connected once the broker appeared")
        finally:
            o.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.close(r)
        if broker is not None:
            broker.close()
    assert proc.returncode == 0


def test_a_frozen_broker_is_degraded_then_down_and_recovers(writers, bridge_env, observer) -> None:
    """Issue 16: with mosquitto SIGSTOPped the bridge stayed Up. Now unanswered publishes (or the idle
    probe) make it Degraded within seconds, then Down; after SIGCONT it recovers by itself and the
    retained health history keeps the outage."""
    bridge = bridge_env["start"]()
    broker = bridge_env["broker"]
    _wait_last(observer, f"{ROOT}/health/mqtt", lambda v: v["state"] == "Up")
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: "broker not answering" in bridge.output(), 10, what="Degraded: broker not answering")
        wait_for(lambda: "broker unresponsive" in bridge.output(), 15, what="Down: broker unresponsive")
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    health = _wait_last(observer, f"{ROOT}/health/mqtt",
                        lambda v: v["state"] == "Up" and any("unresponsive" in (e.get("reason") or "")
                                                             for e in v["events"]), 30, "recovered, outage kept")
    steps = [(e["from"], e["to"]) for e in health["events"]]
    assert ("Up", "Degraded") in steps and any(t == "Down" for _, t in steps), steps
    assert bridge.alive()


def test_unchanged_records_reuse_their_body_and_a_change_rebuilds_it() -> None:
    """Issue 15 "a machine that idles cheaply": an axis, I/O kind or recipe body is built once per
    distinct record — the idle machine's 10 scans per second (JSON tree and Zenoh tree) rebuild
    nothing — and a changed record (one byte) gives a new body with the new value."""
    from common.shm.segments import CU_STATUS, HAL_IO, RE_STATUS
    from mqtt_bridge.payloads import AxisInfo, IoPointInfo, axis_payload, io_payload, recipe_payload

    st = np.zeros((), CU_STATUS)
    io = np.zeros((), HAL_IO)
    info = AxisInfo(1, "X", "mm")
    a = axis_payload(info, st["axes"][0], io["axes"][0], 0)
    assert axis_payload(info, st["axes"][0], io["axes"][0], 0) is a
    st["axes"]["position"][0] = 12.5
    b = axis_payload(info, st["axes"][0], io["axes"][0], 0)
    assert b is not a and b["position"]["value"] == 12.5 and a["position"]["value"] == 0.0
    assert axis_payload(info, st["axes"][0], io["axes"][0], 7) is not b  # the drive's code is part of it
    points = (IoPointInfo("Start", 3, ""),)
    d = io_payload("di", io, points)
    assert io_payload("di", io, list(points)) is d and d["points"] == {"Start": False}
    set_bit(io["di_bank"], 3, True)
    assert io_payload("di", io, points)["points"] == {"Start": True}
    rs = np.zeros((), RE_STATUS)
    r = recipe_payload(rs)
    assert recipe_payload(rs) is r
    rs["cycle_count"] = 3
    assert recipe_payload(rs)["cycle_count"] == 3
