from proto.aurae import runtime_pb2 as _runtime_pb2
from proto.cellar.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CellState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELL_STATE_UNSPECIFIED: _ClassVar[CellState]
    CELL_STATE_ACTIVE: _ClassVar[CellState]
    CELL_STATE_FROZEN: _ClassVar[CellState]
    CELL_STATE_FREEING: _ClassVar[CellState]
CELL_STATE_UNSPECIFIED: CellState
CELL_STATE_ACTIVE: CellState
CELL_STATE_FROZEN: CellState
CELL_STATE_FREEING: CellState

class CellInfo(_message.Message):
    __slots__ = ("name", "state", "cgroup_path", "cgroup_v2_limits", "isolate_process", "isolate_network", "netns", "holder_pid", "created_at_ns", "cell", "executables", "stats", "privileged", "capabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    CGROUP_V2_LIMITS_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_PROCESS_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_NETWORK_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: CellState
    cgroup_path: str
    cgroup_v2_limits: bool
    isolate_process: bool
    isolate_network: bool
    netns: str
    holder_pid: int
    created_at_ns: int
    cell: _runtime_pb2.Cell
    executables: _containers.RepeatedCompositeFieldContainer[_types_pb2.ExecutableInfo]
    stats: _types_pb2.CellStats
    privileged: bool
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[CellState, str]] = ..., cgroup_path: _Optional[str] = ..., cgroup_v2_limits: _Optional[bool] = ..., isolate_process: _Optional[bool] = ..., isolate_network: _Optional[bool] = ..., netns: _Optional[str] = ..., holder_pid: _Optional[int] = ..., created_at_ns: _Optional[int] = ..., cell: _Optional[_Union[_runtime_pb2.Cell, _Mapping]] = ..., executables: _Optional[_Iterable[_Union[_types_pb2.ExecutableInfo, _Mapping]]] = ..., stats: _Optional[_Union[_types_pb2.CellStats, _Mapping]] = ..., privileged: _Optional[bool] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ListCellsRequest(_message.Message):
    __slots__ = ("prefix", "include_stats")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATS_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    include_stats: bool
    def __init__(self, prefix: _Optional[str] = ..., include_stats: _Optional[bool] = ...) -> None: ...

class ListCellsResponse(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[CellInfo]
    def __init__(self, cells: _Optional[_Iterable[_Union[CellInfo, _Mapping]]] = ...) -> None: ...

class InspectCellRequest(_message.Message):
    __slots__ = ("cell_name",)
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    def __init__(self, cell_name: _Optional[str] = ...) -> None: ...

class FreezeCellRequest(_message.Message):
    __slots__ = ("cell_name",)
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    def __init__(self, cell_name: _Optional[str] = ...) -> None: ...

class FreezeCellResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ThawCellRequest(_message.Message):
    __slots__ = ("cell_name",)
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    def __init__(self, cell_name: _Optional[str] = ...) -> None: ...

class ThawCellResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("cell_prefix",)
    CELL_PREFIX_FIELD_NUMBER: _ClassVar[int]
    cell_prefix: str
    def __init__(self, cell_prefix: _Optional[str] = ...) -> None: ...

class ExecutableEvent(_message.Message):
    __slots__ = ("timestamp_ns", "executable", "kind")
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    timestamp_ns: int
    executable: _types_pb2.ExecutableInfo
    kind: str
    def __init__(self, timestamp_ns: _Optional[int] = ..., executable: _Optional[_Union[_types_pb2.ExecutableInfo, _Mapping]] = ..., kind: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("version", "hostname", "cgroup_v2", "cgroup_v2_limits", "cgroup_mode", "cgroup_root", "started_at_ns")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CGROUP_V2_FIELD_NUMBER: _ClassVar[int]
    CGROUP_V2_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CGROUP_MODE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_ROOT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    version: str
    hostname: str
    cgroup_v2: bool
    cgroup_v2_limits: bool
    cgroup_mode: str
    cgroup_root: str
    started_at_ns: int
    def __init__(self, version: _Optional[str] = ..., hostname: _Optional[str] = ..., cgroup_v2: _Optional[bool] = ..., cgroup_v2_limits: _Optional[bool] = ..., cgroup_mode: _Optional[str] = ..., cgroup_root: _Optional[str] = ..., started_at_ns: _Optional[int] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("manifest", "file_name", "format", "prune", "dry_run")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    file_name: str
    format: str
    prune: bool
    dry_run: bool
    def __init__(self, manifest: _Optional[str] = ..., file_name: _Optional[str] = ..., format: _Optional[str] = ..., prune: _Optional[bool] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ManifestChange(_message.Message):
    __slots__ = ("action", "cell_name", "executable_name", "detail")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    action: str
    cell_name: str
    executable_name: str
    detail: str
    def __init__(self, action: _Optional[str] = ..., cell_name: _Optional[str] = ..., executable_name: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ManifestChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[ManifestChange, _Mapping]]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("cell_name",)
    CELL_NAME_FIELD_NUMBER: _ClassVar[int]
    cell_name: str
    def __init__(self, cell_name: _Optional[str] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("manifest", "applied")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    applied: bool
    def __init__(self, manifest: _Optional[str] = ..., applied: _Optional[bool] = ...) -> None: ...
