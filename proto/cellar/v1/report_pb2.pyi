from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportCell(_message.Message):
    __slots__ = ("name", "state", "cpu_max_millicores", "memory_max_bytes", "pids_max", "executables")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPU_MAX_MILLICORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_MAX_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    cpu_max_millicores: int
    memory_max_bytes: int
    pids_max: int
    executables: _containers.RepeatedCompositeFieldContainer[ReportExecutable]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., cpu_max_millicores: _Optional[int] = ..., memory_max_bytes: _Optional[int] = ..., pids_max: _Optional[int] = ..., executables: _Optional[_Iterable[_Union[ReportExecutable, _Mapping]]] = ...) -> None: ...

class ReportExecutable(_message.Message):
    __slots__ = ("name", "state", "pid", "restarts", "health", "exit", "started_at_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    pid: int
    restarts: int
    health: str
    exit: str
    started_at_ns: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., health: _Optional[str] = ..., exit: _Optional[str] = ..., started_at_ns: _Optional[int] = ...) -> None: ...

class ReportUsage(_message.Message):
    __slots__ = ("at_ns", "cpu_usage_us", "memory_used_bytes", "cells")
    AT_NS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_US_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    at_ns: int
    cpu_usage_us: int
    memory_used_bytes: int
    cells: _containers.RepeatedCompositeFieldContainer[ReportCellUsage]
    def __init__(self, at_ns: _Optional[int] = ..., cpu_usage_us: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[ReportCellUsage, _Mapping]]] = ...) -> None: ...

class ReportCellUsage(_message.Message):
    __slots__ = ("cell", "cpu_usage_us", "memory_bytes")
    CELL_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_US_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    cell: str
    cpu_usage_us: int
    memory_bytes: int
    def __init__(self, cell: _Optional[str] = ..., cpu_usage_us: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...
