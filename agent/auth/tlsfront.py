"""The mTLS TCP listener: cellard admits connections itself, so a flood cannot lock admins out.

With gRPC core alone on the TCP port (``grpc.max_allowed_incoming_connections`` and a handshake
deadline) a flood held every slot and a *new* connection was closed at accept: during 20,000 idle TCP
connections every fresh mTLS connection of an admin failed (UNAVAILABLE, bench/flood.py). Core cannot
tell a flood's connection from an admin's before the handshake and cannot evict. This front accepts
the TCP connections and splices their bytes, still TLS, to gRPC's TLS listener on a Unix socket in
``<run_dir>/internal`` (0700): certificates, TLS and identities stay gRPC's (``auth_context``), the
admission is cellard's:

- A connection that has sent nothing costs one fd and nothing in gRPC: it is joined to gRPC at its
  first byte (a ClientHello), and closed after ``tls_handshake_timeout_s`` without one.
- At most ``max_tcp_connections_per_address`` from one client address (an IPv6 /64 counts as one)
  and ``max_tcp_connections`` in all. When either is full, the newcomer takes the place of the
  oldest connection that has not proven itself (silent ones first), instead of being refused.
- A connection proves itself by living ``tls_handshake_timeout_s`` past its first byte: gRPC closes
  any whose mutual TLS handshake is not done by then (server_handshake_timeout_ms), so what is still
  open holds a certificate from cellard's CA. Proven connections are never displaced. (A proven
  connection whose certificate names no role is denied per call, as before.)

A flood therefore delays a new admin connection by nothing: it is admitted at once and finishes its
handshake (~5 ms here) long before ``max_tcp_connections`` newer connections could displace it.
Only a flood of connections that each *send* a ClientHello competes with it, and those gRPC must
answer with a handshake, which bounds their rate.

A displaced or refused silent connection is dropped without a word (:func:`drop_silently`: TCP_REPAIR,
then close; no FIN, no RST). Closed with a FIN, a flooder read EOF and connected again at once, so
every displacement bought another accept: the accept queue (4,096, net.core.somaxconn) stayed full
and the kernel dropped new SYNs, an admin's too, which a client resends only after 1 s, then 3 s
(bench/flood.py, 20,000 idle connections: fresh admin mTLS Check p50 954 ms, max 3.5 s; after: p50
13-28 ms, the flooders' 20,000 connections accepted once each). A dropped client learns it when it
sends (a reset). The one race: a ClientHello that lands between the peek and the close is lost with
the connection and its client waits for its connect deadline; a client sends it right after its
connect, long before ``max_tcp_connections_per_address`` newer ones make its connection the oldest.

The accept path is lean because the flood's first burst must be drained before the queue holds
SYNs again (CPU time of the front's thread per connection, 20,000 idle connections from one address,
2-vCPU host under load 8-13): 171 us with an asyncio reader and timer per silent connection and
socket.accept(); 90 us with one epoll set for all silent ones, one deadline sweep over the
admission order, accept() without its enum conversions. The kernel's own share (accept, TCP_REPAIR,
close, epoll_ctl) is ~20 us of it on a quiet host. So when it is built, the silent phase runs in a
native thread (agent/auth/_front.c, same rules, no GIL): 29.5 us of process CPU per connection against
80.5 us for the event-loop path in the same run (bench/tls_accept.py: 0.37, load 12). In bench/flood.py at load 13 the accept queue then
never overflowed (it did for 2-6 s at each flood's start before) and the fresh admin mTLS Check
stayed within 236 ms. The event loop sees only connections that talked, and newcomers for which only
an unproven talking connection can make room (Python picks and displaces it, then adopts them back). Cost of the splice (bench/flood.py, this host):
see the README's figures; it is the same proxy code as the main socket's (agent.auth.unixpeer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import os
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from agent.auth.tcppeer import bind_tcp_listener
from agent.auth.unixpeer import UnixPeerProxy, _Client

try:
    from agent.auth import _front as _c_front  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: the event-loop path below does everything
    _c_front = None

log = structlog.get_logger("agent.auth.tlsfront")

#: The name of gRPC's TLS listener in the internal directory.
INTERNAL_NAME = "tls.sock"


@functools.lru_cache(maxsize=4096)  # a flood comes from few addresses: ipaddress parsing is ~2 us
def address_key(ip: str) -> str:
    """The budget of a client address: the IPv4 address, or the /64 of an IPv6 one (one host's)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


class Admission:
    """Open connections per address and in all; a newcomer over a cap displaces the oldest unproven one.

    Connections are any hashable handles. Silent ones (no byte yet) are displaced before talking ones;
    a talking one older than ``prove_s`` since its first byte is proven and never displaced."""

    def __init__(self, per_address: int, total: int, prove_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_address = per_address
        self.total = total
        self.prove_s = prove_s
        self.clock = clock
        self.count: dict[str, int] = {}
        self.open = 0
        self.address: dict[Any, str] = {}
        # Unproven connections, oldest first: all of them, and per address.
        self.silent: OrderedDict[Any, None] = OrderedDict()
        self.talking: OrderedDict[Any, float] = OrderedDict()
        self._silent_of: dict[str, OrderedDict[Any, None]] = {}
        self._talking_of: dict[str, OrderedDict[Any, float]] = {}
        self.displaced = 0
        self.refused = 0

    def victim(self, addr: str) -> tuple[bool, Any]:
        """Can a newcomer from ``addr`` be admitted: (yes, the connection it must displace or None)."""
        if self.count.get(addr, 0) >= self.per_address:
            victim = self._oldest(self._silent_of.get(addr), self._talking_of.get(addr))
        elif self.open >= self.total:
            victim = self._oldest(self.silent, self.talking)
        else:
            return True, None
        if victim is None:
            self.refused += 1
            return False, None
        return True, victim

    def admit(self, conn: Any, addr: str, victim: Any = None) -> None:
        """Count ``conn`` from ``addr``, silent, in place of ``victim`` (from :meth:`victim`)."""
        if victim is not None:
            self.release(victim)
            self.displaced += 1
        self.address[conn] = addr
        self.count[addr] = self.count.get(addr, 0) + 1
        self.open += 1
        self.silent[conn] = None
        self._silent_of.setdefault(addr, OrderedDict())[conn] = None

    def talked(self, silent: Any, conn: Any) -> None:
        """The silent connection ``silent`` sent its first byte and is ``conn`` from now on (its
        transport); its handshake deadline runs from now."""
        addr = self.address.pop(silent, None)
        if addr is None:
            return
        self._forget_silent(silent, addr)
        self.address[conn] = addr
        now = self.clock()
        self.talking[conn] = now
        self._talking_of.setdefault(addr, OrderedDict())[conn] = now

    def unproven_talker(self, addr: str | None) -> Any:
        """The oldest talking connection not proven yet, of ``addr`` (None: of all), or None."""
        return self._oldest(None, self.talking if addr is None else self._talking_of.get(addr))

    def release(self, conn: Any) -> None:
        """``conn`` is closed (or displaced): it counts no more. Idempotent."""
        addr = self.address.pop(conn, None)
        if addr is None:
            return
        self._forget_silent(conn, addr)
        self._forget_talking(conn, addr)
        self.open -= 1
        if self.count[addr] <= 1:
            del self.count[addr]
        else:
            self.count[addr] -= 1

    def _oldest(self, silent: OrderedDict[Any, None] | None, talking: OrderedDict[Any, float] | None) -> Any:
        if silent:
            return next(iter(silent))
        now = self.clock()
        while talking:
            conn, since = next(iter(talking.items()))
            if now - since < self.prove_s:
                return conn
            self._forget_talking(conn, self.address[conn])  # proven: out of reach from now on
        return None

    def _forget_silent(self, conn: Any, addr: str) -> None:
        if conn in self.silent:
            del self.silent[conn]
            of = self._silent_of[addr]
            del of[conn]
            if not of:
                del self._silent_of[addr]

    def _forget_talking(self, conn: Any, addr: str) -> None:
        if conn in self.talking:
            del self.talking[conn]
            of = self._talking_of[addr]
            del of[conn]
            if not of:
                del self._talking_of[addr]


#: linux/tcp.h: a socket in repair mode closes without a FIN or RST (CRIU's checkpointing; CAP_NET_ADMIN).
TCP_REPAIR = 19


def drop_silently(conn: socket.socket) -> None:
    """Close ``conn`` without telling its peer (no FIN, no RST): the peer learns it only when it sends.

    For connections that never sent a byte: closed with a FIN, a flooder reads EOF and reconnects at
    once, so every displacement bought another accept (bench/flood.py: the accept queue overflowed
    and dropped the admin's SYN for 1-3 s). Without CAP_NET_ADMIN: a plain close."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    conn.close()


#: Flags as plain ints: an enum's | costs more than the recv() it is for (measured on the accept path).
_PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
_SILENT_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


def _has_bytes(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1, _PEEK_NOW))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


class _Silent:
    """An accepted connection that has sent nothing yet: a raw socket watched for its first byte."""

    __slots__ = ("conn", "addr", "since")

    def __init__(self, conn: socket.socket, addr: tuple[Any, ...], since: float) -> None:
        self.conn = conn
        self.addr = addr  # the client's (host, port, ...) as accept() gave it
        self.since = since

    @property
    def peer(self) -> str:
        """gRPC's spelling of the client address (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
        host, port = self.addr[:2]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class TlsFront(UnixPeerProxy):
    """Accept TCP, admit it (:class:`Admission`), splice it to gRPC's internal TLS listener.

    ``remote(peer)`` answers the client's address (``ipv4:1.2.3.4:5``) for gRPC's ``context.peer()``
    of a spliced connection (``unix:<run_dir>/internal/s<N>``)."""

    ACCEPT_BATCH = 512  # accepts per readiness callback (~20 us each): ~10 ms, then the loop's other work
    SILENT_EVENTS = 1024  # first bytes handled per readiness callback of the silent set

    def __init__(self, address: str, internal_dir: str, per_address: int, total: int, handshake_s: float,
                 native: bool = True) -> None:
        super().__init__(public_path="", internal_dir=internal_dir, mode=0, gid=0)
        self.internal_socket = os.path.join(internal_dir, INTERNAL_NAME)
        self._sock = bind_tcp_listener(address, backlog=4096)
        self.handshake_s = handshake_s
        self.admission = Admission(per_address, total, handshake_s)
        self._names = itertools.count(1)
        self._remote: dict[str, str] = {}
        # The silent connections: one epoll set of their own (one fd on the event loop), and the
        # deadline sweep walks admission.silent, which is in accept order and so in deadline order.
        self._silent_poll: select.epoll | None = None
        self._silent_fd: dict[int, _Silent] = {}
        self._sweep: asyncio.TimerHandle | None = None
        # The native silent phase (agent/auth/_front.c), when built: it hands over connections that
        # talked (or that only a talking one can make room for) through a queue, announced on _notify.
        self._native = native and _c_front is not None
        self._pool: Any = None
        self._notify = -1
        self._starved_seen = 0

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def remote(self, peer: str) -> str | None:
        """The client address of an internal peer name, or None when it is not one of ours."""
        return self._remote.get(peer)

    @property
    def open_connections(self) -> int:
        return self.admission.open + (self._pool.stats()["silent"] if self._pool is not None else 0)

    async def _listen(self) -> None:
        if self._native:
            loop = asyncio.get_running_loop()
            self._notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._pool = _c_front.Pool(self._sock.fileno(), self._notify, self.admission.per_address,
                                       self.admission.total, self.handshake_s)
            loop.add_reader(self._notify, self._pump)
            self._listen_sock = self._sock
            self._pool.start()
            return
        self._silent_poll = select.epoll()
        asyncio.get_running_loop().add_reader(self._silent_poll.fileno(), self._silent_ready)
        self._listen_sock = self._sock
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept_ready)

    async def _stop_accepting(self) -> None:
        if self._pool is not None:
            self._pool.stop_accepting()  # before the listener's fd closes (and its number is reused)
        self._stop_serving()

    def _pump(self) -> None:
        """Take what the native thread handed over: connections that talked, and newcomers for which
        only a talking connection can make room."""
        pool = self._pool
        if pool is None:
            return
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._notify)
        family, proto = int(self._sock.family), self._sock.proto
        for fd, peer, key, kind in pool.take():
            conn = socket.socket(family, socket.SOCK_STREAM, proto, fd)
            if kind == 0:
                self._join(conn, peer, key)
            else:
                self._contested(conn, key, whole=kind == 2)
        starved = pool.stats()["starved"]
        if starved != self._starved_seen:
            self._starved_seen = starved
            log.error("tlsfront.accept_failed", listener=self.address, times=starved,
                      message="out of file descriptors: accepting paused for 100 ms")

    def _join(self, conn: socket.socket, peer: str, key: str) -> None:
        """A connection that talked (counted by the native thread until :meth:`_let_go`): to gRPC."""
        client = _Client(self)
        client.screened = peer
        client.budget = key
        client.counted = True
        self.admission.admit(client, key)
        self.admission.talked(client, client)
        self._halves.add(client)
        self._spawn(self._connect_accepted(client, conn))

    def _contested(self, conn: socket.socket, key: str, whole: bool) -> None:
        """A newcomer while its address (``whole``: all) holds no silent connection to displace: it takes
        the place of the oldest unproven talking one, or is refused when all are proven."""
        victim = self.admission.unproven_talker(None if whole else key)
        if victim is None:
            self.admission.refused += 1
            drop_silently(conn)
            self._log_refused(key)
            return
        self.admission.displaced += 1
        self._displace(victim)
        self._let_go(victim)  # its place is free now, not when its transport has gone
        self._pool.adopt(conn.detach())

    def _log_refused(self, key: str) -> None:
        if self.admission.refused in (1, 10) or self.admission.refused % 1000 == 0:
            log.warning("tlsfront.refused", address=key, refused=self.admission.refused,
                        message="every connection of this address (or all) is proven: none to displace")

    def _let_go(self, client: _Client) -> None:
        """``client`` counts no more, in the admission and in the native thread's count. Idempotent."""
        self.admission.release(client)
        if client.counted:
            client.counted = False
            if self._pool is not None and client.budget:
                self._pool.release(client.budget)

    def _release_budget(self, client: _Client) -> None:
        self._let_go(client)

    def _accept_ready(self) -> None:
        """Drain the accept queue, unpaced: a TCP listener whose queue is full drops SYNs, an admin's
        too (the pacing of the Unix listeners, which makes a flooder's connect() fail, would only
        delay admins here). The client address comes with accept(): no getpeername()."""
        sock = self._listen_sock
        if sock is None:
            return
        now = time.monotonic()
        family, proto = int(sock.family), sock.proto
        for _ in range(self.ACCEPT_BATCH):
            try:
                fd, addr = sock._accept()  # type: ignore[attr-defined]  # socket.accept() minus its enum conversions
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._starving(sock, exc):
                    return
                continue
            self._starved = False
            conn = socket.socket(family, socket.SOCK_STREAM, proto, fd)
            try:
                key = address_key(addr[0])
            except ValueError:
                conn.close()
                continue
            self._admit(conn, addr, key, now)

    def _admit(self, conn: socket.socket, addr: tuple[Any, ...], key: str, now: float) -> None:
        while True:
            admitted, victim = self.admission.victim(key)
            # A "silent" victim may have sent its ClientHello after all, its readiness not handled
            # yet behind this batch of accepts: it talks, then, and another is looked for.
            if not isinstance(victim, _Silent) or not _has_bytes(victim.conn):
                break
            self._first_byte(victim)
        if not admitted:
            drop_silently(conn)
            self._log_refused(key)
            return
        silent = _Silent(conn, addr, now)
        self.admission.admit(silent, key, victim)
        if victim is not None:
            self._displace(victim)
        assert self._silent_poll is not None
        fd = conn.fileno()
        self._silent_poll.register(fd, _SILENT_EVENTS)
        self._silent_fd[fd] = silent
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.handshake_s, self._expire)

    def _silent_ready(self) -> None:
        """Some silent connections are readable: a first byte, or an EOF/error."""
        if self._silent_poll is None:
            return
        for fd, _events in self._silent_poll.poll(0, self.SILENT_EVENTS):
            silent = self._silent_fd.get(fd)
            if silent is None:  # (closed meanwhile: the kernel drops a closed fd from the set)
                continue
            self._first_byte(silent)

    def _expire(self) -> None:
        """Close the silent connections past the handshake deadline (oldest first), then sleep until
        the next one's."""
        self._sweep = None
        now = time.monotonic()
        due = []
        for conn in self.admission.silent:
            if not isinstance(conn, _Silent) or now - conn.since < self.handshake_s:
                break
            due.append(conn)
        for silent in due:
            self._silent_too_long(silent)
        head = next(iter(self.admission.silent), None)
        if isinstance(head, _Silent):
            wait = max(0.05, head.since + self.handshake_s - now)
            self._sweep = asyncio.get_running_loop().call_later(wait, self._expire)

    def _unwatch(self, silent: _Silent) -> None:
        fd = silent.conn.fileno()
        if self._silent_fd.pop(fd, None) is not None and self._silent_poll is not None:
            with contextlib.suppress(OSError):
                self._silent_poll.unregister(fd)

    def _first_byte(self, silent: _Silent) -> None:
        """Readable: a first byte (join gRPC) or an EOF/error (close)."""
        try:
            alive = bool(silent.conn.recv(1, _PEEK_NOW))
        except (BlockingIOError, InterruptedError):
            return  # spurious: still silent, still watched
        except OSError:
            alive = False
        self._unwatch(silent)
        if not alive:
            self.admission.release(silent)
            silent.conn.close()
            return
        client = _Client(self)
        client.screened = silent.peer
        self.admission.talked(silent, client)
        self._halves.add(client)
        self._spawn(self._connect_accepted(client, silent.conn))

    def _silent_too_long(self, silent: _Silent, quietly: bool = False) -> None:
        fd = silent.conn.fileno()
        self._silent_fd.pop(fd, None)  # closing the fd takes it out of the epoll set
        self.admission.release(silent)
        if quietly:
            drop_silently(silent.conn)
        else:
            silent.conn.close()

    def _displace(self, victim: Any) -> None:
        if isinstance(victim, _Silent):
            self._silent_too_long(victim, quietly=True)
        elif isinstance(victim, _Client):
            victim.closed = True
            if victim.transport is not None:
                victim.transport.abort()

    async def attach(self, client: _Client) -> None:
        """Join ``client`` to gRPC's TLS listener from a freshly bound name that maps to its address."""
        assert client.transport is not None
        if client.closed:  # displaced before its transport existed
            client.transport.abort()
            return

        def record(key: str) -> None:
            self._remote[key] = client.screened

        upstream = await self.connect_upstream(client, f"s{next(self._names)}", record)
        if upstream is None:
            self._remote.pop(client.key, None)
            return
        self.link(client, upstream)

    def forget(self, client: _Client) -> None:
        self._halves.discard(client)
        self._let_go(client)
        if client.key:
            self._remote.pop(client.key, None)
            if self.on_forget is not None:
                self.on_forget(client.key)

    async def _close(self) -> None:
        await super()._close()
        for silent in [c for c in self.admission.silent if isinstance(c, _Silent)]:
            self._silent_too_long(silent)  # shutting down: a FIN, the client reconnects elsewhere
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._silent_poll is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._silent_poll.fileno())
            self._silent_poll.close()
            self._silent_poll = None
        if self._pool is not None:
            await asyncio.to_thread(self._pool.stop)  # closes its silent connections (a FIN each)
            self._pool = None
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._notify)
            os.close(self._notify)
            self._notify = -1
        self._remote.clear()
        self._sock.close()

