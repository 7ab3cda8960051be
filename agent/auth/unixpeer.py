"""Identify local gRPC callers by their kernel credentials (SO_PEERCRED).

gRPC Python does not expose the peer credentials of a Unix-socket connection, so cellard puts this
accept-proxy on the public socket. For every accepted connection it reads SO_PEERCRED (pid, uid,
gid; captured by the kernel at connect() time, so it cannot be forged) and SO_PEERGROUPS, then splices
the bytes to the gRPC server's *internal* listener.

How the server learns which credentials belong to a call: the proxy connects to the internal listener
from a socket it first binds to a fresh, never-reused path in the internal directory
(``<run_dir>/internal/p<N>``) and records ``"unix:<that path>" -> credentials``. gRPC reports that
bound address as the call's ``context.peer()``, and the authorization interceptor looks it up here.
It cannot be spoofed by another local user: the internal directory is 0700 root, so only root can
connect to the internal listener or bind a name in that directory at all. An internal connection
whose peer name is not in the table (e.g. root connecting to the internal socket directly) is denied.
The bound path is unlinked right after connect(); the kernel keeps the address on the socket.

Connections are capped (:class:`ConnectionCaps`, issue 13): at most ``per_peer`` open per peer (a
uid; a cell for a process in one, so one uid's cells do not share a budget and a cell's uids do) and
``total`` in all; an exempt caller (root outside the cells) counts against neither. A connection over
a cap is closed at accept, before its upstream exists: it costs one fd for microseconds. Without caps,
7,000 connections of user nobody on ``local.sock`` (four fds each here: accepted, upstream, gRPC's
end, a pidfd) exhausted cellard's fds and locked root out of the main socket.

``on_accept(key, sock, cred)`` runs for every accepted connection before its first byte reaches the
server (cellard binds the caller's cell there, :mod:`agent.auth.grants`); ``on_forget(key)`` when it closes.
A hook that raises closes the connection: a caller that cannot be placed is not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("agent.auth.unixpeer")

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not in Python 3.11's socket


@dataclass(frozen=True)
class PeerCred:
    """Credentials of the process that connected (at connect() time)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def in_group(self, gid: int) -> bool:
        return self.gid == gid or gid in self.groups


