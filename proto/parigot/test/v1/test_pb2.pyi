from proto.parigot.protosupport.v1 import protosupport_pb2 as _protosupport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TestErr(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoError: _ClassVar[TestErr]
    DispatchError: _ClassVar[TestErr]
    UnmarshalError: _ClassVar[TestErr]
    ServiceNotFound: _ClassVar[TestErr]
    Exec: _ClassVar[TestErr]
    SendFailed: _ClassVar[TestErr]
    Internal: _ClassVar[TestErr]
    RegexpFailed: _ClassVar[TestErr]
    Marshal: _ClassVar[TestErr]
    Queue: _ClassVar[TestErr]
    DynamicLocate: _ClassVar[TestErr]
NoError: TestErr
DispatchError: TestErr
UnmarshalError: TestErr
ServiceNotFound: TestErr
Exec: TestErr
SendFailed: TestErr
Internal: TestErr
RegexpFailed: TestErr
Marshal: TestErr
Queue: TestErr
DynamicLocate: TestErr

class AddTestSuiteRequest(_message.Message):
    __slots__ = ("suite", "exec_package", "exec_service")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    EXEC_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    EXEC_SERVICE_FIELD_NUMBER: _ClassVar[int]
    suite: _containers.RepeatedCompositeFieldContainer[SuiteInfo]
    exec_package: str
    exec_service: str
    def __init__(self, suite: _Optional[_Iterable[_Union[SuiteInfo, _Mapping]]] = ..., exec_package: _Optional[str] = ..., exec_service: _Optional[str] = ...) -> None: ...

class AddTestSuiteResponse(_message.Message):
    __slots__ = ("succeeded",)
    class SucceededEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    succeeded: _containers.ScalarMap[str, bool]
    def __init__(self, succeeded: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("filter_suite", "filter_name", "parallel")
    FILTER_SUITE_FIELD_NUMBER: _ClassVar[int]
    FILTER_NAME_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    filter_suite: str
    filter_name: str
    parallel: bool
    def __init__(self, filter_suite: _Optional[str] = ..., filter_name: _Optional[str] = ..., parallel: _Optional[bool] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("regex_failed", "num_test")
    REGEX_FAILED_FIELD_NUMBER: _ClassVar[int]
    NUM_TEST_FIELD_NUMBER: _ClassVar[int]
    regex_failed: bool
    num_test: int
    def __init__(self, regex_failed: _Optional[bool] = ..., num_test: _Optional[int] = ...) -> None: ...

class SuiteInfo(_message.Message):
    __slots__ = ("package_path", "service", "function_name")
    PACKAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    package_path: str
    service: str
    function_name: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, package_path: _Optional[str] = ..., service: _Optional[str] = ..., function_name: _Optional[_Iterable[str]] = ...) -> None: ...

class ComparisonResult(_message.Message):
    __slots__ = ("name", "error_message", "error_id", "success")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    error_message: str
    error_id: _protosupport_pb2.IdRaw
    success: bool
    def __init__(self, name: _Optional[str] = ..., error_message: _Optional[str] = ..., error_id: _Optional[_Union[_protosupport_pb2.IdRaw, _Mapping]] = ..., success: _Optional[bool] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("package", "service", "name")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    package: str
    service: str
    name: str
    def __init__(self, package: _Optional[str] = ..., service: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("success", "skipped", "package", "service", "name", "detail")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    success: bool
    skipped: bool
    package: str
    service: str
    name: str
    detail: _containers.RepeatedCompositeFieldContainer[ComparisonResult]
    def __init__(self, success: _Optional[bool] = ..., skipped: _Optional[bool] = ..., package: _Optional[str] = ..., service: _Optional[str] = ..., name: _Optional[str] = ..., detail: _Optional[_Iterable[_Union[ComparisonResult, _Mapping]]] = ...) -> None: ...

class SuiteReportRequest(_message.Message):
    __slots__ = ("success", "num_success", "num_failure", "num_skip", "package", "service", "test_success", "test_skip", "detail")
    class TestSuccessEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class TestSkipEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class DetailEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ComparisonResult
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ComparisonResult, _Mapping]] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    NUM_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    NUM_FAILURE_FIELD_NUMBER: _ClassVar[int]
    NUM_SKIP_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TEST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TEST_SKIP_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    success: bool
    num_success: int
    num_failure: int
    num_skip: int
    package: str
    service: str
    test_success: _containers.ScalarMap[str, bool]
    test_skip: _containers.ScalarMap[str, bool]
    detail: _containers.MessageMap[str, ComparisonResult]
    def __init__(self, success: _Optional[bool] = ..., num_success: _Optional[int] = ..., num_failure: _Optional[int] = ..., num_skip: _Optional[int] = ..., package: _Optional[str] = ..., service: _Optional[str] = ..., test_success: _Optional[_Mapping[str, bool]] = ..., test_skip: _Optional[_Mapping[str, bool]] = ..., detail: _Optional[_Mapping[str, ComparisonResult]] = ...) -> None: ...

class SuiteReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueuePayload(_message.Message):
    __slots__ = ("name", "func_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNC_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    func_name: str
    def __init__(self, name: _Optional[str] = ..., func_name: _Optional[str] = ...) -> None: ...
