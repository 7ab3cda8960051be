"""The gRPC server of cellard: listeners, authorization, health, reflection, graceful stop.

Listeners:
- the public Unix socket (``server.socket``, mode ``server.socket_mode``, group ``server.socket_group``);
  with ``server.unix_peer_proxy`` it is served by :class:`agent.auth.unixpeer.UnixPeerProxy`, which splices
  to the gRPC server's internal listener ``<run_dir>/internal/grpc.sock`` (directory 0700);
- optionally TCP (``server.tcp_listen``): mutual TLS only, admitted by :class:`agent.auth.tlsfront.TlsFront`
  and spliced to gRPC's TLS listener ``<run_dir>/internal/tls.sock``; plain TCP (gRPC's own listener)
  only with ``insecure_tcp_dev``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2_grpc

from agent.auth import tls
from agent.auth.authz import AuthInterceptor
from agent.auth.tlsfront import TlsFront
from agent.auth.unixpeer import (
    ConnectionCaps,
    UnixPeerProxy,
    link_announced,
    make_socket_home,
    remove_stale_socket,
)
from agent.config import Config
from agent.core import reflection
from agent.core.app import App
from agent.core.health import SERVICE_NAME as HEALTH_SERVICE
from agent.core.health import HealthServicer
from agent.core.services import Service

log = structlog.get_logger("agent.core.server")

REFLECTION_SERVICES = reflection.SERVICE_NAMES  # v1 and v1alpha (agent.core.reflection)

# SO_REUSEPORT (grpc's default) would let a second cellard silently share our TCP port.
# Pending requests: calls gRPC core has received but the Python server has not picked up yet. Past
# max_pending_requests (core's default 1,000) calls that wait too long are CANCELLED, past the hard
# limit (3,000) all new ones: 2,000 log followers starting at once lost 3-10 % of their calls that
# way (measured, tests/security/test_bounds.py), none with the limits below. A caller other than
# root cannot hold that many anyway (agent.core.streamcaps, connection caps).
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.server.max_pending_requests", 4096),
    ("grpc.server.max_pending_requests_hard_limit", 8192),
]


def bounded_options(cfg: Config) -> list[tuple[str, Any]]:
    """gRPC core options that bound what an unauthenticated TCP peer can hold.

    - ``grpc.server_handshake_timeout_ms``: a connection that has not finished its TLS handshake in
      ``server.tls_handshake_timeout_s`` (5 s) is closed. gRPC's default is 120 s: 21,000 idle
      connections that never sent a ClientHello then held 21,000 fds and locked out root and admins.
      Chosen over a front proxy in Python: core enforces it on its own timer at no cost per byte,
      while a proxy would splice every mTLS byte through the event loop (bench/unix_peer_proxy.py:
      the splice costs more than the call) just to time the first one. A handshake on this 2-vCPU
      host takes ~3 ms, so 5 s leaves three orders of magnitude for slow links.
    - ``grpc.max_allowed_incoming_connections``: at most ``server.max_tcp_connections`` per listener
      (measured: core counts per listening port, so a full listener leaves the others untouched). The
      mTLS listener's admission is :mod:`agent.auth.tlsfront`'s, in front of this cap, which then only
      backs it up (a connection over it is closed at accept, before any TLS work).
    """
    return [
        *SERVER_OPTIONS,
        ("grpc.server_handshake_timeout_ms", int(cfg.server.tls_handshake_timeout_s * 1000)),
        ("grpc.max_allowed_incoming_connections", cfg.server.max_tcp_connections),
    ]


def connection_caps(cfg: Config) -> ConnectionCaps:
    """The caps of every Unix-socket proxy (main and node-local socket, node-local loopback TCP).

    Budget of fds with the defaults: 2,048 TCP connections (three fds each: accepted, upstream and
    gRPC's end, agent.auth.tlsfront) plus 1,024 non-root connections on each of the three proxied Unix
    listeners (four fds each, measured: accepted, upstream, gRPC's end and the caller's pidfd) is
    ~19,400 fds, below the 20,000 of this platform's limit;
    :func:`raise_fd_limit` raises the soft limit to the hard one. Root outside the cells is exempt.
    """
    s = cfg.server
    return ConnectionCaps(per_peer=s.max_connections_per_peer, total=s.max_unix_connections,
                          cell_root=cfg.cells.cgroup_root)


def raise_fd_limit(cfg: Config) -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; warn when the caps' fd budget exceeds it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    budget = 3 * cfg.server.max_tcp_connections + 3 * 4 * cfg.server.max_unix_connections + 1024
    if budget > soft:
        log.warning("server.fd_budget", limit=soft, budget=budget,
                    message="the connection caps allow more open files than RLIMIT_NOFILE: lower "
                    "server.max_tcp_connections / server.max_unix_connections or raise the limit")


class MemoryTrimmer:
    """Give the heap back to the kernel after a flood: ``malloc_trim(0)`` when RSS has grown.

    Where the memory went (measured with a bare grpc.aio mTLS server, 3,000 idle TCP connections):
    RSS 51 MB -> 112 MB while held -> 188 MB after they closed (gRPC core's per-connection endpoint
    and handshaker buffers, freed into glibc's heap but not returned: free chunks sit between live
    ones, and glibc trims only the top of the main heap) -> 73 MB after one ``malloc_trim(0)``, which
    took 34-58 ms. Capping glibc's arenas (``mallopt(M_ARENA_MAX, 2)``, what ``MALLOC_ARENA_MAX=2``
    does) changed nothing measurable (184 MB after close), nor did smaller gRPC read chunks; so
    cellard trims: every ``interval_s`` it reads its RSS (/proc/self/statm, ~10 us) and trims, in a
    worker thread so the event loop runs meanwhile, when RSS is ``grow_mb`` above what it was after
    the last trim; and at most every ``settle_s`` when RSS is ``grow_mb`` above the lowest it has
    been, since a trim during a flood leaves a high mark that the end of the flood never exceeds
    (measured: +75 MB left after a round, +27 MB with this). bench/flood.py prints RSS before, at the
    peak of and after a flood.
    """

    def __init__(self, interval_s: float = 5.0, grow_mb: float = 16.0, settle_s: float = 15.0) -> None:
        import ctypes
        import time

        self._now = time.monotonic
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.grow_bytes = int(grow_mb * 2**20)
        try:
            self._trim: Any = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None
        self._floor = self._lowest = self.rss()
        self._last = self._now()
        self._task: asyncio.Task[None] | None = None
        self.trims = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def start(self) -> None:
        if self._trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.maybe_trim()

    async def maybe_trim(self) -> None:
        before = self.rss()
        self._floor, self._lowest = min(self._floor, before), min(self._lowest, before)
        grown = before >= self._floor + self.grow_bytes
        stale = before >= self._lowest + self.grow_bytes and self._now() - self._last >= self.settle_s
        if self._trim is None or not (grown or stale):
            return
        await asyncio.to_thread(self._trim, 0)
        self._floor, self._last = self.rss(), self._now()
        self.trims += 1
        log.info("server.memory_trimmed", rss_before_mb=before >> 20, rss_after_mb=self._floor >> 20)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class StartupError(Exception):
    """cellard cannot start (a port in use, a directory it cannot create); one line for the operator."""


@dataclass
class Server:
    app: App
    services: list[Service]
    grpc_server: grpc.aio.Server | None = None
    health: HealthServicer | None = None
    proxy: UnixPeerProxy | None = None
    tls_front: TlsFront | None = None
    tcp_address: str = ""
    # agent.auth.grants.MainSocketGate: refuses workloads on the Unix socket (None: no cell check).
    gate: Any = None
    # Interceptors that run before authorization (agent.core.metrics.RpcMetrics: denied calls count too).
    outer_interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    _public_socket_owned: bool = False
    trimmer: MemoryTrimmer | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.services] + [HEALTH_SERVICE, *REFLECTION_SERVICES]

    @staticmethod
    def preflight(cfg: Config) -> None:
        """Fail before anything starts (the supervisor above all) when the listeners cannot come up:
        the socket is another process's, or the TLS files do not load."""
        try:
            remove_stale_socket(cfg.server.socket)
        except OSError as exc:
            raise StartupError(f"{cfg.server.socket}: {exc.strerror or exc}") from None
        if cfg.tcp_enabled and cfg.tls_enabled:
            tls.server_credentials(cfg.tls)  # raises ConfigError naming the file

    async def start(self) -> None:
        cfg = self.app.config
        gid = grp.getgrnam(cfg.server.socket_group).gr_gid
        raise_fd_limit(cfg)
        self._make_dirs()
        try:
            remove_stale_socket(cfg.server.socket)
        except OSError as exc:
            raise StartupError(f"{cfg.server.socket}: {exc.strerror or exc}") from None
        internal_dir = os.path.join(cfg.paths.run_dir, "internal")
        if cfg.server.unix_peer_proxy:
            try:
                UnixPeerProxy.prepare_internal_dir(internal_dir)
            except OSError as exc:
                raise StartupError(f"{internal_dir}: {exc.strerror or exc}") from None
            gate = self.gate
            try:
                public = make_socket_home(cfg.server.socket)  # cells granted a role reach it (cells.mountview)
            except OSError as exc:
                raise StartupError(f"{cfg.server.socket}: {exc.strerror or exc}") from None
            self.proxy = UnixPeerProxy(public, internal_dir, cfg.server.socket_mode, gid,
                                       on_accept=gate.bind if gate else None, on_forget=gate.forget if gate else None)
            self.proxy.set_caps(connection_caps(cfg), "main")
        elif self.gate is not None:
            log.warning("server.workloads_unrecognised", socket=cfg.server.socket,
                        message="server.unix_peer_proxy = false: callers are not identified, so a workload that "
                        "can reach the socket is not recognised as one")
        insecure_tcp = cfg.tcp_enabled and not cfg.tls_enabled
        if cfg.tcp_enabled and cfg.tls_enabled:
            s = cfg.server
            try:
                UnixPeerProxy.prepare_internal_dir(internal_dir)
                self.tls_front = TlsFront(s.tcp_listen, internal_dir, s.max_tcp_connections_per_address,
                                          s.max_tcp_connections, s.tls_handshake_timeout_s)
            except OSError as exc:
                raise StartupError(f"cannot listen on {s.tcp_listen}: {exc.strerror or exc}") from None
        interceptor = AuthInterceptor(
            cfg.auth, gid, self.proxy.lookup if self.proxy else None, insecure_tcp=insecure_tcp,
            gate=self.gate if self.proxy else None, tls_remote=self.tls_front.remote if self.tls_front else None,
        )
        server = grpc.aio.server(interceptors=[*self.outer_interceptors, interceptor], options=bounded_options(cfg))
        self.grpc_server = server
        for service in self.services:
            service.add_to_server(server)
        self.health = HealthServicer(self.service_names, self.app.version)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable(self.service_names, server)

        if self.proxy is not None:
            self._add_port(server, "unix:" + self.proxy.internal_socket, None)
        else:
            # grpc binds the public socket itself: keep it private until chmod/chown below.
            old = os.umask(0o177)
            try:
                self._add_port(server, "unix:" + cfg.server.socket, None)
            finally:
                os.umask(old)
            os.chown(cfg.server.socket, -1, gid)
            os.chmod(cfg.server.socket, cfg.server.socket_mode)
            self._public_socket_owned = True
        if self.tls_front is not None:
            self._add_port(server, "unix:" + self.tls_front.internal_socket, tls.server_credentials(cfg.tls))
            self.tcp_address = self.tls_front.address
        elif cfg.tcp_enabled:
            log.warning(
                "server.insecure_tcp",
                address=cfg.server.tcp_listen,
                message="PLAIN TCP WITHOUT TLS OR AUTHENTICATION (--insecure-tcp-dev): every TCP caller "
                f"gets role {cfg.auth.unix_role!r}. Never use this outside development.",
            )
            port = self._add_port(server, cfg.server.tcp_listen, None)
            host = cfg.server.tcp_listen.rpartition(":")[0]
            self.tcp_address = f"{host}:{port}"
        await server.start()
        self.trimmer = MemoryTrimmer()
        self.trimmer.start()
        if self.tls_front is not None:
            if self.gate is not None:  # its connections' file handles are released with them (gate.closed)
                loop, gate = asyncio.get_running_loop(), self.gate
                def forget(key: str) -> None:
                    loop.call_soon_threadsafe(gate.forget, key)

                self.tls_front.on_forget = forget
            await self.tls_front.start(own_thread=True)
        if self.proxy is not None:
            try:
                await self.proxy.start()
                link_announced(cfg.server.socket, self.proxy.public_path)
            except OSError as exc:
                await server.stop(0)
                raise StartupError(f"{cfg.server.socket}: {exc.strerror or exc}") from None
        log.info(
            "server.listening",
            socket=cfg.server.socket,
            peer_proxy=self.proxy is not None,
            tcp=self.tcp_address or None,
            tls=cfg.tls_enabled if cfg.tcp_enabled else None,
            services=self.service_names,
            version=self.app.version,
        )

    def _make_dirs(self) -> None:
        paths = self.app.config.paths
        for path, mode in (
            (paths.run_dir, 0o755),
            (os.path.dirname(self.app.config.server.socket), 0o755),
            (paths.state_dir, 0o700),
            (paths.volumes_dir, 0o700),
            (paths.log_dir, 0o750),
        ):
            try:
                os.makedirs(path, mode=mode, exist_ok=True)
            except OSError as exc:
                raise StartupError(f"cannot create {path}: {exc.strerror}") from None

    def _add_port(self, server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials | None) -> int:
        try:
            if creds is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, creds)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address}: {exc}") from None

    async def stop(self, grace: float) -> None:
        """Graceful stop: NOT_SERVING, refuse new connections and calls, drain open calls for ``grace`` s."""
        self.app.stopping.set()
        if self.health is not None:
            await self.health.shutdown()
        for proxy in (self.proxy, self.tls_front):
            if proxy is not None:
                await proxy.stop_accepting()
        log.info("server.draining", grace_s=grace)
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        for proxy in (self.proxy, self.tls_front):
            if proxy is not None:
                await proxy.close()
        if self.trimmer is not None:
            await self.trimmer.stop()
        if self._public_socket_owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.app.config.server.socket)
        log.info("server.stopped")

    async def stop_now(self) -> None:
        """Second signal: cancel whatever is still draining."""
        if self.grpc_server is not None:
            await self.grpc_server.stop(0)
