from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthCheckReq(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckRes(_message.Message):
    __slots__ = ("status",)
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthCheckRes.ServingStatus]
        SERVING: _ClassVar[HealthCheckRes.ServingStatus]
        NOT_SERVING: _ClassVar[HealthCheckRes.ServingStatus]
    UNKNOWN: HealthCheckRes.ServingStatus
    SERVING: HealthCheckRes.ServingStatus
    NOT_SERVING: HealthCheckRes.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: HealthCheckRes.ServingStatus
    def __init__(self, status: _Optional[_Union[HealthCheckRes.ServingStatus, str]] = ...) -> None: ...
