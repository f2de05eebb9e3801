"""MQTT 3.1.1 connector on paho-mqtt: QoS 0/1, retained, wildcards, auth, TLS, last will.

The gateway thread drives paho through its external-loop API and reconnects by a ReconnectPolicy.
"""
from __future__ import annotations

import collections
import enum
import os
import secrets
import select
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from common.connector.connector import Connector
from common.connector.errors import ConfigurationError
from common.connector.gateway import InboundBinding, OutboundBinding, ProtocolBackend
from common.connector.health import Connecting, Down, Up
from common.connector.reconnect import BackoffSettings, ReconnectPolicy
from common.connector.routing import MqttRouting, Routing, has_mqtt_wildcard

READ_BURST = 64  # loop_read calls per wake-up while the socket stays readable


@dataclass(frozen=True, slots=True)
class MqttTls:
    """TLS settings: CA to verify the broker; optional client certificate and key."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False  # skip hostname verification (never the chain)


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """A fixed message: the last will, or the birth message published on every connect."""

    topic: str
    payload: bytes = b""
    qos: int = 1
    retained: bool = True

    def __post_init__(self) -> None:
        MqttRouting(self.topic, self.qos, self.retained)  # same rules as a publish routing
        if has_mqtt_wildcard(self.topic):
            raise ConfigurationError(f"message topic {self.topic!r} may not contain wildcards")


@dataclass(frozen=True, slots=True)
class MqttOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""  # empty: a unique id is generated
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None
    will: MqttMessage | None = None
    birth: MqttMessage | None = None
    clean_session: bool = True
    connect_timeout: float = 5.0
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    max_queued: int = 1000  # paho's outgoing QoS>0 queue; full -> outbound bridge backs up
    max_inflight: int = 20
    # A broker that stops answering (frozen, overloaded, a half-open link) is noticed by its acks: a
    # QoS>=1 publish without PUBACK for ack_timeout -> Degraded; for dead_timeout -> Down, reconnect.
    ack_timeout: float = 2.0
    dead_timeout: float = 6.0
    # Published (QoS 1) when no QoS>=1 publish went out for probe_interval, so that an idle link is
    # judged too; e.g. the retained `online = true` it already holds. None: judged only by traffic.
    probe: MqttMessage | None = None
    probe_interval: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"MQTT port {self.port} out of range")
        if self.keepalive < 1:
            raise ConfigurationError("MQTT keepalive must be >= 1 s")
        if self.password is not None and self.username is None:
            raise ConfigurationError("MQTT password given without a username")
        if not 0 < self.ack_timeout < self.dead_timeout:
            raise ConfigurationError("MQTT ack_timeout must be > 0 and below dead_timeout")
        if self.probe is not None and self.probe.qos < 1:
            raise ConfigurationError("the MQTT probe message must be QoS 1 or 2 (its PUBACK is the answer)")

    def to_dict(self) -> dict[str, Any]:
        def msg(m: MqttMessage | None) -> dict | None:
            if m is None:
                return None
            return {"topic": m.topic, "payload": m.payload.hex(), "qos": m.qos, "retained": m.retained}

        return {
            "host": self.host,
            "port": self.port,
            "client_id": self.client_id,
            "keepalive": self.keepalive,
            "username": self.username,
            "password": self.password,
            "tls": None if self.tls is None else {k: getattr(self.tls, k) for k in MqttTls.__dataclass_fields__},
            "will": msg(self.will),
            "birth": msg(self.birth),
            "clean_session": self.clean_session,
            "connect_timeout": self.connect_timeout,
            "backoff": {k: getattr(self.backoff, k) for k in BackoffSettings.__dataclass_fields__},
            "max_queued": self.max_queued,
            "max_inflight": self.max_inflight,
            "ack_timeout": self.ack_timeout,
            "dead_timeout": self.dead_timeout,
            "probe": msg(self.probe),
            "probe_interval": self.probe_interval,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MqttOptions":
        data = dict(data)

        def msg(d: dict | None) -> MqttMessage | None:
            return None if d is None else MqttMessage(d["topic"], bytes.fromhex(d["payload"]), d["qos"], d["retained"])

        data["tls"] = None if data.get("tls") is None else MqttTls(**data["tls"])
        data["will"] = msg(data.get("will"))
        data["birth"] = msg(data.get("birth"))
        data["probe"] = msg(data.get("probe"))
        data["backoff"] = BackoffSettings(**data.get("backoff", {}))
        return cls(**data)


UNRESPONSIVE = "broker-unresponsive"  # the HealthMonitor degradation cause of _judge_broker


class _Phase(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"  # backing off until the next attempt
    CONNECTING = "connecting"  # TCP up, CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"


@dataclass(slots=True)
class _Withheld:
    """An inbound QoS 1 message not yet in every matching bridge; its PUBACK waits."""

    mid: int
    topic: str
    payload: bytes
    targets: list[InboundBinding]
    generation: int


@dataclass(slots=True)
class MqttStats:
    attempts: int = 0
    connects: int = 0
    failures: int = 0
    published: int = 0
    received: int = 0
    acks_sent: int = 0
    probes: int = 0
    unresponsive: int = 0  # times the broker stopped acknowledging (Degraded for that cause)
    last_delay: float = 0.0
    last_failure: str = ""


class MqttBackend(ProtocolBackend):
    """paho-mqtt driven from the gateway thread (select on the socket and the gateway waker)."""

    kind = "mqtt"

    def __init__(self, options: MqttOptions, policy: ReconnectPolicy | None = None) -> None:
        super().__init__()
        self.options = options
        self.policy: ReconnectPolicy = policy if policy is not None else options.backoff.policy()
        self.client: paho.Client | None = None
        self.stats = MqttStats()
        self._phase = _Phase.IDLE
        self._next_attempt = 0.0
        self._attempt_started = 0.0
        self._generation = 0
        self._withheld: collections.deque[_Withheld] = collections.deque()
        self._suback_pending: set[int] = set()
        self._closing = False
        self._unacked: dict[int, float] = {}  # mid -> monotonic send time of our QoS>=1 publishes
        self._last_qos1 = 0.0

    @property
    def withheld(self) -> int:
        """QoS 1 messages whose PUBACK is being withheld right now."""
        return len(self._withheld)

    @property
    def connected(self) -> bool:
        return self._phase is _Phase.CONNECTED

    @property
    def subscribed(self) -> bool:
        """Connected and every reader's subscription acknowledged by the broker."""
        gw = self.gateway
        return self._phase is _Phase.CONNECTED and not self._suback_pending and gw is not None and not gw.adopting

    # --- session ---
    def _make_client(self) -> paho.Client:
        o = self.options
        client_id = o.client_id or f"evo-{os.getpid()}-{secrets.token_hex(4)}"
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=o.clean_session,
            protocol=paho.MQTTv311,
            manual_ack=True,  # QoS 1 PUBACK only once every matching bridge took the message
        )
        c.connect_timeout = o.connect_timeout
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if o.tls is not None:
            c.tls_set(
                ca_certs=o.tls.ca_certs,
                certfile=o.tls.certfile,
                keyfile=o.tls.keyfile,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            c.tls_insecure_set(o.tls.insecure)
        if o.will is not None:
            c.will_set(o.will.topic, o.will.payload, o.will.qos, o.will.retained)
        c.max_queued_messages_set(o.max_queued)
        c.max_inflight_messages_set(o.max_inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        return c

    def open(self) -> None:
        self.client = self._make_client()
        self._phase = _Phase.WAITING
        self._next_attempt = time.monotonic()

    def close(self) -> None:
        self._closing = True
        c = self.client
        if c is None:
            return
        if c.socket() is not None:
            if self._phase is _Phase.CONNECTED:
                c.disconnect()  # a clean DISCONNECT: the broker does not send the will
                for _ in range(10):
                    if c.socket() is None or not c.want_write():
                        break
                    c.loop_write()
            sock = c.socket()
            if sock is not None:
                sock.close()
        self._phase = _Phase.IDLE

    def _connect(self) -> None:
        assert self.client is not None
        self.stats.attempts += 1
        self.monitor.set_link(Connecting(self.monitor.now_ns()))
        self._phase = _Phase.CONNECTING
        self._attempt_started = time.monotonic()
        try:
            self.client.connect(self.options.host, self.options.port, self.options.keepalive)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake failure
            self._lost(f"connect to {self.options.host}:{self.options.port} failed: {exc}")

    def _lost(self, reason: str) -> None:
        if self._phase in (_Phase.WAITING, _Phase.IDLE):
            return
        self._phase = _Phase.WAITING
        self.stats.failures += 1
        self.stats.last_failure = reason
        if not isinstance(self.monitor.link, Down):
            self.monitor.set_link(Down(reason, self.monitor.now_ns()))
        delay = self.policy.next_delay()
        self.stats.last_delay = delay
        self._next_attempt = time.monotonic() + delay

    # --- paho callbacks (run on the gateway thread, inside loop_read) ---
    def _on_connect(self, client: paho.Client, _ud: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._lost(f"connection refused: {reason_code}")
            return
        self._phase = _Phase.CONNECTED
        self._generation += 1
        self.stats.connects += 1
        self._unacked.clear()  # a new session: what the old one had in flight is not ours to judge
        self._last_qos1 = time.monotonic()
        self.monitor.recover(UNRESPONSIVE)
        self.policy.reset()
        assert self.gateway is not None
        self._suback_pending.clear()
        for b in self.gateway.inbound:
            self._subscribe(b)
        birth = self.options.birth
        if birth is not None:
            self._track(client.publish(birth.topic, birth.payload, birth.qos, birth.retained), birth.qos)
        self.monitor.set_link(Up())

    def _subscribe(self, binding: InboundBinding) -> None:
        assert self.client is not None
        rc, mid = self.client.subscribe(binding.routing.topic, binding.routing.qos)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._suback_pending.add(mid)

    def _on_subscribe(self, _c: paho.Client, _ud: Any, mid: int, _codes: Any, _props: Any) -> None:
        self._suback_pending.discard(mid)

    def _on_publish(self, _c: paho.Client, _ud: Any, mid: int, _rc: Any, _props: Any) -> None:
        if self._unacked.pop(mid, None) is not None and not self._unacked:
            self.monitor.recover(UNRESPONSIVE)  # the broker answers again

    def _track(self, info: paho.MQTTMessageInfo, qos: int) -> None:
        if qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            now = time.monotonic()
            self._unacked[info.mid] = now
            self._last_qos1 = now

    def _judge_broker(self, now: float) -> None:
        """Degraded when the oldest QoS>=1 publish waits too long for its PUBACK, Down past
        dead_timeout; an idle link gets a probe (see MqttOptions)."""
        o = self.options
        if self._unacked:
            waited = now - next(iter(self._unacked.values()))  # dicts keep insertion order: the oldest
            if waited > o.dead_timeout:
                c = self.client
                self._lost(f"broker unresponsive: no PUBACK for {waited:.1f} s")
                if c is not None and c.socket() is not None:
                    c.disconnect()
            elif waited > o.ack_timeout and not self.monitor.is_degraded_by(UNRESPONSIVE):
                self.stats.unresponsive += 1
                self.monitor.degrade(UNRESPONSIVE, f"broker not answering: no PUBACK for {waited:.1f} s")
        elif o.probe is not None and now - self._last_qos1 >= o.probe_interval and self.client is not None:
            p = o.probe
            self.stats.probes += 1
            self._track(self.client.publish(p.topic, p.payload, p.qos, p.retained), p.qos)

    def _on_disconnect(self, _c: paho.Client, _ud: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if not self._closing:
            self._lost(f"connection lost: {reason_code}")

    def _on_message(self, _c: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        self.stats.received += 1
        assert self.gateway is not None
        topic = msg.topic
        targets = [b for b in self.gateway.inbound if paho.topic_matches_sub(b.routing.topic, topic)]
        if msg.qos == 0:
            for b in targets:
                # behind withheld QoS 1 messages a QoS 0 one may not overtake: it is dropped
                if b.pending or not b.deliver(topic, msg.payload):
                    b.count_drop()
            return
        waiting: list[InboundBinding] = []
        for b in targets:
            if b.pending or not b.deliver(topic, msg.payload):
                b.pending += 1
                waiting.append(b)
        self._withheld.append(_Withheld(msg.mid, topic, msg.payload, waiting, self._generation))
        self._ack_ready()

    # --- withheld QoS 1 messages ---
    def _retry_withheld(self) -> None:
        blocked: set[int] = set()
        for w in self._withheld:
            still = []
            for b in w.targets:
                if id(b) in blocked or not b.deliver(w.topic, w.payload):
                    blocked.add(id(b))  # keep per-channel order: nothing overtakes a blocked one
                    still.append(b)
                else:
                    b.pending -= 1
            w.targets = still
        self._ack_ready()

    def _ack_ready(self) -> None:
        # MQTT 3.1.1 4.6: PUBACKs go out in the order the PUBLISHes arrived
        while self._withheld and not self._withheld[0].targets:
            w = self._withheld.popleft()
            if w.generation == self._generation and self._phase is _Phase.CONNECTED and self.client is not None:
                self.client.ack(w.mid, 1)
                self.stats.acks_sent += 1

    # --- gateway hooks ---
    def service(self) -> float | None:
        now = time.monotonic()
        if self._phase is _Phase.WAITING and now >= self._next_attempt:
            self._connect()
        elif self._phase is _Phase.CONNECTING and now - self._attempt_started > self.options.connect_timeout:
            self._abort_attempt()
        elif self._phase is _Phase.CONNECTED:
            self._judge_broker(now)
        if self._withheld:
            self._retry_withheld()
        if self._phase is _Phase.WAITING:
            return max(0.0, self._next_attempt - time.monotonic())
        if self._phase is _Phase.CONNECTING:
            return 0.05
        if self._withheld:
            return 0.01  # a cross-process reader frees room without waking us: look again soon
        if self._phase is _Phase.CONNECTED and (self._unacked or self.options.probe is not None):
            return 0.25  # judge the broker's answers (_judge_broker) a few times a second
        return None

    def _abort_attempt(self) -> None:
        c = self.client
        self._lost(f"no CONNACK within {self.options.connect_timeout} s")
        if c is not None and c.socket() is not None:
            c.disconnect()  # paho closes the socket once this is written; reconnect() would too

    def poll(self, timeout: float) -> None:
        assert self.gateway is not None and self.client is not None
        c = self.client
        waker = self.gateway.waker
        sock = c.socket()
        rlist: list[Any] = [waker]
        wlist: list[Any] = []
        pending = 0
        if sock is not None:
            rlist.append(sock)
            if c.want_write():
                wlist.append(sock)
            pending = sock.pending() if hasattr(sock, "pending") else 0  # TLS-buffered bytes
        try:
            readable, writable, _ = select.select(rlist, wlist, [], 0.0 if pending else timeout)
        except (OSError, ValueError):  # the socket was closed under us
            readable, writable = [], []
        if waker in readable:
            waker.clear()
        if sock is None:
            return
        if sock in readable or pending:
            self._read_burst(sock)
        if c.socket() is sock and (sock in writable or c.want_write()):
            c.loop_write()
        c.loop_misc()

    def _read_burst(self, sock: Any) -> None:
        c = self.client
        assert c is not None
        for _ in range(READ_BURST):
            if c.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or c.socket() is not sock:
                return
            if hasattr(sock, "pending") and sock.pending():
                continue
            try:
                if not select.select([sock], [], [], 0.0)[0]:
                    return
            except (OSError, ValueError):
                return

    def publish(self, binding: OutboundBinding, payload: memoryview) -> bool:
        c = self.client
        if c is None or self._phase is not _Phase.CONNECTED:
            return True  # dropped: no durable outbox (the gateway counts it)
        if c.want_write():
            return False  # socket congested: leave it in the bridge
        r = binding.routing
        info = c.publish(r.topic, bytes(payload), r.qos, r.retained)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return False
        self._track(info, r.qos)
        self.stats.published += 1
        return True

    def add_inbound(self, binding: InboundBinding) -> None:
        if self._phase is _Phase.CONNECTED and self.client is not None:
            self._subscribe(binding)


class MqttConnector(Connector):
    """MQTT connector: `writer(MqttRouting(topic, qos, retained))`, `reader(MqttRouting(filter))`."""

    kind = "mqtt"
    routing_type = MqttRouting

    def __init__(
        self,
        options: MqttOptions,
        name: str = "mqtt",
        *,
        reconnect: ReconnectPolicy | None = None,
        **connector_kw: Any,
    ) -> None:
        self.options = options
        self._policy = reconnect
        super().__init__(name, **connector_kw)

    def make_backend(self) -> MqttBackend:
        return MqttBackend(self.options, self._policy)

    def options_dict(self) -> dict[str, Any]:
        return self.options.to_dict()

    def default_channel_name(self, routing: Routing) -> str:
        assert isinstance(routing, MqttRouting)
        return routing.topic

    @property
    def backend(self) -> MqttBackend | None:
        return None if self.gateway is None else self.gateway.backend  # type: ignore[return-value]
