"""The fd store: a tiny process that holds the read ends of every workload's output pipes.

Why: a pipe whose last reader is gone kills its writer (SIGPIPE) or fails its writes (EPIPE). With
the supervisor as the only reader, a supervisor crash, SIGTERM or upgrade killed every workload that
wrote a line afterwards. This process keeps a copy of each read end, so a workload writes on (into
the pipe's 1 MiB, then it blocks) until the successor supervisor takes the fds back and resumes the
capture where the run's log ends. systemd's fd store (FDSTORE=1), for a supervisor that is no unit.

    python -m cells.fdstore --socket <run_dir>/fdstore.sock

It outlives supervisors (own session) and exits on ``exit`` or SIGTERM. SOCK_SEQPACKET, mode 0600,
callers must be root (SO_PEERCRED). One request per message, a JSON object; fds ride in SCM_RIGHTS.
``put`` and ``drop`` are one-way (a Start must not wait for a context switch to this process and
back); the others are answered, echoing the request's ``id``; a refused request is always answered:

    {"op": "put", "key": K} + fds    (replaces what K held)
    {"op": "drop", "key": K}
    {"op": "get", "key": K, "id": N} -> {"ok": true, "id": N} + fds  (copies: the store keeps its own)
    {"op": "keys", "id": N}          -> {"ok": true, "id": N, "keys": [...]}
    {"op": "exit", "id": N}          -> {"ok": true, "id": N}, then every fd closes and it exits
    anything else                    -> {"ok": false, "id": N or null, "error": "..."}

:class:`FdStore` is the supervisor's side: blocking calls with a short timeout, best effort (a store
that cannot be reached costs only the restart-survival of output, never a Start).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MAX_MESSAGE = 64 * 1024
MAX_FDS = 16  # per message
CALL_TIMEOUT_S = 2.0
#: After a failed start, calls fail at once for this long instead of blocking on another attempt.
RETRY_AFTER_S = 30.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StoreUnavailable(OSError):
    """The store does not answer (not running, died, or refused the request)."""


# -- the store process ---------------------------------------------------------------------------
class _Store:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.held: dict[str, list[int]] = {}
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
        for fds in self.held.values():
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
        if op == "put" and isinstance(key, str):
            _close_all(self.held.pop(key, []))
            self.held[key] = fds
            return
        if op == "drop" and isinstance(key, str):
            _close_all(self.held.pop(key, []))
            _close_all(fds)
            return
        if op == "get" and isinstance(key, str):
            reply_fds = self.held.get(key, [])
            reply["ok"] = bool(reply_fds)
        elif op == "keys":
            reply["keys"] = sorted(self.held)
        elif op == "exit":
            self.running = False
        else:
            reply = {"ok": False, "id": request_id, "error": f"unknown request {op!r}"}
        _close_all(fds)
        _reply(conn, reply, reply_fds)


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

    ``on_restart`` runs after this side started a new store (the old one died, or none ran): the
    caller hands it what the old one held.
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
        """Connect, starting the store first if nobody answers; raise StoreUnavailable on failure."""
        if self._sock is not None:
            return
        with contextlib.suppress(OSError):
            self._sock = self._connect()
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"fd store at {self.path} is not running (last start failed)")
        self._start()
        deadline = time.monotonic() + self.start_timeout_s
        while self._sock is None:
            try:
                self._sock = self._connect()
            except OSError as exc:
                if time.monotonic() > deadline:
                    self._retry_at = time.monotonic() + RETRY_AFTER_S
                    raise StoreUnavailable(f"fd store at {self.path} did not start: {exc}") from None
                time.sleep(0.01)
        if self.on_restart is not None:
            self.on_restart()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def put(self, key: str, fds: list[int]) -> None:
        self._send({"op": "put", "key": key}, fds)

    def get(self, key: str) -> list[int]:
        """Copies of what ``key`` holds ([] when nothing); the caller owns (and closes) them."""
        return self._call({"op": "get", "key": key})[1]

    def drop(self, key: str) -> None:
        self._send({"op": "drop", "key": key})

    def held_keys(self) -> list[str]:
        return list(self._call({"op": "keys"})[0].get("keys", []))

    def exit(self) -> None:
        """Stop the store and wait until it is gone (reaped, if it is our child): every held fd
        closes (shutdown with the workloads gone; package removal expects no process left)."""
        pid = 0
        with contextlib.suppress(StoreUnavailable, OSError):
            self.open()
            assert self._sock is not None
            pid = struct.unpack("3i", self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            self._call({"op": "exit"})
        self.close()
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while pid and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    def _send(self, request: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send one request; a connection that broke since the last call is reopened once (a store
        that died is restarted then, and ``on_restart`` refills it)."""
        payload = json.dumps(request).encode()
        for retry in (False, True):
            fresh = self._sock is None
            self.open()
            assert self._sock is not None
            try:
                socket.send_fds(self._sock, [payload], fds or [])
                return
            except OSError as exc:
                self.close()
                if fresh or retry:
                    raise StoreUnavailable(f"fd store at {self.path}: {exc}") from None

    def _call(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Send a request that is answered and return its answer (others' are skipped)."""
        self._next_id += 1
        request = {**request, "id": self._next_id}
        self._send(request)
        assert self._sock is not None
        while True:
            try:
                data, got, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, MAX_FDS)
            except OSError as exc:
                self.close()
                raise StoreUnavailable(f"fd store at {self.path}: {exc}") from None
            if not data:
                self.close()
                raise StoreUnavailable(f"fd store at {self.path} closed the connection")
            reply = json.loads(data)
            if reply.get("id") == request["id"]:
                break
            _close_all(got)  # the answer to a refused one-way request: nothing waits for it
        if "error" in reply:
            _close_all(got)
            raise StoreUnavailable(f"fd store at {self.path}: {reply['error']}")
        return reply, got

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(CALL_TIMEOUT_S)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        with open(self.stderr_path, "ab") as stderr:
            subprocess.Popen(  # noqa: S603 - our own module, fixed argv
                [sys.executable, "-m", "cells.fdstore", "--socket", self.path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env=env,
            )


if __name__ == "__main__":
    sys.exit(main())
