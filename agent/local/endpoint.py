"""The node-local endpoint: a second gRPC server in cellard that workloads reach from their cells.

Listeners (both spliced to one internal Unix listener ``<run_dir>/local-internal/grpc.sock``, 0700):
- ``[local] socket`` (default ``<run_dir>/local.sock``, mode 0666: workloads of any uid may connect;
  visible inside process-isolated cells, which see run_dir through their copied mount namespace);
- ``[local] tcp_listen`` (default ``127.0.0.1:7070``; "" disables): for clients that cannot use Unix
  sockets; reachable only from the host's network namespace.

It carries ONLY the fronted services of :func:`agent.core.services.build_local_services` (plus health for
each of them): never CellService, Cells, Logs or any admin API, whatever the caller. There is no role
check here: every caller is admitted and confined to its own scope (:mod:`agent.auth.identity`),
which the interceptor sets for each call. A connection whose identity cannot be established (e.g. a
process talking to the internal socket directly) is refused with PERMISSION_DENIED.

Unix callers are bound at accept (:func:`agent.auth.identity.bind_process`: SO_PEERCRED pid and uid,
the cgroup read then, the process held by a pidfd). Each call checks that process still lives in that
cgroup; a connection whose process moved is refused, and one whose process exited is closed (a pid
may be reused). When a connection closes, the file handles opened on it are released.

Every executable learns the addresses from its environment: ``CELLAR_LOCAL_ENDPOINT=unix:<path>`` and,
when TCP is on, ``CELLAR_LOCAL_TCP=<host:port>`` (see :func:`endpoint_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health_pb2_grpc

from agent.auth.identity import (
    CallerIdentity,
    CgroupResolver,
    ProcessGone,
    bind_process,
    identity_from_cgroup,
    pidfd_exited,
    reset_current,
    set_current,
)
from agent.auth.tcppeer import TcpPeerProxy, bind_tcp_listener
from agent.auth.unixpeer import PeerCred, UnixPeerProxy, link_announced, make_socket_home
from agent.config import Config
from agent.core.app import App
from agent.core.health import HealthServicer
from agent.core.services import Service

log = structlog.get_logger("agent.local")

ENV_UNIX = "CELLAR_LOCAL_ENDPOINT"
ENV_TCP = "CELLAR_LOCAL_TCP"
SOCKET_MODE = 0o666


def local_socket_path(cfg: Config) -> str:
    """``[local] socket``, or ``<run_dir>/local.sock`` when empty: the path announced to workloads."""
    return cfg.local.socket or os.path.join(cfg.paths.run_dir, "local.sock")




def endpoint_env(cfg: Config, tcp_address: str | None = None) -> dict[str, str]:
    """The environment that announces the endpoint to every executable."""
    from agent.config import local_endpoint_env

    return local_endpoint_env(cfg, tcp_address)


def bind_local_tcp(cfg: Config) -> socket.socket | None:
    """The loopback TCP listener of ``[local] tcp_listen``, bound now (None when disabled)."""
    if not cfg.local.tcp_listen:
        return None
    from agent.core.server import StartupError

    try:
        return bind_tcp_listener(cfg.local.tcp_listen)
    except OSError as exc:
        raise StartupError(f"local endpoint: cannot listen on {cfg.local.tcp_listen}: {exc.strerror or exc}") from None


def tcp_address(sock: socket.socket | None) -> str:
    """``host:port`` a bound TCP socket listens on ("" for None)."""
    if sock is None:
        return ""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _Bound:
    """A Unix connection's caller as bound at accept (``ident`` None: it could not be placed)."""

    ident: CallerIdentity | None
    pid: int = 0
    pidfd: int = -1
    rel: str | None = None


