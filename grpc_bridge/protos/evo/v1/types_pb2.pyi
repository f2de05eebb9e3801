from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MachineState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MACHINE_STATE_STOPPED: _ClassVar[MachineState]
    MACHINE_STATE_STARTING: _ClassVar[MachineState]
    MACHINE_STATE_IDLE: _ClassVar[MachineState]
    MACHINE_STATE_MANUAL: _ClassVar[MachineState]
    MACHINE_STATE_ACTIVE: _ClassVar[MachineState]
    MACHINE_STATE_SERVICE: _ClassVar[MachineState]
    MACHINE_STATE_SYSTEM_ERROR: _ClassVar[MachineState]

class SafetyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAFETY_STATE_SAFE: _ClassVar[SafetyState]
    SAFETY_STATE_SAFE_REDUCED_SPEED: _ClassVar[SafetyState]
    SAFETY_STATE_SAFETY_STOP: _ClassVar[SafetyState]

class PowerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POWER_STATE_POWER_OFF: _ClassVar[PowerState]
    POWER_STATE_POWERING_ON: _ClassVar[PowerState]
    POWER_STATE_STANDBY: _ClassVar[PowerState]
    POWER_STATE_MOTION: _ClassVar[PowerState]
    POWER_STATE_POWERING_OFF: _ClassVar[PowerState]
    POWER_STATE_NO_BRAKE: _ClassVar[PowerState]
    POWER_STATE_POWER_ERROR: _ClassVar[PowerState]

class MotionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MOTION_STATE_STANDSTILL: _ClassVar[MotionState]
    MOTION_STATE_ACCELERATING: _ClassVar[MotionState]
    MOTION_STATE_CONSTANT_VELOCITY: _ClassVar[MotionState]
    MOTION_STATE_DECELERATING: _ClassVar[MotionState]
    MOTION_STATE_STOPPING: _ClassVar[MotionState]
    MOTION_STATE_EMERGENCY_STOP: _ClassVar[MotionState]
    MOTION_STATE_HOMING: _ClassVar[MotionState]
    MOTION_STATE_GEAR_ASSIST_MOTION: _ClassVar[MotionState]
    MOTION_STATE_MOTION_ERROR: _ClassVar[MotionState]

class OperationalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATIONAL_MODE_POSITION: _ClassVar[OperationalMode]
    OPERATIONAL_MODE_VELOCITY: _ClassVar[OperationalMode]
    OPERATIONAL_MODE_TORQUE: _ClassVar[OperationalMode]
    OPERATIONAL_MODE_MANUAL: _ClassVar[OperationalMode]
    OPERATIONAL_MODE_TEST: _ClassVar[OperationalMode]

class CouplingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUPLING_STATE_UNCOUPLED: _ClassVar[CouplingState]
    COUPLING_STATE_MASTER: _ClassVar[CouplingState]
    COUPLING_STATE_SLAVE_COUPLED: _ClassVar[CouplingState]
    COUPLING_STATE_SLAVE_MODULATED: _ClassVar[CouplingState]
    COUPLING_STATE_WAITING_SYNC: _ClassVar[CouplingState]
    COUPLING_STATE_SYNCHRONIZED: _ClassVar[CouplingState]
    COUPLING_STATE_SYNC_LOST: _ClassVar[CouplingState]
    COUPLING_STATE_COUPLING: _ClassVar[CouplingState]
    COUPLING_STATE_DECOUPLING: _ClassVar[CouplingState]

class GearboxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GEARBOX_STATE_NO_GEARBOX: _ClassVar[GearboxState]
    GEARBOX_STATE_GEAR1: _ClassVar[GearboxState]
    GEARBOX_STATE_GEAR2: _ClassVar[GearboxState]
    GEARBOX_STATE_GEAR3: _ClassVar[GearboxState]
    GEARBOX_STATE_GEAR4: _ClassVar[GearboxState]
    GEARBOX_STATE_NEUTRAL: _ClassVar[GearboxState]
    GEARBOX_STATE_SHIFTING: _ClassVar[GearboxState]
    GEARBOX_STATE_GEARBOX_ERROR: _ClassVar[GearboxState]
    GEARBOX_STATE_UNKNOWN: _ClassVar[GearboxState]

class LoadingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOADING_STATE_PRODUCTION: _ClassVar[LoadingState]
    LOADING_STATE_READY_FOR_LOADING: _ClassVar[LoadingState]
    LOADING_STATE_LOADING_BLOCKED: _ClassVar[LoadingState]
    LOADING_STATE_LOADING_MANUAL_ALLOWED: _ClassVar[LoadingState]

class SafeStopCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAFE_STOP_CATEGORY_NONE: _ClassVar[SafeStopCategory]
    SAFE_STOP_CATEGORY_STO: _ClassVar[SafeStopCategory]
    SAFE_STOP_CATEGORY_SS1: _ClassVar[SafeStopCategory]
    SAFE_STOP_CATEGORY_SS2: _ClassVar[SafeStopCategory]

class CommandSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_SOURCE_NONE: _ClassVar[CommandSource]
    COMMAND_SOURCE_RE: _ClassVar[CommandSource]
    COMMAND_SOURCE_RPC: _ClassVar[CommandSource]

class ReState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RE_STATE_IDLE: _ClassVar[ReState]
    RE_STATE_LOADED: _ClassVar[ReState]
    RE_STATE_RUNNING: _ClassVar[ReState]
    RE_STATE_PAUSED: _ClassVar[ReState]
    RE_STATE_STOPPING: _ClassVar[ReState]
    RE_STATE_COMPLETED: _ClassVar[ReState]
    RE_STATE_ABORTED: _ClassVar[ReState]
    RE_STATE_ERROR: _ClassVar[ReState]

class StepResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_RESULT_NONE: _ClassVar[StepResult]
    STEP_RESULT_RUNNING: _ClassVar[StepResult]
    STEP_RESULT_OK: _ClassVar[StepResult]
    STEP_RESULT_FAILED: _ClassVar[StepResult]
    STEP_RESULT_SKIPPED: _ClassVar[StepResult]

class DriverState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIVER_STATE_OFFLINE: _ClassVar[DriverState]
    DRIVER_STATE_INIT: _ClassVar[DriverState]
    DRIVER_STATE_READY: _ClassVar[DriverState]
    DRIVER_STATE_ENABLED: _ClassVar[DriverState]
    DRIVER_STATE_FAULT: _ClassVar[DriverState]
    DRIVER_STATE_DEGRADED: _ClassVar[DriverState]

class ResultCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_CODE_OK: _ClassVar[ResultCode]
    RESULT_CODE_INVALID_ARGUMENT: _ClassVar[ResultCode]
    RESULT_CODE_STATE_FORBIDS: _ClassVar[ResultCode]
    RESULT_CODE_IO_ROLE_OWNED: _ClassVar[ResultCode]
    RESULT_CODE_BUSY: _ClassVar[ResultCode]
    RESULT_CODE_LOCKED: _ClassVar[ResultCode]
    RESULT_CODE_UNKNOWN_COMMAND: _ClassVar[ResultCode]
    RESULT_CODE_NOT_EXECUTED: _ClassVar[ResultCode]
    RESULT_CODE_SAFETY: _ClassVar[ResultCode]
    RESULT_CODE_TIMEOUT: _ClassVar[ResultCode]
    RESULT_CODE_INTERNAL: _ClassVar[ResultCode]
    RESULT_CODE_NOT_FOUND: _ClassVar[ResultCode]
