from grpc_bridge.protos.evo.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListRecipesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecipeInfo(_message.Message):
    __slots__ = ("name", "description", "step_count", "file", "valid", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STEP_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    step_count: int
    file: str
    valid: bool
    error: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., step_count: _Optional[int] = ..., file: _Optional[str] = ..., valid: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ListRecipesResponse(_message.Message):
    __slots__ = ("recipes", "directory")
    RECIPES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    recipes: _containers.RepeatedCompositeFieldContainer[RecipeInfo]
    directory: str
    def __init__(self, recipes: _Optional[_Iterable[_Union[RecipeInfo, _Mapping]]] = ..., directory: _Optional[str] = ...) -> None: ...

class GetRecipeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadRecipeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StartRecipeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseRecipeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeRecipeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AbortRecipeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecipeStatus(_message.Message):
    __slots__ = ("state", "step_result", "current_step", "step_count", "error_code", "cycle_count", "progress", "program_name", "step_kind", "message", "re_heartbeat_age_s", "re_ok", "sample_seq", "sampled_at_unix_ns")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_RESULT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    STEP_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    CYCLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RE_HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    RE_OK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.ReState
    step_result: _types_pb2.StepResult
    current_step: int
    step_count: int
    error_code: _types_pb2.ResultCode
    cycle_count: int
    progress: float
    program_name: str
    step_kind: str
    message: str
    re_heartbeat_age_s: float
    re_ok: bool
    sample_seq: int
    sampled_at_unix_ns: int
    def __init__(self, state: _Optional[_Union[_types_pb2.ReState, str]] = ..., step_result: _Optional[_Union[_types_pb2.StepResult, str]] = ..., current_step: _Optional[int] = ..., step_count: _Optional[int] = ..., error_code: _Optional[_Union[_types_pb2.ResultCode, str]] = ..., cycle_count: _Optional[int] = ..., progress: _Optional[float] = ..., program_name: _Optional[str] = ..., step_kind: _Optional[str] = ..., message: _Optional[str] = ..., re_heartbeat_age_s: _Optional[float] = ..., re_ok: _Optional[bool] = ..., sample_seq: _Optional[int] = ..., sampled_at_unix_ns: _Optional[int] = ...) -> None: ...
