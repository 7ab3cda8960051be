"""This machine's interfaces and listening ports, as reported to a worker saver (no gRPC here).

:func:`collect` reads the kernel's own tables in the host netns and in each given netns (the cells'):
links and addresses (rtnetlink), TCP/UDP listeners (sock_diag), and attributes each socket to a
cell/executable, a process or a well-known service. Nothing is scanned or connected to.

Placement rules (what ``ss -ltnu`` + ``ip addr`` mean together):
- a wildcard bind (0.0.0.0 / ::) counts for every address of its family in its netns; an IPv6
  wildcard without IPV6_V6ONLY (``ss`` prints ``*``) also for every IPv4 address; a socket bound to
  a device (SO_BINDTODEVICE) only for that device's addresses;
- a specific bind counts for the interface holding that address; a loopback address that no
  interface holds (127.0.0.53) is shown on ``lo``; any other is listed under :data:`UNASSIGNED`.
Failures are data, not exceptions: a netns that cannot be read sets the machine's ``error``, and its
interfaces' ``error`` when they were read but the listeners were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import operator
import os
import socket
import threading
import uuid as uuidlib
from dataclasses import dataclass, field

from observe import inventory_links, sockdiag
from observe.inventory_links import Link
from observe.inventory_owners import Attributor, Owner, service_names
from observe.netnsenter import open_sockets

UNASSIGNED = "(unassigned)"
MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
MACHINE_ID_FILE = "machine-id"


@dataclass(frozen=True, slots=True)
class Port:
    """One listener as placed on an address; frozen, as one object is shared by successive reports."""

    port: int
    proto: str  # tcp | udp
    service: str  # cell/exe.name, else the process name, else the well-known service, else ""
    cell: str = ""
    executable: str = ""
    process: str = ""
    pid: int = 0


@dataclass(slots=True)
class Address:
    ip: str
    ports: list[Port] = field(default_factory=list)


@dataclass(slots=True)
class Interface:
    name: str  # "eth0" in the host netns, "<netns>/eth0" in another one
    state: str
    netns: str = ""  # "" = the host's
    addresses: list[Address] = field(default_factory=list)
    error: str = ""


@dataclass
class Machine:
    uuid: str
    interfaces: list[Interface] = field(default_factory=list)
    error: str = ""

    def listener_count(self) -> int:
        return sum(len(a.ports) for i in self.interfaces for a in i.addresses)


def machine_uuid(state_dir: str) -> str:
    """Stable node id: /etc/machine-id, else one generated once and kept in ``state_dir``."""
    for path in MACHINE_ID_PATHS:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return str(uuidlib.UUID(text))
    path = os.path.join(state_dir, MACHINE_ID_FILE)
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        return str(uuidlib.UUID(f.read().strip()))
    new = str(uuidlib.uuid4())
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new + "\n")
    os.replace(tmp, path)
    return new


_NO_OWNER = Owner()
_PORT_ORDER = operator.attrgetter("port", "proto", "service")
_BY_PORT = operator.itemgetter(3)  # a sockdiag.Listener's port


@dataclass
class _Netns:
    name: str | None
    links: list[Link] = field(default_factory=list)
    listeners: list[sockdiag.Listener] = field(default_factory=list)
    links_error: str = ""
    listeners_error: str = ""


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class _AddressBook:
    """The addresses of one netns, and which of them a bind reaches (the rules in the module doc)."""

    def __init__(self, ns: _Netns) -> None:
        prefix = f"{ns.name}/" if ns.name else ""
        self.interfaces: list[Interface] = []
        self.by_ip: dict[str, list[Address]] = {}
        self.by_family: dict[int, list[Address]] = {socket.AF_INET: [], socket.AF_INET6: []}
        self.by_index: dict[int, list[tuple[int, Address]]] = {}
        self.lo: Interface | None = None
        self.unassigned: dict[str, Address] = {}
        for link in ns.links:
            iface = Interface(prefix + link.name, link.state, ns.name or "", error=ns.listeners_error)
            self.interfaces.append(iface)
            if link.loopback and self.lo is None:
                self.lo = iface
            for family, ip in link.addresses:
                addr = Address(ip)
                iface.addresses.append(addr)
                self.by_ip.setdefault(ip, []).append(addr)
                self.by_family.setdefault(family, []).append(addr)
                self.by_index.setdefault(link.index, []).append((family, addr))

    def targets(self, family: int, raw: bytes, ifindex: int, v6only: bool) -> list[Address]:
        """The addresses a socket bound to ``raw`` (on ``ifindex``, 0 = any) accepts connections on."""
        families = {family} if v6only else {socket.AF_INET, socket.AF_INET6}
        if sockdiag.is_wildcard(family, raw):
            if ifindex:
                return [a for fam, a in self.by_index.get(ifindex, []) if fam in families]
            return [a for fam in families for a in self.by_family.get(fam, [])]
        ip = sockdiag.address(family, raw)
        targets = self.by_ip.get(ip, [])
        if ifindex:
            targets = [a for _fam, a in self.by_index.get(ifindex, []) if a.ip == ip] or targets
        if not targets and self.lo is not None and _is_loopback(ip):
            addr = Address(ip)
            self.lo.addresses.append(addr)
            self.by_ip[ip] = targets = [addr]
        return targets or [self.unassigned.setdefault(ip, Address(ip))]


def _place(ns: _Netns, owners: dict[int, Owner], known: dict[int, Port], keep: dict[int, Port],
           ) -> tuple[list[Interface], list[Address]]:
    """Interfaces of one netns with each listener on the addresses it accepts; plus unplaced ones.

    One pass over the listeners: the addresses a bind reaches are worked out once per distinct
    (family, address, device, v6only); a socket's :class:`Port` is taken from ``known`` (the last
    collection's, by inode) when it still matches, and every one used is put in ``keep``. The
    listeners are taken in port order (a stable sort of the kernel's order, where tcp comes before
    udp), so each address's ports come out ordered by (port, proto, service), and duplicates
    (SO_REUSEPORT, the same port on 0.0.0.0 and ::) can only be among a run of equal ports: only such
    a run is checked, and an address that got a second entry for a (proto, port) is sorted again.
    """
    book = _AddressBook(ns)
    reach: dict[tuple[int, bytes, int, bool], list[Address]] = {}
    unsorted: dict[int, Address] = {}
    well_known = service_names()
    run_port = -1
    run: list[tuple[str, list[Address], Port]] = []  # the placed sockets of the current port
    for proto, family, raw, port, ifindex, inode, _cgroup_id, v6only in sorted(ns.listeners, key=_BY_PORT):
        key = (family, raw, ifindex, v6only)
        targets = reach.get(key)
        if targets is None:
            targets = reach[key] = book.targets(family, raw, ifindex, v6only)
        entry = known.get(inode)
        if entry is None or entry.port != port or entry.proto != proto:
            owner = owners.get(inode, _NO_OWNER)
            if owner.cell:
                service = f"{owner.cell}/exe.{owner.executable}"
            else:
                service = owner.process or well_known.get((port, proto), "")
            entry = Port(port, proto, service, owner.cell, owner.executable, owner.process, owner.pid)
        keep[inode] = entry
        if port != run_port:
            run_port, run = port, [(proto, targets, entry)]
            for addr in targets:
                addr.ports.append(entry)
            continue
        for addr in targets:
            if not any(p == proto and e.service == entry.service and e.cell == entry.cell and any(a is addr for a in t)
                       for p, t, e in run):
                addr.ports.append(entry)
                unsorted[id(addr)] = addr
        run.append((proto, targets, entry))
    for addr in unsorted.values():
        addr.ports.sort(key=_PORT_ORDER)
    return book.interfaces, list(book.unassigned.values())


def _read_netns(name: str | None) -> _Netns:
    """Links, addresses and listeners of one netns; both sockets opened in one entry into it."""
    ns = _Netns(name)
    try:
        route, diag = open_sockets(name, [inventory_links.ROUTE_SOCKET, sockdiag.DIAG_SOCKET])
    except Exception as exc:  # a vanished or unreadable netns is reported, not raised
        ns.links_error, ns.listeners_error = f"interfaces: {exc}", f"listeners: {exc}"
        return ns
    with route, diag:
        try:
            ns.links = inventory_links.read(inventory_links.configure(route))
        except Exception as exc:
            ns.links_error = f"interfaces: {exc}"
        try:
            ns.listeners = sockdiag.read(sockdiag.configure(diag))
        except Exception as exc:
            ns.listeners_error = f"listeners: {exc}"
    return ns


class Collector:
    """Collects :class:`Machine` reports; keeps the per-socket owner cache between calls."""

    def __init__(self, machine_id: str, cgroup_root: str = "") -> None:
        self.machine_id = machine_id
        self.cgroup_root = cgroup_root  # cellar's root in the unified hierarchy ("" = no cells)
        self.attributor = Attributor()
        self._ports: dict[int, Port] = {}  # inode -> its Port in the last report
        self._lock = threading.Lock()  # one collection at a time: the attributor's cache is shared

    async def collect(self, netns: list[str] | tuple[str, ...] = ()) -> Machine:
        """The machine as it is now: the host netns plus each named netns (missing ones -> error).

        All in one worker thread: the work is CPU-bound Python, and splitting it over the event
        loop and several threads only made them take turns at the GIL.
        """
        return await asyncio.to_thread(self.collect_blocking, [None, *dict.fromkeys(netns)])

    def collect_blocking(self, names: list[str | None]) -> Machine:
        """:meth:`collect` for the netns in ``names`` (None: the host's), in the calling thread."""
        with self._lock:
            spaces = [_read_netns(n) for n in names]
            sockets = [(s[5], s[6]) for ns in spaces for s in ns.listeners]
            errors: list[str] = []
            known = self._ports
            try:
                owners = self.attributor.owners(sockets, self.cgroup_root)
            except Exception as exc:
                owners, known = {}, {}  # Ports without owners are neither used nor kept
                errors.append(f"owners: {exc}")
            machine = Machine(self.machine_id)
            unassigned: list[Address] = []
            keep: dict[int, Port] = {}
            for ns in spaces:
                label = f"netns {ns.name}" if ns.name else "host netns"
                errors += [f"{label}: {e}" for e in (ns.links_error, ns.listeners_error) if e]
                ifaces, loose = _place(ns, owners, known, keep)
                machine.interfaces += ifaces
                unassigned += loose
            self._ports = keep if known is self._ports else {}
        if unassigned:
            machine.interfaces.append(Interface(UNASSIGNED, "", addresses=unassigned,
                                                error="bound to addresses no interface holds"))
        machine.error = "; ".join(errors)
        return machine


async def collect(machine_id: str, netns: list[str] | tuple[str, ...] = (), cgroup_root: str = "") -> Machine:
    """One-shot :meth:`Collector.collect`."""
    return await Collector(machine_id, cgroup_root).collect(netns)
