"""The inventory against what ``ip -j addr`` and ``ss -ltnuH`` report, in a test netns and on the host."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import subprocess

import pytest

from observe.inventory import UNASSIGNED, Machine, collect, machine_uuid

pytestmark = pytest.mark.root

Key = tuple[str, str, str, int]  # (iface, ip, proto, port)


def ip_addr(netns: str | None) -> dict[str, list[str]]:
    argv = ["ip", "-j", "addr"] if netns is None else ["ip", "-n", netns, "-j", "addr"]
    return {link["ifname"]: [a["local"] for a in link.get("addr_info", [])]
            for link in json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)}


def ss_listeners(netns: str | None) -> list[tuple[str, str, int]]:
    """``(proto, local address as ss prints it, port)`` of every listener."""
    argv = ["ss", "-ltnuH"] if netns is None else ["ss", "-N", netns, "-ltnuH"]
    out = []
    for line in subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines():
        cols = line.split()
        local = cols[4]
        host, _, port = local.rpartition(":")
        out.append((cols[0], host.split("%")[0].strip("[]"), int(port)))
    return out


def expected(addrs: dict[str, list[str]], listeners: list[tuple[str, str, int]], prefix: str = "") -> set[Key]:
    """Where each ss listener must appear: wildcards on every address of the family (``*`` on all)."""
    out: set[Key] = set()
    for proto, host, port in listeners:
        for iface, ips in addrs.items():
            for ip in ips:
                v6 = ":" in ip
                if host == "*" or (host == "0.0.0.0" and not v6) or (host == "::" and v6) or host == ip:
                    out.add((prefix + iface, ip, proto, port))
        if host not in ("*", "0.0.0.0", "::") and not any(host in ips for ips in addrs.values()):
            assert ipaddress.ip_address(host).is_loopback, host
            out.add((prefix + "lo", host, proto, port))
    return out


def keys(machine: Machine, netns: str = "") -> set[Key]:
    return {(i.name, a.ip, p.proto, p.port) for i in machine.interfaces if i.netns == netns and i.name != UNASSIGNED
            for a in i.addresses for p in a.ports}


SPECS = [
    ("tcp", "0.0.0.0", False), ("tcp", "::", False), ("tcp", "::", True), ("tcp", "10.77.0.1", False),
    ("tcp", "fd77::2", True), ("tcp", "127.0.0.1", False), ("udp", "0.0.0.0", False), ("udp", "::", True),
    ("udp", "fd77::1", True), ("udp", "10.77.0.2", False), ("udp", "127.0.0.53", False), ("udp", "::1", True),
]


def test_netns_listeners_and_addresses_match_ip_and_ss(test_netns, tmp_path):
    bound = test_netns.listen(SPECS)
    machine = asyncio.run(collect(machine_uuid(str(tmp_path)), [test_netns.name]))
    assert machine.error == ""
    addrs = ip_addr(test_netns.name)
    ours = {i.name.removeprefix(test_netns.name + "/"): sorted(a.ip for a in i.addresses)
            for i in machine.interfaces if i.netns == test_netns.name}
    # every address ip shows, on the same interface (plus 127.0.0.53 that only a listener names)
    assert {k: sorted(v) for k, v in addrs.items()} == {k: [ip for ip in v if ip != "127.0.0.53"] for k, v in ours.items()}
    states = {i.name: i.state for i in machine.interfaces if i.netns == test_netns.name}
    assert states[f"{test_netns.name}/va"] == "UP" and states[f"{test_netns.name}/lo"] == "UNKNOWN"
    ss = ss_listeners(test_netns.name)
    assert len(ss) == len(bound)
    assert keys(machine, test_netns.name) == expected(addrs, ss, test_netns.name + "/")
    # spot checks of the rules, independent of the helper above
    ports = {(proto, ip): port for proto, ip, port in reversed(bound)}  # first of equal (proto, ip) wins
    k = keys(machine, test_netns.name)
    n = test_netns.name
    assert (f"{n}/vb", "10.77.0.2", "tcp", ports[("tcp", "0.0.0.0")]) in k
    assert (f"{n}/va", "10.77.0.1", "tcp", ports[("tcp", "::")]) in k  # dual-stack wildcard covers IPv4
    assert not any(p == ports[("udp", "::")] and ":" not in ip for _, ip, _, p in k)  # v6only: IPv6 only
    assert (f"{n}/lo", "127.0.0.53", "udp", ports[("udp", "127.0.0.53")]) in k
    assert not any(p == ports[("tcp", "127.0.0.1")] and i != f"{n}/lo" for i, _, _, p in k)
    # owned by the listener process
    for iface in (i for i in machine.interfaces if i.netns == test_netns.name):
        for a in iface.addresses:
            for p in a.ports:
                assert p.process == "python3" or p.process.startswith("python"), p
                assert p.pid == test_netns.procs[0].pid


#: Host-side binds: TCP and UDP x IPv4 and IPv6 x loopback and wildcard (IPv6 wildcard dual-stack and v6only).
HOST_SPECS = [
    ("tcp", "127.0.0.1", False), ("tcp", "0.0.0.0", False), ("tcp", "::1", True), ("tcp", "::", False),
    ("tcp", "::", True), ("udp", "127.0.0.1", False), ("udp", "0.0.0.0", False), ("udp", "::1", True),
    ("udp", "::", False), ("udp", "::", True),
]


@pytest.fixture
def host_listeners(request: pytest.FixtureRequest) -> list[tuple[str, str, int]]:
    """:data:`HOST_SPECS` bound in this process on kernel-picked ports (closed in a finalizer)."""
    bound = []
    for proto, ip, v6only in HOST_SPECS:
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        request.addfinalizer(s.close)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((ip, 0))
        if proto == "tcp":
            s.listen()
        bound.append((proto, ip, s.getsockname()[1]))
    return bound


def test_host_listeners_appear_where_ss_shows_them(host_listeners, tmp_path):
    ports = {(proto, port) for proto, _, port in host_listeners}
    for _attempt in range(3):  # other tests add host interfaces (cell veths): take a snapshot ip agrees on
        before = ip_addr(None)
        machine = asyncio.run(collect(machine_uuid(str(tmp_path))))
        ss = ss_listeners(None)
        addrs = ip_addr(None)
        if addrs == before:
            break
    mine = [entry for entry in ss if (entry[0], entry[2]) in ports]
    assert len(mine) == len(host_listeners)  # each bind, once, as ss prints it (a dual-stack wildcard is "*")
    k = keys(machine)
    assert {key for key in k if key[2:] in ports} == expected(addrs, mine)
    # spot checks of the rules, independent of the helper above
    port = {(proto, ip, v6only): p for (proto, ip, v6only), (_, _, p) in zip(HOST_SPECS, host_listeners, strict=True)}
    assert ("lo", "127.0.0.1", "tcp", port[("tcp", "127.0.0.1", False)]) in k
    assert ("lo", "::1", "udp", port[("udp", "::1", True)]) in k
    every_ip = {ip for v in addrs.values() for ip in v}
    for proto in ("tcp", "udp"):
        def at(ip: str, v6only: bool, proto: str = proto) -> set[tuple[str, str]]:
            return {(i, a) for i, a, pr, p in k if (pr, p) == (proto, port[(proto, ip, v6only)])}

        assert at("127.0.0.1", False) == {("lo", "127.0.0.1")} and at("::1", True) == {("lo", "::1")}
        assert {a for _, a in at("0.0.0.0", False)} == {ip for ip in every_ip if ":" not in ip}
        assert {a for _, a in at("::", True)} == {ip for ip in every_ip if ":" in ip}  # v6only: IPv6 only
        assert {a for _, a in at("::", False)} == every_ip  # dual-stack: IPv4 too
    # owned by this process, named after it
    for p in (p for i in machine.interfaces for a in i.addresses for p in a.ports if (p.proto, p.port) in ports):
        assert p.pid == os.getpid() and p.service == p.process
    # every host interface and address that ip shows is reported
    assert {i.name: sorted(a.ip for a in i.addresses) for i in machine.interfaces if not i.netns} == \
        {k2: sorted(v) for k2, v in addrs.items()}


def test_missing_netns_is_an_error_not_an_exception(tmp_path):
    machine = asyncio.run(collect(machine_uuid(str(tmp_path)), ["cellar-inv-does-not-exist"]))
    assert "cellar-inv-does-not-exist" in machine.error
    assert any(i.name == "lo" for i in machine.interfaces)


def test_machine_uuid_is_stable(tmp_path):
    assert machine_uuid(str(tmp_path)) == machine_uuid(str(tmp_path))
