"""Floods of connections (issue 13, "Bounded"): they degrade the flooder, not the operator.

Found as an attacker: idle TCP connections that never start TLS were held ~120 s each; 21,000 of
them, or 7,000 ``local.sock`` connections from user nobody, locked out root on the main socket and
admin over mTLS (DEADLINE_EXCEEDED). Each test here runs a REAL cellard; the floods are small and
bounded (bench/flood.py runs the big one).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

#: cellard's TLS handshake deadline is a few seconds (agent.core.server); the test allows for a slow host.
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


#: Run as an unprivileged uid: open N connections to a Unix socket, say how many the server closed
#: at once (a refused one reads EOF), keep the rest open until stdin closes.
FLOODER = r"""
import os, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
if path.startswith("/"):
    family, addr = socket.AF_UNIX, path
else:
    family, addr = socket.AF_INET, (path.rsplit(":", 1)[0], int(path.rsplit(":", 1)[1]))
socks = []
err = ""
for _ in range(count):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect(addr)
    except OSError as exc:
        err = str(exc)
        s.close()
        continue
    socks.append(s)
time.sleep(1.0)
refused = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            refused += 1
    except BlockingIOError:
        pass
    except OSError:
        refused += 1
print(f"{os.getuid()} {len(socks)} {refused} {err}", flush=True)
sys.stdin.read()
"""


#: The flooder needs only the standard library; root's venv interpreter may not be readable by nobody.
PLAIN_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _flood(path: str, uid: int, count: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([PLAIN_PYTHON, "-c", FLOODER, path, str(count)], user=uid, group=uid,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and int(line[0]) == uid and int(line[1]) == count, line
    return proc, int(line[2])


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_local_socket_flood_of_one_user_is_capped_and_root_still_answers(cellard_factory: Any) -> None:
    daemon = cellard_factory({"server": {"max_connections_per_peer": 32, "max_unix_connections": 48}},
                             base_mode=0o755)
    local = str(daemon.run_dir / "local.sock")
    before = _fds(daemon.proc.pid)
    floods = []
    try:
        nobody, refused_nobody = _flood(local, 65534, 100)
        floods.append(nobody)
        other, refused_other = _flood(local, 65533, 100)  # a second user meets the global cap
        floods.append(other)
        during = _fds(daemon.proc.pid)
        print(f"\nnobody: 100 connections, {refused_nobody} refused; uid 65533: 100, {refused_other} refused; "
              f"cellard fds {before} -> {during}")
        assert refused_nobody == 100 - 32
        assert refused_other == 100 - (48 - 32)
        assert during - before <= 4 * 48 + 16  # accepted, upstream, gRPC's end, the caller's pidfd
        # The operator is not degraded: root on the main socket and on the local socket.
        started = time.monotonic()
        assert daemon.health() == "SERVING"
        import grpc

        with grpc.insecure_channel("unix:" + local) as channel:
            assert daemon.health(channel=channel) == "SERVING"
        assert time.monotonic() - started < scaled(2.0)
    finally:
        for proc in floods:
            proc.kill()
            proc.wait()
    assert any(ev.get("peer") == "uid:65534" for ev in daemon.events("unixpeer.connection_refused"))


def test_a_local_tcp_flood_is_capped_per_uid_and_per_root_cgroup(cellard_factory: Any) -> None:
    """The node-local loopback TCP listener caps per uid (per cgroup for uid 0): nobody's 100
    connections get 32, root's own (this test, outside the cells) get 32 too, none exempt there."""
    daemon = cellard_factory({"server": {"max_connections_per_peer": 32, "max_unix_connections": 1000}})
    tcp = next(ev["tcp"] for ev in daemon.events("local.listening") if ev.get("tcp"))
    floods = []
    try:
        nobody, refused = _flood(tcp, 65534, 100)
        floods.append(nobody)
        assert refused == 100 - 32
        root, refused_root = _flood(tcp, 0, 100)
        floods.append(root)
        assert refused_root == 100 - 32
        assert daemon.health() == "SERVING"
    finally:
        for proc in floods:
            proc.kill()
            proc.wait()


