"""Floods of connections (issue 13, "Bounded"): they degrade the flooder, not the operator.

Found as an attacker: idle TCP connections that never start TLS were held ~120 s each; 21,000 of
them, or 7,000 ``local.sock`` connections from user nobody, locked out root on the main socket and
admin over mTLS (DEADLINE_EXCEEDED). Each test here runs a REAL cellard; the floods are small and
bounded (bench/flood.py runs the big one).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.timeouts import scaled

pytestmark = pytest.mark.root

#: cellard's TLS handshake deadline is a few seconds (agent.server); the test allows for a slow host.
HANDSHAKE_BOUND_S = scaled(10.0)


def _tcp_addr(daemon: Any) -> tuple[str, int]:
    host, _, port = daemon.tcp.rpartition(":")
    return host, int(port)


def test_an_idle_tcp_connection_that_never_starts_tls_is_closed_within_seconds(cellard_factory: Any) -> None:
    daemon = cellard_factory(tcp=True)
    idle = [socket.create_connection(_tcp_addr(daemon)) for _ in range(3)]
    half = socket.create_connection(_tcp_addr(daemon))
    half.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # the first bytes of a ClientHello, no more
    started = time.monotonic()
    for sock in [*idle, half]:
        sock.settimeout(HANDSHAKE_BOUND_S)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"a connection without a TLS handshake still open after {HANDSHAKE_BOUND_S:g} s")
        except ConnectionResetError:
            data = b""
        assert data == b"" or data[:1] == b"\x15", data  # closed (or a TLS alert, then closed)
        sock.close()
    print(f"\nclosed after {time.monotonic() - started:.1f} s")
    # The listener still serves an admin.
    with daemon.tls_channel("admin-user") as channel:
        assert daemon.health(channel=channel) == "SERVING"
