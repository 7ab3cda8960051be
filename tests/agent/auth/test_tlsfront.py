"""agent.auth.tlsfront's admission rules, by themselves (the floods against a real cellard are in
tests/security/test_flood.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.auth import tlsfront
from agent.auth.tcppeer import bind_tcp_listener
from agent.auth.tlsfront import Admission, address_key, drop_silently


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admit(adm: Admission, conn: str, addr: str) -> tuple[bool, object]:
    ok, victim = adm.victim(addr)
    if ok:
        adm.admit(conn, addr, victim)
    return ok, victim


def test_a_newcomer_displaces_the_oldest_silent_connection_of_its_own_address() -> None:
    adm = Admission(per_address=2, total=100, prove_s=5.0, clock=Clock())
    assert admit(adm, "a1", "A") == (True, None)
    assert admit(adm, "b1", "B") == (True, None)
    assert admit(adm, "a2", "A") == (True, None)
    assert admit(adm, "a3", "A") == (True, "a1")
    assert adm.count == {"A": 2, "B": 1} and adm.open == 3 and adm.displaced == 1


def test_silent_connections_go_before_talking_ones_and_proven_ones_never() -> None:
    clock = Clock()
    adm = Admission(per_address=100, total=3, prove_s=5.0, clock=clock)
    for conn in ("t1", "t2", "s1"):
        admit(adm, conn, "A")
    adm.talked("t1", "T1")
    adm.talked("t2", "T2")
    assert admit(adm, "n1", "B") == (True, "s1"), "a silent one goes first, however young"
    adm.talked("n1", "N1")
    clock.now += 6.0  # T1, T2, N1 are past the handshake deadline: proven
    assert admit(adm, "n2", "B") == (False, None)
    assert adm.refused == 1 and adm.open == 3


def test_a_talking_connection_within_its_deadline_can_be_displaced_oldest_first() -> None:
    clock = Clock()
    adm = Admission(per_address=2, total=100, prove_s=5.0, clock=clock)
    admit(adm, "a1", "A")
    adm.talked("a1", "A1")
    clock.now += 1.0
    admit(adm, "a2", "A")
    adm.talked("a2", "A2")
    assert admit(adm, "a3", "A") == (True, "A1")


def test_release_is_idempotent_and_counts_return_to_zero() -> None:
    adm = Admission(per_address=5, total=5, prove_s=5.0, clock=Clock())
    admit(adm, "a", "A")
    adm.talked("a", "A1")
    adm.release("A1")
    adm.release("A1")
    adm.release("never")
    assert adm.open == 0 and adm.count == {} and not adm.silent and not adm.talking


def test_an_ipv6_host_is_one_budget_per_64_and_a_mapped_ipv4_is_its_ipv4() -> None:
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1") == "10.0.0.1"


def test_accepted_tcp_connections_get_tcp_nodelay() -> None:
    """Found by measuring: Nagle left on made every spliced mTLS call wait for a delayed ACK (44 ms)."""
    listener = bind_tcp_listener("127.0.0.1:0")

    async def main() -> int:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, conn)
        try:
            return int(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            transport.close()
            client.close()

    try:
        listener.setblocking(True)
        assert asyncio.run(main()) == 1
    finally:
        listener.close()


def test_a_dropped_connection_tells_its_client_nothing_until_it_sends() -> None:
    """drop_silently: no FIN (a flooder reading EOF reconnected at once, bench/flood.py), yet the fd is
    gone and the client's first byte is answered with a reset."""
    listener = bind_tcp_listener("127.0.0.1:0")
    listener.setblocking(True)
    client = socket.create_connection(listener.getsockname())
    try:
        conn, _ = listener.accept()
        fd = conn.fileno()
        drop_silently(conn)
        assert conn.fileno() == -1
        with pytest.raises(OSError):
            os.fstat(fd)
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(1)
        client.settimeout(5)
        client.send(b"\x16")
        with pytest.raises(ConnectionResetError):
            client.recv(1)
    finally:
        client.close()
        listener.close()


def _front_paths() -> list[Any]:
    return [pytest.param(False, id="event-loop"),
            pytest.param(True, id="native", marks=pytest.mark.skipif(tlsfront._c_front is None,
                                                                    reason="agent.auth._front not built"))]


