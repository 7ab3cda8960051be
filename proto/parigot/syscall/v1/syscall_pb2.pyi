from google.protobuf import any_pb2 as _any_pb2
from proto.parigot.protosupport.v1 import protosupport_pb2 as _protosupport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KernelErr(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoError: _ClassVar[KernelErr]
    LocateError: _ClassVar[KernelErr]
    UnmarshalFailed: _ClassVar[KernelErr]
    IdDispatch: _ClassVar[KernelErr]
    NamespaceExhausted: _ClassVar[KernelErr]
    NotFound: _ClassVar[KernelErr]
    DataTooLarge: _ClassVar[KernelErr]
    MarshalFailed: _ClassVar[KernelErr]
    CallerUnavailable: _ClassVar[KernelErr]
    ServiceAlreadyClosedOrExported: _ClassVar[KernelErr]
    ServiceAlreadyRequired: _ClassVar[KernelErr]
    DependencyCycle: _ClassVar[KernelErr]
    NetworkFailed: _ClassVar[KernelErr]
    NetworkConnectionLost: _ClassVar[KernelErr]
    DataTooSmall: _ClassVar[KernelErr]
    KernelConnectionFailed: _ClassVar[KernelErr]
    NSRetryFailed: _ClassVar[KernelErr]
    DecodeError: _ClassVar[KernelErr]
    ExecError: _ClassVar[KernelErr]
    KernelDependencyFailure: _ClassVar[KernelErr]
    AbortRequest: _ClassVar[KernelErr]
    EncodeError: _ClassVar[KernelErr]
    ClosedErr: _ClassVar[KernelErr]
    GuestReadFailed: _ClassVar[KernelErr]
    GuestWriteFailed: _ClassVar[KernelErr]
    BadId: _ClassVar[KernelErr]
    NotReady: _ClassVar[KernelErr]
    NotRequired: _ClassVar[KernelErr]
    RunTimeout: _ClassVar[KernelErr]
    ReadOneTimeout: _ClassVar[KernelErr]
    BadCallId: _ClassVar[KernelErr]

class MethodDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_DIRECTION_UNSPECIFIED: _ClassVar[MethodDirection]
    METHOD_DIRECTION_IN: _ClassVar[MethodDirection]
    METHOD_DIRECTION_OUT: _ClassVar[MethodDirection]
    METHOD_DIRECTION_BOTH: _ClassVar[MethodDirection]
NoError: KernelErr
LocateError: KernelErr
UnmarshalFailed: KernelErr
IdDispatch: KernelErr
NamespaceExhausted: KernelErr
NotFound: KernelErr
DataTooLarge: KernelErr
MarshalFailed: KernelErr
CallerUnavailable: KernelErr
ServiceAlreadyClosedOrExported: KernelErr
ServiceAlreadyRequired: KernelErr
DependencyCycle: KernelErr
NetworkFailed: KernelErr
NetworkConnectionLost: KernelErr
DataTooSmall: KernelErr
KernelConnectionFailed: KernelErr
NSRetryFailed: KernelErr
DecodeError: KernelErr
ExecError: KernelErr
KernelDependencyFailure: KernelErr
AbortRequest: KernelErr
EncodeError: KernelErr
ClosedErr: KernelErr
GuestReadFailed: KernelErr
GuestWriteFailed: KernelErr
BadId: KernelErr
NotReady: KernelErr
NotRequired: KernelErr
RunTimeout: KernelErr
ReadOneTimeout: KernelErr
BadCallId: KernelErr
METHOD_DIRECTION_UNSPECIFIED: MethodDirection
METHOD_DIRECTION_IN: MethodDirection
METHOD_DIRECTION_OUT: MethodDirection
METHOD_DIRECTION_BOTH: MethodDirection

class MethodBinding(_message.Message):
    __slots__ = ("method_name", "method_id")
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    method_name: str
    method_id: _protosupport_pb2.IdRaw
    def __init__(self, method_name: _Optional[str] = ..., method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("package_name", "service_name", "called_by")
    PACKAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    CALLED_BY_FIELD_NUMBER: _ClassVar[int]
    package_name: str
    service_name: str
    called_by: _protosupport_pb2.IdRaw
    def __init__(self, package_name: _Optional[str] = ..., service_name: _Optional[str] = ..., called_by: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("host_id", "service_id", "binding")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    host_id: _protosupport_pb2.IdRaw
    service_id: _protosupport_pb2.IdRaw
    binding: _containers.RepeatedCompositeFieldContainer[MethodBinding]
    def __init__(self, host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., binding: _Optional[_Iterable[_Union[MethodBinding, _Mapping]]] = ...) -> None: ...

class DispatchRequest(_message.Message):
    __slots__ = ("service_id", "method_id", "param", "call_id", "host_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    method_id: _protosupport_pb2.IdRaw
    param: _any_pb2.Any
    call_id: _protosupport_pb2.IdRaw
    host_id: _protosupport_pb2.IdRaw
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., param: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class DispatchResponse(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: _protosupport_pb2.IdRaw
    def __init__(self, call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ReturnValueRequest(_message.Message):
    __slots__ = ("host_id", "call_id", "result", "result_error")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_ERROR_FIELD_NUMBER: _ClassVar[int]
    host_id: _protosupport_pb2.IdRaw
    call_id: _protosupport_pb2.IdRaw
    result: _any_pb2.Any
    result_error: int
    def __init__(self, host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., result: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., result_error: _Optional[int] = ...) -> None: ...

class ReturnValueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BlockUntilCallRequest(_message.Message):
    __slots__ = ("can_timeout",)
    CAN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    can_timeout: bool
    def __init__(self, can_timeout: _Optional[bool] = ...) -> None: ...

class BlockUntilCallResponse(_message.Message):
    __slots__ = ("param", "method", "call", "timed_out")
    PARAM_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    param: _any_pb2.Any
    method: _protosupport_pb2.IdRaw
    call: _protosupport_pb2.IdRaw
    timed_out: bool
    def __init__(self, param: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., method: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., call: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class BindMethodRequest(_message.Message):
    __slots__ = ("host_id", "service_id", "method_name", "direction")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    host_id: _protosupport_pb2.IdRaw
    service_id: _protosupport_pb2.IdRaw
    method_name: str
    direction: MethodDirection
    def __init__(self, host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., method_name: _Optional[str] = ..., direction: _Optional[_Union[MethodDirection, str]] = ...) -> None: ...

class BindMethodResponse(_message.Message):
    __slots__ = ("method_id",)
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    method_id: _protosupport_pb2.IdRaw
    def __init__(self, method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class FullyQualifiedService(_message.Message):
    __slots__ = ("package_path", "service")
    PACKAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    package_path: str
    service: str
    def __init__(self, package_path: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("service_id", "service", "host_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    service: _containers.RepeatedCompositeFieldContainer[FullyQualifiedService]
    host_id: _protosupport_pb2.IdRaw
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., service: _Optional[_Iterable[_Union[FullyQualifiedService, _Mapping]]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RequireRequest(_message.Message):
    __slots__ = ("dest", "source")
    DEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    dest: _containers.RepeatedCompositeFieldContainer[FullyQualifiedService]
    source: _protosupport_pb2.IdRaw
    def __init__(self, dest: _Optional[_Iterable[_Union[FullyQualifiedService, _Mapping]]] = ..., source: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class RequireResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LaunchRequest(_message.Message):
    __slots__ = ("service_id", "call_id", "host_id", "method_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    call_id: _protosupport_pb2.IdRaw
    host_id: _protosupport_pb2.IdRaw
    method_id: _protosupport_pb2.IdRaw
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class LaunchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExitRequest(_message.Message):
    __slots__ = ("pair", "call_id", "host_id", "method_id")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    pair: ExitPair
    call_id: _protosupport_pb2.IdRaw
    host_id: _protosupport_pb2.IdRaw
    method_id: _protosupport_pb2.IdRaw
    def __init__(self, pair: _Optional[_Union[ExitPair, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ExitResponse(_message.Message):
    __slots__ = ("pair",)
    PAIR_FIELD_NUMBER: _ClassVar[int]
    pair: ExitPair
    def __init__(self, pair: _Optional[_Union[ExitPair, _Mapping]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("fqs", "host_id")
    FQS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    fqs: FullyQualifiedService
    host_id: _protosupport_pb2.IdRaw
    def __init__(self, fqs: _Optional[_Union[FullyQualifiedService, _Mapping]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("id", "existed_previously")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXISTED_PREVIOUSLY_FIELD_NUMBER: _ClassVar[int]
    id: _protosupport_pb2.IdRaw
    existed_previously: bool
    def __init__(self, id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., existed_previously: _Optional[bool] = ...) -> None: ...

class HostBinding(_message.Message):
    __slots__ = ("service_id", "host_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    host_id: _protosupport_pb2.IdRaw
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ServiceByNameRequest(_message.Message):
    __slots__ = ("fqs",)
    FQS_FIELD_NUMBER: _ClassVar[int]
    fqs: FullyQualifiedService
    def __init__(self, fqs: _Optional[_Union[FullyQualifiedService, _Mapping]] = ...) -> None: ...

class ServiceByNameResponse(_message.Message):
    __slots__ = ("binding",)
    BINDING_FIELD_NUMBER: _ClassVar[int]
    binding: _containers.RepeatedCompositeFieldContainer[HostBinding]
    def __init__(self, binding: _Optional[_Iterable[_Union[HostBinding, _Mapping]]] = ...) -> None: ...

class ServiceByIdRequest(_message.Message):
    __slots__ = ("service_id",)
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    def __init__(self, service_id: _Optional[str] = ...) -> None: ...

class ServiceByIdResponse(_message.Message):
    __slots__ = ("binding",)
    BINDING_FIELD_NUMBER: _ClassVar[int]
    binding: HostBinding
    def __init__(self, binding: _Optional[_Union[HostBinding, _Mapping]] = ...) -> None: ...

class DependencyExistsRequest(_message.Message):
    __slots__ = ("source_service_id", "dest_service_id", "service_name")
    SOURCE_SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEST_SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    source_service_id: _protosupport_pb2.IdRaw
    dest_service_id: _protosupport_pb2.IdRaw
    service_name: FullyQualifiedService
    def __init__(self, source_service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., dest_service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., service_name: _Optional[_Union[FullyQualifiedService, _Mapping]] = ...) -> None: ...

class DependencyExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class ServiceMethodCall(_message.Message):
    __slots__ = ("service_id", "method_id")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    method_id: _protosupport_pb2.IdRaw
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., method_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ResolvedCall(_message.Message):
    __slots__ = ("host_id", "call_id", "result", "result_error")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_ERROR_FIELD_NUMBER: _ClassVar[int]
    host_id: _protosupport_pb2.IdRaw
    call_id: _protosupport_pb2.IdRaw
    result: _any_pb2.Any
    result_error: int
    def __init__(self, host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., result: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., result_error: _Optional[int] = ...) -> None: ...

class ReadOneRequest(_message.Message):
    __slots__ = ("call", "timeout_in_millis", "host_id")
    CALL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_IN_MILLIS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    call: _containers.RepeatedCompositeFieldContainer[ServiceMethodCall]
    timeout_in_millis: int
    host_id: _protosupport_pb2.IdRaw
    def __init__(self, call: _Optional[_Iterable[_Union[ServiceMethodCall, _Mapping]]] = ..., timeout_in_millis: _Optional[int] = ..., host_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ...) -> None: ...

class ReadOneResponse(_message.Message):
    __slots__ = ("timeout", "call", "call_id", "param", "resolved", "exit")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    timeout: bool
    call: ServiceMethodCall
    call_id: _protosupport_pb2.IdRaw
    param: _any_pb2.Any
    resolved: ResolvedCall
    exit: bool
    def __init__(self, timeout: _Optional[bool] = ..., call: _Optional[_Union[ServiceMethodCall, _Mapping]] = ..., call_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., param: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., resolved: _Optional[_Union[ResolvedCall, _Mapping]] = ..., exit: _Optional[bool] = ...) -> None: ...

class ExitPair(_message.Message):
    __slots__ = ("service_id", "code")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    service_id: _protosupport_pb2.IdRaw
    code: int
    def __init__(self, service_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., code: _Optional[int] = ...) -> None: ...

class SynchronousExitRequest(_message.Message):
    __slots__ = ("pair",)
    PAIR_FIELD_NUMBER: _ClassVar[int]
    pair: ExitPair
    def __init__(self, pair: _Optional[_Union[ExitPair, _Mapping]] = ...) -> None: ...

class SynchronousExitResponse(_message.Message):
    __slots__ = ("pair",)
    PAIR_FIELD_NUMBER: _ClassVar[int]
    pair: ExitPair
    def __init__(self, pair: _Optional[_Union[ExitPair, _Mapping]] = ...) -> None: ...
