"""Who may call what: caller identity -> role, and the one table of role per RPC.

Roles are ordered: ``observer`` (read-only) < ``operator`` (cells, executables, jobs, files, queue)
< ``admin`` (everything). :data:`REQUIRED_ROLE` names the least role for a full method name
(``/package.Service/Method``) or for a whole service (``/package.Service/*``); a method in neither is
admin-only, so a new RPC is safe until someone decides otherwise.

Identities:
- mTLS (TCP): the identity is the client certificate's subject CN, and only that (one rule, so two
  parts of a certificate can never name two callers); it is looked up in ``[auth.identities]``. A
  cellar role SAN ``cellar://role/<role>/<name>`` must name that same CN; with
  ``auth.trust_cert_role`` its role counts for an identity not in the table. Other URI SANs (SPIFFE
  ids ...) are never an identity. A certificate without exactly one CN, or with a cellar SAN naming
  someone else (or two of them), is refused UNAUTHENTICATED: it does not say who the caller is
  (PERMISSION_DENIED is for a known identity without the role). See :func:`cert_identity`.
- Unix socket: the kernel credentials recorded by :mod:`agent.auth.unixpeer`; root and members of
  ``server.socket_group`` get ``auth.unix_role``, everybody else is denied. A process in a cell is a
  workload, not a user: denied whatever its uid, unless its cell was granted a role, which it then
  gets instead (:mod:`agent.auth.grants`).
- Plain TCP exists only with ``--insecure-tcp-dev``; its callers get ``auth.unix_role``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import grpc
import structlog
from cryptography import x509

from agent.auth.unixpeer import PeerCred
from agent.config import ROLES, AuthConfig

log = structlog.get_logger("agent.auth.authz")

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
    "/cellar.v1.Cells/Apply": "operator",
    "/cellar.v1.Cells/GetManifest": "observer",
    "/cellar.v1.Logs/Read": "observer",
    "/cellar.v1.Logs/Purge": "operator",
    "/cellar.v1.Sessions/Exec": "operator",  # a shell in a cell: never an observer's
    "/cellar.v1.Sessions/Attach": "operator",  # a workload's stdin, likewise
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


# The certificate identity of an mTLS caller (set by AuthInterceptor.identify), for services that bind
# what a caller names to who it is (the Scaleout combiner's client ids).
_current_cert_identity: contextvars.ContextVar[str | None] = contextvars.ContextVar("cellar_cert_identity", default=None)


# The caller's own address as logged and as the dispatchers record it: an mTLS caller's TCP address
# (``ipv4:1.2.3.4:5``), not the internal name agent.auth.tlsfront connects from.
_current_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar("cellar_peer", default=None)


def current_peer(context: grpc.aio.ServicerContext) -> str:
    """The address of the current RPC's caller: its TCP address for mTLS, else ``context.peer()``."""
    return _current_peer.get() or context.peer()


def current_cert_identity() -> str | None:
    """The certificate identity (CN) of the current RPC's mTLS caller (None for any other caller)."""
    return _current_cert_identity.get()


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
    refused: str = ""  # why the caller's certificate names no identity (-> UNAUTHENTICATED)


class CertificateRefused(ValueError):
    """A verified certificate that does not name exactly one identity (-> UNAUTHENTICATED)."""