@pytest.mark.parametrize("native", _front_paths())
def test_the_front_holds_silent_connections_per_address_and_joins_those_that_talk(tmp_path: Path, native: bool) -> None:
    """Both accept paths (agent/auth/_front.c and the event loop's) against real sockets: an address
    holds at most per_address connections, the oldest silent ones dropped without a word; a talking one
    is spliced to the internal listener byte for byte; a silent one is closed after the deadline."""
    internal = tmp_path / "internal"
    internal.mkdir(mode=0o700)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.bind(str(internal / tlsfront.INTERNAL_NAME))
    upstream.listen(64)
    upstream.settimeout(10)

    async def main() -> None:
        front = tlsfront.TlsFront("127.0.0.1:0", str(internal), per_address=4, total=100, handshake_s=1.5,
                                  native=native)
        await front.start(own_thread=True)
        host, port = front.address.rsplit(":", 1)
        socks: list[socket.socket] = []
        try:
            for _ in range(20):
                socks.append(socket.create_connection((host, int(port))))
                await asyncio.sleep(0.005)  # accept order = connect order
            await asyncio.sleep(0.3)
            assert front.open_connections == 4
            talker = socks[-1]
            talker.sendall(b"\x16hello")
            joined, _ = await asyncio.to_thread(upstream.accept)
            joined.settimeout(10)
            assert await asyncio.to_thread(joined.recv, 16) == b"\x16hello"
            joined.sendall(b"back")
            assert await asyncio.to_thread(talker.recv, 16) == b"back"
            for sock in socks[:16]:  # displaced: no EOF, a reset once they send
                with pytest.raises(BlockingIOError):
                    sock.recv(1, socket.MSG_DONTWAIT)
                sock.send(b"x")
            await asyncio.sleep(0.2)
            for sock in socks[:16]:
                with pytest.raises(ConnectionResetError):
                    sock.recv(1, socket.MSG_DONTWAIT)
            for sock in socks[16:19]:  # held, silent: closed (a FIN) after the deadline
                sock.settimeout(10)
                assert await asyncio.to_thread(sock.recv, 1) == b""
            assert front.open_connections == 1
            joined.close()
            assert await asyncio.to_thread(talker.recv, 1) == b""
            talker.close()  # both directions ended: the front lets the connection go
            for _ in range(100):
                if front.open_connections == 0:
                    break
                await asyncio.sleep(0.05)
            assert front.open_connections == 0
        finally:
            for sock in socks:
                sock.close()
            await front.close()

    try:
        asyncio.run(main())
    finally:
        upstream.close()


@pytest.mark.parametrize("native", _front_paths())
def test_a_newcomer_displaces_an_unproven_talking_connection_when_no_silent_one_is_left(tmp_path: Path,
                                                                                       native: bool) -> None:
    """An address full of connections that talked but are not proven yet (a flood that sends its
    ClientHellos): the newcomer takes the oldest one's place (through Python on the native path)."""
    internal = tmp_path / "internal"
    internal.mkdir(mode=0o700)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.bind(str(internal / tlsfront.INTERNAL_NAME))
    upstream.listen(64)
    upstream.settimeout(10)

    async def main() -> None:
        front = tlsfront.TlsFront("127.0.0.1:0", str(internal), per_address=2, total=100, handshake_s=30.0,
                                  native=native)
        await front.start(own_thread=True)
        host, port = front.address.rsplit(":", 1)
        talkers, joined = [], []
        try:
            for _ in range(2):
                sock = socket.create_connection((host, int(port)))
                sock.sendall(b"\x16")
                talkers.append(sock)
                joined.append((await asyncio.to_thread(upstream.accept))[0])
            newcomer = socket.create_connection((host, int(port)))
            talkers[0].settimeout(10)
            with contextlib.suppress(ConnectionResetError):  # aborted: an EOF, or a reset
                assert await asyncio.to_thread(talkers[0].recv, 1) == b""
            await asyncio.sleep(0.2)
            assert front.open_connections == 2
            assert front.admission.displaced == 1
            newcomer.close()
        finally:
            for sock in talkers + joined:
                sock.close()
            await front.close()

    try:
        asyncio.run(main())
    finally:
        upstream.close()
