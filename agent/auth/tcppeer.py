"""The loopback TCP listener of the node-local endpoint, with the caller's cgroup found per connection.

Some clients (the official Scaleout client) cannot use Unix sockets. A TCP connection carries no
peer credentials, but the kernel knows which cgroup created the client socket: sock_diag reports it
as ``INET_DIAG_CGROUP_ID`` (the inode of the unified cgroup directory; see notes/platform.md). Like
:class:`agent.auth.unixpeer.UnixPeerProxy`, this proxy looks the caller up once per accepted connection
(one exact sock_diag query, ~20 us), then splices the bytes to the local gRPC server's internal
Unix listener from a freshly bound, never-reused address, so ``context.peer()`` names the connection.

Only callers in the host's network namespace can reach a loopback listener: a network-isolated cell
has its own ``lo`` and must use the Unix socket.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from dataclasses import dataclass
from typing import Any

import structlog

from agent.auth.unixpeer import PeerCred, UnixPeerProxy, _Client

log = structlog.get_logger("agent.auth.tcppeer")



@dataclass(frozen=True)
class TcpPeer:
    """What sock_diag says about the client end of one connection (cgroup_id 0: not found)."""

    cgroup_id: int
    uid: int


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
INET_DIAG_CGROUP_ID = 21
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: sport, dport (big endian),
# src[16], dst[16], if, cookie[2]
_REQ = struct.Struct("=BBBBI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
_MSG_LEN = 72  # struct inet_diag_msg
_MSG_UID_INODE = struct.Struct("=II")  # at offset 64
_RTA = struct.Struct("=HH")


def _packed(ip: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(ip)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    return family, addr.packed.ljust(16, b"\0")


def lookup_tcp_peer(client: tuple[str, int], server: tuple[str, int]) -> TcpPeer:
    """The kernel's record of the client socket ``client`` -> ``server`` (this network namespace).

    One exact sock_diag query (not a dump): ~20 us, no pyroute2 (whose sync sockets cannot run next
    to an asyncio loop). TcpPeer(0, -1) when the kernel has no such socket.
    """
    family, src = _packed(client[0])
    _, dst = _packed(server[0])
    body = (_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
            + _SOCKID.pack(client[1], server[1], src, dst)
            + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.sendto(msg, (0, 0))
        data = nl.recv(65536)
    if len(data) < _NLMSGHDR.size:
        return TcpPeer(0, -1)
    length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data)
    if kind != SOCK_DIAG_BY_FAMILY or length < _NLMSGHDR.size + _MSG_LEN:
        return TcpPeer(0, -1)  # NLMSG_ERROR: ENOENT (gone already) or an old kernel
    base = _NLMSGHDR.size
    uid, _inode = _MSG_UID_INODE.unpack_from(data, base + 64)
    pos, cgroup_id = base + _MSG_LEN, 0
    while pos + _RTA.size <= length:
        rta_len, rta_type = _RTA.unpack_from(data, pos)
        if rta_len < _RTA.size:
            break
        if rta_type == INET_DIAG_CGROUP_ID and rta_len >= _RTA.size + 8:
            cgroup_id = struct.unpack_from("=Q", data, pos + _RTA.size)[0]
        pos += (rta_len + 3) & ~3
    return TcpPeer(int(cgroup_id), int(uid))


def bind_tcp_listener(address: str, backlog: int = 512) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (port 0: any free one).

    Made with proto IPPROTO_TCP, which accepted sockets inherit: asyncio sets TCP_NODELAY only on
    those, and with Nagle left on every spliced call waited for a delayed ACK (44 ms instead of
    1.5 ms per unary mTLS call, measured)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class TcpPeerProxy(UnixPeerProxy):
    """Accept loopback TCP, find the client's cgroup, splice to the internal gRPC listener.

    ``lookup(peer)`` answers a PeerCred with pid 0 and the socket's uid; :attr:`tcp_peers` holds the
    cgroup id per internal peer address.
    """

    def __init__(self, sock: socket.socket, internal_dir: str, internal_socket: str) -> None:
        super().__init__(public_path="", internal_dir=internal_dir, mode=0, gid=0)
        self.internal_socket = internal_socket
        self._sock = sock
        self._tcp_counter = itertools.count(1)
        self.tcp_peers: dict[str, TcpPeer] = {}

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def _listen(self) -> None:
        self._serve(self._sock)

    async def _stop_accepting(self) -> None:
        self._stop_serving()

    def screen(self, conn: socket.socket) -> tuple[Any, str | None] | None:
        """The client socket's cgroup and uid (sock_diag), admitted against the caps: every loopback
        caller has the same address, so an address would be one budget for all. The budget is the
        uid, and for uid 0 its cgroup (root workloads in different cells do not share one, and none is
        exempt: this is not the operator's socket)."""
        try:
            peername, sockname = conn.getpeername(), conn.getsockname()
            found = lookup_tcp_peer(peername[:2], sockname[:2])
        except OSError as exc:  # gone already, or netlink refused: refuse this connection
            log.warning("local.tcp_lookup_failed", error=str(exc))
            return None
        if self.counter is None:
            return found, None
        key = f"cgroup:{found.cgroup_id}" if found.uid == 0 else f"uid:{found.uid}"
        return (found, key) if self.counter.admit(key) else None

    async def attach(self, client: _Client) -> None:
        found = client.screened
        assert isinstance(found, TcpPeer)
        if client.closed:  # gone before this ran (forget() has released it): nothing to attach
            return

        def record(key: str) -> None:
            self._peers[key] = PeerCred(pid=0, uid=found.uid, gid=-1)
            self.tcp_peers[key] = found

        upstream = await self.connect_upstream(client, f"t{next(self._tcp_counter)}", record)
        if upstream is None:
            self._peers.pop(client.key, None)
            self.tcp_peers.pop(client.key, None)
            return
        self.link(client, upstream)

    def forget(self, client: _Client) -> None:
        super().forget(client)
        if client.key:
            self.tcp_peers.pop(client.key, None)

    async def _close(self) -> None:
        await super()._close()
        self.tcp_peers.clear()
        self._sock.close()
