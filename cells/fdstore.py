"""The fd store: a tiny process that holds the read ends of every workload's output pipes.

Why: a pipe whose last reader is gone kills its writer (SIGPIPE) or fails its writes (EPIPE). With
the supervisor as the only reader, a supervisor crash, SIGTERM or upgrade killed every workload that
wrote a line afterwards. This process keeps a copy of each read end, so a workload writes on (into
the pipe's 1 MiB, then it blocks) until the successor supervisor takes the fds back and resumes the
capture where the run's log ends. systemd's fd store (FDSTORE=1), for a supervisor that is no unit.

    python -m cells.fdstore --socket <run_dir>/fdstore.sock

It outlives supervisors (own session) and exits on ``exit`` or SIGTERM. SOCK_SEQPACKET, owner-only mode,
callers must be root (SO_PEERCRED). One request per message, a JSON object; fds ride in SCM_RIGHTS.
``put`` and ``drop`` are one-way (a Start must not wait for a context switch to this process and
back); the others are answered, echoing the request's ``id``; a refused request is always answered:

    {"op": "put", "key": K, "streams": [S...]} + one fd per stream   (replaces what K held)
    {"op": "drop", "key": K}
    {"op": "get", "key": K, "id": N}     -> {"ok": true, "id": N, "streams": [S...]} + their fds (copies)
    {"op": "keys", "after": K, "id": N}  -> {"ok": true, "id": N, "keys": [...]}  (sorted, one page)
    {"op": "exit", "id": N}              -> {"ok": true, "id": N}, then every fd closes and it exits
    anything else                        -> {"ok": false, "id": N or null, "error": "..."}

:class:`FdStore` is the supervisor's side, best effort: a store that cannot be reached costs only
the restart-survival of output, never a Start.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import json
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, TypeGuard

MAX_MESSAGE = 64 * 1024
MAX_FDS = 16  # per message
KEYS_PAGE_BYTES = 32 * 1024  # keys per answer: well below MAX_MESSAGE and any socket buffer
CALL_TIMEOUT_S = 2.0
SEND_WAIT_S = 0.5
#: After a failed start or a store that does not answer, calls fail at once for this long.
RETRY_AFTER_S = 30.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StoreUnavailable(OSError):
    """The store does not answer (not running, died, or refused the request)."""


# -- the store process ---------------------------------------------------------------------------
class _Store:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.held: dict[str, tuple[list[str], list[int]]] = {}  # key -> (stream names, their fds)
        self.running = True
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)

    def serve(self) -> None:
        while self.running:
            for key, _ in self.selector.select():
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self.listener:
                    self._accept()
                else:
                    self._request(sock)
        for _, fds in self.held.values():
            _close_all(fds)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != 0:
                conn.close()
                return
            self.selector.register(conn, selectors.EVENT_READ)

    def _request(self, conn: socket.socket) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, MAX_FDS)
        except OSError:
            data, fds, flags = b"", [], 0
        if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            _close_all(fds)
            self.selector.unregister(conn)
            conn.close()
            return
        try:
            request = json.loads(data)
            op, key, request_id = request["op"], request.get("key"), request.get("id")
        except (ValueError, KeyError, TypeError, AttributeError):
            _close_all(fds)
            _reply(conn, {"ok": False, "id": None, "error": "malformed request"})
            return
        reply_fds: list[int] = []
        reply: dict[str, Any] = {"ok": True, "id": request_id}
        streams = request.get("streams")
        if op == "put" and isinstance(key, str) and _names(streams) and len(streams) == len(fds):
            _close_all(self.held.pop(key, ([], []))[1])
            self.held[key] = (streams, fds)
            return
        if op == "drop" and isinstance(key, str):
            _close_all(self.held.pop(key, ([], []))[1])
            _close_all(fds)
            return
        after = request.get("after", "")
        if op == "get" and isinstance(key, str):
            reply["streams"], reply_fds = self.held.get(key, ([], []))
        elif op == "keys" and isinstance(after, str):
            reply["keys"] = _page(sorted(k for k in self.held if k > after))
        elif op == "exit":
            self.running = False
        else:
            reply = {"ok": False, "id": request_id, "error": f"malformed request {op!r}"}
        _close_all(fds)
        _reply(conn, reply, reply_fds)


def _names(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _page(keys: list[str]) -> list[str]:
    """The first of ``keys`` that fit one answer (the caller asks again after the last one)."""
    page: list[str] = []
    size = 0
    for key in keys:
        size += len(json.dumps(key)) + 2
        if size > KEYS_PAGE_BYTES and page:
            break
        page.append(key)
    return page


def _reply(conn: socket.socket, reply: dict[str, Any], fds: list[int] | None = None) -> None:
    with contextlib.suppress(OSError):
        socket.send_fds(conn, [json.dumps(reply).encode()], fds or [])


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] not in b"ZX"
    except (OSError, IndexError):
        return False


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cells.fdstore", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    path = parser.parse_args(argv).socket
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another store serves this socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # two fds per running executable
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(16)
    _Store(listener).serve()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return 0


# -- the supervisor's side -----------------------------------------------------------------------
class FdStore:
    """A connection to the store at ``path``, started on demand (see :meth:`open`).

    Never blocks its caller for long: one-way requests go out on a non-blocking socket, answers are
    awaited at most CALL_TIMEOUT_S, and after a failed start or a store that does not read, every
    call fails at once for RETRY_AFTER_S. ``on_restart`` runs after this side started a new store
    (the old one died, or none ran): the caller hands it what the old one held.
    """

    def __init__(
        self, path: str, start_timeout_s: float, stderr_path: str, on_restart: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self.start_timeout_s = start_timeout_s
        self.stderr_path = stderr_path
        self.on_restart = on_restart
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        self._next_id = 0

    def open(self) -> None:
        """Connect, starting the store first if nobody serves the socket; raise StoreUnavailable."""
        if self._sock is not None:
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"fd store at {self.path} is unavailable (tried again later)")
        try:
            self._sock = self._connect()
            return
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # nobody serves the socket: start a store
        except OSError as exc:  # one that does not accept (hung, backlog full): do not start another
            self._down()
            raise StoreUnavailable(f"fd store at {self.path}: {exc}") from None
        self._start()
        deadline = time.monotonic() + self.start_timeout_s
        while self._sock is None:
            try:
                self._sock = self._connect()
            except OSError as exc:
                if time.monotonic() > deadline:
                    self._down()
                    raise StoreUnavailable(f"fd store at {self.path} did not start: {exc}") from None
                time.sleep(0.01)
        if self.on_restart is not None:
            self.on_restart()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def put(self, key: str, pipes: dict[str, int]) -> None:
        """Hand the store copies of ``pipes`` (stream name -> fd) under ``key``, replacing what it held."""
        self._send({"op": "put", "key": key, "streams": list(pipes)}, list(pipes.values()))

    def get(self, key: str) -> dict[str, int]:
        """Copies of what ``key`` holds ({} when nothing), by stream name; the caller closes them."""
        reply, fds = self._call({"op": "get", "key": key})
        streams = reply.get("streams")
        if not _names(streams) or len(streams) != len(fds):
            _close_all(fds)
            raise StoreUnavailable(f"fd store at {self.path}: malformed answer")
        return dict(zip(streams, fds, strict=True))

    def drop(self, key: str) -> None:
        self._send({"op": "drop", "key": key})

    def held_keys(self) -> list[str]:
        keys: list[str] = []
        while True:
            page = self._call({"op": "keys", "after": keys[-1] if keys else ""})[0].get("keys")
            if not _names(page):
                raise StoreUnavailable(f"fd store at {self.path}: malformed answer")
            if not page:
                return keys
            keys += page

    def exit(self) -> None:
        """Stop a running store and wait until it is gone (reaped, if it is our child): every held fd
        closes (shutdown with the workloads gone; package removal expects no process left)."""
        pid = 0
        with contextlib.suppress(OSError):
            if self._sock is None:
                self._sock = self._connect()  # never start one just to stop it
            pid = struct.unpack("3i", self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            self._call({"op": "exit"})
        self.close()
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while pid and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    def _down(self) -> None:
        self.close()
        self._retry_at = time.monotonic() + RETRY_AFTER_S

    def _send(self, request: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send one request without waiting; a connection that broke since the last call is reopened
        once (a store that died is restarted then, and ``on_restart`` refills it)."""
        payload = json.dumps(request).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        for retry in (False, True):
            fresh = self._sock is None
            self.open()
            assert self._sock is not None
            try:
                self._send_now(payload, ancillary)
                return
            except BlockingIOError:  # its queue stayed full: it does not read (hung)
                self._down()
                raise StoreUnavailable(f"fd store at {self.path} does not read its requests") from None
            except OSError as exc:
                self.close()
                if fresh or retry:
                    raise StoreUnavailable(f"fd store at {self.path}: {exc}") from None

    def _send_now(self, payload: bytes, ancillary: list[tuple[int, int, array.array[int]]]) -> None:
        """One sendmsg; a full queue (net.unix.max_dgram_qlen requests, e.g. a burst of puts after a
        restart) gets SEND_WAIT_S to drain, a store that reads empties it in microseconds."""
        assert self._sock is not None
        try:
            self._sock.sendmsg([payload], ancillary)
        except BlockingIOError:
            if not select.select([], [self._sock], [], SEND_WAIT_S)[1]:
                raise
            self._sock.sendmsg([payload], ancillary)

    def _call(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Send a request that is answered; return its answer (skipping answers to refused one-way ones)."""
        self._next_id += 1
        request = {**request, "id": self._next_id}
        self._send(request)
        assert self._sock is not None
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                if not select.select([self._sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError("no answer")
                data, got, flags, _ = socket.recv_fds(self._sock, MAX_MESSAGE, MAX_FDS)
            except OSError as exc:  # no answer in time included: the store is hung
                self._down()
                raise StoreUnavailable(f"fd store at {self.path}: {exc}") from None
            if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_all(got)
                self.close()
                raise StoreUnavailable(f"fd store at {self.path}: connection closed or answer cut")
            try:
                reply = json.loads(data)
            except ValueError:
                reply = None
            if isinstance(reply, dict) and reply.get("id") == request["id"]:
                break
            _close_all(got)
        if "error" in reply:
            _close_all(got)
            raise StoreUnavailable(f"fd store at {self.path}: {reply['error']}")
        return reply, got

    def _connect(self) -> socket.socket:
        """Non-blocking: a send never waits for the store, answers are awaited with select (a
        socket timeout would make Python wait for room to send, too)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self.path)  # AF_UNIX: refused or EAGAIN (backlog full) at once, never pending
        except OSError:
            sock.close()
            raise
        return sock

    def _start(self) -> None:
        """posix_spawn, not Popen: a Popen dropped unwaited would waitpid() its pid later, maybe
        reused by then by a workload (the supervisor reaps every child itself)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        stderr = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-m", "cells.fdstore", "--socket", self.path],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, stderr, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise StoreUnavailable(f"fd store: cannot start {sys.executable}: {exc}") from None
        finally:
            os.close(stderr)


if __name__ == "__main__":
    sys.exit(main())
