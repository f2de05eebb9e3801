from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModuleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODULE_STATE_UNSPECIFIED: _ClassVar[ModuleState]
    MODULE_STATE_STOPPED: _ClassVar[ModuleState]
    MODULE_STATE_STARTING: _ClassVar[ModuleState]
    MODULE_STATE_RUNNING: _ClassVar[ModuleState]
    MODULE_STATE_STOPPING: _ClassVar[ModuleState]
    MODULE_STATE_BACKOFF: _ClassVar[ModuleState]
    MODULE_STATE_FAILED: _ClassVar[ModuleState]
    MODULE_STATE_DISABLED: _ClassVar[ModuleState]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_SNAPSHOT: _ClassVar[EventKind]
    EVENT_KIND_STATE: _ClassVar[EventKind]
    EVENT_KIND_STATUS: _ClassVar[EventKind]
MODULE_STATE_UNSPECIFIED: ModuleState
MODULE_STATE_STOPPED: ModuleState
MODULE_STATE_STARTING: ModuleState
MODULE_STATE_RUNNING: ModuleState
MODULE_STATE_STOPPING: ModuleState
MODULE_STATE_BACKOFF: ModuleState
MODULE_STATE_FAILED: ModuleState
MODULE_STATE_DISABLED: ModuleState
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_SNAPSHOT: EventKind
EVENT_KIND_STATE: EventKind
EVENT_KIND_STATUS: EventKind

class ModuleInfo(_message.Message):
    __slots__ = ("name", "state", "pid", "restarts", "uptime_s", "last_exit_code", "last_exit_signal", "last_exit", "cpu_percent", "rss_bytes", "heartbeat_age_s", "watchdog_age_s", "status", "reason", "enabled", "since_unix", "kind", "standby_pid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    WATCHDOG_AGE_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STANDBY_PID_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ModuleState
    pid: int
    restarts: int
    uptime_s: float
    last_exit_code: int
    last_exit_signal: int
    last_exit: str
    cpu_percent: float
    rss_bytes: int
    heartbeat_age_s: float
    watchdog_age_s: float
    status: str
    reason: str
    enabled: bool
    since_unix: float
    kind: str
    standby_pid: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ModuleState, str]] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., uptime_s: _Optional[float] = ..., last_exit_code: _Optional[int] = ..., last_exit_signal: _Optional[int] = ..., last_exit: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., heartbeat_age_s: _Optional[float] = ..., watchdog_age_s: _Optional[float] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., enabled: _Optional[bool] = ..., since_unix: _Optional[float] = ..., kind: _Optional[str] = ..., standby_pid: _Optional[int] = ...) -> None: ...

class ListModulesRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModulesResponse(_message.Message):
    __slots__ = ("modules", "watchdog_pid", "watchdog_uptime_s", "instance", "config_dir", "run_dir", "degraded")
    MODULES_FIELD_NUMBER: _ClassVar[int]
    WATCHDOG_PID_FIELD_NUMBER: _ClassVar[int]
    WATCHDOG_UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIR_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    modules: _containers.RepeatedCompositeFieldContainer[ModuleInfo]
    watchdog_pid: int
    watchdog_uptime_s: float
    instance: str
    config_dir: str
    run_dir: str
    degraded: bool
    def __init__(self, modules: _Optional[_Iterable[_Union[ModuleInfo, _Mapping]]] = ..., watchdog_pid: _Optional[int] = ..., watchdog_uptime_s: _Optional[float] = ..., instance: _Optional[str] = ..., config_dir: _Optional[str] = ..., run_dir: _Optional[str] = ..., degraded: _Optional[bool] = ...) -> None: ...

class ModuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModuleReply(_message.Message):
    __slots__ = ("module", "message")
    MODULE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    module: ModuleInfo
    message: str
    def __init__(self, module: _Optional[_Union[ModuleInfo, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class ModuleEvent(_message.Message):
    __slots__ = ("timestamp_unix", "name", "kind", "state", "previous_state", "pid", "restarts", "reason", "last_exit", "status")
    TIMESTAMP_UNIX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    timestamp_unix: float
    name: str
    kind: EventKind
    state: ModuleState
    previous_state: ModuleState
    pid: int
    restarts: int
    reason: str
    last_exit: str
    status: str
    def __init__(self, timestamp_unix: _Optional[float] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., state: _Optional[_Union[ModuleState, str]] = ..., previous_state: _Optional[_Union[ModuleState, str]] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., reason: _Optional[str] = ..., last_exit: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...
