"""Sockets that live in a named network namespace, opened without forking.

A socket stays bound to the netns it was created in, so a short-lived thread of our own enters the
netns (``setns`` is per thread), creates the socket and is discarded. The calling thread (the
daemon's event loop) never changes namespace. ``None`` as the name means the caller's own netns.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from observe.names import netns_path

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


SocketSpec = tuple[int, int, int]  # (family, type, proto) as socket.socket takes them


def _open_in(path: str, specs: list[SocketSpec]) -> list[socket.socket]:
    """Thread body: enter the netns at ``path``, open the sockets, go back."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return _open_here(specs)
            finally:
                _setns(original)
        finally:
            os.close(target)
    finally:
        os.close(original)


def open_sockets(netns: str | None, specs: list[SocketSpec]) -> list[socket.socket]:
    """Sockets in ``netns`` (None: ours), all through one helper thread. Blocking.

    A failed switch back kills only the helper thread.
    """
    if netns is None:
        return _open_here(specs)
    path = netns_path(netns)
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["socks"] = _open_in(path, specs)
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="cellar-netns-socket", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    socks = box["socks"]
    assert isinstance(socks, list)
    return socks


def _open_here(specs: list[SocketSpec]) -> list[socket.socket]:
    """The sockets in the calling thread's netns; none left open on failure."""
    opened: list[socket.socket] = []
    try:
        for spec in specs:
            opened.append(socket.socket(*spec))
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return opened


def open_socket(netns: str | None, family: int, type_: int, proto: int) -> socket.socket:
    """A socket in ``netns`` (None: ours). Blocking."""
    return open_sockets(netns, [(family, type_, proto)])[0]
