"""Issue 18: Home Assistant discovery from the real bridge process against mosquitto: binary_sensors for
every digital point, the E-stop and the guards, the device named as in machine.toml; the templates
rendered with Jinja2 (as Home Assistant does) against the bridge's own io/state payloads.
"""
from __future__ import annotations

import json

import jinja2
import pytest

from common.config import load_config
from common.shm.io_helpers import set_bit
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from tests.connector.observer import Observer
from tests.helpers import ModuleProcess, wait_for
from tests.mosquitto_broker import start_broker
from tests.sparkplug_support import MID, LiveWriter, fill, sparkplug_config

pytestmark = pytest.mark.timeout(120)
ROOT = f"evo/{MID}"
JINJA = jinja2.Environment()


def render(template: str, payload: bytes) -> str:
    return JINJA.from_string(template).render(value_json=json.loads(payload)).strip()


@pytest.fixture
def setup(tmp_path, shm_prefix):
    broker = start_broker(tmp_path / "broker")
    ws = {"cu": LiveWriter("cu", CU_TO_MQT), "hal": LiveWriter("hal", HAL_TO_MQT), "re": LiveWriter("re", RE_TO_MQT)}
    fill(ws["cu"], ws["hal"], ws["re"])
    cfg = sparkplug_config(tmp_path / "cfg", broker.port, run_dir=tmp_path / "run", discovery=True)
    obs = Observer(broker.host, broker.port)
    obs.subscribe("homeassistant/#")
    obs.subscribe(f"{ROOT}/#")
    proc = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
    yield {"obs": obs, "writers": ws, "config": load_config(cfg)}
    proc.stop()
    obs.close()
    for w in ws.values():
        w.close()
    broker.close()


def test_binary_sensors_for_digital_points_estop_and_guard(setup) -> None:
    """Must exist: HA discovery gains binary_sensor entries for the digital points and the E-stop/guard
    states, and the device name is the machine's name from machine.toml."""
    obs, cfg, hal = setup["obs"], setup["config"], setup["writers"]["hal"]
    di, do = cfg.io.points_of("di"), cfg.io.points_of("do")
    want = {f"homeassistant/binary_sensor/{MID}_{k}{p.pin}/config" for k, pts in (("di", di), ("do", do)) for p in pts}
    want |= {f"homeassistant/binary_sensor/{MID}_estop/config", f"homeassistant/binary_sensor/{MID}_guard_open/config"}
    wait_for(lambda: want <= {m.topic for m in obs.messages}, 30, what="every binary_sensor config")
    configs = {m.topic: json.loads(m.payload) for m in obs.messages if m.topic.startswith("homeassistant/")}
    binary = {t: c for t, c in configs.items() if "/binary_sensor/" in t}
    assert set(binary) == want
    sensors = [t for t in configs if "/sensor/" in t]
    assert len(sensors) == 4 + len(cfg.axes)  # the sensors stay as they were
    assert {c["device"]["name"] for c in configs.values()} == {cfg.machine.name} == {"Evo Demo Gantry"}
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    estop_pt = binary[f"homeassistant/binary_sensor/{MID}_di0/config"]
    assert estop_pt["name"] == "Main E-Stop" and estop_pt["device_class"] == "safety"
    assert binary[f"homeassistant/binary_sensor/{MID}_guard_open/config"]["device_class"] == "door"

    def state_of(topic_cfg: str) -> str:
        c = binary[topic_cfg]
        msgs = obs.on(c["state_topic"])
        payload = msgs[-1].payload
        for av in c["availability"]:  # every availability source says available
            if av["topic"] == c["state_topic"]:
                assert render(av["value_template"], payload) == av["payload_available"]
        return render(c["value_template"], payload)

    for kind in ("di", "do"):  # published one after the other in one scan: the observer may hold only the first
        wait_for(lambda: obs.on(f"{ROOT}/io/{kind}") and json.loads(obs.on(f"{ROOT}/io/{kind}")[-1].payload)["live"],
                 what=f"io/{kind} live")
    wait_for(lambda: obs.on(f"{ROOT}/state") and json.loads(obs.on(f"{ROOT}/state")[-1].payload)["live"],
             what="state live")
    guard_cfg = f"homeassistant/binary_sensor/{MID}_guard_open/config"
    guard_pt = f"homeassistant/binary_sensor/{MID}_di1/config"
    # the NC E-stop circuit is closed: not pressed; the guard input is low: door open
    assert state_of(f"homeassistant/binary_sensor/{MID}_di0/config") == "OFF"
    assert state_of(f"homeassistant/binary_sensor/{MID}_estop/config") == "OFF"
    assert state_of(guard_pt) == "OFF" and state_of(guard_cfg) == "ON"
    assert state_of(f"homeassistant/binary_sensor/{MID}_do20/config") == "OFF"
    with hal.lock:
        set_bit(hal.local["io"]["di_bank"], 1, True)  # guard door closes
        set_bit(hal.local["io"]["di_bank"], 0, False)  # E-stop circuit opens: pressed
    wait_for(lambda: json.loads(obs.on(f"{ROOT}/io/di")[-1].payload)["points"]["Guard door closed"] is True,
             what="guard closed on io/di")
    assert state_of(guard_pt) == "ON" and state_of(guard_cfg) == "OFF"
    assert state_of(f"homeassistant/binary_sensor/{MID}_di0/config") == "ON"
    # a HAL gone: the io entities become unavailable through their availability template
    setup["writers"]["hal"].close()
    wait_for(lambda: json.loads(obs.on(f"{ROOT}/io/di")[-1].payload)["live"] is False, what="io/di not live")
    av = binary[guard_pt]["availability"][1]
    assert render(av["value_template"], obs.on(f"{ROOT}/io/di")[-1].payload) == av["payload_not_available"]