def test_connections_whose_client_left_are_released(cellard_factory: Any) -> None:
    """Found by bench/flood.py: every closed gRPC channel left its proxied connection open in cellard
    (both peers gone, three fds held forever): each side's EOF was forwarded, and neither half closed."""
    import grpc

    daemon = cellard_factory()
    assert daemon.health() == "SERVING"
    time.sleep(0.5)
    before = _fds(daemon.proc.pid)
    for _ in range(50):
        with grpc.insecure_channel("unix:" + daemon.socket) as channel:
            assert daemon.health(channel=channel) == "SERVING"
    deadline = time.monotonic() + scaled(5.0)
    while _fds(daemon.proc.pid) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fds(daemon.proc.pid) <= before + 2, f"cellard fds {before} -> {_fds(daemon.proc.pid)} after 50 closed channels"


def test_concurrent_streams_are_capped_per_identity(cellard_factory: Any) -> None:
    """An identity cannot hold more than server.max_streams_per_identity follows/watches at once:
    the next one is RESOURCE_EXHAUSTED naming the cap; one that ends gives its slot back. Another
    identity is not affected."""
    import grpc

    from proto.aurae import observe_pb2, observe_pb2_grpc

    daemon = cellard_factory({"server": {"max_streams_per_identity": 3}}, tcp=True)

    def watch(channel: grpc.Channel) -> Any:
        stream = observe_pb2_grpc.ObserveStub(channel).GetAuraeDaemonLogStream(
            observe_pb2.GetAuraeDaemonLogStreamRequest(), timeout=scaled(20))
        return stream

    admin = daemon.tls_channel("admin-user")
    operator = daemon.tls_channel("op-user")
    try:
        held = [watch(admin) for _ in range(3)]
        for stream in held:
            stream.initial_metadata()  # the call is being served
        extra = watch(admin)
        with pytest.raises(grpc.RpcError) as refused:
            next(extra)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_identity" in (refused.value.details() or "")
        other = watch(operator)
        other.initial_metadata()
        assert not other.done(), other.details()  # (code() would wait for the end of a running call)
        held[0].cancel()
        deadline = time.monotonic() + scaled(5.0)
        while True:
            again = watch(admin)
            try:
                again.initial_metadata()
                if not again.done():
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "a cancelled stream's slot was not given back"
            time.sleep(0.1)
        for stream in [*held, other, again]:
            stream.cancel()
    finally:
        admin.close()
        operator.close()


def test_memory_trimmer_trims_only_after_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    """cellard gives its heap back after a flood (agent.core.server.MemoryTrimmer): malloc_trim runs when
    RSS grew by grow_mb since the last trim, and not on every tick (it costs 34-58 ms)."""
    import asyncio

    from agent.core.server import MemoryTrimmer

    rss = [100 << 20]
    trims: list[int] = []
    monkeypatch.setattr(MemoryTrimmer, "rss", staticmethod(lambda: rss[0]))
    trimmer = MemoryTrimmer(interval_s=0.01, grow_mb=16)

    def trim(pad: int) -> int:
        trims.append(pad)
        rss[0] = 104 << 20
        return 1

    trimmer._trim = trim

    async def run() -> None:
        await trimmer.maybe_trim()
        assert trims == []  # no growth yet
        rss[0] = 110 << 20
        await trimmer.maybe_trim()
        assert trims == []  # +10 MB: below the threshold
        rss[0] = 300 << 20
        await trimmer.maybe_trim()
        assert trims == [0]
        await trimmer.maybe_trim()
        assert trims == [0]  # back near the floor: nothing more to do
        # A trim during a flood leaves a high floor; once settle_s passed, RSS above the lowest is
        # trimmed again.
        rss[0] = 150 << 20
        trimmer._floor = 150 << 20
        await trimmer.maybe_trim()
        assert trims == [0]
        trimmer._last -= trimmer.settle_s
        await trimmer.maybe_trim()
        assert trims == [0, 0]

    asyncio.run(run())