@functools.lru_cache(maxsize=256)
def cert_identities(pem: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(CNs, URI SANs) of a PEM certificate; cached since a connection presents the same cert each call."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return cns, uris


def cert_identity(cns: tuple[str, ...], uris: tuple[str, ...]) -> tuple[str, str | None]:
    """(identity, role the certificate claims or None): the one CN, checked against the cellar role SAN.

    Raises CertificateRefused when there is not exactly one non-empty CN, or a cellar role SAN is
    malformed, names another identity, or is not the only one."""
    if len(cns) != 1 or not cns[0]:
        raise CertificateRefused(f"a client certificate must have exactly one subject CN (has {len(cns)})")
    cn = cns[0]
    claims = [u for u in uris if u.startswith(ROLE_URI_PREFIX)]
    if len(claims) > 1:
        raise CertificateRefused(f"certificate {cn!r} carries {len(claims)} cellar role SANs")
    if not claims:
        return cn, None
    role, _, name = claims[0][len(ROLE_URI_PREFIX) :].partition("/")
    if name != cn or role not in ROLES:
        raise CertificateRefused(f"certificate CN {cn!r} and its SAN {claims[0][:200]!r} disagree")
    return cn, role


def cert_role(cns: tuple[str, ...], uris: tuple[str, ...], auth: AuthConfig) -> tuple[str, str | None]:
    """(identity, role) for a verified client certificate: ``[auth.identities]`` of its CN, else (with
    ``trust_cert_role``) the role its cellar SAN claims. Raises CertificateRefused (see cert_identity)."""
    ident, claimed = cert_identity(cns, uris)
    if ident in auth.identities:
        return ident, auth.identities[ident]
    return ident, claimed if auth.trust_cert_role else None


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
        tls_remote: Callable[[str], str | None] | None = None,
    ) -> None:
        """``gate``: agent.auth.grants.MainSocketGate, which refuses workloads (None: no cell check).
        ``tls_remote``: agent.auth.tlsfront.TlsFront.remote, the client address of a spliced mTLS peer."""
        self.auth = auth
        self.socket_gid = socket_gid
        self.unix_peers = unix_peers
        self.insecure_tcp = insecure_tcp
        self.gate = gate
        self.tls_remote = tls_remote

    def identify(self, context: grpc.aio.ServicerContext) -> Caller:
        peer = context.peer()
        ctx = context.auth_context()
        if ctx.get("transport_security_type") == [b"ssl"]:  # mTLS, spliced or not: the certificate says
            return self._cert_caller(ctx, (self.tls_remote(peer) if self.tls_remote else None) or peer)
        if peer.startswith("unix:"):
            if self.unix_peers is None:  # file-mode gate only: whoever could connect is trusted
                return Caller("unix", self.auth.unix_role, peer)
            cred = self.unix_peers(peer)
            if cred is None:
                return Caller("unix:unproxied", None, peer)
            ident = f"uid={cred.uid} gid={cred.gid} pid={cred.pid}"
            ok = cred.uid == 0 or cred.in_group(self.socket_gid)
            return Caller(ident, self.auth.unix_role if ok else None, peer, cred)
        if self.insecure_tcp:
            return Caller("insecure-tcp", self.auth.unix_role, peer)
        return Caller("<unauthenticated>", None, peer)

    def _cert_caller(self, ctx: Mapping[str, Iterable[bytes]], peer: str) -> Caller:
        pem = next(iter(ctx.get("x509_pem_cert") or ()), b"")
        if not pem:
            return Caller("<unauthenticated>", None, peer)
        cns, uris = cert_identities(pem)
        try:
            ident, role = cert_role(cns, uris, self.auth)
        except CertificateRefused as exc:
            return Caller("<certificate refused>", None, peer, refused=str(exc))
        _current_cert_identity.set(ident)
        return Caller(ident, role, peer)

    async def check(self, context: grpc.aio.ServicerContext, method: str) -> None:
        caller = self.identify(context)
        if caller.refused:
            log.warning("auth.unauthenticated", reason=caller.refused, method=method, peer=caller.peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, caller.refused)
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
        _current_peer.set(caller.peer)

    async def _workload(
        self, context: grpc.aio.ServicerContext, caller: Caller, method: str, extra: dict[str, Any]
    ) -> Caller:
        """A local caller inside a cell: its cell's granted role, or PERMISSION_DENIED (agent.auth.grants)."""
        assert caller.cred is not None
        verdict = await self.gate.decide(caller.peer, caller.cred)
        if verdict.cell is None:
            return caller
        extra["cell"] = verdict.cell
        if verdict.reason:  # bound at accept elsewhere: its opener exited or moved since (logged by the gate)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{caller.identity}: {verdict.reason}")
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
