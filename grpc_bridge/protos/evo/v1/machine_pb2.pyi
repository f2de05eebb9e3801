from grpc_bridge.protos.evo.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JogDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOG_DIRECTION_STOP: _ClassVar[JogDirection]
    JOG_DIRECTION_POSITIVE: _ClassVar[JogDirection]
    JOG_DIRECTION_NEGATIVE: _ClassVar[JogDirection]
JOG_DIRECTION_STOP: JogDirection
JOG_DIRECTION_POSITIVE: JogDirection
JOG_DIRECTION_NEGATIVE: JogDirection

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ErrorReason(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AxisStatus(_message.Message):
    __slots__ = ("id", "name", "position", "velocity", "target_position", "setpoint_position", "setpoint_velocity", "lag_error", "torque", "power", "motion", "mode", "coupling", "gearbox", "loading", "referenced", "in_position", "enabled", "brake_released", "lock_source", "safe_stop", "homing_phase", "master_axis", "error_flags", "errors", "drive_ready", "drive_fault", "drive_error_code", "drive_error", "driver_state", "live")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    TARGET_POSITION_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_POSITION_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_VELOCITY_FIELD_NUMBER: _ClassVar[int]
    LAG_ERROR_FIELD_NUMBER: _ClassVar[int]
    TORQUE_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COUPLING_FIELD_NUMBER: _ClassVar[int]
    GEARBOX_FIELD_NUMBER: _ClassVar[int]
    LOADING_FIELD_NUMBER: _ClassVar[int]
    REFERENCED_FIELD_NUMBER: _ClassVar[int]
    IN_POSITION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    BRAKE_RELEASED_FIELD_NUMBER: _ClassVar[int]
    LOCK_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAFE_STOP_FIELD_NUMBER: _ClassVar[int]
    HOMING_PHASE_FIELD_NUMBER: _ClassVar[int]
    MASTER_AXIS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FLAGS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DRIVE_READY_FIELD_NUMBER: _ClassVar[int]
    DRIVE_FAULT_FIELD_NUMBER: _ClassVar[int]
    DRIVE_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DRIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    DRIVER_STATE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    position: float
    velocity: float
    target_position: float
    setpoint_position: float
    setpoint_velocity: float
    lag_error: float
    torque: float
    power: _types_pb2.PowerState
    motion: _types_pb2.MotionState
    mode: _types_pb2.OperationalMode
    coupling: _types_pb2.CouplingState
    gearbox: _types_pb2.GearboxState
    loading: _types_pb2.LoadingState
    referenced: bool
    in_position: bool
    enabled: bool
    brake_released: bool
    lock_source: _types_pb2.CommandSource
    safe_stop: _types_pb2.SafeStopCategory
    homing_phase: int
    master_axis: int
    error_flags: int
    errors: _containers.RepeatedCompositeFieldContainer[ErrorReason]
    drive_ready: bool
    drive_fault: bool
    drive_error_code: int
    drive_error: str
    driver_state: _types_pb2.DriverState
    live: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., position: _Optional[float] = ..., velocity: _Optional[float] = ..., target_position: _Optional[float] = ..., setpoint_position: _Optional[float] = ..., setpoint_velocity: _Optional[float] = ..., lag_error: _Optional[float] = ..., torque: _Optional[float] = ..., power: _Optional[_Union[_types_pb2.PowerState, str]] = ..., motion: _Optional[_Union[_types_pb2.MotionState, str]] = ..., mode: _Optional[_Union[_types_pb2.OperationalMode, str]] = ..., coupling: _Optional[_Union[_types_pb2.CouplingState, str]] = ..., gearbox: _Optional[_Union[_types_pb2.GearboxState, str]] = ..., loading: _Optional[_Union[_types_pb2.LoadingState, str]] = ..., referenced: _Optional[bool] = ..., in_position: _Optional[bool] = ..., enabled: _Optional[bool] = ..., brake_released: _Optional[bool] = ..., lock_source: _Optional[_Union[_types_pb2.CommandSource, str]] = ..., safe_stop: _Optional[_Union[_types_pb2.SafeStopCategory, str]] = ..., homing_phase: _Optional[int] = ..., master_axis: _Optional[int] = ..., error_flags: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ErrorReason, _Mapping]]] = ..., drive_ready: _Optional[bool] = ..., drive_fault: _Optional[bool] = ..., drive_error_code: _Optional[int] = ..., drive_error: _Optional[str] = ..., driver_state: _Optional[_Union[_types_pb2.DriverState, str]] = ..., live: _Optional[bool] = ...) -> None: ...

