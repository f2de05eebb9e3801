"""Issue 18: the MQTT bridge process as a Sparkplug B edge node, against a real mosquitto and a host
application decoding with the compiled Tahu proto; the bridge is fed by live test writers on /dev/shm.

Births with every metric typed, DATA by alias with seq, deadbands, DDEATH/DBIRTH with a source,
Rebirth and refused commands, primary-host STATE, the NDEATH of a clean stop, config errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from common.config import load_config
from common.config.errors import ConfigError
from common.shm.io_helpers import set_bit
from common.shm.segments import CU_TO_MQT, HAL_TO_MQT, RE_TO_MQT
from mqtt_bridge.sparkplug import sparkplug_b_pb2 as pb
from tests.connector.observer import Observer
from tests.helpers import REPO, ModuleProcess, module_env, shm_entries, wait_for
from tests.mosquitto_broker import start_broker
from tests.sparkplug_host import VALUE_FIELD, HostApp, prop_of, seq_gaps, unit_of, value_of
from tests.sparkplug_support import GROUP, MID, LiveWriter, fill, sparkplug_config

pytestmark = pytest.mark.timeout(120)

AXIS_DEVICES = ["Axis-X", "Axis-Y", "Axis-Z", "Axis-Spindle"]
IO_DEVICES = ["IO-Safety", "IO-Axes", "IO-Workholding", "IO-Spindle", "IO-Panel"]
ALL_DEVICES = set(AXIS_DEVICES + IO_DEVICES)
NODE_TOPIC = f"spBv1.0/{GROUP}/%s/{MID}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("spb-broker"))
    yield b
    b.close()


@pytest.fixture
def writers(shm_prefix):
    ws = {"cu": LiveWriter("cu", CU_TO_MQT), "hal": LiveWriter("hal", HAL_TO_MQT), "re": LiveWriter("re", RE_TO_MQT)}
    fill(ws["cu"], ws["hal"], ws["re"])
    yield ws
    for w in ws.values():
        w.close()


@pytest.fixture
def host(broker):
    h = HostApp(broker.host, broker.port, GROUP, host_id="scada1")
    yield h
    h.close()


@pytest.fixture
def bridge(tmp_path, broker, shm_prefix):
    """start(**config) -> a running `python -m mqtt_bridge` with [mqtt.sparkplug] on."""
    procs: list[ModuleProcess] = []

    def start(**kw) -> ModuleProcess:
        cfg = sparkplug_config(tmp_path / f"config{len(procs)}", broker.port, run_dir=tmp_path / "run", **kw)
        p = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def _typed(m: pb.Payload.Metric) -> bool:
    """A birth metric names itself, has an alias and a data type, and carries its value in that type's field."""
    if not (m.name and m.HasField("alias") and m.datatype in VALUE_FIELD):
        return False
    return m.is_null or m.WhichOneof("value") == VALUE_FIELD[m.datatype]


