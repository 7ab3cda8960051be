"""Fixtures for the inventory tests: a throwaway netns with a veth pair, and listeners inside it.

``test_netns``: a named netns ``cellar-inv-<hex>`` with ``lo`` up and a veth pair whose BOTH ends live
inside it (the host's interfaces are never touched), with IPv4 and IPv6 addresses; the finalizer
kills its listener processes and deletes it. ``listen(netns, specs)`` starts one python process in
that netns holding the given sockets and returns it once they are bound.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

LISTENER = r"""
import json, socket, sys
specs = json.loads(sys.argv[1])
held, out = [], []
for proto, ip, v6only in specs:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((ip, 0))
    if proto == "tcp":
        s.listen()
    held.append(s)
    out.append([proto, ip, s.getsockname()[1]])
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@dataclass
class TestNetns:
    name: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def listen(self, specs: list[tuple[str, str, bool]]) -> list[tuple[str, str, int]]:
        """Bind ``(proto, ip, v6only)`` sockets in this netns; returns ``(proto, ip, port)``."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", LISTENER, json.dumps(specs)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "listener process failed"
        return [tuple(x) for x in json.loads(line)]  # type: ignore[misc]


@pytest.fixture
def test_netns() -> Iterator[TestNetns]:
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")
    name = f"cellar-inv-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    ns = TestNetns(name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        sh("ip", "-n", name, "addr", "add", "10.77.0.1/24", "dev", "va")
        sh("ip", "-n", name, "addr", "add", "fd77::1/64", "dev", "va", "nodad")
        sh("ip", "-n", name, "addr", "add", "10.77.0.2/24", "dev", "vb")
        sh("ip", "-n", name, "addr", "add", "fd77::2/64", "dev", "vb", "nodad")
        sh("ip", "-n", name, "link", "set", "va", "up")
        sh("ip", "-n", name, "link", "set", "vb", "up")
        yield ns
    finally:
        for proc in ns.procs:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
