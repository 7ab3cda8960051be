from proto.pb import workerServer_pb2 as _workerServer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInventoryResponse(_message.Message):
    __slots__ = ("machine", "savers")
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    SAVERS_FIELD_NUMBER: _ClassVar[int]
    machine: _workerServer_pb2.Machine
    savers: _containers.RepeatedCompositeFieldContainer[SaverState]
    def __init__(self, machine: _Optional[_Union[_workerServer_pb2.Machine, _Mapping]] = ..., savers: _Optional[_Iterable[_Union[SaverState, _Mapping]]] = ...) -> None: ...

class SaverState(_message.Message):
    __slots__ = ("address", "delivered_at_ns", "last_error", "attempts")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    address: str
    delivered_at_ns: int
    last_error: str
    attempts: int
    def __init__(self, address: _Optional[str] = ..., delivered_at_ns: _Optional[int] = ..., last_error: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class ListMachinesRequest(_message.Message):
    __slots__ = ("full",)
    FULL_FIELD_NUMBER: _ClassVar[int]
    full: bool
    def __init__(self, full: _Optional[bool] = ...) -> None: ...

class MachineSummary(_message.Message):
    __slots__ = ("uuid", "received_at_ns", "peer", "ifaces", "addresses", "ports", "error", "reports", "hostname", "api_address", "cells", "executables", "machine")
    UUID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    IFACES_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    received_at_ns: int
    peer: str
    ifaces: int
    addresses: int
    ports: int
    error: str
    reports: int
    hostname: str
    api_address: str
    cells: int
    executables: int
    machine: _workerServer_pb2.Machine
    def __init__(self, uuid: _Optional[str] = ..., received_at_ns: _Optional[int] = ..., peer: _Optional[str] = ..., ifaces: _Optional[int] = ..., addresses: _Optional[int] = ..., ports: _Optional[int] = ..., error: _Optional[str] = ..., reports: _Optional[int] = ..., hostname: _Optional[str] = ..., api_address: _Optional[str] = ..., cells: _Optional[int] = ..., executables: _Optional[int] = ..., machine: _Optional[_Union[_workerServer_pb2.Machine, _Mapping]] = ...) -> None: ...

class ListMachinesResponse(_message.Message):
    __slots__ = ("machines",)
    MACHINES_FIELD_NUMBER: _ClassVar[int]
    machines: _containers.RepeatedCompositeFieldContainer[MachineSummary]
    def __init__(self, machines: _Optional[_Iterable[_Union[MachineSummary, _Mapping]]] = ...) -> None: ...

class ShowMachineRequest(_message.Message):
    __slots__ = ("uuid", "history")
    UUID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    history: int
    def __init__(self, uuid: _Optional[str] = ..., history: _Optional[int] = ...) -> None: ...

class MachineReport(_message.Message):
    __slots__ = ("machine", "received_at_ns", "peer")
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    machine: _workerServer_pb2.Machine
    received_at_ns: int
    peer: str
    def __init__(self, machine: _Optional[_Union[_workerServer_pb2.Machine, _Mapping]] = ..., received_at_ns: _Optional[int] = ..., peer: _Optional[str] = ...) -> None: ...

class ShowMachineResponse(_message.Message):
    __slots__ = ("latest", "history")
    LATEST_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    latest: MachineReport
    history: _containers.RepeatedCompositeFieldContainer[MachineReport]
    def __init__(self, latest: _Optional[_Union[MachineReport, _Mapping]] = ..., history: _Optional[_Iterable[_Union[MachineReport, _Mapping]]] = ...) -> None: ...

class ListDispatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisteredServer(_message.Message):
    __slots__ = ("ip", "registered_at_ns", "healthy", "subject", "functions", "pid")
    IP_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ip: str
    registered_at_ns: int
    healthy: bool
    subject: str
    functions: int
    pid: int
    def __init__(self, ip: _Optional[str] = ..., registered_at_ns: _Optional[int] = ..., healthy: _Optional[bool] = ..., subject: _Optional[str] = ..., functions: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class ListDispatchResponse(_message.Message):
    __slots__ = ("servers",)
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[RegisteredServer]
    def __init__(self, servers: _Optional[_Iterable[_Union[RegisteredServer, _Mapping]]] = ...) -> None: ...