def test_births_every_metric_typed_then_data_by_alias_with_seq(writers, bridge, host) -> None:
    """Must exist: NBIRTH, one DBIRTH per axis and I/O group with every metric typed, then DDATA with
    increasing seq (here the axis moves in the CU's segment; the machine test moves it over gRPC)."""
    bridge()
    nb = host.wait("NBIRTH")
    assert nb.topic == NODE_TOPIC % "NBIRTH" and nb.seq == 0 and nb.payload.timestamp > 0
    bd = nb.metric("bdSeq")
    assert bd.datatype == pb.Int64 and 0 <= bd.long_value <= 255
    rebirth = nb.metric("Node Control/Rebirth")
    assert rebirth.datatype == pb.Boolean and rebirth.boolean_value is False
    for name in ("Machine/State", "Safety/State", "Safety/E-Stop", "Machine/Errors", "Recipe/State",
                 "Recipe/Progress", "Sources/CU"):
        assert name in nb.names(), name
    assert all(_typed(m) for m in nb.payload.metrics if m.name != "bdSeq"), nb.payload
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} >= set(AXIS_DEVICES + IO_DEVICES), 30,
             what="a DBIRTH per axis and per I/O group")
    births = {m.device: m for m in host.of("DBIRTH")}
    assert sorted(births) == sorted(AXIS_DEVICES + IO_DEVICES)
    aliases = [m.alias for b in [nb, *births.values()] for m in b.payload.metrics if m.HasField("alias")]
    assert len(aliases) == len(set(aliases)), "aliases are unique across the edge node"
    for dev, b in births.items():
        assert all(_typed(m) for m in b.payload.metrics), (dev, b.payload)
    x = {m.name: m for m in births["Axis-X"].payload.metrics}
    assert x["Axes/X/Position"].datatype == pb.Double and x["Axes/X/Position"].double_value == 12.5
    assert unit_of(x["Axes/X/Position"]) == "mm" and unit_of(x["Axes/X/Velocity"]) == "mm/s"
    assert (prop_of(x["Axes/X/Position"], "engLow"), prop_of(x["Axes/X/Position"], "engHigh")) == (0.0, 600.0)
    assert value_of(x["Axes/X/Power"]) == "STANDBY" and x["Axes/X/Referenced"].boolean_value is True
    # the drive's metrics come from the HAL: null in the birth if the CU was seen live first, then DDATA
    wait_for(lambda: host.value("Axes/X/Drive/Ready") is True, what="drive ready from the HAL")
    spindle = {m.name: m for m in births["Axis-Spindle"].payload.metrics}
    assert unit_of(spindle["Axes/Spindle/Position"]) == "deg"
    work = {m.name: m for m in births["IO-Workholding"].payload.metrics}
    air = work["IO/AI/Air pressure"]
    assert air.double_value == pytest.approx(6.2) and unit_of(air) == "bar"
    assert (prop_of(air, "engLow"), prop_of(air, "engHigh")) == (0.0, 10.0)
    safety = {m.name: m for m in births["IO-Safety"].payload.metrics}
    # logical values: the NC E-stop's closed circuit is "not pressed"
    assert safety["IO/DI/Main E-Stop"].boolean_value is False
    assert safety["IO/DI/Guard door closed"].boolean_value is False
    wait_for(lambda: host.value("Machine/State") == "IDLE" and host.value("Recipe/Program") == "demo_cycle",
             what="node metrics of the CU and the RE")

    mark = host.count()
    for pos in (13.0, 14.0, 15.5):
        with writers["cu"].lock:
            writers["cu"].local["status"]["axes"][0]["position"] = pos
        host.wait("DDATA", "Axis-X", since=mark, pred=lambda m, pos=pos: any(
            value_of(x) == pos for x in m.payload.metrics))
    data = [m for m in host.of("DDATA", "Axis-X", since=mark)]
    assert len(data) >= 3
    for m in data:  # DATA carries aliases only: no names, no data types
        assert all(not x.name and x.HasField("alias") and not x.HasField("datatype") for x in m.payload.metrics)
    seqs = [m.seq for m in data]
    assert all((b - a) % 256 >= 1 for a, b in zip(seqs, seqs[1:])), seqs
    assert host.value("Axes/X/Position") == 15.5
    assert seq_gaps(host.messages) == [] and not host.decode_errors


def test_deadband_holds_back_small_changes(writers, bridge, host) -> None:
    """Must exist: an analog value changing below its deadband produces no DDATA (compared with the
    value last reported, so small steps that add up past the deadband are reported)."""
    bridge(deadband={"IO/AI/Air pressure": 0.5})
    host.wait("DBIRTH", "IO-Workholding")
    hal = writers["hal"]
    io = hal.local["io"]

    def step(pressure: float, part_present: bool):
        """One consistent write (the bridge sees both changes in the same scan); the DDATA it caused."""
        mark = host.count()
        with hal.lock:
            io["ai_values"][0] = pressure
            set_bit(io["di_bank"], 41, part_present)
        return host.wait("DDATA", "IO-Workholding", since=mark, pred=lambda m: any(
            host.aliases[x.alias].name == "IO/DI/Part present" and value_of(x) is part_present
            for x in m.payload.metrics))

    def names(msg) -> list[str]:
        return [host.aliases[x.alias].name for x in msg.payload.metrics]

    start = host.count()
    assert "IO/AI/Air pressure" not in names(step(6.4, True))  # +0.2 bar: inside the deadband
    assert "IO/AI/Air pressure" not in names(step(6.6, False))  # +0.4 from the last REPORTED 6.2: inside
    assert "IO/AI/Air pressure" in names(step(6.9, True))  # +0.7 from 6.2: out
    assert "IO/AI/Air pressure" not in names(step(7.1, False))  # +0.2 from the new reference 6.9
    assert [v for _, v in host.data_for("IO/AI/Air pressure", since=start)] == [pytest.approx(6.9)]
    assert seq_gaps(host.messages) == []


