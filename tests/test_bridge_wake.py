"""Issue 15, "a machine that idles cheaply": the bridges wake on change instead of scanning.

gRPC: the link (in-process, real /dev/shm segments and POSIX semaphores, consumers in threads)
samples only while someone watches, reads on demand otherwise, and is woken by an ack's post. MQTT:
the bridge process (real mosquitto) scans on a wake and at its liveness period, not at 50 Hz.
"""
from __future__ import annotations

import json
import re
import time

import psutil
import pytest

from common.shm.commands import HalCommand
from common.shm.io_helpers import set_bit
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from common.shm.wake import WakePoster, WakeWaiter
from grpc_bridge.shm_link import DEMAND_HOLD_S, HAL, RE
from tests.connector.observer import Observer
from tests.grpc_support import running_link
from tests.helpers import ModuleProcess, wait_for
from tests.mosquitto_broker import start_broker
from tests.sparkplug_support import MID, LiveWriter, fill, sparkplug_config

pytestmark = pytest.mark.timeout(120)
QUIET_S = 0.4  # a window in which an idle link must not sample (8 sample periods at 50 Hz)


@pytest.fixture
def link(fresh_prefix: str):  # noqa: ANN201
    with running_link(fresh_prefix) as lf:
        yield lf


def test_the_grpc_link_samples_only_while_someone_watches(link) -> None:  # noqa: ANN001
    """Must exist: the gRPC bridge's samplers run only while someone watches (a Watch* stream or an
    HMI page); with nobody watching the link publishes nothing but changes of a source's verdict."""
    lk, _ = link
    before = lk.sampler_ticks
    time.sleep(QUIET_S)  # proving an absence: nothing may happen in this window
    assert lk.sampler_ticks == before, "an unwatched link sampled"
    lk.set_watchers(1)
    wait_for(lambda: lk.sampler_ticks >= before + 5, 10, what="samples while watched")
    lk.set_watchers(0)
    settled = lk.sampler_ticks
    time.sleep(QUIET_S)
    assert lk.sampler_ticks <= settled + 1, "the sampler kept running after the last watcher left"  # +1: in flight


def test_a_read_with_nobody_watching_is_served_from_the_segments_now(link) -> None:  # noqa: ANN001
    """Must exist: a unary GetStatus with nobody watching reads the segments on demand (fresh, never
    older than a sample period); then the sampler runs for DEMAND_HOLD_S for a polling client."""
    lk, fakes = link
    hal = fakes["hal"]
    before = lk.samples
    for value in (1.5, 2.5, 3.5):
        with_value = hal.writer.local["io"]["ao_values"]
        with_value[7] = value
        hb = hal.writer.heartbeat
        wait_for(lambda hb=hb: hal.writer.heartbeat > hb, 5, what="the consumer committed the value")
        lk._demand_until = 0.0  # as after DEMAND_HOLD_S without a read: the sampler is idle
        # the last snapshot is older than a sample period (one that is not may be served as it is)
        wait_for(lambda: time.monotonic() - lk.latest.taken_at > lk.sample_period, 5, what="an old snapshot")
        snap = lk.fresh_snapshot()
        assert snap.sources["hal"].payload["io"]["ao_values"][7] == value
    assert lk.demand_samples >= 3 and lk.samples > before
    assert lk.sampling and DEMAND_HOLD_S > 0  # a read keeps the sampler on for a polling client


def test_an_ack_post_wakes_the_link_and_completes_the_command(link) -> None:  # noqa: ANN001
    """Must exist: the bridge waits on the rpc wake semaphore while a command is pending; the
    consumer's post after committing the ack ends that wait (no polling thread in between)."""
    lk, fakes = link
    wakes = lk.wakes
    for i in range(5):
        fut = lk.submit(HAL, HalCommand.SET_DO, 100 + i, pin=20, args=(float(i & 1),))
        ack = fut.result(timeout=10)
        assert ack.request_id == 100 + i and ack.ok
    assert fakes["hal"].taken[-1].pin == 20
    assert lk.wakes > wakes, "no command completion came through the wake semaphore"


