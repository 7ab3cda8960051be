"""Named network namespaces and veth pairs, read back with iproute2 (``ip -j``) and real traffic.

Traffic only goes between the host end and the cell end of a veth pair made by the test itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import time

import pytest

from cells import namespaces as ns
from cells.errors import AlreadyExists, InvalidArgument
from cells.netns import create_netns, delete_netns, list_netns, netns_path
from cells.spec import Veth


def ip_json(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def ip_netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def host_links(prefix: str) -> list[str]:
    return [str(link["ifname"]) for link in ip_json("link") if str(link["ifname"]).startswith(prefix)]


def subnet() -> tuple[str, str]:
    """A random /30 in 10.213.0.0/16 (host .1, cell .2): two xdist workers never share one."""
    block = random.randrange(0, 16384) * 4
    base = f"10.213.{block // 256}.{block % 256}"
    host = base.rsplit(".", 1)[0] + f".{block % 256 + 1}"
    cell = base.rsplit(".", 1)[0] + f".{block % 256 + 2}"
    return host, cell


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(address: str, timeout: float = 1.0) -> bool:
    """``ping -c1 -W1``; a raw-socket echo where iputils-ping is not installed."""
    if shutil.which("ping"):
        return subprocess.run(["ping", "-c1", "-W1", address], capture_output=True).returncode == 0
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"cellar-test"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (source, _) = sock.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _sum, got_id, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if source == address and kind == 0 and got_id == ident:
                return True
    return False


def test_names_are_validated() -> None:
    for bad in ("", "..", "a/b", "-x", "x" * 64, "a\0b"):
        with pytest.raises(InvalidArgument):
            netns_path(bad)
    assert netns_path("cellar-x") == "/run/netns/cellar-x"


@pytest.mark.root
def test_create_brings_lo_up_and_isolates(netns_prefix: str) -> None:
    name = f"{netns_prefix}-a"
    asyncio.run(create_netns(name))
    assert list_netns(netns_prefix) == [name]
    assert name in ip_netns_names()
    (lo,) = ip_json("-n", name, "link", "show", "lo")
    assert "UP" in lo["flags"]  # type: ignore[operator]
    assert [link["ifname"] for link in ip_json("-n", name, "link")] == ["lo"]
    out = subprocess.run(
        ["ip", "netns", "exec", name, "readlink", "/proc/self/ns/net"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == f"net:[{os.stat(netns_path(name)).st_ino}]"
    assert out != f"net:[{ns.ns_inode('self', 'net')}]"
    with pytest.raises(AlreadyExists):
        asyncio.run(create_netns(name))

    asyncio.run(delete_netns(name))
    assert list_netns(netns_prefix) == []
    assert name not in ip_netns_names()
    asyncio.run(delete_netns(name))  # idempotent


@pytest.mark.root
def test_veth_reachable_from_host_and_removed_with_the_netns(netns_prefix: str, ifname_prefix: str) -> None:
    name = f"{netns_prefix}-v"
    host_ip, cell_ip = subnet()
    veth = Veth(
        host_ifname=f"{ifname_prefix}h",
        cell_ifname="eth0",
        host_address=f"{host_ip}/30",
        cell_address=f"{cell_ip}/30",
    )
    asyncio.run(create_netns(name, veth))

    (host_end,) = ip_json("addr", "show", "dev", veth.host_ifname)
    assert "UP" in host_end["flags"]  # type: ignore[operator]
    assert host_ip in [a["local"] for a in host_end["addr_info"]]  # type: ignore[attr-defined]
    (cell_end,) = ip_json("-n", name, "addr", "show", "dev", "eth0")
    assert "UP" in cell_end["flags"]  # type: ignore[operator]
    assert cell_ip in [a["local"] for a in cell_end["addr_info"]]  # type: ignore[attr-defined]
    assert "eth0" not in host_links(ifname_prefix)  # the peer never lived in the host

    # The link may need a moment to leave the "no carrier" state after both ends went up.
    assert any(icmp_echo(cell_ip) for _ in range(5)), f"no echo reply from {cell_ip}"

    asyncio.run(delete_netns(name))
    assert host_links(ifname_prefix) == []
    assert name not in ip_netns_names()


@pytest.mark.root
def test_veth_removed_even_while_a_process_holds_the_netns(netns_prefix: str, ifname_prefix: str) -> None:
    name = f"{netns_prefix}-h"
    asyncio.run(create_netns(name, Veth(host_ifname=f"{ifname_prefix}h")))
    fd = os.open(netns_path(name), os.O_RDONLY)

    def enter() -> None:
        ns.setns(fd, ns.CLONE_NEWNET)

    holder = subprocess.Popen(["sleep", "30"], preexec_fn=enter, pass_fds=(fd,))
    os.close(fd)
    try:
        asyncio.run(delete_netns(name))
        assert host_links(ifname_prefix) == []
        assert name not in ip_netns_names()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.root
def test_failed_create_leaves_nothing(netns_prefix: str, ifname_prefix: str) -> None:
    name = f"{netns_prefix}-f"
    # The host end name is taken (by another veth of ours): the kernel refuses, everything is undone.
    taken = f"{ifname_prefix}x"
    subprocess.run(
        ["ip", "link", "add", taken, "type", "veth", "peer", "name", f"{ifname_prefix}y"], check=True
    )
    with pytest.raises(AlreadyExists, match="host_ifname"):
        asyncio.run(create_netns(name, Veth(host_ifname=taken)))
    assert list_netns(netns_prefix) == []
    assert name not in ip_netns_names()
    assert sorted(host_links(ifname_prefix)) == [taken, f"{ifname_prefix}y"]
    subprocess.run(["ip", "link", "del", taken], check=True)
