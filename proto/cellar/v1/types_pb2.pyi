from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutableState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTABLE_STATE_UNSPECIFIED: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_STARTING: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_RUNNING: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_STOPPING: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_EXITED: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_LOST: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_BACKOFF: _ClassVar[ExecutableState]
    EXECUTABLE_STATE_FAILED: _ClassVar[ExecutableState]

class RestartMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTART_MODE_UNSPECIFIED: _ClassVar[RestartMode]
    RESTART_MODE_NEVER: _ClassVar[RestartMode]
    RESTART_MODE_ON_FAILURE: _ClassVar[RestartMode]
    RESTART_MODE_ALWAYS: _ClassVar[RestartMode]

class HealthCheckKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_CHECK_KIND_UNSPECIFIED: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_EXEC: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_TCP: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_HTTP: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_GRPC: _ClassVar[HealthCheckKind]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_STARTING: _ClassVar[HealthState]
    HEALTH_STATE_HEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]
EXECUTABLE_STATE_UNSPECIFIED: ExecutableState
EXECUTABLE_STATE_STARTING: ExecutableState
EXECUTABLE_STATE_RUNNING: ExecutableState
EXECUTABLE_STATE_STOPPING: ExecutableState
EXECUTABLE_STATE_EXITED: ExecutableState
EXECUTABLE_STATE_LOST: ExecutableState
EXECUTABLE_STATE_BACKOFF: ExecutableState
EXECUTABLE_STATE_FAILED: ExecutableState
RESTART_MODE_UNSPECIFIED: RestartMode
RESTART_MODE_NEVER: RestartMode
RESTART_MODE_ON_FAILURE: RestartMode
RESTART_MODE_ALWAYS: RestartMode
HEALTH_CHECK_KIND_UNSPECIFIED: HealthCheckKind
HEALTH_CHECK_KIND_EXEC: HealthCheckKind
HEALTH_CHECK_KIND_TCP: HealthCheckKind
HEALTH_CHECK_KIND_HTTP: HealthCheckKind
HEALTH_CHECK_KIND_GRPC: HealthCheckKind
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_STARTING: HealthState
HEALTH_STATE_HEALTHY: HealthState
HEALTH_STATE_UNHEALTHY: HealthState

class Veth(_message.Message):
    __slots__ = ("host_ifname", "cell_ifname", "host_address", "cell_address")
    HOST_IFNAME_FIELD_NUMBER: _ClassVar[int]
    CELL_IFNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CELL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    host_ifname: str
    cell_ifname: str
    host_address: str
    cell_address: str
    def __init__(self, host_ifname: _Optional[str] = ..., cell_ifname: _Optional[str] = ..., host_address: _Optional[str] = ..., cell_address: _Optional[str] = ...) -> None: ...

