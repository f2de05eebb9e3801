"""The bridge's topic tree under `<base_topic>/<machine_id>/` and Home Assistant discovery topics.

One place that spells topic names; everything else asks it.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.connector import ConfigurationError
from common.connector.routing import has_mqtt_wildcard


def _clean(part: str, what: str) -> str:
    if not part or has_mqtt_wildcard(part) or "\x00" in part:
        raise ConfigurationError(f"{what} {part!r} must be non-empty and free of MQTT wildcards")
    return part.strip("/")


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    machine_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", _clean(self.base, "base_topic"))
        object.__setattr__(self, "machine_id", _clean(self.machine_id, "machine_id"))
        if "/" in self.machine_id:
            raise ConfigurationError("machine_id may not contain '/'")

    @property
    def root(self) -> str:
        return f"{self.base}/{self.machine_id}"

    @property
    def online(self) -> str:
        return f"{self.root}/online"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def recipe(self) -> str:
        return f"{self.root}/recipe"

    def axis(self, axis_id: int) -> str:
        return f"{self.root}/axes/{axis_id}"

    def io(self, kind: str) -> str:
        return f"{self.root}/io/{kind}"

    def module(self, name: str) -> str:
        return f"{self.root}/modules/{_clean(name, 'module name')}"

    def health(self, connector: str) -> str:
        return f"{self.root}/health/{connector}"

    def ha_config(self, thing: str, component: str = "sensor") -> str:
        return f"homeassistant/{component}/{self.machine_id}_{thing}/config"
