"""Transparent forwarding of a fronted service to an upstream server (``[front."<service>"]``).

A fronted service (Agent, file.v1.File, queue.v1.Queue, scaleout.*, ...) normally runs on its
embedded backend. With ``[front."<full service name>"] upstream = "host:port" | "unix:/path"`` the
same name is served by a generic handler that relays raw bytes to the upstream instead: nothing is
decoded, so the upstream may be a newer version with fields we do not know. Per call:

- request and response messages, in all four shapes (unary/streaming on either side);
- invocation metadata, minus hop-by-hop and gRPC-internal keys (``grpc-*``, ``:authority``,
  ``user-agent``, ``te``, ``content-type``, ...); the upstream's initial and trailing metadata back;
- the deadline, as the time remaining when the call is relayed;
- the status code and details unchanged, trailing metadata included (a parigot error's
  ``parigot-error`` keys survive); an unreachable upstream is the upstream channel's UNAVAILABLE;
- cancellation: a client that goes away cancels the upstream call.

Authorization still happens here first (the interceptor wraps these handlers like any other), so
fronting never widens who may call what. Health and reflection cannot be fronted, nor a service
cellard does not serve (the table would be silently unused). cellar's read views over a fronted
service's state (``cellar.v1.Jobs`` over ``Agent``, ``cellar.v1.Queues`` over ``queue.v1.Queue``) can
be fronted too; while only the service is, the view answers FAILED_PRECONDITION naming the upstream
instead of listing local state nobody uses any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool

from agent.auth import tls
from agent.config import ConfigError, FrontConfig
from agent.metadata import SCOPE_METADATA_KEY

log = structlog.get_logger("agent.forward")

#: Never relayed: they describe one hop (HTTP/2 and gRPC framing), not the call.
HOP_BY_HOP = frozenset(
    {":authority", ":path", ":method", ":scheme", "host", "user-agent", "te", "content-type", "connection",
     "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
#: Served by cellard itself for every registered name; relaying them would hide this node's own state.
NOT_FRONTABLE = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
#: Known to cellar (their messages are in proto/) but never served by cellard: a client's side of a seed
#: (test.v1.UnderTest, MethodCallSuite are the suite's own servers) or Aurae services cellar does not offer.
NOT_SERVED = frozenset(
    {"runtime.Instances", "runtime.Pods", "runtime.Spawn", "test.v1.UnderTest", "test.v1.MethodCallSuite"}
)
#: view -> (the fronted service whose state it shows, what that state is called).
VIEWS = {"cellar.v1.Jobs": ("Agent", "jobs"), "cellar.v1.Queues": ("queue.v1.Queue", "queues")}



def relayed_metadata(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """``metadata`` without hop-by-hop and ``grpc-*`` keys (the transport regenerates those)."""
    return tuple(
        (k, v) for k, v in (metadata or ()) if k.lower() not in HOP_BY_HOP and not k.lower().startswith("grpc-")
    )


@dataclass(frozen=True)
class MethodShape:
    name: str
    client_streaming: bool
    server_streaming: bool


def service_methods(service: str) -> list[MethodShape]:
    """The methods of ``service`` from the generated descriptors; ConfigError when unknown."""
    if service in NOT_FRONTABLE:
        raise ConfigError(f'front."{service}": cellard serves {service} itself; it cannot be fronted')
    if service in NOT_SERVED:
        raise ConfigError(f'front."{service}": cellard does not serve {service}, so it has nothing to front')
    try:
        desc = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        _load_descriptors()
        try:
            desc = descriptor_pool.Default().FindServiceByName(service)
        except KeyError:
            raise ConfigError(f'front."{service}": unknown service (expected a full name like "file.v1.File")') from None
    return [MethodShape(m.name, m.client_streaming, m.server_streaming) for m in desc.methods]


def _load_descriptors() -> None:
    """Import every generated ``*_pb2`` module, so any service cellar knows is in the pool (servicer
    modules are imported lazily, and a [front] table is checked before they are)."""
    import importlib
    import pkgutil

    import proto

    for info in pkgutil.walk_packages(proto.__path__, "proto."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)


@dataclass
class Upstream:
    """The upstream of one fronted service. TLS files are read when it is built (a bad path stops
    cellard at start); the channel is made on first use, in the server's event loop."""

    service: str
    config: FrontConfig
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)
    _creds: grpc.ChannelCredentials | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        plain = cfg.plaintext or (cfg.upstream.startswith("unix:") and not cfg.ca)
        self._creds = None if plain else _credentials(cfg, self.service)

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            cfg = self.config
            if self._creds is None:
                self._channel = grpc.aio.insecure_channel(cfg.upstream)
            else:
                options = [("grpc.ssl_target_name_override", cfg.server_name)] if cfg.server_name else []
                self._channel = grpc.aio.secure_channel(cfg.upstream, self._creds, options=options)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


def _credentials(cfg: FrontConfig, service: str) -> grpc.ChannelCredentials:
    prefix = f'front."{service}".'
    if cfg.cert:
        return tls.client_credentials(cfg.ca, cfg.cert, cfg.key, prefix=prefix)
    return grpc.ssl_channel_credentials(root_certificates=tls.read_pem(cfg.ca, f"{prefix}ca", "cert"))