class Mount(_message.Message):
    __slots__ = ("source", "target", "read_only")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    read_only: bool
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class ExitStatus(_message.Message):
    __slots__ = ("code", "signal", "oom_killed", "started_at_ns", "ended_at_ns")
    CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    code: int
    signal: int
    oom_killed: bool
    started_at_ns: int
    ended_at_ns: int
    def __init__(self, code: _Optional[int] = ..., signal: _Optional[int] = ..., oom_killed: _Optional[bool] = ..., started_at_ns: _Optional[int] = ..., ended_at_ns: _Optional[int] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("mode", "delay_s", "max_delay_s", "reset_after_s", "limit_burst", "limit_interval_s")
    MODE_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BURST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    mode: RestartMode
    delay_s: float
    max_delay_s: float
    reset_after_s: float
    limit_burst: int
    limit_interval_s: float
    def __init__(self, mode: _Optional[_Union[RestartMode, str]] = ..., delay_s: _Optional[float] = ..., max_delay_s: _Optional[float] = ..., reset_after_s: _Optional[float] = ..., limit_burst: _Optional[int] = ..., limit_interval_s: _Optional[float] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("kind", "command", "port", "path", "service", "interval_s", "timeout_s", "retries", "start_period_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    START_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    kind: HealthCheckKind
    command: _containers.RepeatedScalarFieldContainer[str]
    port: int
    path: str
    service: str
    interval_s: float
    timeout_s: float
    retries: int
    start_period_s: float
    def __init__(self, kind: _Optional[_Union[HealthCheckKind, str]] = ..., command: _Optional[_Iterable[str]] = ..., port: _Optional[int] = ..., path: _Optional[str] = ..., service: _Optional[str] = ..., interval_s: _Optional[float] = ..., timeout_s: _Optional[float] = ..., retries: _Optional[int] = ..., start_period_s: _Optional[float] = ...) -> None: ...

class ExecutableInfo(_message.Message):
    __slots__ = ("cell_name", "name", "state", "argv", "command", "description", "host_pid", "cell_pid", "run", "started_at_ns", "exit", "privileged", "restarts", "restart_at_ns", "restart", "reason", "health_check", "health", "health_failures", "health_failed_probes", "health_result")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HOST_PID_FIELD_NUMBER: _ClassVar[int]
    CELL_PID_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    RESTART_AT_NS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FAILED_PROBES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_RESULT_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    name: str
    state: ExecutableState
    argv: _containers.RepeatedScalarFieldContainer[str]
    command: str
    description: str
    host_pid: int
    cell_pid: int
    run: int
    started_at_ns: int
    exit: ExitStatus
    privileged: bool
    restarts: int
    restart_at_ns: int
    restart: RestartPolicy
    reason: str
    health_check: HealthCheck
    health: HealthState
    health_failures: int
    health_failed_probes: int
    health_result: str
    def __init__(self, cell_name: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[ExecutableState, str]] = ..., argv: _Optional[_Iterable[str]] = ..., command: _Optional[str] = ..., description: _Optional[str] = ..., host_pid: _Optional[int] = ..., cell_pid: _Optional[int] = ..., run: _Optional[int] = ..., started_at_ns: _Optional[int] = ..., exit: _Optional[_Union[ExitStatus, _Mapping]] = ..., privileged: _Optional[bool] = ..., restarts: _Optional[int] = ..., restart_at_ns: _Optional[int] = ..., restart: _Optional[_Union[RestartPolicy, _Mapping]] = ..., reason: _Optional[str] = ..., health_check: _Optional[_Union[HealthCheck, _Mapping]] = ..., health: _Optional[_Union[HealthState, str]] = ..., health_failures: _Optional[int] = ..., health_failed_probes: _Optional[int] = ..., health_result: _Optional[str] = ...) -> None: ...

class PressureStats(_message.Message):
    __slots__ = ("cpu_some_avg10", "memory_some_avg10", "memory_full_avg10", "io_some_avg10", "cpu_some_total_us", "memory_some_total_us", "io_some_total_us")
    CPU_SOME_AVG10_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SOME_AVG10_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FULL_AVG10_FIELD_NUMBER: _ClassVar[int]
    IO_SOME_AVG10_FIELD_NUMBER: _ClassVar[int]
    CPU_SOME_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SOME_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    IO_SOME_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    cpu_some_avg10: float
    memory_some_avg10: float
    memory_full_avg10: float
    io_some_avg10: float
    cpu_some_total_us: int
    memory_some_total_us: int
    io_some_total_us: int
    def __init__(self, cpu_some_avg10: _Optional[float] = ..., memory_some_avg10: _Optional[float] = ..., memory_full_avg10: _Optional[float] = ..., io_some_avg10: _Optional[float] = ..., cpu_some_total_us: _Optional[int] = ..., memory_some_total_us: _Optional[int] = ..., io_some_total_us: _Optional[int] = ...) -> None: ...

class CellStats(_message.Message):
    __slots__ = ("memory_current", "memory_peak", "cpu_usage_us", "cpu_user_us", "cpu_system_us", "pids_current", "oom_kills", "pressure")
    MEMORY_CURRENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_US_FIELD_NUMBER: _ClassVar[int]
    CPU_USER_US_FIELD_NUMBER: _ClassVar[int]
    CPU_SYSTEM_US_FIELD_NUMBER: _ClassVar[int]
    PIDS_CURRENT_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLS_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_FIELD_NUMBER: _ClassVar[int]
    memory_current: int
    memory_peak: int
    cpu_usage_us: int
    cpu_user_us: int
    cpu_system_us: int
    pids_current: int
    oom_kills: int
    pressure: PressureStats
    def __init__(self, memory_current: _Optional[int] = ..., memory_peak: _Optional[int] = ..., cpu_usage_us: _Optional[int] = ..., cpu_user_us: _Optional[int] = ..., cpu_system_us: _Optional[int] = ..., pids_current: _Optional[int] = ..., oom_kills: _Optional[int] = ..., pressure: _Optional[_Union[PressureStats, _Mapping]] = ...) -> None: ...
