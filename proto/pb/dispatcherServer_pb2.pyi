from proto.pb import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterReq(_message.Message):
    __slots__ = ("certificate", "port")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    port: int
    def __init__(self, certificate: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class RegisterRes(_message.Message):
    __slots__ = ("status",)
    class RequestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[RegisterRes.RequestStatus]
        REGISTERED: _ClassVar[RegisterRes.RequestStatus]
        NOT_REGISTERED: _ClassVar[RegisterRes.RequestStatus]
    UNKNOWN: RegisterRes.RequestStatus
    REGISTERED: RegisterRes.RequestStatus
    NOT_REGISTERED: RegisterRes.RequestStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: RegisterRes.RequestStatus
    def __init__(self, status: _Optional[_Union[RegisterRes.RequestStatus, str]] = ...) -> None: ...

class GetNextServerReq(_message.Message):
    __slots__ = ("ip", "certificate")
    IP_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    ip: str
    certificate: bytes
    def __init__(self, ip: _Optional[str] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class GetNextServerRes(_message.Message):
    __slots__ = ("status",)
    class RequestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[GetNextServerRes.RequestStatus]
        ACCEPTED: _ClassVar[GetNextServerRes.RequestStatus]
        NOT_ACCEPTED: _ClassVar[GetNextServerRes.RequestStatus]
    UNKNOWN: GetNextServerRes.RequestStatus
    ACCEPTED: GetNextServerRes.RequestStatus
    NOT_ACCEPTED: GetNextServerRes.RequestStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: GetNextServerRes.RequestStatus
    def __init__(self, status: _Optional[_Union[GetNextServerRes.RequestStatus, str]] = ...) -> None: ...
