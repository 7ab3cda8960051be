"""The node-local dispatchers' state: registered servers and which one handles each function.

``pb.ServerDispatcher.Register`` records a server (its address, its PEM X.509 certificate);
``GetNextServer`` asks whether a server is registered and healthy; ``pb.FunctionDispatcher.GetTarget``
picks the server for a function uuid: round-robin over the healthy servers, and the same server again
for the same uuid while it stays registered and healthy (a function keeps its warm server).

Healthy means registered, and — when the registration came over a Unix socket from a known pid —
that process still running: a crashed server stops receiving work without having to deregister.
State is in memory: servers register again when they (or cellard) start, as the seed's servers do.
"""

from __future__ import annotations

import os
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


@dataclass
class Server:
    ip: str
    certificate: bytes
    subject: str
    registered_at_ns: int
    pid: int = 0  # Unix peer that registered it (0: unknown, e.g. over TCP)

    @property
    def healthy(self) -> bool:
        return self.pid <= 0 or os.path.exists(f"/proc/{self.pid}")


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
        self._servers: dict[str, Server] = {}
        self._assigned: OrderedDict[bytes, str] = OrderedDict()
        self._next = 0

    def register(self, ip: str, certificate: bytes, pid: int = 0) -> Server:
        subject = parse_certificate(certificate)
        server = Server(ip, bytes(certificate), subject, time.time_ns(), pid)
        with self._lock:
            if ip not in self._servers and len(self._servers) >= MAX_SERVERS:
                self._drop_unhealthy()
                if len(self._servers) >= MAX_SERVERS:
                    raise BadCertificate(f"too many registered servers ({MAX_SERVERS})")
            self._servers[ip] = server
        return server

    def _drop_unhealthy(self) -> None:
        for ip in [ip for ip, s in self._servers.items() if not s.healthy]:
            del self._servers[ip]

    def accepts(self, ip: str, certificate: bytes) -> bool:
        """GetNextServer: ``ip`` is registered and healthy (and holds ``certificate`` when one is given)."""
        with self._lock:
            server = self._servers.get(ip)
        if server is None or not server.healthy:
            return False
        return not certificate or certificate.strip() == server.certificate.strip()

    def target(self, uuid: bytes) -> Server:
        """GetTarget: the server for function ``uuid`` (sticky while healthy, else round-robin)."""
        if not uuid or len(uuid) > MAX_UUID_BYTES:
            raise InvalidFunction(f"uuid: must be 1-{MAX_UUID_BYTES} bytes")
        with self._lock:
            ip = self._assigned.get(uuid)
            server = self._servers.get(ip) if ip is not None else None
            if server is not None and server.healthy:
                self._assigned.move_to_end(uuid)
                return server
            healthy = [s for _, s in sorted(self._servers.items()) if s.healthy]
            if not healthy:
                raise NoServer("no healthy server is registered with the ServerDispatcher")
            server = healthy[self._next % len(healthy)]
            self._next += 1
            self._assigned[uuid] = server.ip
            self._assigned.move_to_end(uuid)
            while len(self._assigned) > MAX_FUNCTIONS:
                self._assigned.popitem(last=False)
            return server

    def servers(self) -> list[tuple[Server, int]]:
        """Every registered server with how many functions are routed to it."""
        with self._lock:
            counts: dict[str, int] = {}
            for ip in self._assigned.values():
                counts[ip] = counts.get(ip, 0) + 1
            return [(s, counts.get(ip, 0)) for ip, s in sorted(self._servers.items())]

    def any_healthy(self) -> bool:
        with self._lock:
            return any(s.healthy for s in self._servers.values())