class MachineStatus(_message.Message):
    __slots__ = ("machine_state", "safety_state", "estop", "reduced_speed", "manual_allowed", "machine_error_flags", "machine_errors", "message", "axes", "hal_heartbeat_age_s", "cu_heartbeat_age_s", "hal_ok", "cu_ok", "cu_hal_age_cycles", "sample_seq", "sampled_at_unix_ns", "cu_cycle", "hal_driver_state", "hal_driver_message", "hal_cycle", "cu_status", "hal_status")
    MACHINE_STATE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STATE_FIELD_NUMBER: _ClassVar[int]
    ESTOP_FIELD_NUMBER: _ClassVar[int]
    REDUCED_SPEED_FIELD_NUMBER: _ClassVar[int]
    MANUAL_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ERROR_FLAGS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    HAL_HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    CU_HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    HAL_OK_FIELD_NUMBER: _ClassVar[int]
    CU_OK_FIELD_NUMBER: _ClassVar[int]
    CU_HAL_AGE_CYCLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CU_CYCLE_FIELD_NUMBER: _ClassVar[int]
    HAL_DRIVER_STATE_FIELD_NUMBER: _ClassVar[int]
    HAL_DRIVER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAL_CYCLE_FIELD_NUMBER: _ClassVar[int]
    CU_STATUS_FIELD_NUMBER: _ClassVar[int]
    HAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    machine_state: _types_pb2.MachineState
    safety_state: _types_pb2.SafetyState
    estop: bool
    reduced_speed: bool
    manual_allowed: bool
    machine_error_flags: int
    machine_errors: _containers.RepeatedCompositeFieldContainer[ErrorReason]
    message: str
    axes: _containers.RepeatedCompositeFieldContainer[AxisStatus]
    hal_heartbeat_age_s: float
    cu_heartbeat_age_s: float
    hal_ok: bool
    cu_ok: bool
    cu_hal_age_cycles: int
    sample_seq: int
    sampled_at_unix_ns: int
    cu_cycle: CycleStats
    hal_driver_state: _types_pb2.DriverState
    hal_driver_message: str
    hal_cycle: CycleStats
    cu_status: str
    hal_status: str
    def __init__(self, machine_state: _Optional[_Union[_types_pb2.MachineState, str]] = ..., safety_state: _Optional[_Union[_types_pb2.SafetyState, str]] = ..., estop: _Optional[bool] = ..., reduced_speed: _Optional[bool] = ..., manual_allowed: _Optional[bool] = ..., machine_error_flags: _Optional[int] = ..., machine_errors: _Optional[_Iterable[_Union[ErrorReason, _Mapping]]] = ..., message: _Optional[str] = ..., axes: _Optional[_Iterable[_Union[AxisStatus, _Mapping]]] = ..., hal_heartbeat_age_s: _Optional[float] = ..., cu_heartbeat_age_s: _Optional[float] = ..., hal_ok: _Optional[bool] = ..., cu_ok: _Optional[bool] = ..., cu_hal_age_cycles: _Optional[int] = ..., sample_seq: _Optional[int] = ..., sampled_at_unix_ns: _Optional[int] = ..., cu_cycle: _Optional[_Union[CycleStats, _Mapping]] = ..., hal_driver_state: _Optional[_Union[_types_pb2.DriverState, str]] = ..., hal_driver_message: _Optional[str] = ..., hal_cycle: _Optional[_Union[CycleStats, _Mapping]] = ..., cu_status: _Optional[str] = ..., hal_status: _Optional[str] = ...) -> None: ...

class CycleStats(_message.Message):
    __slots__ = ("cycle_count", "cycle_time_ns", "last_cycle_ns", "max_cycle_ns", "last_wake_jitter_ns", "max_wake_jitter_ns", "overruns", "rt_active", "jitter_hist", "jitter_bucket_us")
    CYCLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CYCLE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_CYCLE_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_WAKE_JITTER_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAKE_JITTER_NS_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    RT_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    JITTER_HIST_FIELD_NUMBER: _ClassVar[int]
    JITTER_BUCKET_US_FIELD_NUMBER: _ClassVar[int]
    cycle_count: int
    cycle_time_ns: int
    last_cycle_ns: int
    max_cycle_ns: int
    last_wake_jitter_ns: int
    max_wake_jitter_ns: int
    overruns: int
    rt_active: bool
    jitter_hist: _containers.RepeatedScalarFieldContainer[int]
    jitter_bucket_us: int
    def __init__(self, cycle_count: _Optional[int] = ..., cycle_time_ns: _Optional[int] = ..., last_cycle_ns: _Optional[int] = ..., max_cycle_ns: _Optional[int] = ..., last_wake_jitter_ns: _Optional[int] = ..., max_wake_jitter_ns: _Optional[int] = ..., overruns: _Optional[int] = ..., rt_active: _Optional[bool] = ..., jitter_hist: _Optional[_Iterable[int]] = ..., jitter_bucket_us: _Optional[int] = ...) -> None: ...

class AxisRequest(_message.Message):
    __slots__ = ("axis",)
    AXIS_FIELD_NUMBER: _ClassVar[int]
    axis: int
    def __init__(self, axis: _Optional[int] = ...) -> None: ...

class JogRequest(_message.Message):
    __slots__ = ("axis", "direction", "velocity")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    axis: int
    direction: JogDirection
    velocity: float
    def __init__(self, axis: _Optional[int] = ..., direction: _Optional[_Union[JogDirection, str]] = ..., velocity: _Optional[float] = ...) -> None: ...

class MoveToRequest(_message.Message):
    __slots__ = ("axis", "position", "velocity", "acceleration")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    ACCELERATION_FIELD_NUMBER: _ClassVar[int]
    axis: int
    position: float
    velocity: float
    acceleration: float
    def __init__(self, axis: _Optional[int] = ..., position: _Optional[float] = ..., velocity: _Optional[float] = ..., acceleration: _Optional[float] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("axis", "mode")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    axis: int
    mode: _types_pb2.OperationalMode
    def __init__(self, axis: _Optional[int] = ..., mode: _Optional[_Union[_types_pb2.OperationalMode, str]] = ...) -> None: ...

class SetMachineStateRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.MachineState
    def __init__(self, state: _Optional[_Union[_types_pb2.MachineState, str]] = ...) -> None: ...

class AllowManualModeRequest(_message.Message):
    __slots__ = ("allow",)
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    allow: bool
    def __init__(self, allow: _Optional[bool] = ...) -> None: ...

class EmergencyStopRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
