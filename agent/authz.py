"""Who may call what: caller identity -> role, and the one table of role per RPC.

Roles are ordered: ``observer`` (read-only) < ``operator`` (cells, executables, jobs, files, queue)
< ``admin`` (everything). :data:`REQUIRED_ROLE` names the least role for a full method name
(``/package.Service/Method``) or for a whole service (``/package.Service/*``); a method in neither is
admin-only, so a new RPC is safe until someone decides otherwise.

Identities:
- mTLS (TCP): the client certificate's CN and URI SANs, looked up in ``[auth.identities]``; with
  ``auth.trust_cert_role`` a URI SAN ``cellar://role/<role>/<name>`` signed by our CA also counts.
- Unix socket: the kernel credentials recorded by :mod:`agent.unixpeer`; root and members of
  ``server.socket_group`` get ``auth.unix_role``, everybody else is denied. A process in a cell is a
  workload, not a user: denied whatever its uid, unless its cell was granted a role, which it then
  gets instead (:mod:`agent.grants`).
- Plain TCP exists only with ``--insecure-tcp-dev``; its callers get ``auth.unix_role``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
import structlog
from cryptography import x509

from agent.config import ROLES, AuthConfig
from agent.unixpeer import PeerCred

log = structlog.get_logger("agent.authz")

RANK = {role: i for i, role in enumerate(("observer", "operator", "admin"))}
ROLE_URI_PREFIX = "cellar://role/"

REQUIRED_ROLE: dict[str, str] = {
    # Aurae runtime + observe
    "/runtime.CellService/Allocate": "operator",
    "/runtime.CellService/Free": "operator",
    "/runtime.CellService/Start": "operator",
    "/runtime.CellService/Stop": "operator",
    "/observe.Observe/*": "observer",
    # cellar's own read APIs
    "/cellar.v1.Cells/List": "observer",
    "/cellar.v1.Cells/Inspect": "observer",
    "/cellar.v1.Cells/Info": "observer",
    "/cellar.v1.Cells/WatchEvents": "observer",
    "/cellar.v1.Cells/Freeze": "operator",
    "/cellar.v1.Cells/Thaw": "operator",
    "/cellar.v1.Logs/Read": "observer",
    "/cellar.v1.Logs/Purge": "operator",
    # infrastructure: health must answer any authenticated caller
    "/grpc.health.v1.Health/*": "observer",
    "/grpc.reflection.v1alpha.ServerReflection/*": "observer",
    "/grpc.reflection.v1.ServerReflection/*": "observer",
    # dispatchers and worker saver
    "/pb.WorkerSaver/Check": "observer",
    "/pb.WorkerSaver/SaveMachine": "operator",
    "/pb.FunctionDispatcher/Check": "observer",
    "/pb.FunctionDispatcher/GetTarget": "observer",
    "/pb.ServerDispatcher/Check": "observer",
    "/pb.ServerDispatcher/GetNextServer": "observer",
    "/pb.ServerDispatcher/Register": "operator",
    "/cellar.v1.Inventory/Get": "observer",
    "/cellar.v1.Machines/*": "observer",
    "/cellar.v1.Dispatch/List": "observer",
    # node-local endpoints
    "/Agent/*": "operator",
    "/cellar.v1.Jobs/List": "observer",
    "/cellar.v1.Jobs/Get": "observer",
    "/file.v1.File/*": "operator",
    "/queue.v1.Queue/*": "operator",
    "/cellar.v1.Queues/List": "observer",
    "/test.v1.Test/*": "operator",
    "/test.v1.MethodCallSuite/*": "operator",
    "/test.v1.UnderTest/*": "operator",
    "/scaleout.CombinerClient/*": "operator",
    "/scaleout.ModelService/*": "operator",
    # the node-local combiner's operator API
    "/cellar.v1.Federation/ListClients": "observer",
    "/cellar.v1.Federation/ListTasks": "observer",
    "/cellar.v1.Federation/ListRecords": "observer",
    "/cellar.v1.Federation/ListModels": "observer",
    "/cellar.v1.Federation/PushTask": "operator",
    "/cellar.v1.Federation/CancelTask": "operator",
}


# The role of the call being served (set by AuthInterceptor.check), for servicers that let admins do more.
_current_role: contextvars.ContextVar[str | None] = contextvars.ContextVar("cellar_role", default=None)


def current_role() -> str | None:
    """Role of the caller of the current RPC on cellard's main listeners (None elsewhere)."""
    return _current_role.get()


# The kernel credentials of a Unix-socket caller (set with the role), for servicers that need the
# caller's pid (the dispatchers tie a registered server's health to its process).
_current_cred: contextvars.ContextVar[PeerCred | None] = contextvars.ContextVar("cellar_peer_cred", default=None)


def current_peer_cred() -> PeerCred | None:
    """SO_PEERCRED of the current RPC's caller on cellard's main Unix socket (None elsewhere)."""
    return _current_cred.get()


def required_role(method: str) -> str:
    """Least role allowed to call ``method``; unlisted methods are admin-only."""
    role = REQUIRED_ROLE.get(method)
    if role is None:
        service = method.rsplit("/", 1)[0]
        role = REQUIRED_ROLE.get(service + "/*", "admin")
    return role


