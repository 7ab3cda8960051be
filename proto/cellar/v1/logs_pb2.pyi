from proto.cellar.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_CHANNEL_UNSPECIFIED: _ClassVar[LogChannel]
    LOG_CHANNEL_STDOUT: _ClassVar[LogChannel]
    LOG_CHANNEL_STDERR: _ClassVar[LogChannel]
    LOG_CHANNEL_EXIT: _ClassVar[LogChannel]
    LOG_CHANNEL_LOST: _ClassVar[LogChannel]
LOG_CHANNEL_UNSPECIFIED: LogChannel
LOG_CHANNEL_STDOUT: LogChannel
LOG_CHANNEL_STDERR: LogChannel
LOG_CHANNEL_EXIT: LogChannel
LOG_CHANNEL_LOST: LogChannel

class PurgeLogsRequest(_message.Message):
    __slots__ = ("cell_name", "executable_name")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    executable_name: str
    def __init__(self, cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ...) -> None: ...

class PurgeLogsResponse(_message.Message):
    __slots__ = ("runs", "bytes")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    runs: int
    bytes: int
    def __init__(self, runs: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class ReadLogsRequest(_message.Message):
    __slots__ = ("cell_name", "executable_name", "channels", "tail", "since_ns", "until_ns", "cursor", "follow", "limit_bytes", "run", "packed")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_NS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    executable_name: str
    channels: _containers.RepeatedScalarFieldContainer[LogChannel]
    tail: int
    since_ns: int
    until_ns: int
    cursor: str
    follow: bool
    limit_bytes: int
    run: int
    packed: bool
    def __init__(self, cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ..., channels: _Optional[_Iterable[_Union[LogChannel, str]]] = ..., tail: _Optional[int] = ..., since_ns: _Optional[int] = ..., until_ns: _Optional[int] = ..., cursor: _Optional[str] = ..., follow: _Optional[bool] = ..., limit_bytes: _Optional[int] = ..., run: _Optional[int] = ..., packed: _Optional[bool] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("cell_name", "executable_name", "run", "seq", "timestamp_ns", "channel", "data", "partial", "lost_count", "exit")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    LOST_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    executable_name: str
    run: int
    seq: int
    timestamp_ns: int
    channel: LogChannel
    data: bytes
    partial: bool
    lost_count: int
    exit: _types_pb2.ExitStatus
    def __init__(self, cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ..., run: _Optional[int] = ..., seq: _Optional[int] = ..., timestamp_ns: _Optional[int] = ..., channel: _Optional[_Union[LogChannel, str]] = ..., data: _Optional[bytes] = ..., partial: _Optional[bool] = ..., lost_count: _Optional[int] = ..., exit: _Optional[_Union[_types_pb2.ExitStatus, _Mapping]] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("records", "cursor", "packed", "executable_name", "run")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    cursor: str
    packed: bytes
    executable_name: str
    run: int
    def __init__(self, records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., cursor: _Optional[str] = ..., packed: _Optional[bytes] = ..., executable_name: _Optional[str] = ..., run: _Optional[int] = ...) -> None: ...
