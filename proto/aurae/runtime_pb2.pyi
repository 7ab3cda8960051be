from proto.cellar.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Executable(_message.Message):
    __slots__ = ("name", "command", "description", "cell_name", "argv", "env", "cwd", "uid", "gid", "privileged", "cap_add", "cap_drop", "restart", "health", "stdin", "tty")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    CAP_ADD_FIELD_NUMBER: _ClassVar[int]
    CAP_DROP_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: str
    description: str
    cell_name: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    uid: int
    gid: int
    privileged: bool
    cap_add: _containers.RepeatedScalarFieldContainer[str]
    cap_drop: _containers.RepeatedScalarFieldContainer[str]
    restart: _types_pb2.RestartPolicy
    health: _types_pb2.HealthCheck
    stdin: bool
    tty: bool
    def __init__(self, name: _Optional[str] = ..., command: _Optional[str] = ..., description: _Optional[str] = ..., cell_name: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., privileged: _Optional[bool] = ..., cap_add: _Optional[_Iterable[str]] = ..., cap_drop: _Optional[_Iterable[str]] = ..., restart: _Optional[_Union[_types_pb2.RestartPolicy, _Mapping]] = ..., health: _Optional[_Union[_types_pb2.HealthCheck, _Mapping]] = ..., stdin: _Optional[bool] = ..., tty: _Optional[bool] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("name", "cpu_shares", "cpu_weight", "cpu_max_quota_us", "cpu_max_period_us", "cpuset_cpus", "cpuset_mems", "memory_min", "memory_low", "memory_high", "memory_max", "swap_max", "pids_max", "isolate_process", "isolate_network", "veth", "privileged", "cap_add", "cap_drop", "grant_role", "mounts", "rootfs", "keep_data", "persist")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_SHARES_FIELD_NUMBER: _ClassVar[int]
    CPU_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CPU_MAX_QUOTA_US_FIELD_NUMBER: _ClassVar[int]
    CPU_MAX_PERIOD_US_FIELD_NUMBER: _ClassVar[int]
    CPUSET_CPUS_FIELD_NUMBER: _ClassVar[int]
    CPUSET_MEMS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LOW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_HIGH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MAX_FIELD_NUMBER: _ClassVar[int]
    SWAP_MAX_FIELD_NUMBER: _ClassVar[int]
    PIDS_MAX_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_PROCESS_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_NETWORK_FIELD_NUMBER: _ClassVar[int]
    VETH_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    CAP_ADD_FIELD_NUMBER: _ClassVar[int]
    CAP_DROP_FIELD_NUMBER: _ClassVar[int]
    GRANT_ROLE_FIELD_NUMBER: _ClassVar[int]
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    ROOTFS_FIELD_NUMBER: _ClassVar[int]
    KEEP_DATA_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_shares: int
    cpu_weight: int
    cpu_max_quota_us: int
    cpu_max_period_us: int
    cpuset_cpus: str
    cpuset_mems: str
    memory_min: int
    memory_low: int
    memory_high: int
    memory_max: int
    swap_max: int
    pids_max: int
    isolate_process: bool
    isolate_network: bool
    veth: _types_pb2.Veth
    privileged: bool
    cap_add: _containers.RepeatedScalarFieldContainer[str]
    cap_drop: _containers.RepeatedScalarFieldContainer[str]
    grant_role: str
    mounts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Mount]
    rootfs: str
    keep_data: bool
    persist: bool
    def __init__(self, name: _Optional[str] = ..., cpu_shares: _Optional[int] = ..., cpu_weight: _Optional[int] = ..., cpu_max_quota_us: _Optional[int] = ..., cpu_max_period_us: _Optional[int] = ..., cpuset_cpus: _Optional[str] = ..., cpuset_mems: _Optional[str] = ..., memory_min: _Optional[int] = ..., memory_low: _Optional[int] = ..., memory_high: _Optional[int] = ..., memory_max: _Optional[int] = ..., swap_max: _Optional[int] = ..., pids_max: _Optional[int] = ..., isolate_process: _Optional[bool] = ..., isolate_network: _Optional[bool] = ..., veth: _Optional[_Union[_types_pb2.Veth, _Mapping]] = ..., privileged: _Optional[bool] = ..., cap_add: _Optional[_Iterable[str]] = ..., cap_drop: _Optional[_Iterable[str]] = ..., grant_role: _Optional[str] = ..., mounts: _Optional[_Iterable[_Union[_types_pb2.Mount, _Mapping]]] = ..., rootfs: _Optional[str] = ..., keep_data: _Optional[bool] = ..., persist: _Optional[bool] = ...) -> None: ...

class AllocateCellRequest(_message.Message):
    __slots__ = ("cell",)
    CELL_FIELD_NUMBER: _ClassVar[int]
    cell: Cell
    def __init__(self, cell: _Optional[_Union[Cell, _Mapping]] = ...) -> None: ...

class AllocateCellResponse(_message.Message):
    __slots__ = ("cell_name", "cgroup_v2")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    CGROUP_V2_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    cgroup_v2: bool
    def __init__(self, cell_name: _Optional[str] = ..., cgroup_v2: _Optional[bool] = ...) -> None: ...

class FreeCellRequest(_message.Message):
    __slots__ = ("cell_name", "grace_period_ms")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    grace_period_ms: int
    def __init__(self, cell_name: _Optional[str] = ..., grace_period_ms: _Optional[int] = ...) -> None: ...

class FreeCellResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartCellRequest(_message.Message):
    __slots__ = ("executable",)
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    executable: Executable
    def __init__(self, executable: _Optional[_Union[Executable, _Mapping]] = ...) -> None: ...

class StartCellResponse(_message.Message):
    __slots__ = ("host_pid", "cell_pid", "run")
    HOST_PID_FIELD_NUMBER: _ClassVar[int]
    CELL_PID_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    host_pid: int
    cell_pid: int
    run: int
    def __init__(self, host_pid: _Optional[int] = ..., cell_pid: _Optional[int] = ..., run: _Optional[int] = ...) -> None: ...

class StopCellRequest(_message.Message):
    __slots__ = ("cell_name", "executable_name", "grace_period_ms")
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    executable_name: str
    grace_period_ms: int
    def __init__(self, cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ..., grace_period_ms: _Optional[int] = ...) -> None: ...

class StopCellResponse(_message.Message):
    __slots__ = ("exit",)
    EXIT_FIELD_NUMBER: _ClassVar[int]
    exit: _types_pb2.ExitStatus
    def __init__(self, exit: _Optional[_Union[_types_pb2.ExitStatus, _Mapping]] = ...) -> None: ...
