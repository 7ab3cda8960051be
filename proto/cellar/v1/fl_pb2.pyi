from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlClient(_message.Message):
    __slots__ = ("client_id", "name", "online", "connected", "last_seen_ns", "first_seen_ns", "version", "queued")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    name: str
    online: bool
    connected: bool
    last_seen_ns: int
    first_seen_ns: int
    version: str
    queued: int
    def __init__(self, client_id: _Optional[str] = ..., name: _Optional[str] = ..., online: _Optional[bool] = ..., connected: _Optional[bool] = ..., last_seen_ns: _Optional[int] = ..., first_seen_ns: _Optional[int] = ..., version: _Optional[str] = ..., queued: _Optional[int] = ...) -> None: ...

class FlTask(_message.Message):
    __slots__ = ("correlation_id", "client_id", "type", "model_id", "data", "session_id", "round_id", "status", "created_ns", "started_ns", "finished_ns", "timeout_s", "cancel_requested", "response", "seq")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    STARTED_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_NS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    client_id: str
    type: str
    model_id: str
    data: str
    session_id: str
    round_id: str
    status: str
    created_ns: int
    started_ns: int
    finished_ns: int
    timeout_s: float
    cancel_requested: bool
    response: str
    seq: int
    def __init__(self, correlation_id: _Optional[str] = ..., client_id: _Optional[str] = ..., type: _Optional[str] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., session_id: _Optional[str] = ..., round_id: _Optional[str] = ..., status: _Optional[str] = ..., created_ns: _Optional[int] = ..., started_ns: _Optional[int] = ..., finished_ns: _Optional[int] = ..., timeout_s: _Optional[float] = ..., cancel_requested: _Optional[bool] = ..., response: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class PushTaskRequest(_message.Message):
    __slots__ = ("client_id", "type", "model_id", "data", "session_id", "round_id", "timeout_s")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    type: str
    model_id: str
    data: str
    session_id: str
    round_id: str
    timeout_s: float
    def __init__(self, client_id: _Optional[str] = ..., type: _Optional[str] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., session_id: _Optional[str] = ..., round_id: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("correlation_id",)
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    def __init__(self, correlation_id: _Optional[str] = ...) -> None: ...

class ListFlClientsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFlClientsResponse(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[FlClient]
    def __init__(self, clients: _Optional[_Iterable[_Union[FlClient, _Mapping]]] = ...) -> None: ...

class ListFlTasksRequest(_message.Message):
    __slots__ = ("client_id", "active_only")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    active_only: bool
    def __init__(self, client_id: _Optional[str] = ..., active_only: _Optional[bool] = ...) -> None: ...

class ListFlTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[FlTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[FlTask, _Mapping]]] = ...) -> None: ...

class FlRecord(_message.Message):
    __slots__ = ("id", "kind", "client_id", "correlation_id", "model_id", "body", "ts_ns")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    client_id: str
    correlation_id: str
    model_id: str
    body: str
    ts_ns: int
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., client_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., model_id: _Optional[str] = ..., body: _Optional[str] = ..., ts_ns: _Optional[int] = ...) -> None: ...

class ListFlRecordsRequest(_message.Message):
    __slots__ = ("kind", "client_id", "after_id", "limit")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    client_id: str
    after_id: int
    limit: int
    def __init__(self, kind: _Optional[str] = ..., client_id: _Optional[str] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListFlRecordsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[FlRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[FlRecord, _Mapping]]] = ...) -> None: ...

class FlModel(_message.Message):
    __slots__ = ("model_id", "sha256", "size", "created_ns", "last_used_ns", "arriving")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_NS_FIELD_NUMBER: _ClassVar[int]
    ARRIVING_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    sha256: str
    size: int
    created_ns: int
    last_used_ns: int
    arriving: bool
    def __init__(self, model_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., created_ns: _Optional[int] = ..., last_used_ns: _Optional[int] = ..., arriving: _Optional[bool] = ...) -> None: ...

class ListFlModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFlModelsResponse(_message.Message):
    __slots__ = ("models", "used_bytes", "max_bytes")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[FlModel]
    used_bytes: int
    max_bytes: int
    def __init__(self, models: _Optional[_Iterable[_Union[FlModel, _Mapping]]] = ..., used_bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...
