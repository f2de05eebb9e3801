"""evo configuration: strict loader for the config directory, typed frozen config, IoRegistry.

Entry points: load_config(path, check_roles=True) -> EvoConfig, resolve_config_dir(cli_arg).
"""
from __future__ import annotations

from .enums import (
    AxisType,
    Direction,
    HomingMethod,
    IoType,
    LagPolicy,
    Logic,
    ModuleName,
    SafeStopCategory,
)
from .errors import (
    AxisIdMismatch,
    ConfigError,
    DuplicateAxisId,
    FileNotFound,
    NoAxesDefined,
    ParseError,
    RoleMissing,
    RoleTypeMismatch,
    UnknownField,
    ValidationError,
)
from .io import AnalogCurve, IoConfig, IoGroup, IoPoint
from .loader import PACKAGED_CONFIG_DIR, format_errors, load_config, load_io, resolve_config_dir
from .registry import IoRegistry, RoleRequirement
from .schema import (
    AxisConfig,
    Brake,
    Control,
    Coupling,
    CuConfig,
    EvoConfig,
    GlobalSafety,
    GrpcConfig,
    Guard,
    HalConfig,
    HmiConfig,
    Homing,
    Kinematics,
    MachineConfig,
    ModuleConfig,
    MqttConfig,
    ReConfig,
    SafeStop,
    ServiceBypass,
    SystemConfig,
    Tailstock,
    WatchdogConfig,
)
from .summary import summarize

__all__ = [
    "load_config", "load_io", "resolve_config_dir", "format_errors", "summarize",
    "PACKAGED_CONFIG_DIR",
    "ConfigError", "UnknownField", "ParseError", "AxisIdMismatch", "DuplicateAxisId",
    "NoAxesDefined", "ValidationError", "FileNotFound", "RoleMissing", "RoleTypeMismatch",
    "EvoConfig", "SystemConfig", "WatchdogConfig", "ModuleConfig", "HalConfig", "CuConfig",
    "ReConfig", "MqttConfig", "GrpcConfig", "MachineConfig", "GlobalSafety", "ServiceBypass",
    "AxisConfig", "Kinematics", "Control", "SafeStop", "Homing", "Brake", "Tailstock", "Guard",
    "Coupling", "HmiConfig",
    "IoConfig", "IoGroup", "IoPoint", "AnalogCurve", "IoRegistry", "RoleRequirement",
    "AxisType", "Direction", "HomingMethod", "IoType", "LagPolicy", "Logic", "ModuleName",
    "SafeStopCategory",
]
