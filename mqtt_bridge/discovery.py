"""Home Assistant MQTT discovery: one retained config per sensor and binary_sensor the bridge feeds.

Published on every connect when `[mqtt] homeassistant_discovery = true`. The device is the machine
(named as in machine.toml); digital points, the E-stop and the guards are binary_sensors.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from common.config import IoConfig
from mqtt_bridge.payloads import AxisInfo, io_points
from mqtt_bridge.topics import Topics

LIVE = "{{ 'true' if value_json.live else 'false' }}"  # a topic whose source is down marks the entity unavailable


def _device(topics: Topics, machine_name: str | None) -> dict[str, Any]:
    return {"identifiers": [f"evo_{topics.machine_id}"], "name": machine_name or f"evo {topics.machine_id}",
            "manufacturer": "evo"}


def _sensor(topics: Topics, thing: str, name: str, state_topic: str, template: str, unit: str | None = None,
            machine_name: str | None = None) -> dict:
    cfg: dict[str, Any] = {
        "name": name,
        "unique_id": f"evo_{topics.machine_id}_{thing}",
        "object_id": f"evo_{topics.machine_id}_{thing}",
        "state_topic": state_topic,
        "value_template": template,
        "availability_topic": topics.online,
        "payload_available": "true",
        "payload_not_available": "false",
        "device": _device(topics, machine_name),
    }
    if unit:
        cfg["unit_of_measurement"] = unit
    return cfg


def _binary_sensor(topics: Topics, thing: str, name: str, state_topic: str, on_when: str,
                   device_class: str | None, machine_name: str | None) -> dict[str, Any]:
    """ON when the Jinja expression `on_when` (over value_json) is true; unavailable while the bridge
    is offline or the topic's source is not live."""
    cfg: dict[str, Any] = {
        "name": name,
        "unique_id": f"evo_{topics.machine_id}_{thing}",
        "object_id": f"evo_{topics.machine_id}_{thing}",
        "state_topic": state_topic,
        "value_template": f"{{{{ 'ON' if ({on_when}) else 'OFF' }}}}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "availability": [
            {"topic": topics.online, "payload_available": "true", "payload_not_available": "false"},
            {"topic": state_topic, "value_template": LIVE, "payload_available": "true",
             "payload_not_available": "false"},
        ],
        "availability_mode": "all",
        "device": _device(topics, machine_name),
    }
    if device_class:
        cfg["device_class"] = device_class
    return cfg


def _point(label: str) -> str:
    return f"value_json.points[{json.dumps(label)}]"  # a JSON string literal is a valid Jinja one


def discovery_configs(topics: Topics, axes: tuple[AxisInfo, ...], io: IoConfig | None = None,
                      machine_name: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for every sensor and binary_sensor."""
    m = machine_name
    yield topics.ha_config("machine_state"), _sensor(
        topics, "machine_state", "Machine state", topics.state, "{{ value_json.machine_state }}", machine_name=m
    )
    yield topics.ha_config("safety_state"), _sensor(
        topics, "safety_state", "Safety state", topics.state, "{{ value_json.safety_state }}", machine_name=m
    )
    yield topics.ha_config("recipe_state"), _sensor(
        topics, "recipe_state", "Recipe state", topics.recipe, "{{ value_json.state }}", machine_name=m
    )
    yield topics.ha_config("recipe_progress"), _sensor(
        topics, "recipe_progress", "Recipe progress", topics.recipe, "{{ value_json.progress.value }}", "%",
        machine_name=m
    )
    for ax in axes:
        thing = f"axis{ax.id}_position"
        yield topics.ha_config(thing), _sensor(
            topics, thing, f"Axis {ax.name} position", topics.axis(ax.id), "{{ value_json.position.value }}",
            ax.unit, machine_name=m
        )
    # the E-stop as the CU judges it (every E-stop input and the safety chain), device_class safety: ON = unsafe
    yield topics.ha_config("estop", "binary_sensor"), _binary_sensor(
        topics, "estop", "E-stop", topics.state, "value_json.estop", "safety", m
    )
    if io is None:
        return
    labels = io_points(io)
    for kind in ("di", "do"):
        roles = {p.pin: p.role or "" for p in io.points_of(kind)}
        for p in labels[kind]:
            role = roles.get(p.pin, "")
            thing = f"{kind}{p.pin}"
            device_class = "safety" if role == "EStop" else None  # logical true = pressed = unsafe
            yield topics.ha_config(thing, "binary_sensor"), _binary_sensor(
                topics, thing, p.label, topics.io(kind), _point(p.label), device_class, m
            )
            if kind == "di" and role.startswith("GuardClosed"):
                # a guard as Home Assistant shows doors: device_class door, ON = open
                thing = f"guard{role[len('GuardClosed'):]}_open"  # guard_open, guard2_open, ...
                yield topics.ha_config(thing, "binary_sensor"), _binary_sensor(
                    topics, thing, f"Guard open ({p.label})", topics.io(kind), f"not {_point(p.label)}", "door", m
                )
