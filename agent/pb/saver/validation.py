"""What a machine report may hold; anything else is NOT_ACCEPTED with the rule it broke.

Bounds keep one report from filling the store or a listing: a real host has tens of interfaces and
at most tens of thousands of listeners.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence

from observe import kinds
from proto.pb import workerServer_pb2 as pb

MAX_UUID = 128
MAX_IFACES = 4096
MAX_ADDRESSES_PER_IFACE = 4096
MAX_PORTS_PER_ADDRESS = 131072  # every TCP and UDP port
MAX_PORTS_TOTAL = 262144
MAX_NAME = 256
MAX_SERVICE = 512
MAX_ERROR = 8192
PROTOCOLS = ("", "tcp", "udp")
MAX_CELLS = 4096
MAX_EXECUTABLES_TOTAL = 65536
MAX_HOSTNAME = 253


class InvalidReport(kinds.Invalid, ValueError):
    """The report breaks a rule; ``str()`` names the field and the rule."""


_SCOPE = re.compile(r"[\w.:@-]{1,64}", re.ASCII)  # an IPv6 zone: an interface name or index
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # single-line text: no control characters at all


def _text(value: str, field: str, limit: int, *, required: bool = False, single_line: bool = True) -> None:
    """Checked with one C-level regex scan: a report holds thousands of these strings."""
    if required and not value:
        raise InvalidReport(f"{field}: must not be empty")
    if len(value) > limit:
        raise InvalidReport(f"{field}: longer than {limit} characters")
    if (_CONTROL.search(value) is not None) if single_line else ("\0" in value):
        raise InvalidReport(f"{field}: control characters are not allowed")


def _is_ip(text: str) -> bool:
    """inet_pton (C) first, ipaddress (scoped IPv6 and the rest) when it says no."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            continue
    scope = text.partition("%")[2]
    if scope and not _SCOPE.fullmatch(scope):  # ipaddress takes any text after %: an interface name only
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def validate_machine(machine: pb.Machine) -> None:
    """Raise :class:`InvalidReport` unless ``machine`` is a well-formed report."""
    _text(machine.uuid, "machine.uuid", MAX_UUID, required=True)
    if any(c.isspace() for c in machine.uuid):
        raise InvalidReport("machine.uuid: whitespace is not allowed")
    _text(machine.error, "machine.error", MAX_ERROR, single_line=False)
    if len(machine.ifaces) > MAX_IFACES:
        raise InvalidReport(f"machine.ifaces: more than {MAX_IFACES} interfaces")
    if not _interfaces_ok(machine.ifaces):
        _check_interfaces(machine.ifaces)
    _validate_cellar_fields(machine)


def _interfaces_ok(ifaces: Sequence[pb.Iface]) -> bool:
    """The fast path (a busy node reports thousands of ports): every interface, address and port read
    once into columns, every rule checked over whole columns; False sends the report through
    :func:`_check_interfaces`, which names the field that broke a rule."""
    if not ifaces:
        return True
    if not _columns_ok([(i.name, i.state, i.netns) for i in ifaces], _IFACE_TEXT):
        return False
    errors = [i.error for i in ifaces]
    if max(map(len, errors)) > MAX_ERROR or "\0" in "".join(errors):
        return False
    per_iface = [i.address for i in ifaces]
    if max(map(len, per_iface)) > MAX_ADDRESSES_PER_IFACE:
        return False
    addresses = [a for group in per_iface for a in group]
    if not all(_is_ip(a.ip) for a in addresses):
        return False
    port_lists = [a.ports for a in addresses]
    if not port_lists:
        return True
    if max(map(len, port_lists)) > MAX_PORTS_PER_ADDRESS or sum(map(len, port_lists)) > MAX_PORTS_TOTAL:
        return False
    rows = [(p.port, p.protocol, p.service, p.cell, p.executable, p.process) for ports in port_lists for p in ports]
    if not rows:
        return True
    numbers, protocols, *texts = zip(*rows, strict=True)
    if min(numbers) < 1 or max(numbers) > 65535 or not set(protocols) <= set(PROTOCOLS):
        return False
    for values, (_, limit) in zip(texts, _PORT_TEXT, strict=True):
        if max(map(len, values)) > limit or _CONTROL.search("".join(values)) is not None:
            return False
    return True


def _check_interfaces(ifaces: Sequence[pb.Iface]) -> None:
    total = 0
    for i, iface in enumerate(ifaces):
        where = f"machine.ifaces[{i}]"
        _text(iface.name, f"{where}.name", MAX_NAME, required=True)
        _text(iface.error, f"{where}.error", MAX_ERROR, single_line=False)
        _text(iface.state, f"{where}.state", 32)
        _text(iface.netns, f"{where}.netns", MAX_NAME)
        if len(iface.address) > MAX_ADDRESSES_PER_IFACE:
            raise InvalidReport(f"{where}.address: more than {MAX_ADDRESSES_PER_IFACE} addresses")
        for j, address in enumerate(iface.address):
            awhere = f"{where}.address[{j}]"
            if not _is_ip(address.ip):
                raise InvalidReport(f"{awhere}.ip: not an IPv4 or IPv6 address: {address.ip[:64]!r}")
            if len(address.ports) > MAX_PORTS_PER_ADDRESS:
                raise InvalidReport(f"{awhere}.ports: more than {MAX_PORTS_PER_ADDRESS} ports")
            total += len(address.ports)
            if total > MAX_PORTS_TOTAL:
                raise InvalidReport(f"machine: more than {MAX_PORTS_TOTAL} ports in all")
            _check_ports(address.ports, awhere)