def test_a_command_for_the_recipe_executor_wakes_it(link, fresh_prefix: str) -> None:  # noqa: ANN001
    """Must exist: the RE idles on its wake semaphore between ticks; a gRPC command for it posts that
    semaphore after the commit, so the RE takes it at once instead of at its next idle tick."""
    lk, fakes = link
    waiter = WakeWaiter("re", fresh_prefix)
    try:
        waiter.wait(0)  # drain anything earlier
        assert not waiter.wait(0.05), "woken with no command sent"
        fut = lk.submit(RE, 0, 300)  # Nop
        assert waiter.wait(5.0), "a command for the RE did not post its wake"
        assert fut.result(timeout=10).request_id == 300
    finally:
        waiter.close()


# --- the MQTT bridge process ---------------------------------------------------------------------------------
@pytest.fixture
def mqtt_rig(tmp_path, shm_prefix):  # noqa: ANN001, ANN201
    broker = start_broker(tmp_path / "broker")
    ws = {"cu": LiveWriter("cu", CU_TO_MQT), "hal": LiveWriter("hal", HAL_TO_MQT), "re": LiveWriter("re", RE_TO_MQT)}
    fill(ws["cu"], ws["hal"], ws["re"])
    cfg = sparkplug_config(tmp_path / "cfg", broker.port, run_dir=tmp_path / "run")
    text = (cfg / "config.toml").read_text()
    text = re.sub(r"(?m)^telemetry_hz = [0-9.]+$", "telemetry_hz = 1.0", text)
    text = re.sub(r"(?ms)^(\[mqtt\.sparkplug\]\n)enabled = true", r"\1enabled = false", text)
    (cfg / "config.toml").write_text(text)
    obs = Observer(broker.host, broker.port)
    obs.subscribe(f"evo/{MID}/#")
    proc = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
    try:
        yield proc, ws, obs
    finally:
        proc.stop()
        obs.close()
        for w in ws.values():
            w.close()
        broker.close()


def test_the_mqtt_bridge_scans_on_a_wake_not_at_a_fixed_rate(mqtt_rig) -> None:  # noqa: ANN001
    """Must exist: the MQTT bridge wakes on change (the writers' post on the mqt semaphore) instead
    of scanning at 50 Hz: a changed input goes out after a post, and over the run the bridge scanned
    about at its liveness period (10 Hz) plus once per wake, far below the old 50 scans per second."""
    proc, ws, obs = mqtt_rig
    root = f"evo/{MID}"
    born = psutil.Process(proc.pid).create_time()
    wait_for(lambda: obs.on(f"{root}/io/di") and json.loads(obs.on(f"{root}/io/di")[-1].payload)["live"], 30,
             what="io/di live")
    # a few telemetry periods (1 Hz) of an unchanged machine: the window the scan count is judged over
    seen = len(obs.on(f"{root}/axes/1"))
    wait_for(lambda: len(obs.on(f"{root}/axes/1")) >= seen + 3, 30, what="three telemetry periods")
    poster = WakePoster("mqt")
    hal = ws["hal"]
    for i in range(6):
        want = i % 2 == 0  # the guard door closes, opens, closes, ...
        with hal.lock:
            set_bit(hal.local["io"]["di_bank"], 1, want)
        poster.post()  # what the HAL does after a commit whose inputs changed

        def published(want: bool = want) -> bool:
            return json.loads(obs.on(f"{root}/io/di")[-1].payload)["points"]["Guard door closed"] is want
        wait_for(published, 10, what=f"change {i} published")
    poster.close()
    assert proc.stop() == 0, proc.output()
    life = time.time() - born  # from exec to exit, imports and broker connect included
    m = re.search(r"stopped \((\d+) scans, (\d+) wakes", proc.output())
    assert m, proc.output()[-2000:]
    scans, wakes = int(m.group(1)), int(m.group(2))
    print(f"mqtt bridge: {scans} scans, {wakes} wakes in {life:.1f} s")
    assert wakes >= 1, "the bridge never woke on the mqt semaphore"
    # at most one scan per liveness period (0.1 s) plus one per wake over the whole life; the old
    # loop scanned 50 times a second from its start
    assert scans <= 10 * life + wakes + 5, f"{scans} scans in {life:.1f} s: scanning, not waking"
