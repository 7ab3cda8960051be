from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StagedJobFile(_message.Message):
    __slots__ = ("name", "file_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    file_id: str
    def __init__(self, name: _Optional[str] = ..., file_id: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "phase", "code", "owner", "cell_name", "executable_name", "work_dir", "argv", "staged", "exit_code", "signal", "oom_killed", "error", "created_at_ns", "started_at_ns", "ended_at_ns", "python_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORK_DIR_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    phase: str
    code: str
    owner: str
    cell_name: str
    executable_name: str
    work_dir: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    staged: _containers.RepeatedCompositeFieldContainer[StagedJobFile]
    exit_code: int
    signal: int
    oom_killed: bool
    error: str
    created_at_ns: int
    started_at_ns: int
    ended_at_ns: int
    python_version: str
    def __init__(self, job_id: _Optional[str] = ..., phase: _Optional[str] = ..., code: _Optional[str] = ..., owner: _Optional[str] = ..., cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ..., work_dir: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., staged: _Optional[_Iterable[_Union[StagedJobFile, _Mapping]]] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., oom_killed: _Optional[bool] = ..., error: _Optional[str] = ..., created_at_ns: _Optional[int] = ..., started_at_ns: _Optional[int] = ..., ended_at_ns: _Optional[int] = ..., python_version: _Optional[str] = ...) -> None: ...
