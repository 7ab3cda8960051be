"""The node-local dispatchers' state: registered servers and which one handles each function.

``pb.ServerDispatcher.Register`` records a server (its address, its PEM X.509 certificate);
``GetNextServer`` asks whether a server is registered and healthy; ``pb.FunctionDispatcher.GetTarget``
picks the server for a function uuid: round-robin over the healthy servers, and the same server again
for the same uuid while it stays registered and healthy (a function keeps its warm server).

Healthy means registered and still there, by the cheapest sound signal cellard has:
- a server that registered over cellard's Unix socket is known by its process (SO_PEERCRED pid plus
  that process's start time, so a reused pid is not mistaken for it): healthy while that process
  runs; once it has exited (a zombie counts as exited) it is never handed out again, without having
  to deregister. Each such process is its own registration, so two local servers (both "127.0.0.1"
  to their clients, told apart by their certificates) never overwrite each other;
- a server that registered over TCP is keyed by its IP (one per host, as in the seed) and cannot be
  observed: the seed protocol carries no port to probe and no heartbeat, so it counts as healthy until
  the same host registers again. Servers on this node should register over the Unix socket.
State is in memory: servers register again when they (or cellard) start, as the seed's servers do.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509

MAX_CERT_BYTES = 64 * 1024
MAX_SERVERS = 1024
MAX_FUNCTIONS = 100_000  # remembered uuid -> server assignments (least recently used dropped)
MAX_UUID_BYTES = 1024


class BadCertificate(ValueError):
    """Not a PEM X.509 certificate."""


class NoServer(LookupError):
    """No healthy server is registered."""


class InvalidFunction(ValueError):
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

    @property
    def key(self) -> tuple[str, int]:
        return self.ip, self.pid

    @property
    def healthy(self) -> bool:
        if self.pid <= 0:
            return True
        return self.started is not None and process_start(self.pid) == self.started


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


class Dispatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[tuple[str, int], Server] = {}  # by Server.key, in registration order
        self._assigned: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._next = 0

    def register(self, ip: str, certificate: bytes, pid: int = 0) -> Server:
        """Record a server (``pid``: the registering Unix peer's); the same ``(ip, pid)`` again replaces it."""
        subject = parse_certificate(certificate)
        started = process_start(pid) if pid > 0 else None
        server = Server(ip, bytes(certificate), subject, time.time_ns(), max(pid, 0), started)
        with self._lock:
            self._drop_exited()  # a restarted server replaces its dead predecessor, and MAX_SERVERS stays honest
            if server.key not in self._servers and len(self._servers) >= MAX_SERVERS:
                raise BadCertificate(f"too many registered servers ({MAX_SERVERS})")
            self._servers[server.key] = server
        return server

    def _drop_exited(self) -> None:
        for key in [k for k, s in self._servers.items() if not s.healthy]:
            del self._servers[key]

    def accepts(self, ip: str, certificate: bytes) -> bool:
        """GetNextServer: a healthy server is registered at ``ip`` (holding ``certificate`` when one is given)."""
        with self._lock:
            candidates = [s for s in self._servers.values() if s.ip == ip]
        wanted = certificate.strip()
        return any(s.healthy for s in candidates if not wanted or wanted == s.certificate.strip())

    def target(self, uuid: bytes) -> Server:
        """GetTarget: the server for function ``uuid`` (sticky while healthy, else round-robin over healthy)."""
        if not uuid or len(uuid) > MAX_UUID_BYTES:
            raise InvalidFunction(f"uuid: must be 1-{MAX_UUID_BYTES} bytes")
        with self._lock:
            key = self._assigned.get(uuid)
            server = self._servers.get(key) if key is not None else None
            if server is not None and server.healthy:
                self._assigned.move_to_end(uuid)
                return server
            servers = list(self._servers.values())
            for i in range(len(servers)):  # from the round-robin position to the first healthy one
                server = servers[(self._next + i) % len(servers)]
                if server.healthy:
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
            counts: dict[tuple[str, int], int] = {}
            for key in self._assigned.values():
                counts[key] = counts.get(key, 0) + 1
            return [(s, counts.get(key, 0)) for key, s in sorted(self._servers.items())]

    def any_healthy(self) -> bool:
        with self._lock:
            return any(s.healthy for s in self._servers.values())