MACHINE_STATE_STOPPED: MachineState
MACHINE_STATE_STARTING: MachineState
MACHINE_STATE_IDLE: MachineState
MACHINE_STATE_MANUAL: MachineState
MACHINE_STATE_ACTIVE: MachineState
MACHINE_STATE_SERVICE: MachineState
MACHINE_STATE_SYSTEM_ERROR: MachineState
SAFETY_STATE_SAFE: SafetyState
SAFETY_STATE_SAFE_REDUCED_SPEED: SafetyState
SAFETY_STATE_SAFETY_STOP: SafetyState
POWER_STATE_POWER_OFF: PowerState
POWER_STATE_POWERING_ON: PowerState
POWER_STATE_STANDBY: PowerState
POWER_STATE_MOTION: PowerState
POWER_STATE_POWERING_OFF: PowerState
POWER_STATE_NO_BRAKE: PowerState
POWER_STATE_POWER_ERROR: PowerState
MOTION_STATE_STANDSTILL: MotionState
MOTION_STATE_ACCELERATING: MotionState
MOTION_STATE_CONSTANT_VELOCITY: MotionState
MOTION_STATE_DECELERATING: MotionState
MOTION_STATE_STOPPING: MotionState
MOTION_STATE_EMERGENCY_STOP: MotionState
MOTION_STATE_HOMING: MotionState
MOTION_STATE_GEAR_ASSIST_MOTION: MotionState
MOTION_STATE_MOTION_ERROR: MotionState
OPERATIONAL_MODE_POSITION: OperationalMode
OPERATIONAL_MODE_VELOCITY: OperationalMode
OPERATIONAL_MODE_TORQUE: OperationalMode
OPERATIONAL_MODE_MANUAL: OperationalMode
OPERATIONAL_MODE_TEST: OperationalMode
COUPLING_STATE_UNCOUPLED: CouplingState
COUPLING_STATE_MASTER: CouplingState
COUPLING_STATE_SLAVE_COUPLED: CouplingState
COUPLING_STATE_SLAVE_MODULATED: CouplingState
COUPLING_STATE_WAITING_SYNC: CouplingState
COUPLING_STATE_SYNCHRONIZED: CouplingState
COUPLING_STATE_SYNC_LOST: CouplingState
COUPLING_STATE_COUPLING: CouplingState
COUPLING_STATE_DECOUPLING: CouplingState
GEARBOX_STATE_NO_GEARBOX: GearboxState
GEARBOX_STATE_GEAR1: GearboxState
GEARBOX_STATE_GEAR2: GearboxState
GEARBOX_STATE_GEAR3: GearboxState
GEARBOX_STATE_GEAR4: GearboxState
GEARBOX_STATE_NEUTRAL: GearboxState
GEARBOX_STATE_SHIFTING: GearboxState
GEARBOX_STATE_GEARBOX_ERROR: GearboxState
GEARBOX_STATE_UNKNOWN: GearboxState
LOADING_STATE_PRODUCTION: LoadingState
LOADING_STATE_READY_FOR_LOADING: LoadingState
LOADING_STATE_LOADING_BLOCKED: LoadingState
LOADING_STATE_LOADING_MANUAL_ALLOWED: LoadingState
SAFE_STOP_CATEGORY_NONE: SafeStopCategory
SAFE_STOP_CATEGORY_STO: SafeStopCategory
SAFE_STOP_CATEGORY_SS1: SafeStopCategory
SAFE_STOP_CATEGORY_SS2: SafeStopCategory
COMMAND_SOURCE_NONE: CommandSource
COMMAND_SOURCE_RE: CommandSource
COMMAND_SOURCE_RPC: CommandSource
RE_STATE_IDLE: ReState
RE_STATE_LOADED: ReState
RE_STATE_RUNNING: ReState
RE_STATE_PAUSED: ReState
RE_STATE_STOPPING: ReState
RE_STATE_COMPLETED: ReState
RE_STATE_ABORTED: ReState
RE_STATE_ERROR: ReState
STEP_RESULT_NONE: StepResult
STEP_RESULT_RUNNING: StepResult
STEP_RESULT_OK: StepResult
STEP_RESULT_FAILED: StepResult
STEP_RESULT_SKIPPED: StepResult
DRIVER_STATE_OFFLINE: DriverState
DRIVER_STATE_INIT: DriverState
DRIVER_STATE_READY: DriverState
DRIVER_STATE_ENABLED: DriverState
DRIVER_STATE_FAULT: DriverState
DRIVER_STATE_DEGRADED: DriverState
RESULT_CODE_OK: ResultCode
RESULT_CODE_INVALID_ARGUMENT: ResultCode
RESULT_CODE_STATE_FORBIDS: ResultCode
RESULT_CODE_IO_ROLE_OWNED: ResultCode
RESULT_CODE_BUSY: ResultCode
RESULT_CODE_LOCKED: ResultCode
RESULT_CODE_UNKNOWN_COMMAND: ResultCode
RESULT_CODE_NOT_EXECUTED: ResultCode
RESULT_CODE_SAFETY: ResultCode
RESULT_CODE_TIMEOUT: ResultCode
RESULT_CODE_INTERNAL: ResultCode
RESULT_CODE_NOT_FOUND: ResultCode

class CommandReply(_message.Message):
    __slots__ = ("request_id", "result", "message", "round_trip_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    result: ResultCode
    message: str
    round_trip_ms: float
    def __init__(self, request_id: _Optional[int] = ..., result: _Optional[_Union[ResultCode, str]] = ..., message: _Optional[str] = ..., round_trip_ms: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("rate_hz",)
    RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    rate_hz: float
    def __init__(self, rate_hz: _Optional[float] = ...) -> None: ...