def allows(role: str | None, method: str) -> bool:
    return role is not None and RANK[role] >= RANK[required_role(method)]


@dataclass(frozen=True)
class Caller:
    """Who is calling, as logged: ``identity`` for humans, ``role`` None when unknown."""

    identity: str
    role: str | None
    peer: str
    cred: PeerCred | None = None


@functools.lru_cache(maxsize=256)
def cert_identities(pem: bytes) -> tuple[str, tuple[str, ...]]:
    """(CN, URI SANs) of a PEM certificate; cached since a connection presents the same cert each call."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return cn, uris


def cert_role(cn: str, uris: tuple[str, ...], auth: AuthConfig) -> tuple[str, str | None]:
    """(identity, role) for a verified client certificate."""
    for ident in (*uris, cn):
        if ident and ident in auth.identities:
            return ident, auth.identities[ident]
    if auth.trust_cert_role:
        for uri in uris:
            if uri.startswith(ROLE_URI_PREFIX):
                role, _, name = uri[len(ROLE_URI_PREFIX) :].partition("/")
                if role in ROLES and name:
                    return uri, role
    return (cn or (uris[0] if uris else "<no identity>")), None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call against REQUIRED_ROLE before the servicer runs; denials abort PERMISSION_DENIED.

    grpc.aio interceptors see no ServicerContext, so the check is wrapped around the method handler's
    behaviour. Unknown methods get a stand-in handler so an unauthorized caller learns nothing
    (PERMISSION_DENIED) and an authorized one gets UNIMPLEMENTED.
    """

    def __init__(
        self,
        auth: AuthConfig,
        socket_gid: int,
        unix_peers: Callable[[str], PeerCred | None] | None,
        insecure_tcp: bool,
        gate: Any = None,
    ) -> None:
        """``gate``: agent.grants.MainSocketGate, which refuses workloads (None: no cell check)."""
        self.auth = auth
        self.socket_gid = socket_gid
        self.unix_peers = unix_peers
        self.insecure_tcp = insecure_tcp
        self.gate = gate

    def identify(self, context: grpc.aio.ServicerContext) -> Caller:
        peer = context.peer()
        if peer.startswith("unix:"):
            if self.unix_peers is None:  # file-mode gate only: whoever could connect is trusted
                return Caller("unix", self.auth.unix_role, peer)
            cred = self.unix_peers(peer)
            if cred is None:
                return Caller("unix:unproxied", None, peer)
            ident = f"uid={cred.uid} gid={cred.gid} pid={cred.pid}"
            ok = cred.uid == 0 or cred.in_group(self.socket_gid)
            return Caller(ident, self.auth.unix_role if ok else None, peer, cred)
        ctx = context.auth_context()
        pem = next(iter(ctx.get("x509_pem_cert") or ()), b"")
        if pem:
            cn, uris = cert_identities(pem)
            ident, role = cert_role(cn, uris, self.auth)
            return Caller(ident, role, peer)
        if self.insecure_tcp:
            return Caller("insecure-tcp", self.auth.unix_role, peer)
        return Caller("<unauthenticated>", None, peer)

    async def check(self, context: grpc.aio.ServicerContext, method: str) -> None:
        caller = self.identify(context)
        extra: dict[str, Any] = {}
        if caller.cred is not None:
            extra = {"pid": caller.cred.pid, "uid": caller.cred.uid, "gid": caller.cred.gid}
            if self.gate is not None and caller.role is not None:
                caller = await self._workload(context, caller, method, extra)
        if not allows(caller.role, method):
            log.warning("auth.denied", identity=caller.identity, role=caller.role, method=method, peer=caller.peer, **extra)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.identity} (role {caller.role or 'none: unknown identity'}) may not call {method}",
            )
        log.debug("auth.call", identity=caller.identity, role=caller.role, method=method, peer=caller.peer, **extra)
        _current_role.set(caller.role)
        _current_cred.set(caller.cred)

    async def _workload(
        self, context: grpc.aio.ServicerContext, caller: Caller, method: str, extra: dict[str, Any]
    ) -> Caller:
        """A local caller inside a cell: its cell's granted role, or PERMISSION_DENIED (agent.grants)."""
        assert caller.cred is not None
        verdict = await self.gate.decide(caller.peer, caller.cred)
        if verdict.cell is None:
            return caller
        extra["cell"] = verdict.cell
        if verdict.role is None or verdict.role not in RANK:
            log.warning("authz.workload_denied", identity=caller.identity, method=method, peer=caller.peer, **extra)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.identity} runs in cell {verdict.cell!r}: workloads may not use the main socket "
                "unless their cell was allocated with grant_role",
            )
        extra["granted_by"] = verdict.granted_by
        return replace(caller, identity=f"{caller.identity} cell={verdict.cell}", role=verdict.role)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return grpc.stream_stream_rpc_method_handler(self._unimplemented(method))
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._wrap(behavior, method)})  # type: ignore[attr-defined,no-any-return]
        return handler

    def _unimplemented(self, method: str) -> Callable[..., Any]:
        async def behavior(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            await self.check(context, method)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method not found: {method}")

        return behavior

    def _wrap(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        check = self.check
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context, method)
                async for item in behavior(request, context):
                    yield item

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context, method)
            result = behavior(request, context)
            if inspect.isawaitable(result):
                return await result
            return result

        return call
