from proto.pb import common_pb2 as _common_pb2
from proto.cellar.v1 import report_pb2 as _report_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Port(_message.Message):
    __slots__ = ("port", "service", "protocol", "cell", "executable", "process", "pid")
    PORT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    port: int
    service: str
    protocol: str
    cell: str
    executable: str
    process: str
    pid: int
    def __init__(self, port: _Optional[int] = ..., service: _Optional[str] = ..., protocol: _Optional[str] = ..., cell: _Optional[str] = ..., executable: _Optional[str] = ..., process: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("ip", "ports")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ip: str
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, ip: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class Iface(_message.Message):
    __slots__ = ("name", "address", "error", "state", "netns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: _containers.RepeatedCompositeFieldContainer[Address]
    error: str
    state: str
    netns: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., error: _Optional[str] = ..., state: _Optional[str] = ..., netns: _Optional[str] = ...) -> None: ...

class Machine(_message.Message):
    __slots__ = ("uuid", "ifaces", "error", "hostname", "os", "kernel", "cellar_version", "cgroup_mode", "api_address", "cpus", "memory_bytes", "cells", "usage")
    UUID_FIELD_NUMBER: _ClassVar[int]
    IFACES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    CELLAR_VERSION_FIELD_NUMBER: _ClassVar[int]
    CGROUP_MODE_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    ifaces: _containers.RepeatedCompositeFieldContainer[Iface]
    error: str
    hostname: str
    os: str
    kernel: str
    cellar_version: str
    cgroup_mode: str
    api_address: str
    cpus: int
    memory_bytes: int
    cells: _containers.RepeatedCompositeFieldContainer[_report_pb2.ReportCell]
    usage: _report_pb2.ReportUsage
    def __init__(self, uuid: _Optional[str] = ..., ifaces: _Optional[_Iterable[_Union[Iface, _Mapping]]] = ..., error: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., cellar_version: _Optional[str] = ..., cgroup_mode: _Optional[str] = ..., api_address: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[_report_pb2.ReportCell, _Mapping]]] = ..., usage: _Optional[_Union[_report_pb2.ReportUsage, _Mapping]] = ...) -> None: ...

class SaveMachineReq(_message.Message):
    __slots__ = ("machine",)
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    machine: Machine
    def __init__(self, machine: _Optional[_Union[Machine, _Mapping]] = ...) -> None: ...

class SaveMachineRes(_message.Message):
    __slots__ = ("status",)
    class RequestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[SaveMachineRes.RequestStatus]
        ACCEPTED: _ClassVar[SaveMachineRes.RequestStatus]
        NOT_ACCEPTED: _ClassVar[SaveMachineRes.RequestStatus]
    UNKNOWN: SaveMachineRes.RequestStatus
    ACCEPTED: SaveMachineRes.RequestStatus
    NOT_ACCEPTED: SaveMachineRes.RequestStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: SaveMachineRes.RequestStatus
    def __init__(self, status: _Optional[_Union[SaveMachineRes.RequestStatus, str]] = ...) -> None: ...