class _LocalUnixProxy(UnixPeerProxy):
    """UnixPeerProxy that binds each connection's caller at accept and closes the connection when
    that process exits (see the module docstring)."""

    def __init__(self, public_path: str, internal_dir: str, resolver: CgroupResolver,
                 on_closed: Callable[[str], None]) -> None:
        super().__init__(public_path, internal_dir, SOCKET_MODE, 0, on_accept=self._bind, on_forget=self._unbind)
        self.resolver = resolver
        self.on_closed = on_closed
        self.bound: dict[str, _Bound] = {}

    def _bind(self, key: str, sock: Any, cred: PeerCred) -> None:
        try:
            pidfd, rel = bind_process(self.resolver, cred.pid, sock)
        except ProcessGone as exc:
            log.warning("local.unplaced", pid=cred.pid, uid=cred.uid, error=str(exc))
            self.bound[key] = _Bound(None)
            return
        ident = identity_from_cgroup(rel, pid=cred.pid, uid=cred.uid, transport="unix", conn=key)
        try:
            asyncio.get_running_loop().add_reader(pidfd, self._exited, key)
        except BaseException:
            os.close(pidfd)
            raise
        self.bound[key] = _Bound(ident, cred.pid, pidfd, rel)

    def _release(self, bound: _Bound) -> None:
        bound.ident, pidfd, bound.pidfd = None, bound.pidfd, -1  # refused from now on, then closed
        if pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)

    def _exited(self, key: str) -> None:
        """The connecting process exited: nothing more is served on its connection."""
        bound = self.bound.get(key)
        if bound is not None:
            self._release(bound)
        for half in list(self._halves):
            if getattr(half, "key", None) == key and half.transport is not None:
                half.transport.close()

    def _unbind(self, key: str) -> None:
        bound = self.bound.pop(key, None)
        if bound is not None:
            self._release(bound)
        self.on_closed(key)

    def current(self, peer: str) -> CallerIdentity | None:
        """The bound identity of ``peer`` if its process still lives where it lived at accept."""
        bound = self.bound.get(peer)
        if bound is None or bound.ident is None or pidfd_exited(bound.pidfd):
            return None
        try:
            rel = self.resolver.read_rel_of_pid(bound.pid)
        except OSError:
            return None
        if rel != bound.rel or pidfd_exited(bound.pidfd):
            log.warning("local.caller_moved", pid=bound.pid, was=bound.rel, now=rel)
            return None
        return bound.ident


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]  # generic in grpc-stubs only
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class IdentityInterceptor(_ServerInterceptor):
    """Sets the caller identity (contextvar) around every call; refuses unidentifiable connections."""

    def __init__(self, identify: Callable[[str], CallerIdentity | None]) -> None:
        self.identify = identify

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            # grpc-stubs declare a handler; grpc passes None on (an unknown method: UNIMPLEMENTED)
            return handler  # type: ignore[return-value]
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                # grpc's handlers are namedtuples; grpc-stubs declare a plain class without _replace
                wrapped: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
                    **{kind: self._wrap(behavior)})
                return wrapped
        return handler

    async def _enter(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> contextvars.Token[CallerIdentity | None]:
        ident = self.identify(context.peer())
        if ident is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "caller identity unknown on the local endpoint")
        assert ident is not None
        return set_current(ident)

    def _wrap(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        enter = self._enter
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                token = await enter(context)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    reset_current(token)

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = await enter(context)
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    return await result
                return result
            finally:
                reset_current(token)

        return call


def _make_traversable(directory: str) -> None:
    """Workloads of any uid must reach the socket: give its directory search (x) permission for all.
    run_dir's other entries protect themselves (supervisor socket 0600, internal directories 0700)."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    mode = os.stat(directory).st_mode & 0o7777
    if mode & 0o011 != 0o011:
        os.chmod(directory, mode | 0o011)


class LocalEndpoint:
    """The local gRPC server, its Unix and TCP listeners, and caller identification."""

    def __init__(
        self,
        app: App,
        services: list[Service],
        cgroup_root: str,
        tcp_sock: socket.socket | None,
        outer_interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] | None = None,
    ) -> None:
        """``outer_interceptors`` run before identification (agent.core.metrics.RpcMetrics: refused calls count too)."""
        self.app = app
        self.outer_interceptors = list(outer_interceptors or [])
        self.services = services
        self.resolver = CgroupResolver(cgroup_root)
        cfg = app.config
        self.socket_path = local_socket_path(cfg)
        self.internal_dir = os.path.join(cfg.paths.run_dir, "local-internal")
        self.unix: _LocalUnixProxy | None = None
        self.tcp: TcpPeerProxy | None = None
        self._tcp_sock = tcp_sock
        self.server: grpc.aio.Server | None = None
        self.health: HealthServicer | None = None

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.services]

    @property
    def tcp_address(self) -> str:
        return tcp_address(self._tcp_sock)

    def identify(self, peer: str) -> CallerIdentity | None:
        """The identity of an internal peer address (``unix:<run_dir>/local-internal/p<N>``, or
        ``.../t<N>`` for TCP); None: refused."""
        if self.unix is not None and peer in self.unix.bound:
            return self.unix.current(peer)
        if self.tcp is not None:
            found = self.tcp.tcp_peers.get(peer)
            if found is not None:
                rel = self.resolver.rel_of_cgroup_id(found.cgroup_id) if found.cgroup_id else None
                return identity_from_cgroup(rel, uid=found.uid, transport="tcp", conn=peer)
        return None

    def _connection_closed(self, key: str) -> None:
        """Release the file handles opened on connection ``key``."""
        from agent.local.registry import release_connection

        release_connection(self.app, key)

    async def start(self) -> None:
        from agent.core.server import SERVER_OPTIONS, StartupError, connection_caps

        try:
            UnixPeerProxy.prepare_internal_dir(self.internal_dir)
            for name in os.listdir(self.internal_dir):
                if name.startswith("t"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.internal_dir, name))
        except OSError as exc:
            raise StartupError(f"{self.internal_dir}: {exc.strerror or exc}") from None
        internal_socket = os.path.join(self.internal_dir, "grpc.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(internal_socket)
        _make_traversable(os.path.dirname(self.socket_path))
        try:
            real = make_socket_home(self.socket_path)
        except OSError as exc:
            raise StartupError(f"{self.socket_path}: {exc.strerror or exc}") from None
        self.unix = _LocalUnixProxy(real, self.internal_dir, self.resolver, self._connection_closed)
        self.unix.set_caps(connection_caps(self.app.config), "local")  # agent.core.server: connection caps (issue 13)
        interceptors = [*self.outer_interceptors, IdentityInterceptor(self.identify)]
        server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
        self.server = server
        for service in self.services:
            service.add_to_server(server)
        self.health = HealthServicer(self.service_names, self.app.version)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            server.add_insecure_port("unix:" + internal_socket)
        except RuntimeError as exc:
            raise StartupError(f"local endpoint: cannot listen on {internal_socket}: {exc}") from None
        await server.start()
        try:
            await self.unix.start()
            link_announced(self.socket_path, real)
            if self._tcp_sock is not None:
                self.tcp = TcpPeerProxy(self._tcp_sock, self.internal_dir, internal_socket)
                self.tcp.on_forget = self._connection_closed
                self.tcp.set_caps(connection_caps(self.app.config), "local-tcp")
                await self.tcp.start()
        except OSError as exc:
            await self.stop(0)
            raise StartupError(f"local endpoint: {exc.strerror or exc}") from None
        log.info("local.listening", socket=self.socket_path, tcp=self.tcp_address or None, services=self.service_names)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, stop accepting, drain calls for ``grace`` seconds, cut the rest."""
        if self.health is not None:
            await self.health.shutdown()
        for proxy in (self.unix, self.tcp):
            if proxy is not None:
                await proxy.stop_accepting()
        if self.server is not None:
            await self.server.stop(grace)
        for proxy in (self.unix, self.tcp):
            if proxy is not None:
                await proxy.close()
        if self._tcp_sock is not None and self.tcp is None:
            self._tcp_sock.close()
        log.info("local.stopped")
