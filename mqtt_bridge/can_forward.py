"""The MQTT bridge's CAN forwarding (can_forward.toml, off by default): chosen raw CAN frames published on MQTT,
chosen MQTT topics sent as CAN frames, through the taktora CAN connector (common/connector/can.py).

Published: <root>/<topic>/<id> with {"id": "0x181", "extended": false, "fd": false, "data": "<hex>", "ts": ...}.
Forwarded: a message on <root>/<topic> that is {"data": "<hex>"} or "<hex>" goes out as one frame of the rule's id.
"""
from __future__ import annotations

import logging
from typing import Any

from common.config import EvoConfig
from common.connector import BackPressure, CanRouting, CodecError, ConnectorError, MqttRouting, RawCodec
from common.connector.routing import CanFrameKind
from common.fieldbus.can_forward_config import CanForwardConfig, load_can_forward

log = logging.getLogger(__name__)
DRAIN_BUDGET = 256  # frames / messages moved per scan and rule, so one busy id cannot starve the others
POLL_PERIOD_S = 0.02  # frames arrive on their own: the bridge scans at least this often while forwarding


class CanForwardOutput:
    """A BridgeOutput: CAN readers -> MQTT publisher, MQTT readers -> CAN writers, moved once per scan."""

    name = "can_forward"
    poll_period_s = POLL_PERIOD_S  # Bridge.next_due: the segments' wake does not see CAN frames

    def __init__(self, config: CanForwardConfig, bridge: Any) -> None:
        from common.connector.can import CanConnector, CanInterface, CanOptions  # python-can only when enabled

        self.config = config
        self.bridge = bridge
        ifaces = {name: CanInterface(i.interface, i.channel, fd=i.fd, bitrate=i.bitrate or None)
                  for name, i in config.interfaces.items()}
        self.can = CanConnector(CanOptions(ifaces), "can_forward", codec=RawCodec())
        root = bridge.topics.root
        self._to_mqtt = [(self.can.reader(CanRouting(r.iface, r.can_id, r.extended, r.mask,
                                                     CanFrameKind.FD if r.fd else CanFrameKind.CLASSIC)),
                          f"{root}/{r.topic}") for r in config.publish]
        self._to_can: list[tuple[Any, Any, str]] = []
        self._writers = [self.can.writer(CanRouting(r.iface, r.can_id, r.extended, None,
                                                    CanFrameKind.FD if r.fd else CanFrameKind.CLASSIC))
                         for r in config.subscribe]
        self.published = 0
        self.forwarded = 0
        self.refused = 0

    def start(self) -> None:
        self.can.start()
        root = self.bridge.topics.root
        for rule, writer in zip(self.config.subscribe, self._writers):
            topic = f"{root}/{rule.topic}"
            reader = self.bridge.connector.reader(MqttRouting(topic, qos=1), name=f"can_forward:{topic}")
            self._to_can.append((reader, writer, topic))
        log.info("CAN forwarding: %d publish rule(s), %d subscribe rule(s) on %s", len(self._to_mqtt),
                 len(self._to_can), ", ".join(f"{n}={i.interface}:{i.channel}" for n, i in self.config.interfaces.items()))

    def scan(self, now: float, cu: Any, hal: Any, re_: Any, statuses: dict[str, str], telemetry_due: bool) -> None:
        publisher = self.bridge.publisher
        for reader, topic in self._to_mqtt:
            for _ in range(DRAIN_BUDGET):
                m = reader.try_recv()
                if m is None:
                    break
                kind, _, can_id = m.key.partition(":")
                body = {"id": can_id, "extended": kind == "ext", "fd": reader.descriptor.routing.kind is CanFrameKind.FD,
                        "data": m.value.hex()}
                if publisher.publish(f"{topic}/{can_id}", body, retained=False, qos=0, on_change=False):
                    self.published += 1
        for reader, writer, topic in self._to_can:
            for _ in range(DRAIN_BUDGET):
                try:
                    m = reader.try_recv()
                except CodecError as e:
                    self._refuse(topic, f"not JSON: {e}")
                    continue
                if m is None:
                    break
                value = m.value.get("data") if isinstance(m.value, dict) else m.value
                try:
                    data = bytes.fromhex(value) if isinstance(value, str) else None
                except ValueError:
                    data = None
                if data is None:
                    self._refuse(topic, f"expected \"<hex>\" or {{\"data\": \"<hex>\"}}, got {m.value!r:.80}")
                    continue
                try:
                    writer.send(data)
                    self.forwarded += 1
                except BackPressure:
                    self._refuse(topic, "CAN outbound bridge full (BackPressure)")
                except ConnectorError as e:  # NotConnected, CodecError (too long for the frame kind)
                    self._refuse(topic, str(e))

    def _refuse(self, topic: str, why: str) -> None:
        self.refused += 1
        log.warning("CAN forwarding: message on %s not sent: %s", topic, why)

    def stop(self) -> None:
        self.can.stop()


def create(config: EvoConfig, bridge: Any) -> CanForwardOutput | None:
    """The output factory for `build_outputs` (None while can_forward.toml is absent or enabled = false)."""
    cfg = load_can_forward(config.dir)
    return CanForwardOutput(cfg, bridge) if cfg.enabled else None