def test_source_not_live_is_ddeath_and_back_is_dbirth(writers, bridge, host) -> None:
    """Must exist (bridge level): CU down -> the axis devices' DDEATH, node metrics of the CU null;
    CU back -> DBIRTH again; HAL gone -> the I/O devices' DDEATH and the axes' drive metrics null."""
    bridge()
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} >= ALL_DEVICES, 30, what="every DBIRTH")
    mark = host.count()
    writers["cu"].paused.set()  # heartbeat frozen: the CU hangs or died
    wait_for(lambda: {m.device for m in host.of("DDEATH", since=mark)} >= set(AXIS_DEVICES), 30,
             what="DDEATH of every axis device")
    wait_for(lambda: host.value("Machine/State") is None and host.value("Sources/CU") == "stale",
             what="CU node metrics null")
    mark = host.count()
    writers["cu"].paused.clear()
    wait_for(lambda: {m.device for m in host.of("DBIRTH", since=mark)} >= set(AXIS_DEVICES), 30,
             what="DBIRTH of every axis device again")
    wait_for(lambda: host.value("Machine/State") == "IDLE", what="Machine/State back")
    mark = host.count()
    writers["hal"].close()  # HAL exits: its segment is gone
    wait_for(lambda: {m.device for m in host.of("DDEATH", since=mark)} >= set(IO_DEVICES), 30,
             what="DDEATH of every I/O device")
    wait_for(lambda: host.value("Axes/X/Drive/Ready") is None, what="drive metrics null without the HAL")
    assert not host.of("DDEATH", "Axis-X", since=mark)
    assert seq_gaps(host.messages) == []


def _write_modules(run_dir, **pids: tuple[str, int]) -> None:
    """The watchdog's modules.json (written atomically, as the watchdog does): name=(state, pid)."""
    mods = [{"name": n, "state": st, "pid": pid, "restarts": 0, "since": 1.0, "last_exit": "", "reason": "",
             "enabled": True} for n, (st, pid) in pids.items()]
    tmp = run_dir / "modules.json.tmp"
    tmp.write_text(json.dumps({"watchdog_pid": 1, "instance": "t", "updated": 0.0, "modules": mods}))
    tmp.replace(run_dir / "modules.json")


