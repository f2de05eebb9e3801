from grpc_bridge.protos.evo.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetIoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DigitalPoint(_message.Message):
    __slots__ = ("pin", "value", "name", "role", "group", "live")
    PIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    pin: int
    value: bool
    name: str
    role: str
    group: str
    live: bool
    def __init__(self, pin: _Optional[int] = ..., value: _Optional[bool] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., group: _Optional[str] = ..., live: _Optional[bool] = ...) -> None: ...

class AnalogPoint(_message.Message):
    __slots__ = ("pin", "value", "name", "role", "group", "unit", "min", "max", "live")
    PIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    pin: int
    value: float
    name: str
    role: str
    group: str
    unit: str
    min: float
    max: float
    live: bool
    def __init__(self, pin: _Optional[int] = ..., value: _Optional[float] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., group: _Optional[str] = ..., unit: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., live: _Optional[bool] = ...) -> None: ...

class IoStatus(_message.Message):
    __slots__ = ("digital_inputs", "digital_outputs", "analog_inputs", "analog_outputs", "hal_heartbeat_age_s", "hal_ok", "cu_connected", "sample_seq", "sampled_at_unix_ns")
    DIGITAL_INPUTS_FIELD_NUMBER: _ClassVar[int]
    DIGITAL_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ANALOG_INPUTS_FIELD_NUMBER: _ClassVar[int]
    ANALOG_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    HAL_HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    HAL_OK_FIELD_NUMBER: _ClassVar[int]
    CU_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    digital_inputs: _containers.RepeatedCompositeFieldContainer[DigitalPoint]
    digital_outputs: _containers.RepeatedCompositeFieldContainer[DigitalPoint]
    analog_inputs: _containers.RepeatedCompositeFieldContainer[AnalogPoint]
    analog_outputs: _containers.RepeatedCompositeFieldContainer[AnalogPoint]
    hal_heartbeat_age_s: float
    hal_ok: bool
    cu_connected: bool
    sample_seq: int
    sampled_at_unix_ns: int
    def __init__(self, digital_inputs: _Optional[_Iterable[_Union[DigitalPoint, _Mapping]]] = ..., digital_outputs: _Optional[_Iterable[_Union[DigitalPoint, _Mapping]]] = ..., analog_inputs: _Optional[_Iterable[_Union[AnalogPoint, _Mapping]]] = ..., analog_outputs: _Optional[_Iterable[_Union[AnalogPoint, _Mapping]]] = ..., hal_heartbeat_age_s: _Optional[float] = ..., hal_ok: _Optional[bool] = ..., cu_connected: _Optional[bool] = ..., sample_seq: _Optional[int] = ..., sampled_at_unix_ns: _Optional[int] = ...) -> None: ...

class SetDigitalOutputRequest(_message.Message):
    __slots__ = ("pin", "value")
    PIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    pin: int
    value: bool
    def __init__(self, pin: _Optional[int] = ..., value: _Optional[bool] = ...) -> None: ...

class SetAnalogOutputRequest(_message.Message):
    __slots__ = ("pin", "value")
    PIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    pin: int
    value: float
    def __init__(self, pin: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
