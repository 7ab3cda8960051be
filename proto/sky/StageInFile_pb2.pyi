from proto.sky import Common_pb2 as _Common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageInFilesRequest(_message.Message):
    __slots__ = ("job", "files")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    job: _Common_pb2.JobId
    files: _containers.RepeatedCompositeFieldContainer[_Common_pb2.FileId]
    def __init__(self, job: _Optional[_Union[_Common_pb2.JobId, _Mapping]] = ..., files: _Optional[_Iterable[_Union[_Common_pb2.FileId, _Mapping]]] = ...) -> None: ...

class StagedFile(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: _Common_pb2.FileId
    def __init__(self, file: _Optional[_Union[_Common_pb2.FileId, _Mapping]] = ...) -> None: ...

class StageInFilesResponse(_message.Message):
    __slots__ = ("success_files",)
    SUCCESS_FILES_FIELD_NUMBER: _ClassVar[int]
    success_files: _containers.RepeatedCompositeFieldContainer[StagedFile]
    def __init__(self, success_files: _Optional[_Iterable[_Union[StagedFile, _Mapping]]] = ...) -> None: ...