def test_module_restarted_faster_than_staleness_is_ddeath_then_dbirth(writers, bridge, host, tmp_path) -> None:
    """CU killed and back within one heartbeat window (the watchdog's preloaded standby takes the
    segment over): the segment never looks stale, but the watchdog's modules.json names a new pid ->
    the axis devices' DDEATH, then DBIRTH from the new process; a module not running -> DDEATH."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    _write_modules(run, hal=("running", 100), cu=("running", 200))
    bridge()
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} >= ALL_DEVICES, 30, what="every DBIRTH")
    wait_for(lambda: host.value("Modules/cu/State") == "running", 30, what="module metrics")
    mark = host.count()
    _write_modules(run, hal=("running", 100), cu=("running", 201))  # the live writer is another process now
    wait_for(lambda: {m.device for m in host.of("DDEATH", since=mark)} >= set(AXIS_DEVICES), 30,
             what="DDEATH of every axis device")
    wait_for(lambda: {m.device for m in host.of("DBIRTH", since=mark)} >= set(AXIS_DEVICES), 30,
             what="DBIRTH of every axis device from the new CU")
    assert not [m for m in host.of("DDEATH", since=mark) if m.device in IO_DEVICES]  # the HAL kept its pid
    for dev in AXIS_DEVICES:  # each death comes before its rebirth
        death = next(i for i, m in enumerate(host.messages[mark:]) if m.kind == "DDEATH" and m.device == dev)
        birth = next(i for i, m in enumerate(host.messages[mark:]) if m.kind == "DBIRTH" and m.device == dev)
        assert death < birth, dev
    mark = host.count()
    _write_modules(run, hal=("backoff", 100), cu=("running", 201))  # HAL exited, restart pending
    wait_for(lambda: {m.device for m in host.of("DDEATH", since=mark)} >= set(IO_DEVICES), 30,
             what="DDEATH of every I/O device while the HAL module is not running")
    assert seq_gaps(host.messages) == []


def test_rebirth_ncmd_and_every_other_command_refused(writers, bridge, host, shm_prefix) -> None:
    """Must exist: Rebirth NCMD -> a full rebirth (NBIRTH seq 0, same bdSeq, every DBIRTH); any other
    NCMD/DCMD is refused (logged, counted in Node Info/Refused commands) and nothing is written."""
    proc = bridge()
    first = host.wait("NBIRTH")
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} >= ALL_DEVICES, 30, what="every DBIRTH")
    segments = shm_entries(shm_prefix)
    mark = host.count()
    host.rebirth(MID)
    nb = host.wait("NBIRTH", since=mark)
    assert nb.seq == 0 and nb.metric("bdSeq").long_value == first.metric("bdSeq").long_value
    wait_for(lambda: {m.device for m in host.of("DBIRTH", since=mark)} >= set(AXIS_DEVICES + IO_DEVICES), 30,
             what="every DBIRTH after the rebirth")
    # the rebirth by alias works too (Ignition sends the alias it learned)
    alias = next(m.alias for m in nb.payload.metrics if m.name == "Node Control/Rebirth")
    mark = host.count()
    host.command(NODE_TOPIC % "NCMD", [{"alias": alias, "datatype": pb.Boolean, "value": True}])
    host.wait("NBIRTH", since=mark)
    # refusals: a node write, a device write, garbage
    host.command(NODE_TOPIC % "NCMD", [{"name": "Axes/X/Position", "datatype": pb.Double, "value": 100.0}])
    wait_for(lambda: host.value("Node Info/Refused commands") == 1, what="first refusal counted")
    host.command(f"spBv1.0/{GROUP}/DCMD/{MID}/IO-Panel",
                 [{"name": "IO/DO/Lamp green (running)", "datatype": pb.Boolean, "value": True}])
    wait_for(lambda: host.value("Node Info/Refused commands") == 2, what="DCMD refusal counted")
    host.client.publish(NODE_TOPIC % "NCMD", b"\xff\xff not protobuf", 0).wait_for_publish(5)
    wait_for(lambda: host.value("Node Info/Refused commands") == 3, what="malformed NCMD refused")
    out = proc.output()
    assert "refused NCMD" in out and "refused DCMD" in out and "Axes/X/Position" in out
    # nothing written: the bridge made no segment (it has no command path) and the machine values stand
    assert shm_entries(shm_prefix) == segments
    assert host.value("IO/DO/Lamp green (running)") is False and host.value("Axes/X/Position") == 12.5
    assert seq_gaps(host.messages) == []


def test_metrics_selection_publishes_only_the_chosen_metrics(writers, bridge, host) -> None:
    """[mqtt.sparkplug] metrics: only matching metrics are born; a device with none is not published."""
    bridge(metrics=["Axes/*/Position", "Machine/State", "IO/AI/*"])
    nb = host.wait("NBIRTH")
    assert sorted(nb.names()) == ["Machine/State", "Node Control/Rebirth", "bdSeq"]
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} == set(AXIS_DEVICES) | {"IO-Workholding"}, 30,
             what="DBIRTH of the devices with a selected metric")
    births = {m.device: m.names() for m in host.of("DBIRTH")}
    assert births["Axis-X"] == ["Axes/X/Position"]
    assert births["IO-Workholding"] == ["IO/AI/Air pressure", "IO/AI/Spindle motor temperature"]
    mark = host.count()
    with writers["cu"].lock:
        writers["cu"].local["status"]["axes"][0]["velocity"] = 5.0  # not selected: no DDATA
        writers["cu"].local["status"]["axes"][0]["position"] = 20.0
    msg = host.wait("DDATA", "Axis-X", since=mark)
    assert [host.aliases[m.alias].name for m in msg.payload.metrics] == ["Axes/X/Position"]
    assert not [m for m in host.of("DBIRTH") if m.device in ("IO-Safety", "IO-Panel")]


def test_primary_host_state_holds_births(writers, bridge, host, broker) -> None:
    """Primary host awareness: no NBIRTH until spBv1.0/STATE/<host> says online; the host going
    offline -> NDEATH and a new session (next bdSeq) that waits for it again; a stale STATE is ignored."""
    host.client.publish("spBv1.0/STATE/scada1", b"", 1, True).wait_for_publish(5)  # no retained state
    proc = bridge(primary_host="scada1")
    wait_for(lambda: "Sparkplug session bdSeq=" in proc.output(), 30, what="the Sparkplug session up")
    # the JSON tree of the same process publishes axes telemetry every scan at telemetry_hz: once
    # five of those went by after the session began, births would have been sent long ago
    obs = Observer(broker.host, broker.port)
    try:
        obs.subscribe(f"evo/{MID}/axes/1")
        wait_for(lambda: len(obs.on(f"evo/{MID}/axes/1")) >= 5, 30, what="five telemetry periods")
    finally:
        obs.close()
    assert host.of("NBIRTH") == [] and host.of("DBIRTH") == []
    t0 = time.time_ns() // 10**6
    host.publish_state(True, t0)
    nb = host.wait("NBIRTH")
    first_bd = nb.metric("bdSeq").long_value
    wait_for(lambda: {m.device for m in host.of("DBIRTH")} >= ALL_DEVICES, 30, what="every DBIRTH")
    mark = host.count()
    host.publish_state(False, t0 - 1000)  # older than the last STATE: ignored
    host.publish_state(False, t0 + 1)
    death = host.wait("NDEATH", since=mark)
    assert death.metric("bdSeq").long_value == first_bd and death.seq is None
    assert [m for m in host.of("NDEATH", since=mark)] == [death]  # the stale one did nothing
    wait_for(lambda: proc.output().count("Sparkplug session bdSeq=") >= 2, 30, what="a new session")
    assert host.of("NBIRTH", since=mark) == []
    host.publish_state(True, t0 + 2)
    nb2 = host.wait("NBIRTH", since=mark)
    assert nb2.metric("bdSeq").long_value == (first_bd + 1) % 256
    host.client.publish("spBv1.0/STATE/scada1", b"", 1, True).wait_for_publish(5)  # leave no retained state


def test_clean_stop_sends_ndeath_with_the_birth_bdseq(writers, bridge, host) -> None:
    proc = bridge()
    nb = host.wait("NBIRTH")
    mark = host.count()
    assert proc.stop() == 0
    death = host.wait("NDEATH", since=mark)
    assert death.metric("bdSeq").long_value == nb.metric("bdSeq").long_value


def test_bad_sparkplug_config_is_refused_with_file_section_and_field(tmp_path, broker) -> None:
    cfg = sparkplug_config(tmp_path / "cfg", broker.port, run_dir=tmp_path / "run")
    path = cfg / "config.toml"
    good = path.read_text()
    cases = [
        ('group_id = "plant1"', 'group_id = "plant/1"', "group_id", "one topic level"),
        ('group_id = "plant1"', 'group_id = ""', "group_id", "must not be empty"),
        ('group_id = "plant1"', 'group_id = "plant1"\nedge_nod_id = "x"', "edge_nod_id", "did you mean"),
        ("[mqtt.sparkplug.deadband]\n", "[mqtt.sparkplug.deadband]\n\"Axes/*/Position\" = -1\n", "deadband", ">= 0"),
        ("[mqtt.sparkplug.deadband]\n", "[mqtt.sparkplug.deadband]\n\"Axes/*/Position\" = \"x\"\n", "deadband",
         "expected a number"),
        ('metrics = ["*"]', "metrics = []", "metrics", "at least one"),
    ]
    for old, new, fld, text in cases:
        assert old in good, old
        path.write_text(good.replace(old, new, 1))
        with pytest.raises(ConfigError) as info:
            load_config(cfg)
        e = info.value
        assert e.file == "config.toml" and e.section == "mqtt.sparkplug" and fld in (e.field or ""), (new, e)
        assert text in str(e), (new, str(e))
    # patterns are checked against this machine's metrics when the bridge starts: nothing starts
    path.write_text(good.replace('metrics = ["*"]', 'metrics = ["Axes/Q/*"]'))
    load_config(cfg)  # well-formed ...
    r = subprocess.run([sys.executable, "-m", "mqtt_bridge", "--config", str(cfg)], cwd=REPO,
                       env=module_env("spbbad"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'Axes/Q/*' matches no metric" in r.stdout + r.stderr, r


def test_committed_sparkplug_module_matches_its_proto(tmp_path) -> None:
    """The generated sparkplug_b_pb2 is what `make protos` makes of the committed .proto."""
    rel = "mqtt_bridge/sparkplug/sparkplug_b.proto"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes((REPO / rel).read_bytes())
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", str(tmp_path / rel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for suffix in ("_pb2.py", "_pb2.pyi"):
        name = rel.replace(".proto", suffix)
        assert (tmp_path / name).read_bytes() == (REPO / name).read_bytes(), f"{name} is stale: run make protos"


def test_bdseq_survives_restarts_and_wraps_at_255(tmp_path) -> None:
    from mqtt_bridge.sparkplug.session import BdSeqStore

    path = tmp_path / "spb.bdseq"
    assert [BdSeqStore(path).advance() for _ in range(3)] == [0, 1, 2]  # a new store each time: from the file
    path.write_text("254\n")
    store = BdSeqStore(path)
    assert [store.advance(), store.advance(), store.advance()] == [255, 0, 1]
    path.write_text("garbage")
    assert BdSeqStore(path).advance() == 0


def test_broker_restart_is_a_new_session_with_births_and_health_in_the_json_tree(writers, tmp_path, shm_prefix) -> None:
    """A broker lost and back: the edge node reconnects with the next bdSeq and births again, and the
    JSON tree's retained health/sparkplug shows the session (bdSeq, births) beside health/mqtt."""
    b = start_broker(tmp_path / "own-broker")
    proc = None
    try:
        cfg = sparkplug_config(tmp_path / "cfg", b.port, run_dir=tmp_path / "run")
        proc = ModuleProcess("mqtt_bridge", shm_prefix, ["--config", str(cfg)], log_dir=tmp_path).start()
        h = HostApp(b.host, b.port, GROUP)
        bd = h.wait("NBIRTH").metric("bdSeq").long_value
        h.close()
        b.kill()
        b.start()  # same port, no persistence
        h = HostApp(b.host, b.port, GROUP)
        obs = Observer(b.host, b.port)
        try:
            obs.subscribe(f"evo/{MID}/health/sparkplug")
            nb = h.wait("NBIRTH", timeout=30)
            assert nb.metric("bdSeq").long_value != bd  # at least one CONNECT later
            wait_for(lambda: {m.device for m in h.of("DBIRTH")} >= ALL_DEVICES, 30, what="DBIRTHs, new session")

            def health():
                msgs = obs.on(f"evo/{MID}/health/sparkplug")
                body = json.loads(msgs[-1].payload) if msgs else None
                return body if body and body["state"] == "Up" and body["sparkplug"]["node_born"] else None

            body = wait_for(health, 30, what="health/sparkplug Up with the node born")
            assert body["sparkplug"]["bdseq"] == nb.metric("bdSeq").long_value
            assert body["link"]["connects"] >= 2 and body["sparkplug"]["nbirths"] >= 2
            assert ("Connecting", "Up") in [(e["from"], e["to"]) for e in body["events"]]
        finally:
            obs.close()
            h.close()
    finally:
        if proc is not None:
            proc.stop()
        b.close()
