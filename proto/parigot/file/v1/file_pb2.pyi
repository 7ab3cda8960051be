import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from proto.parigot.protosupport.v1 import protosupport_pb2 as _protosupport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileErr(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoError: _ClassVar[FileErr]
    DispatchError: _ClassVar[FileErr]
    UnmarshalError: _ClassVar[FileErr]
    MarshalError: _ClassVar[FileErr]
    InvalidPathError: _ClassVar[FileErr]
    AlreadyInUseError: _ClassVar[FileErr]
    NotExistError: _ClassVar[FileErr]
    FileClosedError: _ClassVar[FileErr]
    EOFError: _ClassVar[FileErr]
    ReadError: _ClassVar[FileErr]
    WriteError: _ClassVar[FileErr]
    OpenError: _ClassVar[FileErr]
    DeleteError: _ClassVar[FileErr]
    CreateError: _ClassVar[FileErr]
    NoDataFoundError: _ClassVar[FileErr]
    LargeBufError: _ClassVar[FileErr]
    InternalError: _ClassVar[FileErr]
NoError: FileErr
DispatchError: FileErr
UnmarshalError: FileErr
MarshalError: FileErr
InvalidPathError: FileErr
AlreadyInUseError: FileErr
NotExistError: FileErr
FileClosedError: FileErr
EOFError: FileErr
ReadError: FileErr
WriteError: FileErr
OpenError: FileErr
DeleteError: FileErr
CreateError: FileErr
NoDataFoundError: FileErr
LargeBufError: FileErr
InternalError: FileErr

class CreateRequest(_message.Message):
    __slots__ = ("path", "content")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: str
    def __init__(self, path: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class OpenRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class CloseRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class CreateResponse(_message.Message):
    __slots__ = ("path", "id", "truncated")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    path: str
    id: _protosupport_pb2.IdRaw
    truncated: bool
    def __init__(self, path: _Optional[str] = ..., id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class OpenResponse(_message.Message):
    __slots__ = ("path", "id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    id: _protosupport_pb2.IdRaw
    def __init__(self, path: _Optional[str] = ..., id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class CloseResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LoadTestDataRequest(_message.Message):
    __slots__ = ("dir_path", "mount_location", "return_on_fail")
    DIR_PATH_FIELD_NUMBER: _ClassVar[int]
    MOUNT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    RETURN_ON_FAIL_FIELD_NUMBER: _ClassVar[int]
    dir_path: str
    mount_location: str
    return_on_fail: bool
    def __init__(self, dir_path: _Optional[str] = ..., mount_location: _Optional[str] = ..., return_on_fail: _Optional[bool] = ...) -> None: ...

class LoadTestDataResponse(_message.Message):
    __slots__ = ("error_path",)
    ERROR_PATH_FIELD_NUMBER: _ClassVar[int]
    error_path: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, error_path: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("id", "buf")
    ID_FIELD_NUMBER: _ClassVar[int]
    BUF_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    buf: bytes
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., buf: _Optional[bytes] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("id", "num_read", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUM_READ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    num_read: int
    data: bytes
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., num_read: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("id", "buf")
    ID_FIELD_NUMBER: _ClassVar[int]
    BUF_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    buf: bytes
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., buf: _Optional[bytes] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("id", "num_write")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUM_WRITE_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    num_write: int
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., num_write: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("path", "id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    id: _protosupport_pb2.IdRaw
    def __init__(self, path: _Optional[str] = ..., id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("path", "is_dir", "size", "create_time", "mod_time")
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MOD_TIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    is_dir: bool
    size: int
    create_time: _timestamp_pb2.Timestamp
    mod_time: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., is_dir: _Optional[bool] = ..., size: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mod_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("file_info", "entries")
    FILE_INFO_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    file_info: FileInfo
    entries: _containers.RepeatedCompositeFieldContainer[FileInfo]
    def __init__(self, file_info: _Optional[_Union[FileInfo, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ...) -> None: ...
