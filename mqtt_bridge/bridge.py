"""The MQTT bridge: read-only telemetry from the *_mqt segments and modules.json to MQTT topics.

`Bridge.scan()` is one pass (tests call it); `run(config)` is the supervised process `evo-mqtt`: it
sleeps on the mqt wake semaphore (posted by HAL, CU and RE when what they show changed) and scans
after a wake (at most SCAN_HZ), at the telemetry rate, and at least every LIVENESS_PERIOD_S.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from common.config import EvoConfig, MqttConfig
from common.connector import ConfigurationError, Connecting, HealthEvent, Up, coalesced_wakes
from common.connector.health import ConnectorEvent, health_name, is_connected
from common.connector.mqtt import MqttConnector, MqttMessage, MqttOptions, MqttTls
from common.connector.reconnect import BackoffSettings
from common.notify import WatchdogPinger, notify_ready, notify_status, notify_stopping
from common.rt import StopFlag, process_setup
from common.shm.inbound import Inbound, InboundPolicy, LinkStatus
from common.shm.wake import WakePoster, WakeWaiter
from mqtt_bridge.discovery import discovery_configs
from mqtt_bridge.health_history import HealthHistory
from mqtt_bridge.payloads import (
    IO_KINDS,
    AxisInfo,
    axis_payload,
    axis_unavailable,
    driver_payload,
    io_payload,
    io_points,
    module_payload,
    recipe_payload,
    state_payload,
    state_unavailable,
    unavailable,
)
from mqtt_bridge.output import BridgeOutput
from mqtt_bridge import sparkplug  # issue 18: the Sparkplug B output
from mqtt_bridge import zenoh_output  # issue 14: the Zenoh output
from mqtt_bridge import can_forward  # issue 13: raw CAN frames <-> MQTT (can_forward.toml)
from mqtt_bridge.publisher import TopicPublisher
from mqtt_bridge.topics import Topics
from mqtt_bridge.watch_modules import ModulesWatcher

log = logging.getLogger(__name__)

SCAN_HZ = 50.0  # at most this many scans per second: on-change topics go out within 1/SCAN_HZ of a wake
LIVENESS_PERIOD_S = 0.1  # scan at least this often without a wake (a source's staleness shows)
STALE_AFTER_S = 0.5  # a source whose heartbeat has not moved for this long is stale
SOURCE_POLICY = InboundPolicy(stale_after_s=STALE_AFTER_S, retry_s=0.5, probe_every=5)
SOURCES = ("cu_mqt", "hal_mqt", "re_mqt")
HEALTH_HISTORY = 16  # transitions kept in the retained health/<connector> payload
CONNECTOR_NAME = "mqtt"
BACKOFF = BackoffSettings(initial=0.2, max=5.0, factor=2.0, jitter=0.2)


def mqtt_options(mq: MqttConfig, topics: Topics) -> MqttOptions:
    """Connector options from `[mqtt]`: credentials, TLS, and online=true/false as birth and will."""
    tls = None
    if mq.tls_ca or mq.tls_cert:
        tls = MqttTls(ca_certs=mq.tls_ca or None, certfile=mq.tls_cert or None, keyfile=mq.tls_key or None)
    return MqttOptions(
        host=mq.host,
        port=mq.port,
        client_id=f"evo-mqtt-{topics.machine_id}-{os.getpid()}",  # unique: no session takeover games
        keepalive=mq.keepalive_s,
        username=mq.username or None,
        password=(mq.password or None) if mq.username else None,
        tls=tls,
        will=MqttMessage(topics.online, b"false", qos=1, retained=True),
        birth=MqttMessage(topics.online, b"true", qos=1, retained=True),
        # an idle machine still proves the broker answers: the retained online=true it already holds
        probe=MqttMessage(topics.online, b"true", qos=1, retained=True),
        backoff=BACKOFF,
    )


def build_outputs(config: EvoConfig, bridge: "Bridge") -> list[BridgeOutput]:
    """The further outputs `config` enables, in start order. Each entry is one output module's
    factory: `factory(config, bridge) -> BridgeOutput | None` (None = disabled in config). The
    bridge is handed over for its topics, axis/point tables and module watcher (read-only)."""
    factories: list = [
        # one line per output module, e.g. `zenoh_output.create`, `sparkplug.create`
        sparkplug.create,  # Sparkplug B edge node ([mqtt.sparkplug], issue 18)
        zenoh_output.create,  # the machine on Zenoh ([zenoh], issue 14)
        can_forward.create,  # raw CAN frames <-> MQTT (can_forward.toml, issue 13)
    ]
    outputs: list[BridgeOutput] = []
    for factory in factories:
        out = factory(config, bridge)
        if out is not None:
            outputs.append(out)
    return outputs


class Bridge:
    """All bridge state; `scan(now)` reads every source once and publishes what is due."""

    def __init__(self, config: EvoConfig, *, scan_hz: float = SCAN_HZ, connector: MqttConnector | None = None) -> None:
        mq = config.system.mqtt
        self.config = config
        self.topics = Topics(mq.base_topic, config.machine_id)
        self.telemetry_period = 1.0 / mq.telemetry_hz
        self.discovery = mq.homeassistant_discovery
        self.connector = connector or MqttConnector(mqtt_options(mq, self.topics), CONNECTOR_NAME, max_payload=16384)
        self.publisher = TopicPublisher(self.connector)
        self.sources = {k: Inbound.for_key(k, SOURCE_POLICY) for k in SOURCES}
        self.min_scan_gap = 1.0 / scan_hz
        self._kick = WakePoster("mqt")  # connector events end the loop's wait on the mqt semaphore
        self.modules = ModulesWatcher(config.run_dir() / "modules.json")
        self.axes = tuple(AxisInfo.of(a) for a in config.axes)
        self.points = io_points(config.io)
        self._history = HealthHistory(HEALTH_HISTORY)
        self._health_dirty = threading.Event()
        self._new_session = threading.Event()
        self.sessions = 0
        self._next_telemetry = 0.0
        self.scans = 0
        self.connector.add_health_listener(self._on_connector_event)
        #: further outputs of the same sources (mqtt_bridge/output.py); started and stopped with the bridge
        self.outputs: list[BridgeOutput] = build_outputs(config, self)

    # --- connector events (gateway thread: record only) ---
    def _on_connector_event(self, event: ConnectorEvent) -> None:
        if not isinstance(event, HealthEvent):
            return
        self._history.add(event)
        self._health_dirty.set()
        if is_connected(event.current) and isinstance(event.previous, Connecting):
            self._new_session.set()
        self.wake()

    def wake(self) -> None:
        """Have the loop scan soon (an output's event, a connector event); callable from any thread."""
        self._kick.post()

    def next_due(self, now: float) -> float:
        """When the loop must scan without a wake: telemetry, liveness, an output's own period."""
        due = min(self._next_telemetry, now + LIVENESS_PERIOD_S)
        for output in self.outputs:
            period = getattr(output, "poll_period_s", None)  # an output with inputs of its own (CAN frames)
            if period:
                due = min(due, now + period)
        return due

    # --- lifecycle ---
    def start(self) -> None:
        self.connector.start()
        for output in self.outputs:
            output.start()

    def stop(self) -> None:
        for output in reversed(self.outputs):
            try:
                output.stop()
            except Exception:  # noqa: BLE001 - the other outputs and the JSON tree still stop cleanly
                log.exception("stopping output %s failed", output.name)
        # a clean exit says offline itself (a DISCONNECT suppresses the will)
        self.publisher.publish_raw(self.topics.online, False, retained=True)
        self.connector.stop()
        self._kick.close()
        for s in self.sources.values():
            s.close()

    @property
    def ready(self) -> bool:
        """Every source had an attach attempt and the first connection attempt has resolved."""
        backend = self.connector.backend
        attempted = backend is not None and backend.stats.attempts >= 1
        return (
            all(s.attach_attempted for s in self.sources.values())
            and attempted
            and not isinstance(self.connector.health, Connecting)
        )

    # --- one pass ---
    def scan(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with coalesced_wakes():  # each gateway thread is woken once per scan, not once per message
            self._scan(now)

    def _scan(self, now: float) -> None:
        self.scans += 1
        if self._new_session.is_set():
            self._new_session.clear()
            if self.sessions:
                # a reconnect: what the old session had not delivered is gone, and the broker may
                # have lost its retained messages; before the first session nothing was accepted
                self.publisher.invalidate()
            self.sessions += 1
            self._publish_discovery()
        cu = self.sources["cu_mqt"].poll(now)
        hal = self.sources["hal_mqt"].poll(now)
        re_ = self.sources["re_mqt"].poll(now)
        statuses = {k.split("_")[0]: s.status.value for k, s in self.sources.items()}
        telemetry_due = now >= self._next_telemetry
        if telemetry_due:
            self._next_telemetry = now + self.telemetry_period

        cu_status = self.sources["cu_mqt"].status.value
        body = state_payload(cu["status"], statuses) if cu is not None else state_unavailable(cu_status, statuses)
        body["driver"] = driver_payload(hal["io"]) if hal is not None else None
        self.publisher.publish(self.topics.state, body, retained=True)

        for output in self.outputs:  # further outputs of the same samples (Zenoh, Sparkplug B, ...)
            output.scan(now, cu, hal, re_, statuses, telemetry_due)

        self._publish_io(hal, telemetry_due)
        if telemetry_due:
            self._publish_axes(cu, hal)
        self._publish_recipe(re_, telemetry_due)
        self._publish_modules()
        if self._health_dirty.is_set():
            self._publish_health()

    def _publish_io(self, hal: Any, telemetry_due: bool) -> None:
        status = self.sources["hal_mqt"].status.value
        for kind in IO_KINDS:
            analog = kind in ("ai", "ao")
            if hal is None:
                self.publisher.publish(self.topics.io(kind), {**unavailable(status), "points": None}, retained=True)
            elif not analog or telemetry_due:  # analog values move constantly: at most telemetry_hz
                body = io_payload(kind, hal["io"], self.points[kind])
                self.publisher.publish(self.topics.io(kind), body, retained=True)

    def _publish_axes(self, cu: Any, hal: Any) -> None:
        if cu is None:
            status = self.sources["cu_mqt"].status.value
            for ax in self.axes:  # once, not at telemetry_hz: the body does not change
                self.publisher.publish(self.topics.axis(ax.id), axis_unavailable(ax, status), retained=False)
            return
        axes = cu["status"]["axes"]
        feedback = hal["io"]["axes"] if hal is not None else None
        codes = hal["io"]["drive_error_code"] if hal is not None else None
        for ax in self.axes:
            i = ax.id - 1
            body = axis_payload(ax, axes[i], None if feedback is None else feedback[i], 0 if codes is None else int(codes[i]))
            self.publisher.publish(self.topics.axis(ax.id), body, retained=False, qos=0, on_change=False)

    def _publish_recipe(self, re_: Any, telemetry_due: bool) -> None:
        if re_ is None:
            status = self.sources["re_mqt"].status.value
            self.publisher.publish(self.topics.recipe, {**unavailable(status), "state": None}, retained=True)
        elif telemetry_due:
            self.publisher.publish(self.topics.recipe, recipe_payload(re_["status"]), retained=True)

    def _publish_modules(self) -> None:
        self.modules.poll()
        for name, entry in self.modules.modules.items():
            try:
                topic = self.topics.module(name)
            except ConfigurationError:  # not a usable topic level (the watchdog never writes one)
                continue
            self.publisher.publish(topic, module_payload(entry), retained=True)

    def _publish_health(self) -> None:
        self._health_dirty.clear()
        state = self.connector.health
        body = {
            "connector": CONNECTOR_NAME,
            "state": health_name(state),
            "reason": getattr(state, "reason", None),
            "events": self._history.as_list(),
        }
        backend = self.connector.backend
        if backend is not None:
            st = backend.stats
            body["link"] = {
                "attempts": st.attempts,
                "connects": st.connects,
                "failures": st.failures,
                "last_failure": st.last_failure or None,
            }
        if not self.publisher.publish(self.topics.health(CONNECTOR_NAME), body, retained=True, on_change=False):
            self._health_dirty.set()  # not connected yet: it goes out with the next session

    def _publish_discovery(self) -> None:
        if self.discovery:
            for topic, cfg in discovery_configs(self.topics, self.axes, self.config.io, self.config.machine.name):
                self.publisher.publish_raw(topic, cfg, retained=True)

    def source_status(self) -> dict[str, LinkStatus]:
        return {k: s.status for k, s in self.sources.items()}


def run(config: EvoConfig, stop: StopFlag | None = None, scan_hz: float = SCAN_HZ) -> int:
    """The `evo-mqtt` process: scan on wake / telemetry / liveness until SIGTERM/SIGINT, keep
    retrying the broker meanwhile."""
    process_setup("evo-mqtt")
    stop = stop or StopFlag().install()
    waiter = WakeWaiter("mqt")
    try:
        bridge = Bridge(config, scan_hz=scan_hz)
    except BaseException:
        waiter.close()
        raise
    pinger = WatchdogPinger(0.5)
    topics = bridge.topics
    log.info("publishing under %s/ to %s:%d", topics.root, config.system.mqtt.host, config.system.mqtt.port)
    bridge.start()
    announced = False
    last_health = None
    last_scan = float("-inf")
    try:
        while not stop.is_set():
            now = time.monotonic()
            woke = waiter.wait(max(0.0, bridge.next_due(now) - now))
            if stop.is_set():
                break
            now = time.monotonic()
            if woke and now - last_scan < bridge.min_scan_gap:  # rate limit: at most scan_hz
                stop.wait(bridge.min_scan_gap - (now - last_scan))
                now = time.monotonic()
            bridge.scan(now)
            last_scan = now
            pinger.tick()
            health = bridge.connector.health
            if health != last_health:
                last_health = health
                (log.info if isinstance(health, Up) else log.warning)("broker connection: %s", health)
                notify_status(f"mqtt {health_name(health)}")
            if not announced and bridge.ready:
                announced = True
                notify_ready(f"mqtt {health_name(health)}")
    finally:
        notify_stopping()
        bridge.stop()
        waiter.close()
    log.info("stopped (%d scans, %d wakes, %d messages sent)", bridge.scans, waiter.wakes, bridge.publisher.stats.sent)
    return 0