def peer_cred(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED and SO_PEERGROUPS of a connected AF_UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups: tuple[int, ...] = ()
    size = 64 * 4
    for _ in range(4):
        try:
            buf = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                size *= 4
                continue
            break  # old kernel: primary gid only
        groups = struct.unpack(f"{len(buf) // 4}I", buf)
        break
    return PeerCred(pid, uid, gid, groups)


def cgroup_of(pid: int) -> str:
    """The unified-hierarchy cgroup path of ``pid`` (``/proc/<pid>/cgroup`` line ``0::``), "" if gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return ""


@dataclass
class ConnectionCaps:
    """Connection caps of one listener (see the module docstring).

    ``cell_root``: the cgroup root name of the cells (``cells.cgroup_root``); a caller whose cgroup
    lies under it is keyed by its top-level cell, any other by its uid. ``exempt_root``: uid 0 outside
    the cells counts against no cap (the operator on the main socket).
    """

    per_peer: int = 128
    total: int = 1024
    cell_root: str = ""
    exempt_root: bool = True
    _recent: dict[tuple[int, int], tuple[float, str | None]] = field(default_factory=dict, repr=False)

    def key(self, cred: PeerCred) -> str | None:
        """The budget ``cred`` counts against, or None when exempt.

        The cgroup read (~15 us) is cached per (pid, uid) for a second: a flooder reconnects from
        the same process thousands of times a second. A pid reused within that second by another
        process of the same uid at worst shares the first one's budget for it."""
        if self.cell_root and cred.pid > 0:
            now = time.monotonic()
            cached = self._recent.get((cred.pid, cred.uid))
            if cached is not None and now - cached[0] < 1.0:
                return cached[1]
            found = self._key(cred)
            if len(self._recent) >= 4096:
                self._recent.clear()
            self._recent[(cred.pid, cred.uid)] = (now, found)
            return found
        return self._key(cred)

    def _key(self, cred: PeerCred) -> str | None:
        if self.cell_root and cred.pid > 0:
            marker = f"/{self.cell_root.strip('/')}/"
            path = cgroup_of(cred.pid) + "/"
            at = path.find(marker)
            if at >= 0:
                cell = path[at + len(marker):].split("/", 1)[0]
                if cell:
                    return f"cell:{cell}"
        if cred.uid == 0 and self.exempt_root:
            return None
        return f"uid:{cred.uid}"


class ConnectionCounter:
    """Open connections per budget key; refusals are logged once per key and then every 1,000th
    (a flood must not turn into a flood of log lines, which the daemon-log bus keeps in memory)."""

    def __init__(self, caps: ConnectionCaps, listener: str) -> None:
        self.caps = caps
        self.listener = listener
        self.open: dict[str, int] = {}
        self.total = 0
        self.refused: dict[str, int] = {}

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        held = self.open.get(key, 0)
        if held >= self.caps.per_peer or self.total >= self.caps.total:
            count = self.refused.get(key, 0) + 1
            self.refused[key] = count
            if len(self.refused) > 10_000:  # bounded: forget the oldest keys' counts
                self.refused.pop(next(iter(self.refused)))
            if count == 1 or count % 1000 == 0:
                log.warning("unixpeer.connection_refused", listener=self.listener, peer=key, open=held,
                            total=self.total, per_peer=self.caps.per_peer, cap=self.caps.total, refused=count)
            return False
        self.open[key] = held + 1
        self.total += 1
        return True

    def release(self, key: str | None) -> None:
        if key is None or key not in self.open:
            return
        self.total -= 1
        if self.open[key] <= 1:
            del self.open[key]
        else:
            self.open[key] -= 1


def remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a crashed daemon; a live one (someone accepts) is EADDRINUSE."""
    if not os.path.lexists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")
    finally:
        probe.close()


def socket_home(announced: str) -> str:
    """Where cellard really binds the socket it announces at ``announced``: alone in a directory next
    to it (``/run/cellar/local.sock`` -> ``/run/cellar/local.d/local.sock``), the announced path a
    symlink to it. Cells get that directory in their mount view (cells.mountview), so the socket a
    restarted cellard binds anew is the one they reach; a bind of the socket file keeps the dead one."""
    directory, name = os.path.split(announced)
    return os.path.join(directory, f"{name.removesuffix('.sock')}.d", name)


def make_socket_home(announced: str) -> str:
    """Create the directory of :func:`socket_home` (0755: the socket's own mode guards it)."""
    real = socket_home(announced)
    os.makedirs(os.path.dirname(real), mode=0o755, exist_ok=True)
    os.chmod(os.path.dirname(real), 0o755)
    return real


def link_announced(announced: str, real: str) -> None:
    """Point ``announced`` at ``real`` (relative symlink), atomically replacing a symlink or the
    socket file of an older cellard; a socket somebody still listens on is EADDRINUSE."""
    if os.path.lexists(announced) and not os.path.islink(announced):
        remove_stale_socket(announced)
    tmp = f"{announced}.link"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.relpath(real, os.path.dirname(announced)), tmp)
    os.replace(tmp, announced)


def bind_unix_listener(path: str, mode: int, gid: int) -> socket.socket:
    """A listening socket at ``path`` with ``mode`` and group ``gid``, never briefly world-accessible."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
    os.chmod(path, mode)
    sock.listen(512)
    sock.setblocking(False)
    return sock


class _Half(asyncio.Protocol):
    """One end of a spliced pair: forwards what it reads to ``peer``, with flow control both ways.

    Until :meth:`splice` links the pair, what arrives (data, EOF) is held and reading is paused, then
    handed over. The proxy cannot rely on ``pause_reading()`` from ``connection_made()`` to hold it
    back: Debian 12's CPython 3.11.2 ignores that call and reads anyway (python/cpython#103607, fixed
    later in 3.11.x), which dropped gRPC's HTTP/2 preface ("UNAVAILABLE: Stream removed").
    """

    def __init__(self, on_lost: asyncio.Future[None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.on_lost = on_lost
        self._held: list[bytes] = []
        self._held_eof = False
        self._holding = False  # reading paused by data_received until the splice
        self.lost = False
        self.eof = False  # this side sent EOF (forwarded to the peer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def splice(self, other: _Half) -> None:
        """Link two connected halves both ways and forward what each read before the link; if one
        side is gone already, close the other once it has what was held for it."""
        self.peer, other.peer = other, self
        for half in (self, other):
            half._release()
        for half in (self, other):
            if half.lost and half.peer is not None and half.peer.transport is not None:
                half.peer.transport.close()

    def _release(self) -> None:
        # Resume first: forwarding the held bytes may pause us again (the peer's pause_writing).
        if self._holding and self.transport is not None:
            self._holding = False
            self.transport.resume_reading()
        held, self._held = self._held, []
        for data in held:
            self.data_received(data)
        if self._held_eof:
            self._held_eof = False
            if not self.eof_received() and self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # not spliced yet: hold it, and read no more until then
            self._held.append(data)
            if self.transport is not None and not self._holding:
                self._holding = True
                self.transport.pause_reading()
        elif self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is None:
            self._held_eof = True
            return True  # keep the transport: the EOF is forwarded after the splice
        self.eof = True
        if self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
            # Both directions ended: nothing can flow any more, so close (False: asyncio closes this
            # transport after flushing, and connection_lost closes the peer's). Keeping both halves
            # half-open held every closed gRPC channel's connection, three fds, forever.
            return not self.peer.eof
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        if self.on_lost is not None and not self.on_lost.done():
            self.on_lost.set_result(None)

    # Our transport's write buffer is full: stop reading from the other side until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class UnixPeerProxy:
    """Accept on the public socket, record each caller's credentials, splice to the internal listener."""

    def __init__(
        self,
        public_path: str,
        internal_dir: str,
        mode: int,
        gid: int,
        on_accept: Callable[[str, Any, PeerCred], None] | None = None,
        on_forget: Callable[[str], None] | None = None,
    ) -> None:
        self.public_path = public_path
        self.on_accept = on_accept
        self.on_forget = on_forget
        self.internal_dir = internal_dir
        self.internal_socket = os.path.join(internal_dir, "grpc.sock")
        self.mode = mode
        self.gid = gid
        self._peers: dict[str, PeerCred] = {}
        self._counter = itertools.count(1)
        self._listen_sock: socket.socket | None = None
        self._tokens = self.ACCEPT_BURST
        self._refilled = 0.0
        self._starved = False  # accept() failed for want of fds (logged once per episode)
        self._halves: set[_Half] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Caps (None: unbounded); set before start(). Counted on the proxy's own loop only.
        self.counter: ConnectionCounter | None = None

    def set_caps(self, caps: ConnectionCaps | None, listener: str = "") -> None:
        self.counter = ConnectionCounter(caps, listener or self.public_path) if caps is not None else None

    def admit(self, cred: PeerCred) -> tuple[bool, str | None]:
        """Count a new connection of ``cred`` against its budget: (admitted, the budget's key)."""
        if self.counter is None:
            return True, None
        key = self.counter.caps.key(cred)
        return self.counter.admit(key), key

    def screen(self, conn: socket.socket) -> tuple[Any, str | None] | None:
        """Who connected, admitted against the caps: (what attach needs, budget key), or None to
        close the connection at once. Runs on the raw accepted socket, before any transport."""
        try:
            cred = peer_cred(conn)
        except OSError as exc:
            log.warning("unixpeer.no_credentials", error=str(exc))
            return None
        admitted, key = self.admit(cred)
        return (cred, key) if admitted else None

    def _release_budget(self, client: _Client) -> None:
        if client.counted and self.counter is not None:
            client.counted = False
            self.counter.release(client.budget)

    @staticmethod
    def prepare_internal_dir(internal_dir: str) -> None:
        """Create (or re-secure) the 0700 root directory everything's unspoofability rests on."""
        os.makedirs(internal_dir, mode=0o700, exist_ok=True)
        st = os.lstat(internal_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"{internal_dir} must be a directory owned by uid {os.geteuid()}")
        os.chmod(internal_dir, 0o700)
        for name in os.listdir(internal_dir):
            if name.startswith(("p", "s")):  # peer names left by a crash (agent.auth.tlsfront's: s<N>)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(internal_dir, name))

    def lookup(self, peer: str) -> PeerCred | None:
        """Credentials for a gRPC ``context.peer()`` string, or None if not a proxied connection."""
        return self._peers.get(peer)

    @property
    def open_connections(self) -> int:
        return len(self._peers)

    async def start(self, own_thread: bool = False) -> None:
        """Listen on the public socket. ``own_thread``: splice on a dedicated event-loop thread, so the
        byte shuffling does not queue behind servicers on the gRPC loop (see bench/unix_peer_proxy.py)."""
        if own_thread:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="unixpeer", daemon=True)
            self._thread.start()
        else:
            self._loop = asyncio.get_running_loop()
        await self._run(self._listen())

    async def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        if self._thread is None:
            await coro
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _listen(self) -> None:
        self._serve(bind_unix_listener(self.public_path, self.mode, self.gid))

    # The accept loop is cellard's own, not loop.create_unix_server: a connection over a cap is
    # screened and closed on the raw socket (accept, SO_PEERCRED, /proc/<pid>/cgroup, close), never
    # becoming a transport and a task. A flooder that reconnects as fast as it is refused (54,000
    # connects in 6 s from one process, measured) otherwise kept the event loop busy enough to hold
    # root's `cellar health` for 2-6 s.
    #
    # Accepts are also paced per listener (a token bucket: ACCEPT_RATE a second, bursts of
    # ACCEPT_BURST): past it the listener is not read for a moment and its kernel backlog fills, so
    # a flooder's further connects fail at once (EAGAIN) on *its* listener while the other listeners
    # (root's main socket) and the established connections are served as usual.
    ACCEPT_BATCH = 64  # connections accepted per readiness callback
    ACCEPT_RATE = 2000.0
    ACCEPT_BURST = 512.0

    def _serve(self, sock: socket.socket) -> None:
        self._listen_sock = sock
        self._tokens, self._refilled = self.ACCEPT_BURST, time.monotonic()
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_ready)

    def _accept_ready(self) -> None:
        sock = self._listen_sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._tokens = min(self.ACCEPT_BURST, self._tokens + (now - self._refilled) * self.ACCEPT_RATE)
        self._refilled = now
        if self._tokens < 1:
            loop.remove_reader(sock.fileno())
            loop.call_later((1 - self._tokens) / self.ACCEPT_RATE + 0.005, self._resume_accepting, sock)
            return
        for _ in range(min(self.ACCEPT_BATCH, int(self._tokens))):
            self._tokens -= 1
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._starving(sock, exc):
                    return
                continue  # ECONNABORTED and the like: that one connection is gone
            self._starved = False
            screened = self.screen(conn)
            if screened is None:
                conn.close()
                continue
            conn.setblocking(False)
            self._accepted(conn, screened)

    def _starving(self, sock: socket.socket, exc: OSError) -> bool:
        """accept() failed: out of fds (True: accepting pauses a moment, as asyncio's server does,
        said once per episode), or only that one connection is gone (False: ECONNABORTED and such)."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return False
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.call_later(0.1, self._resume_accepting, sock)
        if not self._starved:
            log.error("unixpeer.accept_failed", listener=self.public_path or "tcp", error=str(exc))
        self._starved = True
        return True

    def _accepted(self, conn: socket.socket, screened: tuple[Any, str | None]) -> None:
        """Serve a screened connection: make it a transport now (its upstream follows at once)."""
        client = _Client(self)
        client.screened, client.budget = screened
        client.counted = self.counter is not None
        self._halves.add(client)
        self._spawn(self._connect_accepted(client, conn))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume_accepting(self, sock: socket.socket) -> None:
        if self._listen_sock is sock:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_ready)

    async def _connect_accepted(self, client: _Client, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: client, conn)
        except OSError as exc:
            log.warning("unixpeer.accept_transport_failed", error=str(exc))
            conn.close()
            self._halves.discard(client)
            self._release_budget(client)

    async def attach(self, client: _Client) -> None:
        """Connect ``client`` to the internal listener from a freshly bound, recorded address."""
        assert client.transport is not None
        raw = client.transport.get_extra_info("socket")
        cred = client.screened
        if client.closed:  # gone before this ran (forget() has released it): nothing to attach
            return
        assert isinstance(cred, PeerCred)

        def record(key: str) -> None:
            if self.on_accept is not None:
                self.on_accept(key, raw, cred)  # raises: do not serve a caller we could not place
            self._peers[key] = cred

        upstream = await self.connect_upstream(client, f"p{next(self._counter)}", record)
        if upstream is None:
            self._drop(client.key)
            return
        self.link(client, upstream)

    async def connect_upstream(self, client: _Client, name: str, record: Callable[[str], None]) -> _Half | None:
        """Connect to the internal listener from the fresh address ``<internal_dir>/<name>``.

        ``record(key)`` runs once the address is bound and before the connect (the server may read
        the first request at once); ``key`` (``unix:<path>``, gRPC's ``context.peer()``) is also
        ``client.key``. On any failure, the hook's included, the client is closed and None returned:
        the caller drops what it recorded under ``client.key``."""
        loop = asyncio.get_running_loop()
        assert client.transport is not None
        path = os.path.join(self.internal_dir, name)
        client.key = "unix:" + path
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.setblocking(False)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            up.bind(path)
            record(client.key)
            await loop.sock_connect(up, self.internal_socket)
            os.unlink(path)
            upstream = _Half()
            await loop.create_connection(lambda: upstream, sock=up)
        except Exception as exc:
            log.error("unixpeer.upstream_failed", error=repr(exc), peer=str(client.screened))
            up.close()
            client.transport.close()
            return None
        return upstream

    def _drop(self, key: str) -> None:
        self._peers.pop(key, None)
        if self.on_forget is not None:
            self.on_forget(key)

    def link(self, client: _Client, upstream: _Half) -> None:
        """Join the accepted connection to its new upstream connection (or drop the upstream if the
        client has gone meanwhile); what either side sent before this moment is forwarded now."""
        assert upstream.transport is not None
        if client.closed:
            upstream.transport.close()
            return
        if not upstream.lost:  # (a lost one is done: splice closes the client after handing over)
            self._halves.add(upstream)
            upstream.on_lost = asyncio.get_running_loop().create_future()
            upstream.on_lost.add_done_callback(lambda _f: self._halves.discard(upstream))
        client.splice(upstream)

    def forget(self, client: _Client) -> None:
        self._halves.discard(client)
        self._release_budget(client)
        if client.key:
            self._drop(client.key)

    async def stop_accepting(self) -> None:
        """Refuse new connections (the socket file goes away); spliced connections keep flowing."""
        if self._loop is not None:
            await self._run(self._stop_accepting())

    def _stop_serving(self) -> None:
        sock, self._listen_sock = self._listen_sock, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    async def _stop_accepting(self) -> None:
        self._stop_serving()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.public_path)

    async def close(self) -> None:
        """Stop accepting, cut every remaining spliced connection, end the proxy thread."""
        if self._loop is None:
            return
        await self._run(self._close())
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 5)
            self._loop.close()
            self._thread = None
        self._loop = None

    async def _close(self) -> None:
        await self._stop_accepting()
        for half in list(self._halves):
            if half.transport is not None:
                half.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)  # let transports run their close callbacks on this loop
        self._halves.clear()
        self._peers.clear()


class _Client(_Half):
    """The accepted (caller) end; starts the upstream connection (its reads are held until then)."""

    def __init__(self, proxy: UnixPeerProxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.key = ""
        self.closed = False
        self.budget: str | None = None  # the ConnectionCaps key this connection counts against
        self.counted = False
        self.screened: Any = None  # what screen() found: PeerCred here, TcpPeer for loopback TCP

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy._spawn(self.proxy.attach(self))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        super().connection_lost(exc)
        self.proxy.forget(self)
