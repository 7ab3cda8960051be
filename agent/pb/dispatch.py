"""The node-local dispatchers' state: registered servers and which one handles each function.

``pb.ServerDispatcher.Register`` records a server (its address, its PEM X.509 certificate);
``GetNextServer`` asks whether a server is registered and healthy; ``pb.FunctionDispatcher.GetTarget``
picks the server for a function uuid: round-robin over the healthy servers, and the same server again
for the same uuid while it stays registered and healthy (a function keeps its warm server).

Healthy means registered and still there, by the soundest signal cellard has:
- a server that registered over cellard's Unix socket is known by its process (SO_PEERCRED pid plus
  that process's start time, so a reused pid is not mistaken for it): healthy while that process
  runs; once it has exited (a zombie counts as exited) it is never handed out again, without having
  to deregister. Each such process is its own registration, so two local servers (both "127.0.0.1"
  to their clients, told apart by their certificates) never overwrite each other;
- a server that names the port it serves on (``RegisterReq.port``, cellar's field 10; over TCP the
  only way to know where it listens) is **probed** every :data:`PROBE_INTERVAL_S` at its registering
  address: a gRPC health Check (SERVING, or a gRPC server without the health service, is alive;
  NOT_SERVING is not), else a TCP connect. A dead one is skipped at once and forgotten after
  :data:`EXPIRE_AFTER_S` without a successful probe; one that answers again is handed out again;
- a server that registered over TCP without a port cannot be observed (the seed protocol carries no
  port and no heartbeat): it counts as healthy until the same host registers again, as in the seed.
  Servers should register over the Unix socket or name their port.
A server registered by a process of an executable with a health check (``cellar start --health-*``,
:mod:`cells.health`; the process's cgroup names its cell and executable) is handed out only while
that executable is healthy: not while it is ``starting`` nor once it is ``unhealthy``
(:class:`HealthGate`, a snapshot of the supervisor's listing at most HEALTH_MAX_AGE_S old). Servers
of executables without a check are unaffected.
Only the registrant's own address is probed (never an address it names), at most MAX_SERVERS of them.
A registration records its caller's scope: another scope (e.g. another local user over loopback TCP,
where every caller is "127.0.0.1") cannot replace it while it is healthy.
State is in memory: servers register again when they (or cellard) start, as the seed's servers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import structlog
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cells.spec import EXECUTABLE_CGROUP_PREFIX
from cells.state import CellInfo, ExecutableState
from observe import kinds

log = structlog.get_logger("agent.pb.dispatch")

MAX_CERT_BYTES = 64 * 1024
MAX_SERVERS = 1024
MAX_FUNCTIONS = 100_000  # remembered uuid -> server assignments (least recently used dropped)
MAX_UUID_BYTES = 1024
PROBE_INTERVAL_S = 3.0  # how often a server with a port is probed
PROBE_TIMEOUT_S = 2.0  # per step (health, then connect): a probe ends within twice this
EXPIRE_AFTER_S = 60.0  # a server that failed every probe this long is forgotten
HEALTH_MAX_AGE_S = 0.5  # the executables' health is read from the supervisor at most this often

Key = tuple[str, int, int]  # (ip, pid, port)


class BadRegistration(ValueError):
    """A Register the dispatcher refuses (NOT_REGISTERED)."""


class BadCertificate(kinds.Invalid, BadRegistration):
    """Not a PEM X.509 certificate."""


class NoServer(kinds.NotFound, LookupError):
    """No healthy server is registered."""


class InvalidFunction(kinds.Invalid, ValueError):
    """A malformed function uuid."""


def process_start(pid: int) -> int | None:
    """Start time (clock ticks after boot) of a running process; None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


@dataclass
class Server:
    ip: str
    certificate: bytes
    subject: str
    registered_at_ns: int
    pid: int = 0  # the process that registered it over the Unix socket (0: unknown, e.g. over TCP)
    started: int | None = None  # that process's start time (process_start), so a reused pid does not count
    port: int = 0  # the port it serves on, probed when > 0
    alive: bool = True  # the last probe's verdict (True until the first probe, and when never probed)
    dead_since_ns: int = 0  # monotonic time of the first failed probe in a row (0: answering)
    scope: str = "host"  # the registering caller's scope: another scope cannot replace this registration
    cgroup: str = ""  # the registering process's unified cgroup (its executable's leaf, in a cell)

    @property
    def key(self) -> Key:
        return self.ip, self.pid, self.port

    @property
    def healthy(self) -> bool:
        if self.pid > 0 and (self.started is None or process_start(self.pid) != self.started):
            return False
        return self.alive