_PORT_TEXT = (("service", MAX_SERVICE), ("cell", MAX_SERVICE), ("executable", MAX_NAME), ("process", MAX_NAME))
_IFACE_TEXT = ((MAX_NAME, True), (32, False), (MAX_NAME, False))


def _check_ports(ports: Sequence[pb.Port], awhere: str) -> None:
    for k, port in enumerate(ports):
        pwhere = f"{awhere}.ports[{k}]"
        if not 1 <= port.port <= 65535:
            raise InvalidReport(f"{pwhere}.port: must be 1-65535, got {port.port}")
        if port.protocol not in PROTOCOLS:
            raise InvalidReport(f"{pwhere}.protocol: must be tcp, udp or empty")
        for name, limit in _PORT_TEXT:
            _text(getattr(port, name), f"{pwhere}.{name}", limit)


def _validate_cellar_fields(machine: pb.Machine) -> None:
    """cellar's extension fields: bounded text (shown in the dashboard, escaped there) and counts."""
    _text(machine.hostname, "machine.hostname", MAX_HOSTNAME)
    _text(machine.os, "machine.os", MAX_NAME)
    _text(machine.kernel, "machine.kernel", MAX_NAME)
    _text(machine.cellar_version, "machine.cellar_version", 64)
    _text(machine.cgroup_mode, "machine.cgroup_mode", 16)
    _text(machine.api_address, "machine.api_address", 300)
    if any(c.isspace() for c in machine.api_address):
        raise InvalidReport("machine.api_address: whitespace is not allowed")
    if len(machine.cells) > MAX_CELLS:
        raise InvalidReport(f"machine.cells: more than {MAX_CELLS} cells")
    cells = list(machine.cells)
    if sum(len(c.executables) for c in cells) > MAX_EXECUTABLES_TOTAL:
        raise InvalidReport(f"machine.cells: more than {MAX_EXECUTABLES_TOTAL} executables in all")
    exes = [(e.name, e.state, e.health, e.exit) for c in cells for e in c.executables]
    if not (_columns_ok([(c.name, c.state) for c in cells], _CELL_TEXT) and _columns_ok(exes, _EXE_TEXT)):
        _check_cells(machine)
    usage = machine.usage
    if len(usage.cells) > MAX_CELLS:
        raise InvalidReport(f"machine.usage.cells: more than {MAX_CELLS} cells")
    if not _columns_ok([(cu.cell,) for cu in usage.cells], ((MAX_SERVICE, True),)):
        for i, cu in enumerate(usage.cells):
            _text(cu.cell, f"machine.usage.cells[{i}].cell", MAX_SERVICE, required=True)
    for name in ("cpu_usage_us", "memory_used_bytes", "at_ns"):  # stored in signed 64-bit columns
        if not 0 <= getattr(usage, name) < 2**63:
            raise InvalidReport(f"machine.usage.{name}: must be 0 to 2^63-1")


_CELL_TEXT = ((MAX_SERVICE, True), (32, False))
_EXE_TEXT = ((MAX_NAME, True), (32, False), (32, False), (MAX_NAME, False))


def _columns_ok(rows: Sequence[tuple[str, ...]], rules: tuple[tuple[int, bool], ...]) -> bool:
    """Single-line text rules (limit, required) over whole columns: one regex scan per column."""
    if not rows:
        return True
    for values, (limit, required) in zip(zip(*rows, strict=True), rules, strict=True):
        lengths = list(map(len, values))
        if max(lengths) > limit or (required and min(lengths) == 0) or _CONTROL.search("".join(values)):
            return False
    return True


def _check_cells(machine: pb.Machine) -> None:
    """The slow path of the cells: names the first field breaking a rule."""
    executables = 0
    for i, cell in enumerate(machine.cells):
        where = f"machine.cells[{i}]"
        _text(cell.name, f"{where}.name", MAX_SERVICE, required=True)
        _text(cell.state, f"{where}.state", 32)
        executables += len(cell.executables)
        if executables > MAX_EXECUTABLES_TOTAL:
            raise InvalidReport(f"machine.cells: more than {MAX_EXECUTABLES_TOTAL} executables in all")
        for j, exe in enumerate(cell.executables):
            ewhere = f"{where}.executables[{j}]"
            _text(exe.name, f"{ewhere}.name", MAX_NAME, required=True)
            _text(exe.state, f"{ewhere}.state", 32)
            _text(exe.health, f"{ewhere}.health", 32)
            _text(exe.exit, f"{ewhere}.exit", MAX_NAME)
