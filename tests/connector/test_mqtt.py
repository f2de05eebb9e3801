"""MqttConnector against a real mosquitto: QoS, retained, wildcards, auth, TLS, reconnect, bridges."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from common.connector import (
    BackPressure,
    Connecting,
    Degraded,
    Down,
    DroppedInbound,
    HealthEvent,
    MqttRouting,
    NotConnected,
    Up,
)
from common.connector.mqtt import MqttConnector, MqttOptions, MqttTls
from common.connector.reconnect import ExponentialBackoff
from tests.connector.observer import Observer
from tests.helpers import wait_for
from tests.mosquitto_broker import make_password_file, start_broker


def _connector(port: int, name: str = "mq", **kw) -> MqttConnector:
    opts = kw.pop("options", None) or MqttOptions(port=port)
    return MqttConnector(opts, name, **kw)


def _up(c: MqttConnector, timeout: float = 10.0) -> None:
    wait_for(lambda: isinstance(c.health, (Up, Degraded)), timeout, what=f"{c.name} up (now {c.health})")


@pytest.fixture
def observer(broker):
    o = Observer(broker.host, broker.port)
    yield o
    o.close()


def test_qos0_qos1_round_trip_and_retained_flag(broker, observer) -> None:
    observer.subscribe("rt/#", qos=1)
    with _connector(broker.port) as c:
        loop = c.reader(MqttRouting("rt/#", qos=1))
        q0 = c.writer(MqttRouting("rt/q0", qos=0))
        q1 = c.writer(MqttRouting("rt/q1", qos=1, retained=True))
        _up(c)
        wait_for(lambda: c.backend.subscribed, what="subscriptions acknowledged")
        q0.send({"n": 0})
        q1.send({"n": 1, "unit": "mm"})
        wait_for(lambda: observer.on("rt/q0") and observer.on("rt/q1"), what="both publishes at the observer")
        (m0,), (m1,) = observer.on("rt/q0"), observer.on("rt/q1")
        assert json.loads(m0.payload) == {"n": 0} and m0.qos == 0
        assert json.loads(m1.payload) == {"n": 1, "unit": "mm"} and m1.qos == 1
        # the connector's own reader sees both through the broker, keyed by topic
        got = {loop.recv(5).key for _ in range(2)}
        assert got == {"rt/q0", "rt/q1"}
    late = Observer(broker.host, broker.port)
    try:
        late.subscribe("rt/#")
        wait_for(lambda: late.on("rt/q1"), what="retained q1 for a late subscriber")
        assert late.on("rt/q1")[0].retain is True and late.on("rt/q0") == []
    finally:
        late.close()


def test_wildcard_subscriptions_deliver_to_every_matching_reader(broker, observer) -> None:
    with _connector(broker.port) as c:
        plus = c.reader(MqttRouting("d/+/temp"))
        hash_ = c.reader(MqttRouting("d/#"))
        exact = c.reader(MqttRouting("d/a/temp"))
        other = c.reader(MqttRouting("e/#"))
        _up(c)
        wait_for(lambda: c.backend.subscribed, what="subscriptions acknowledged")
        for topic in ("d/a/temp", "d/b/temp", "d/a/hum", "e/x"):
            observer.publish(topic, json.dumps(topic).encode(), qos=1)

        def keys(reader, n):
            return sorted(reader.recv(5).key for _ in range(n))

        assert keys(plus, 2) == ["d/a/temp", "d/b/temp"]
        assert keys(hash_, 3) == ["d/a/hum", "d/a/temp", "d/b/temp"]
        assert keys(exact, 1) == ["d/a/temp"]
        msg = other.recv(5)
        assert (msg.key, msg.value) == ("e/x", "e/x")
        for r in (plus, hash_, exact, other):
            assert r.try_recv() is None


def test_readers_added_after_start_are_subscribed(broker, observer) -> None:
    with _connector(broker.port) as c:
        _up(c)
        r = c.reader(MqttRouting("late/+", qos=1))
        wait_for(lambda: _try_roundtrip(observer, "late/x", r), what="late reader receives")


def _try_roundtrip(observer: Observer, topic: str, reader) -> bool:
    observer.publish(topic, b"1", qos=1)
    try:
        return reader.recv(0.2).key == topic
    except Exception:
        return False


def test_send_without_a_broker_is_not_connected(tmp_path) -> None:
    from tests.mosquitto_broker import free_port

    c = _connector(free_port(), reconnect=ExponentialBackoff(0.05, 0.2, 2.0, 0.0))
    w = c.writer(MqttRouting("x/y"))
    events = c.subscribe_health()
    with c:
        wait_for(lambda: c.backend.stats.failures >= 2, what="two failed attempts")
        assert isinstance(c.health, (Down, Connecting))
        with pytest.raises(NotConnected):
            w.send(1)
    kinds = [type(e.current).__name__ for e in events.drain() if isinstance(e, HealthEvent)]
    assert kinds[:4] == ["Connecting", "Down", "Connecting", "Down"]
    assert "refused" in c.backend.stats.last_failure or "failed" in c.backend.stats.last_failure


def test_username_password_accepted_and_refused(tmp_path) -> None:
    pw = make_password_file(tmp_path / "passwd", {"evo": "s3cret"})
    b = start_broker(tmp_path / "auth", config_extra=f"allow_anonymous false\npassword_file {pw}\n")
    try:
        good = _connector(b.port, "good", options=MqttOptions(port=b.port, username="evo", password="s3cret"))
        bad = _connector(
            b.port, "bad", options=MqttOptions(port=b.port, username="evo", password="wrong"),
            reconnect=ExponentialBackoff(0.05, 0.2, 2.0, 0.0),
        )
        bad_events = bad.subscribe_health()
        with good, bad:
            r = good.reader(MqttRouting("auth/t", qos=1))
            w = good.writer(MqttRouting("auth/t", qos=1))
            _up(good)
            wait_for(lambda: _send_and_get(w, r), what="authenticated round trip")
            wait_for(lambda: bad.backend.stats.failures >= 2, what="refused twice")
            assert isinstance(bad.health, (Down, Connecting))
            assert "not authori" in bad.backend.stats.last_failure.lower()
            assert bad.backend.stats.connects == 0
        downs = [e.current for e in bad_events.drain() if isinstance(e, HealthEvent) and isinstance(e.current, Down)]
        assert any("not authori" in d.reason.lower() for d in downs)
    finally:
        b.close()


def _send_and_get(w, r) -> bool:
    w.send("ping")
    try:
        return r.recv(0.3).value == "ping"
    except Exception:
        return False


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1/localhost signed by it, and a second CA."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=evo test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.crt", "-days", "2", "-subj", "/CN=other", cwd=d)
    _openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=evo-client", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.crt", "-days", "2", cwd=d)
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key", "other_ca": d / "other.crt",
            "client_cert": d / "client.crt", "client_key": d / "client.key"}


def test_tls_with_a_test_ca(tmp_path, certs) -> None:
    extra = f"cafile {certs['ca']}\ncertfile {certs['cert']}\nkeyfile {certs['key']}\nrequire_certificate false\n"
    b = start_broker(tmp_path / "tls", config_extra=extra)
    try:
        ok = MqttConnector(MqttOptions(port=b.port, tls=MqttTls(ca_certs=str(certs["ca"]))), "tls")
        untrusted = MqttConnector(
            MqttOptions(port=b.port, tls=MqttTls(ca_certs=str(certs["other_ca"]))), "untrusted",
            reconnect=ExponentialBackoff(0.05, 0.2, 2.0, 0.0),
        )
        with ok, untrusted:
            r = ok.reader(MqttRouting("tls/t", qos=1))
            w = ok.writer(MqttRouting("tls/t", qos=1))
            _up(ok)
            wait_for(lambda: _send_and_get(w, r), what="round trip over TLS")
            wait_for(lambda: untrusted.backend.stats.failures >= 1, what="untrusted CA refused")
            assert "certificate verify failed" in untrusted.backend.stats.last_failure
            assert untrusted.backend.stats.connects == 0
    finally:
        b.close()


def test_tls_client_certificate_required(tmp_path, certs) -> None:
    extra = f"cafile {certs['ca']}\ncertfile {certs['cert']}\nkeyfile {certs['key']}\nrequire_certificate true\n"
    b = start_broker(tmp_path / "mtls", config_extra=extra)
    try:
        tls = MqttTls(ca_certs=str(certs["ca"]), certfile=str(certs["client_cert"]), keyfile=str(certs["client_key"]))
        with_cert = MqttConnector(MqttOptions(port=b.port, tls=tls), "mtls")
        without = MqttConnector(MqttOptions(port=b.port, tls=MqttTls(ca_certs=str(certs["ca"]))), "nocert",
                                reconnect=ExponentialBackoff(0.05, 0.2, 2.0, 0.0))
        with with_cert, without:
            _up(with_cert)
            wait_for(lambda: without.backend.stats.failures >= 1, what="refused without a client certificate")
            assert without.backend.stats.connects == 0
    finally:
        b.close()


def test_late_subscriber_gets_retained_state_at_once(broker) -> None:
    with _connector(broker.port, "pub") as pub:
        w = pub.writer(MqttRouting("state/m1", qos=1, retained=True))
        _up(pub)
        w.send({"state": "Idle"})
        w.send({"state": "Active"})
        check = Observer(broker.host, broker.port)
        try:
            check.subscribe("state/m1")
            wait_for(lambda: any(json.loads(m.payload) == {"state": "Active"} for m in check.on("state/m1")))
        finally:
            check.close()
    with _connector(broker.port, "late") as late:
        r = late.reader(MqttRouting("state/#", qos=1))
        msg = r.recv(5)
        assert (msg.key, msg.value) == ("state/m1", {"state": "Active"})


class RecordingBackoff(ExponentialBackoff):
    """The real policy, recording the delays it hands out."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.handed_out: list[float] = []
        self.resets = 0

    def next_delay(self) -> float:
        d = super().next_delay()
        self.handed_out.append(d)
        return d

    def reset(self) -> None:
        self.resets += 1
        super().reset()