def _idle(host: str, port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` TCP connections from ``source`` that never send a byte (the flood of issue 13)."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        sock.connect_ex((host, port))
        socks.append(sock)
    time.sleep(0.5)  # let cellard accept them
    return socks


def _dropped(socks: list[socket.socket]) -> int:
    """How many of ``socks`` cellard no longer holds. A silent connection it displaced or refused was
    dropped without a word (agent.auth.tlsfront.drop_silently: no FIN, so a flooder does not reconnect
    at once): its client learns it by sending, answered with a reset. Sends one byte on each."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.send(b"\x16")
    time.sleep(0.2)  # loopback resets are immediate; this is slack for a loaded host
    dropped = 0
    for sock in socks:
        try:
            if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                dropped += 1
        except BlockingIOError:
            pass
        except OSError:  # ECONNRESET
            dropped += 1
    return dropped


def _silent_after(socks: list[socket.socket], seconds: float) -> bool:
    """True when none of ``socks`` reads an EOF or a reset within ``seconds`` (nothing sent)."""
    time.sleep(seconds)
    for sock in socks:
        try:
            sock.recv(1, socket.MSG_DONTWAIT)
            return False
        except BlockingIOError:
            pass
        except OSError:
            return False
    return True


def test_an_idle_tcp_flood_past_every_cap_does_not_keep_a_new_admin_connection_out(cellard_factory: Any) -> None:
    """gRPC core's cap alone closed the admin's *new* connection at accept while a flood held every
    slot (bench/flood.py: UNAVAILABLE on every probe). Now a newcomer displaces the oldest connection
    that has not finished a handshake, and a silent one costs cellard one fd."""
    daemon = cellard_factory({"server": {"max_tcp_connections": 100, "max_tcp_connections_per_address": 1000}},
                             tcp=True)
    host, port = _tcp_addr(daemon)
    before = _fds(daemon.proc.pid)
    flood = _idle(host, port, 400)
    try:
        during = _fds(daemon.proc.pid)
        for _ in range(3):  # each a fresh connection, each after the flood filled the cap again
            flood += _idle(host, port, 150)
            with daemon.tls_channel("admin-user") as channel:
                assert daemon.health(channel=channel) == "SERVING"
        closed = _dropped(flood)
        print(f"\n{len(flood)} idle connections, {closed} displaced; cellard fds {before} -> {during}")
        assert during - before <= 100 + 16, "an idle connection costs one fd, at most max_tcp_connections of them"
        assert closed >= len(flood) - 100
    finally:
        for sock in flood:
            sock.close()


def test_the_per_address_cap_displaces_that_address_s_own_silent_connections(cellard_factory: Any) -> None:
    """One client address holds at most max_tcp_connections_per_address: its own silent connections
    make way for its newer ones; another address is untouched by its flood."""
    daemon = cellard_factory({"server": {"max_tcp_connections": 1000, "max_tcp_connections_per_address": 20}},
                             tcp=True)
    host, port = _tcp_addr(daemon)
    bystanders = _idle(host, port, 10, source="127.0.0.3")
    flood = _idle(host, port, 200, source="127.0.0.2")
    try:
        assert _silent_after(flood, 0.0), "a displaced connection was told (a flooder reconnects at once)"
        assert _dropped(flood) == 200 - 20
        assert _dropped(bystanders) == 0, "another address's connections were displaced"
        with daemon.tls_channel("admin-user") as channel:
            assert daemon.health(channel=channel) == "SERVING"
    finally:
        for sock in flood + bystanders:
            sock.close()


def test_proven_connections_are_never_displaced_and_a_full_address_refuses(cellard_factory: Any) -> None:
    """A connection open past the handshake deadline has finished mutual TLS (gRPC closes the others):
    no flood displaces it. When an address holds only proven connections, its newcomer is refused."""
    daemon = cellard_factory({"server": {"max_tcp_connections_per_address": 2, "tls_handshake_timeout_s": 1.0}},
                             tcp=True)
    host, port = _tcp_addr(daemon)
    kept = [daemon.tls_channel("admin-user") for _ in range(2)]
    try:
        for channel in kept:
            assert daemon.health(channel=channel) == "SERVING"
        time.sleep(1.5)  # past the handshake deadline: proven
        flood = _idle(host, port, 20)
        assert _dropped(flood) == 20, "a newcomer displaced a proven connection"
        for channel in kept:
            assert daemon.health(channel=channel) == "SERVING"
        for sock in flood:
            sock.close()
        assert any(ev.get("address") == "127.0.0.1" for ev in daemon.events("tlsfront.refused"))
    finally:
        for channel in kept:
            channel.close()
