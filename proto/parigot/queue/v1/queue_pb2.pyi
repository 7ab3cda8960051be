import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from proto.parigot.protosupport.v1 import protosupport_pb2 as _protosupport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueueErr(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoError: _ClassVar[QueueErr]
    DispatchError: _ClassVar[QueueErr]
    UnmarshalError: _ClassVar[QueueErr]
    MarshalError: _ClassVar[QueueErr]
    InvalidName: _ClassVar[QueueErr]
    InternalError: _ClassVar[QueueErr]
    NoPayload: _ClassVar[QueueErr]
    NotFound: _ClassVar[QueueErr]
    AlreadyExists: _ClassVar[QueueErr]
    UnmarshalFailed: _ClassVar[QueueErr]
NoError: QueueErr
DispatchError: QueueErr
UnmarshalError: QueueErr
MarshalError: QueueErr
InvalidName: QueueErr
InternalError: QueueErr
NoPayload: QueueErr
NotFound: QueueErr
AlreadyExists: QueueErr
UnmarshalFailed: QueueErr

class CreateQueueRequest(_message.Message):
    __slots__ = ("queue_name", "shared")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    shared: bool
    def __init__(self, queue_name: _Optional[str] = ..., shared: _Optional[bool] = ...) -> None: ...

class CreateQueueResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("queue_name",)
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    def __init__(self, queue_name: _Optional[str] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class DeleteQueueResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ReceiveRequest(_message.Message):
    __slots__ = ("id", "message_limit")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    message_limit: int
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., message_limit: _Optional[int] = ...) -> None: ...

class ReceiveResponse(_message.Message):
    __slots__ = ("id", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    message: _containers.RepeatedCompositeFieldContainer[QueueMsg]
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., message: _Optional[_Iterable[_Union[QueueMsg, _Mapping]]] = ...) -> None: ...

class QueueMsg(_message.Message):
    __slots__ = ("id", "msg_id", "receive_count", "received", "sender", "sent", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    msg_id: _protosupport_pb2.IdRaw
    receive_count: int
    received: _timestamp_pb2.Timestamp
    sender: _any_pb2.Any
    sent: _timestamp_pb2.Timestamp
    payload: _any_pb2.Any
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., msg_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., receive_count: _Optional[int] = ..., received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sender: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., sent: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class MarkDoneRequest(_message.Message):
    __slots__ = ("id", "msg")
    ID_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    msg: _containers.RepeatedCompositeFieldContainer[_protosupport_pb2.IdRaw]
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., msg: _Optional[_Iterable[_Union[_protosupport_pb2.IdRaw, _Mapping]]] = ...) -> None: ...

class MarkDoneResponse(_message.Message):
    __slots__ = ("id", "unmodified")
    ID_FIELD_NUMBER: _ClassVar[int]
    UNMODIFIED_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    unmodified: _containers.RepeatedCompositeFieldContainer[_protosupport_pb2.IdRaw]
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., unmodified: _Optional[_Iterable[_Union[_protosupport_pb2.IdRaw, _Mapping]]] = ...) -> None: ...

class LengthRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LengthResponse(_message.Message):
    __slots__ = ("id", "length")
    ID_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    length: int
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., length: _Optional[int] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("id", "msg")
    ID_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    msg: _containers.RepeatedCompositeFieldContainer[QueueMsg]
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., msg: _Optional[_Iterable[_Union[QueueMsg, _Mapping]]] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ("succeed", "fail", "failed_on")
    SUCCEED_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    FAILED_ON_FIELD_NUMBER: _ClassVar[int]
    succeed: _containers.RepeatedCompositeFieldContainer[_protosupport_pb2.IdRaw]
    fail: _containers.RepeatedCompositeFieldContainer[QueueMsg]
    failed_on: _protosupport_pb2.IdRaw
    def __init__(self, succeed: _Optional[_Iterable[_Union[_protosupport_pb2.IdRaw, _Mapping]]] = ..., fail: _Optional[_Iterable[_Union[QueueMsg, _Mapping]]] = ..., failed_on: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...