def test_broker_killed_and_restarted_reconnects_by_backoff(broker) -> None:
    policy = RecordingBackoff(0.05, 0.4, 2.0, 0.0)
    c = _connector(broker.port, reconnect=policy)
    events = c.subscribe_health()
    r = c.reader(MqttRouting("rc/#", qos=1))
    w = c.writer(MqttRouting("rc/x", qos=1))
    with c:
        _up(c)
        broker.kill()
        wait_for(lambda: isinstance(c.health, (Down, Connecting)), what="down after the broker died")
        wait_for(lambda: len(policy.handed_out) >= 4, what="several refused attempts")
        broker.start()
        _up(c)
        wait_for(lambda: _send_and_get(w, r), what="traffic again (subscriptions restored)")
    assert policy.handed_out[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])  # the policy paced the retries
    assert policy.resets == 2  # after the first connect and after the reconnect
    seq = [type(e.current).__name__ for e in events.drain() if isinstance(e, HealthEvent)]
    assert seq[:3] == ["Connecting", "Up", "Down"]
    after = seq[2:seq.index("Up", 2) + 1]
    assert after[0] == "Down" and after[-2:] == ["Connecting", "Up"]
    assert after[1:-1] == ["Connecting", "Down"] * ((len(after) - 3) // 2) + ["Connecting"]
    assert seq[-1] == "Down"  # stopped


def test_qos1_flood_into_a_tiny_bridge_withholds_acks_and_loses_nothing(tmp_path) -> None:
    b = start_broker(tmp_path / "flood", config_extra="max_inflight_messages 5\n")
    observer = Observer(b.host, b.port)
    c = _connector(b.port)
    events = c.subscribe_health()
    try:
        with c:
            r = c.reader(MqttRouting("flood/q1", qos=1), capacity=2)
            _up(c)
            wait_for(lambda: c.backend.subscribed, what="subscriptions acknowledged")
            total = 100
            infos = [observer.client.publish("flood/q1", str(i).encode(), qos=1) for i in range(total)]
            for info in infos:
                info.wait_for_publish(5)  # every message is now at the broker
            backend = c.backend
            wait_for(lambda: backend.withheld > 0, what="acks withheld")
            # without PUBACKs the broker's in-flight window stops the flow; the rest waits there
            assert backend.stats.received < total // 2
            assert backend.stats.acks_sent == 2  # only the two that fitted into the bridge
            got = [r.recv(10).value for _ in range(total)]
            assert got == list(range(total))  # in order, none lost, none duplicated
            wait_for(lambda: backend.stats.acks_sent == total and backend.withheld == 0, what="every PUBACK sent")
            assert r.missed == 0
    finally:
        observer.close()
        b.close()
    assert not [e for e in events.drain() if isinstance(e, DroppedInbound)]


def test_qos0_flood_into_a_tiny_bridge_reports_dropped_inbound(broker, observer) -> None:
    c = _connector(broker.port)
    events = c.subscribe_health()
    with c:
        r = c.reader(MqttRouting("flood/q0", qos=0), capacity=2)
        _up(c)
        wait_for(lambda: c.backend.subscribed, what="subscriptions acknowledged")
        total = 200
        for i in range(total):
            observer.client.publish("flood/q0", str(i).encode(), qos=0)
        wait_for(lambda: c.backend.stats.received == total, what="all QoS 0 messages reached the gateway")
        received = []
        while (m := r.try_recv()) is not None:
            received.append(m.value)
        drops = []

        def accounted() -> bool:
            drops.extend(e for e in events.drain() if isinstance(e, DroppedInbound))
            return len(received) + sum(e.count for e in drops) == total

        wait_for(accounted, what="every message either delivered or reported dropped")
    assert received == [0, 1]  # the bridge held two; everything after it was full was dropped
    assert all(e.channel == "flood/q0" and e.count > 0 for e in drops)


def test_outbound_backpressure_when_the_broker_stalls(broker, observer) -> None:
    observer.subscribe("bp/t", qos=1)
    opts = MqttOptions(port=broker.port, max_queued=2, max_inflight=1)
    c = MqttConnector(opts, "bp")
    events = c.subscribe_health()
    with c:
        w = c.writer(MqttRouting("bp/t", qos=1), capacity=2)
        _up(c)
        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker stops acking; TCP stays up
        try:
            sent = []
            with pytest.raises(BackPressure):
                for i in range(50):
                    w.send(i)
                    sent.append(i)
            assert len(sent) <= 6  # paho queue (2) + bridge (2) + the one being drained
            assert isinstance(c.health, Degraded) and "outbound bridge full" in c.health.reason
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        wait_for(lambda: c.health == Up(), what="Up again once the bridge drains")
        w.send(len(sent))
        expected = [*sent, len(sent)]
        wait_for(lambda: [json.loads(m.payload) for m in observer.on("bp/t")] == expected,
                 what="every accepted value delivered in order")
    kinds = [type(e.current).__name__ for e in events.drain() if isinstance(e, HealthEvent)]
    assert "Degraded" in kinds and kinds[kinds.index("Degraded") + 1] == "Up"


def test_wrong_routing_duplicates_and_publish_wildcards_are_refused() -> None:
    from common.connector import ConfigurationError, ZenohRouting

    c = MqttConnector(MqttOptions(port=1883), "cfg")
    with pytest.raises(ConfigurationError, match="needs MqttRouting"):
        c.writer(ZenohRouting("a/b"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wildcard"):
        c.writer(MqttRouting("a/#"))
    c.writer(MqttRouting("a/b"))
    with pytest.raises(ConfigurationError, match="already exists"):
        c.writer(MqttRouting("a/b"))
    c.writer(MqttRouting("a/b", qos=1), name="a/b#q1")  # distinct name: fine
    c.reader(MqttRouting("a/b"))  # the other direction: fine
    with pytest.raises(ConfigurationError):
        MqttOptions(password="x")
    assert MqttOptions.from_dict(MqttOptions(port=1, username="u", password="p").to_dict()).port == 1