def scope_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The ``cellar-scope`` the upstream should act in, as this cellard established it.

    The upstream sees this cellard as its caller, so the caller's own scope must travel explicitly:
    a workload on the local endpoint -> its cell (whatever it put in its metadata); on the main
    listeners an admin's own ``cellar-scope`` passes, anybody else's is dropped (it would otherwise
    gain this cellard's standing at the upstream).
    """
    try:
        from agent.auth.authz import current_role
        from agent.auth.identity import caller_identity
    except ImportError:
        return ()
    ident = caller_identity(context)
    if ident.transport != "main":  # the node-local endpoint established who this is
        return ((SCOPE_METADATA_KEY, ident.scope),) if ident.scope != "host" else ()
    if current_role() != "admin":
        return ()
    sent = [(k, v) for k, v in (context.invocation_metadata() or ()) if k == SCOPE_METADATA_KEY and isinstance(v, str)]
    return tuple(sent[-1:])


def _call_options(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    remaining = context.time_remaining()
    # grpc reports "no deadline" as None or as a huge number; only a real deadline is relayed.
    timeout = remaining if remaining is not None and remaining < 10**8 else None
    if timeout is not None:
        timeout = max(timeout, 0.0)
    metadata = tuple(kv for kv in relayed_metadata(context.invocation_metadata()) if kv[0] != SCOPE_METADATA_KEY)
    return {"timeout": timeout, "metadata": metadata + scope_metadata(context)}


async def _relay_failure(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError) -> None:
    """End the call with the upstream's own status, details and trailing metadata (always raises)."""
    await context.abort(exc.code(), exc.details() or "", relayed_metadata(exc.trailing_metadata()))


async def _relay_initial(call: Any, context: grpc.aio.ServicerContext) -> None:
    initial = relayed_metadata(await call.initial_metadata())
    if initial:
        await context.send_initial_metadata(initial)


async def _relay_trailing(call: Any, context: grpc.aio.ServicerContext) -> None:
    trailing = relayed_metadata(await call.trailing_metadata())
    if trailing:
        context.set_trailing_metadata(trailing)


#: The four call shapes: (client streaming, server streaming) -> (channel multi-callable, server handler).
SHAPES: dict[tuple[bool, bool], tuple[str, Callable[..., grpc.RpcMethodHandler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class Forwarder:
    """Generic handlers relaying every method of one service to its :class:`Upstream`."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def handler(self) -> grpc.GenericRpcHandler:
        service = self.upstream.service
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for m in service_methods(service):
            kind, method_handler = SHAPES[m.client_streaming, m.server_streaming]
            handlers[m.name] = method_handler(self._relay(f"/{service}/{m.name}", kind, m.server_streaming))
        return grpc.method_handlers_generic_handler(service, handlers)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((self.handler(),))

    def _relay(self, path: str, kind: str, server_streaming: bool) -> Callable[..., Any]:
        """The one relay, whatever the shape: ``request`` is a message or the client's message iterator
        (the upstream call takes either as given). A streamed reply is written message by message
        after the upstream's initial metadata; a single one is returned, its initial metadata sent
        once it has arrived. On an upstream failure the call ends with the upstream's status; on
        cancellation (the client went away or the server is stopping) the upstream call is cancelled
        before re-raising."""

        async def behavior(request: bytes | AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes | None:
            call = getattr(self.upstream.channel(), kind)(path, None, None)(request, **_call_options(context))
            try:
                response: bytes | None = None
                if server_streaming:
                    await _relay_initial(call, context)
                    async for message in call:
                        await context.write(message)
                else:
                    response = await call
                    await _relay_initial(call, context)
                await _relay_trailing(call, context)
                return response
            except grpc.aio.AioRpcError as exc:
                await _relay_failure(context, exc)
                raise
            except asyncio.CancelledError:
                call.cancel()
                raise

        return behavior


class Bypassed:
    """Generic handlers answering every method of a view (:data:`VIEWS`) with FAILED_PRECONDITION: the
    state it would list lives at the upstream its service is fronted to."""

    def __init__(self, view: str, fronts: dict[str, FrontConfig]) -> None:
        backing, what = VIEWS[view]
        self.view = view
        self.upstream = fronts[backing].upstream
        self.message = (f'{what} are forwarded to {self.upstream} ([front."{backing}"]): ask it, '
                        f'or add [front."{view}"] to relay this view too')

    def handler(self) -> grpc.GenericRpcHandler:
        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.message)

        return grpc.method_handlers_generic_handler(self.view, {
            m.name: SHAPES[m.client_streaming, m.server_streaming][1](refuse) for m in service_methods(self.view)})

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((self.handler(),))


def apply_fronts(services: list[Any], fronts: dict[str, FrontConfig]) -> list[Any]:
    """``services`` (agent.core.services.Service) with every fronted name served by a Forwarder instead, and
    every view of a fronted service's state (:data:`VIEWS`) that is not fronted itself by :class:`Bypassed`.

    Used by both the main server and the node-local endpoint, so a service is fronted on both.
    Raises ConfigError for a front that names no known service or one cellard must serve itself.
    """
    out = []
    for service in services:
        front = fronts.get(service.name)
        if front is None:
            view = VIEWS.get(service.name)
            if view is not None and view[0] in fronts:
                bypassed = Bypassed(service.name, fronts)
                log.info("front.view_bypassed", service=service.name, upstream=bypassed.upstream)
                service = replace(service, add_to_server=bypassed.add_to_server)
            out.append(service)
            continue
        forwarder = Forwarder(Upstream(service.name, front))
        forwarder.handler()  # validate now: a bad name stops cellard at start, not at the first call
        log.info("front.upstream", service=service.name, upstream=front.upstream)
        out.append(replace(service, add_to_server=forwarder.add_to_server))
    return out


def check_fronts(fronts: dict[str, FrontConfig]) -> None:
    """Every ``[front]`` name must be a known, frontable service and its TLS files readable
    (ConfigError otherwise); cellard calls this before it starts anything."""
    for name, front in fronts.items():
        service_methods(name)
        Upstream(name, front)  # reads the TLS files