def parse_certificate(pem: bytes) -> str:
    """The subject of a PEM X.509 certificate; raises BadCertificate otherwise."""
    if not pem or len(pem) > MAX_CERT_BYTES:
        raise BadCertificate(f"certificate: must be 1-{MAX_CERT_BYTES} bytes of PEM")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise BadCertificate(f"certificate: not a PEM X.509 certificate ({exc})") from None
    return cert.subject.rfc4514_string()


def peer_ip(peer: str) -> str:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``); Unix peers are this node."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return "127.0.0.1"


async def probe(ip: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Is a server listening at ``ip:port``: gRPC health first, else a plain TCP connect."""
    host = f"[{ip}]" if ":" in ip else ip
    try:
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
            return True  # a gRPC server that answers, without (that part of) the health service
    except Exception:  # noqa: BLE001 - any failure of the health step falls back to a connect
        pass
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class HealthGate:
    """Whether a server registered from an executable of a cell may be handed out: not while that
    executable has a health check and is not ``healthy``. A snapshot of the supervisor's listing
    (``list_cells``), refreshed by :meth:`refresh` when older than ``max_age_s``."""

    def __init__(self, list_cells: Callable[[], Awaitable[list[CellInfo]]], cgroup_root: str,
                 max_age_s: float = HEALTH_MAX_AGE_S) -> None:
        self._list = list_cells
        self._root = f"/{cgroup_root.strip('/')}/"
        self._max_age_s = max_age_s
        self._health: dict[tuple[str, str], str] = {}  # (cell, executable) -> health, checked running ones
        self._at = -1e18
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        if time.monotonic() - self._at < self._max_age_s:
            return
        async with self._lock:
            if time.monotonic() - self._at < self._max_age_s:
                return
            try:
                cells = await self._list()
            except Exception as exc:  # noqa: BLE001 - no supervisor: keep the last snapshot
                log.warning("dispatch.health_unknown", error=str(exc))
                return
            self._health = {(e.cell_name, e.name): e.health for c in cells for e in c.executables
                            if e.health and e.state is ExecutableState.RUNNING}
            self._at = time.monotonic()

    def executable_of(self, cgroup: str) -> tuple[str, str] | None:
        """(cell, executable) of a process in ``cgroup`` (a unified path), None outside the cells."""
        at = cgroup.find(self._root)
        if at < 0:
            return None
        cell, _, leaf = cgroup[at + len(self._root):].rpartition("/")
        if not cell or not leaf.startswith(EXECUTABLE_CGROUP_PREFIX):
            return None
        return cell, leaf[len(EXECUTABLE_CGROUP_PREFIX):]

    def admits(self, server: Server) -> bool:
        if not server.cgroup:
            return True
        exe = self.executable_of(server.cgroup)
        return exe is None or self._health.get(exe, "healthy") == "healthy"


class Dispatcher:
    def __init__(self, probe_interval_s: float = PROBE_INTERVAL_S, expire_after_s: float = EXPIRE_AFTER_S,
                 health_gate: HealthGate | None = None) -> None:
        self.health_gate = health_gate
        self.probe_interval_s = probe_interval_s
        self.expire_after_s = expire_after_s
        self._lock = threading.Lock()
        self._servers: dict[Key, Server] = {}  # by Server.key, in registration order
        self._assigned: OrderedDict[bytes, Key] = OrderedDict()
        self._next = 0
        self._prober: asyncio.Task[None] | None = None

    def register(self, ip: str, certificate: bytes, pid: int = 0, port: int = 0, scope: str = "host",
                 cgroup: str = "") -> Server:
        """Record a server (``pid``: the registering Unix peer's; ``port``: where it serves, to probe);
        the same ``(ip, pid, port)`` from the same ``scope`` replaces it, from another scope only once
        the first is no longer healthy. Call on the event loop when ``port`` is given."""
        subject = parse_certificate(certificate)
        if not 0 <= port <= 65535:
            raise BadRegistration(f"port: expected 0 (none) or 1-65535, got {port}")
        started = process_start(pid) if pid > 0 else None
        server = Server(ip, bytes(certificate), subject, time.time_ns(), max(pid, 0), started, port, scope=scope,
                        cgroup=cgroup)
        with self._lock:
            self._drop_exited()  # a restarted server replaces its dead predecessor, and MAX_SERVERS stays honest
            held = self._servers.get(server.key)
            if held is not None and held.scope != scope and held.healthy:
                raise BadRegistration(f"{ip} port {port or '-'}: registered by another caller, which still answers")
            if server.key not in self._servers and len(self._servers) >= MAX_SERVERS:
                raise BadRegistration(f"too many registered servers ({MAX_SERVERS})")
            self._servers[server.key] = server
        if port and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop())
        return server

    async def _probe_loop(self) -> None:
        """Probe every server that has a port until none is left (a new one starts the loop again)."""
        while True:
            with self._lock:
                targets = [s for s in self._servers.values() if s.port]
            if not targets:
                return
            verdicts = await asyncio.gather(*(probe(s.ip, s.port) for s in targets))
            now = time.monotonic_ns()
            with self._lock:
                for server, ok in zip(targets, verdicts, strict=True):
                    self._probed(server, ok, now)
            await asyncio.sleep(self.probe_interval_s)

    def _probed(self, server: Server, ok: bool, now: int) -> None:
        if ok:
            if not server.alive:
                log.info("dispatch.server_back", ip=server.ip, port=server.port)
            server.alive, server.dead_since_ns = True, 0
            return
        if server.alive:
            log.warning("dispatch.server_dead", ip=server.ip, port=server.port, subject=server.subject)
        server.alive = False
        server.dead_since_ns = server.dead_since_ns or now
        if now - server.dead_since_ns >= self.expire_after_s * 1e9 and self._servers.get(server.key) is server:
            del self._servers[server.key]
            log.info("dispatch.server_expired", ip=server.ip, port=server.port)

    def close(self) -> None:
        """Stop probing (cellard's shutdown; tests)."""
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None

    def _drop_exited(self) -> None:
        """Forget servers whose registering process exited (probed ones expire in _probed)."""
        for key in [k for k, s in self._servers.items() if s.pid > 0 and not s.healthy]:
            del self._servers[key]

    async def refresh_health(self) -> None:
        """Before :meth:`accepts` or :meth:`target`: the executables' health, if a gate is set."""
        if self.health_gate is not None:
            await self.health_gate.refresh()

    def serves(self, server: Server) -> bool:
        """Healthy, and (a server of an executable with a health check) that executable is healthy."""
        return server.healthy and (self.health_gate is None or self.health_gate.admits(server))

    def accepts(self, ip: str, certificate: bytes) -> bool:
        """GetNextServer: a healthy server is registered at ``ip`` (holding ``certificate`` when one is given)."""
        with self._lock:
            candidates = [s for s in self._servers.values() if s.ip == ip]
        wanted = certificate.strip()
        return any(self.serves(s) for s in candidates if not wanted or wanted == s.certificate.strip())

    def target(self, uuid: bytes) -> Server:
        """GetTarget: the server for function ``uuid`` (sticky while healthy, else round-robin over healthy)."""
        if not uuid or len(uuid) > MAX_UUID_BYTES:
            raise InvalidFunction(f"uuid: must be 1-{MAX_UUID_BYTES} bytes")
        with self._lock:
            key = self._assigned.get(uuid)
            server = self._servers.get(key) if key is not None else None
            if server is not None and self.serves(server):
                self._assigned.move_to_end(uuid)
                return server
            servers = list(self._servers.values())
            for i in range(len(servers)):  # from the round-robin position to the first healthy one
                server = servers[(self._next + i) % len(servers)]
                if self.serves(server):
                    self._next += i + 1
                    break
            else:
                raise NoServer("no healthy server is registered with the ServerDispatcher")
            self._assigned[uuid] = server.key
            self._assigned.move_to_end(uuid)
            while len(self._assigned) > MAX_FUNCTIONS:
                self._assigned.popitem(last=False)
            return server

    def servers(self) -> list[tuple[Server, int]]:
        """Every registered server with how many functions are routed to it."""
        with self._lock:
            counts: dict[Key, int] = {}
            for key in self._assigned.values():
                counts[key] = counts.get(key, 0) + 1
            return [(s, counts.get(key, 0)) for key, s in sorted(self._servers.items())]

    def any_healthy(self) -> bool:
        with self._lock:
            return any(self.serves(s) for s in self._servers.values())
