"""Driver registry: `[hal] driver` names the backend, `[hal.driver_args]` its options.

Drivers register by name; an unknown name is a DriverError at start-up listing the known ones.
"""
from __future__ import annotations

import importlib
from typing import Callable

from common.config import EvoConfig

from .base import Driver, DriverError

# name -> "module:Class", imported lazily so a fieldbus driver's libraries load only when chosen
_BUILTIN: dict[str, str] = {
    "sim": "hal.drivers.sim:SimDriver",
    "ethercat": "hal.drivers.ethercat:EthercatDriver",  # issue 12
    "canopen": "hal.drivers.canopen:CanopenDriver",
}
_FACTORIES: dict[str, Callable[..., Driver]] = {}


def register(name: str, factory: Callable[..., Driver]) -> None:
    """Add a driver (e.g. from a plug-in or a test); `factory(config, args) -> Driver`."""
    _FACTORIES[name] = factory


def known_drivers() -> tuple[str, ...]:
    return tuple(sorted(set(_BUILTIN) | set(_FACTORIES)))


def create_driver(config: EvoConfig) -> Driver:
    """The driver named by `[hal] driver`, constructed with `[hal.driver_args]`."""
    name = config.system.hal.driver
    args = config.system.hal.driver_args
    factory = _FACTORIES.get(name)
    if factory is None:
        target = _BUILTIN.get(name)
        if target is None:
            raise DriverError(
                f"config.toml [hal] driver: unknown driver {name!r}; known drivers: {', '.join(known_drivers())}"
            )
        module, cls = target.split(":")
        factory = getattr(importlib.import_module(module), cls)
    return factory(config, args)
