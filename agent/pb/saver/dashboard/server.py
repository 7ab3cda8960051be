"""The dashboard's HTTP(S) listener: a thread per connection (at most ``MAX_CONNECTIONS``), reading
the store directly (it is synchronous and locked), so the gRPC event loop never waits for a page.

Read-only: GET/HEAD only, except ``POST /login`` (a bounded form that sets the token cookie).
Every page but the login form and the two static assets needs a valid client certificate or token
(401 otherwise). Bounded input: the request line and headers as http.server bounds them (64 KiB,
100 headers), a 4 KiB login body, 256-character queries, a 10 s socket timeout (slow clients).
Responses carry a strict Content-Security-Policy: scripts only from this origin, no inline script.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from agent.pb.saver.dashboard import auth, pages
from agent.pb.saver.store import MachineStore, StoredReport, StoreError
from agent.pb.saver.validation import MAX_UUID
from proto.pb import workerServer_pb2 as pb

log = structlog.get_logger("agent.pb.saver.dashboard")

MAX_CONNECTIONS = 64
MAX_QUERY = 256
MAX_LOGIN_BODY = 4096
FLEET_WINDOW_S = 900
FLEET_BUCKETS = 60
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Settings:
    token_sha256: bytes | None
    tls: ssl.SSLContext | None  # HTTPS; client certificates signed by the CA are let in
    stale_after_s: float = 180.0
    refresh_s: int = 5
    history: int = 100


class BadQuery(ValueError):
    pass


def _machine(stored: StoredReport) -> pb.Machine:
    m = pb.Machine()
    try:
        m.ParseFromString(stored.report)
    except Exception:  # a row written by something else: show what we can
        m.uuid, m.error = stored.uuid, "stored report is unreadable"
    return m


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a browser without a certificate may still use the token
    return ctx


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    timeout = 10
    protocol_version = "HTTP/1.1"
    server_version = "cellar-saver"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug("dashboard.request", client=self.client_address[0], line=format % args)

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, title: str, body: str, extra: dict[str, str] | None = None) -> None:
        refresh = self.server.settings.refresh_s if status == 200 else 0
        self._send(status, pages.layout(title, body, refresh).encode(), extra=extra)

    def _authorized(self) -> bool:
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket) and conn.getpeercert():  # verified against the CA by the handshake
            return True
        token = auth.request_token(self.headers.get("Authorization"), self.headers.get("Cookie"))
        return auth.token_matches(token, self.server.settings.token_sha256)

    def _query(self, query: str) -> dict[str, str]:
        if len(query) > 4 * MAX_QUERY:
            raise BadQuery("query: too long")
        out: dict[str, str] = {}
        try:
            parsed = parse_qs(query, max_num_fields=8)
        except ValueError:
            raise BadQuery("query: at most 8 parameters") from None
        for key, values in parsed.items():
            if len(values[-1]) > MAX_QUERY or any(c < " " for c in values[-1]):
                raise BadQuery(f"{key}: at most {MAX_QUERY} printable characters")
            out[key] = values[-1]
        return out

    # -- methods ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/login":
            return self._html(200, "Sign in", pages.login_page(False))
        if path == "/favicon.ico":  # browsers ask; no icon rather than a 404 in every console
            return self._send(204, b"", "image/x-icon")
        if not self._authorized():
            return self._html(401, "Sign in", pages.login_page(False),
                              {"WWW-Authenticate": 'Bearer realm="cellar-saver"'})
        try:
            query = self._query(url.query)
            if path == "/":
                return self._overview(query)
            if path.startswith("/machine/"):
                return self._machine_page(unquote(path.removeprefix("/machine/")))
        except BadQuery as exc:
            return self._html(400, "Bad request", pages.message_page(f"Bad request: {exc}"))
        except StoreError as exc:
            log.warning("dashboard.store_failed", error=str(exc))
            return self._html(503, "Unavailable", pages.message_page("The database is unavailable"))
        self._html(404, "Not found", pages.message_page("Not found"))

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/login":
            self.close_connection = True
            return self._send(405, b"read-only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_LOGIN_BODY:
            self.close_connection = True
            return self._send(413, b"login form too large\n", "text/plain; charset=utf-8")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), max_num_fields=4)
        token = (form.get("token") or [""])[-1]
        if not auth.token_matches(token, self.server.settings.token_sha256):
            return self._html(401, "Sign in", pages.login_page(True))
        if not auth.cookie_safe(token):  # it would break out of the Set-Cookie header
            return self._html(400, "Sign in", pages.message_page(
                "This token cannot be kept in a cookie: send it as Authorization: Bearer"))
        secure = "; Secure" if self.server.settings.tls is not None else ""
        self._send(303, b"", extra={"Location": "/", "Set-Cookie":
                                    f"{auth.COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"})

    def do_PUT(self) -> None:  # noqa: N802
        self.close_connection = True
        self._send(405, b"read-only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT  # noqa: N815

    # -- pages -----------------------------------------------------------------------------------
    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._html(404, "Not found", pages.message_page("Not found"))
        data = resources.files("agent.pb.saver.dashboard").joinpath("static", name).read_bytes()
        self._send(200, data, STATIC[name])

    def _overview(self, query: dict[str, str]) -> None:
        state = query.get("state", "")
        if state not in ("", "online", "stale"):
            raise BadQuery("state: must be online, stale or empty")
        settings = self.server.settings
        now = time.time_ns()
        store = self.server.store
        rows = [pages.MachineRow(_machine(StoredReport(s.uuid, s.received_at_ns, s.peer, s.summary)), s.received_at_ns,
                                 s.peer, s.reports) for s in store.summaries()]
        fleet = store.fleet_usage(now - FLEET_WINDOW_S * 10**9, FLEET_WINDOW_S * 10**9 // FLEET_BUCKETS)
        body = pages.overview(rows, fleet, q=query.get("q", ""), state=state, now_ns=now,
                              stale_after_s=settings.stale_after_s, refresh_s=settings.refresh_s)
        self._html(200, "Fleet", body)

    def _machine_page(self, uuid: str) -> None:
        if not uuid or len(uuid) > MAX_UUID:
            raise BadQuery(f"uuid: must be 1-{MAX_UUID} characters")
        stored = self.server.store.history(uuid, self.server.settings.history)
        if not stored:
            return self._html(404, "Not found", pages.message_page(f"No report from machine {uuid}"))
        latest = stored[0]
        row = pages.MachineRow(_machine(latest), latest.received_at_ns, latest.peer, len(stored))
        history = [row.machine, *(_machine(s) for s in stored[1:])][::-1]
        self._html(200, row.machine.hostname or uuid,
                   pages.machine_page(row, history, now_ns=time.time_ns(),
                                      stale_after_s=self.server.settings.stale_after_s))


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], store: MachineStore, settings: Settings) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.store = store
        self.settings = settings
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)
        if settings.tls is not None:  # the handshake runs in the connection's thread, not in accept()
            self.socket = settings.tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # a flood: refuse at once instead of queueing threads
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                request.settimeout(Handler.timeout)
                try:
                    request.do_handshake()
                except (OSError, ssl.SSLError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Dashboard:
    """A running dashboard; ``address`` as bound (port 0 -> the real one)."""

    def __init__(self, host: str, port: int, store: MachineStore, settings: Settings) -> None:
        self.httpd = DashboardServer((host, port), store, settings)
        bound = self.httpd.server_address[1]
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
