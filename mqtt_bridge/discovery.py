"""Home Assistant MQTT discovery: one retained sensor config per thing the bridge publishes.

Published on every connect when `[mqtt] homeassistant_discovery = true`.
"""
from __future__ import annotations

from typing import Any, Iterator

from mqtt_bridge.payloads import AxisInfo
from mqtt_bridge.topics import Topics


def _device(topics: Topics) -> dict[str, Any]:
    return {"identifiers": [f"evo_{topics.machine_id}"], "name": f"evo {topics.machine_id}", "manufacturer": "evo"}


def _sensor(topics: Topics, thing: str, name: str, state_topic: str, template: str, unit: str | None = None) -> dict:
    cfg: dict[str, Any] = {
        "name": name,
        "unique_id": f"evo_{topics.machine_id}_{thing}",
        "object_id": f"evo_{topics.machine_id}_{thing}",
        "state_topic": state_topic,
        "value_template": template,
        "availability_topic": topics.online,
        "payload_available": "true",
        "payload_not_available": "false",
        "device": _device(topics),
    }
    if unit:
        cfg["unit_of_measurement"] = unit
    return cfg


def discovery_configs(topics: Topics, axes: tuple[AxisInfo, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for every sensor."""
    yield topics.ha_config("machine_state"), _sensor(
        topics, "machine_state", "Machine state", topics.state, "{{ value_json.machine_state }}"
    )
    yield topics.ha_config("safety_state"), _sensor(
        topics, "safety_state", "Safety state", topics.state, "{{ value_json.safety_state }}"
    )
    yield topics.ha_config("recipe_state"), _sensor(
        topics, "recipe_state", "Recipe state", topics.recipe, "{{ value_json.state }}"
    )
    yield topics.ha_config("recipe_progress"), _sensor(
        topics, "recipe_progress", "Recipe progress", topics.recipe, "{{ value_json.progress.value }}", "%"
    )
    for ax in axes:
        thing = f"axis{ax.id}_position"
        yield topics.ha_config(thing), _sensor(
            topics, thing, f"Axis {ax.name} position", topics.axis(ax.id), "{{ value_json.position.value }}", ax.unit
        )
