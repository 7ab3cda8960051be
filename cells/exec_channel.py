"""cellard's end of one exec session (:mod:`cells.exec` is the supervisor's): the process's stdio fds,
received over SCM_RIGHTS with the supervisor's reply, and the session's control channel.

Not asyncio streams on that socket: the reply line carries the fds, which only ``recvmsg`` receives
(a stream reader's plain ``recv`` would drop them), and what follows it (the ``exit`` line) must not
be read by a transport before the fds are. Closing the channel hangs the session up (SIGHUP, then
SIGKILL after the supervisor's grace): that is what happens when the client goes away, and when
cellard dies, since the kernel closes the socket then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from cells import protocol
from cells.errors import RuntimeFailure, SupervisorUnavailable
from cells.spec import ExecutableSpec

#: The reply line and the fds (at most 3) arrive in one message; a longer line is a protocol violation.
MAX_REPLY = 64 * 1024


@dataclass
class ExecChannel:
    """One open session: ``master`` (tty) or ``stdin`` (-1 when not kept open), ``stdout``, ``stderr``."""

    sock: socket.socket
    pid: int
    cell_pid: int
    leaf: str
    master: int = -1
    stdin: int = -1
    stdout: int = -1
    stderr: int = -1
    #: attach: the executable runs on a pseudo-terminal (``stdin`` is a dup of its master then)
    tty: bool = False
    _buffer: bytes = b""
    _closed: bool = field(default=False, repr=False)
    _hung_up: bool = field(default=False, repr=False)

    @property
    def fds(self) -> list[int]:
        return [fd for fd in (self.master, self.stdin, self.stdout, self.stderr) if fd >= 0]

    async def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (with a tty, to its terminal's foreground process group)."""
        await asyncio.get_running_loop().sock_sendall(self.sock, protocol.encode({"signal": sig}))

    async def wait_exit(self) -> int | None:
        """The process's wait status once it has ended and its leaf is empty; None when the supervisor
        went away first."""
        loop = asyncio.get_running_loop()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    message = protocol.decode(line)
                    status = message.get("exit")
                    if isinstance(status, int):
                        return status
                    if message.get("ended") is True:  # an attached executable's run ended (status: its record)
                        return 0
            try:
                chunk = await loop.sock_recv(self.sock, 4096)
            except OSError:
                return None
            if not chunk or len(self._buffer) > MAX_REPLY:
                return None
            self._buffer += chunk

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    def hang_up(self) -> None:
        """End the session from here (cellard stopping): the supervisor sends SIGHUP, then SIGKILL after its
        grace, and the ``exit`` line still comes (:meth:`wait_exit`)."""
        if not self._hung_up:
            self._hung_up = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def close_stdin(self) -> None:
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1

    def close(self) -> None:
        """Close every fd and the control channel (a session still running is hung up)."""
        if self._closed:
            return
        self._closed = True
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self.stdin = self.stdout = self.stderr = -1
        self.sock.close()


async def open_exec(socket_path: str, spec: ExecutableSpec, *, tty: bool, stdin: bool, rows: int = 0,
                    cols: int = 0, term: str = "") -> ExecChannel:
    """Ask the supervisor at ``socket_path`` to run ``spec.argv`` in ``spec.cell_name``; raises the
    runtime's error when it does not start."""
    request = protocol.request("exec", spec=spec, tty=tty, stdin=stdin, rows=rows, cols=cols, term=term)
    sock, result, fds, rest = await _open(socket_path, request)
    channel = ExecChannel(sock, int(result["pid"]), int(result.get("cell_pid") or 0), str(result["leaf"]),
                          _buffer=rest)
    for name, fd in zip(result["fds"], fds, strict=True):
        setattr(channel, name, fd)
    return channel


async def open_attach(socket_path: str, cell: str, name: str) -> tuple[ExecChannel, bool]:
    """Attach to the stdin of the running executable ``cell``/``name`` (started with ``stdin``): the channel
    (``stdin`` set when this attacher is the writer) and whether it is. Its :meth:`ExecChannel.wait_exit`
    returns when the run ends (or the supervisor goes away); closing it detaches."""
    sock, result, fds, rest = await _open(socket_path, protocol.request("attach", cell=cell, name=name))
    channel = ExecChannel(sock, int(result["pid"]), int(result.get("cell_pid") or 0), str(result["leaf"]),
                          _buffer=rest)
    if fds:
        channel.stdin = fds[0]
    channel.tty = bool(result.get("tty"))
    return channel, bool(result.get("writer"))


async def _open(socket_path: str, request: bytes) -> tuple[socket.socket, dict[str, Any], list[int], bytes]:
    """Send ``request``; the reply's result, the fds it carried (non-blocking, as many as its ``fds``
    names) and what followed it on the connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    fds: list[int] = []
    try:
        try:
            await loop.sock_connect(sock, socket_path)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise SupervisorUnavailable(f"the supervisor at {socket_path} does not answer ({exc.strerror}): retry") from None
        await loop.sock_sendall(sock, request)
        data = b""
        while b"\n" not in data:
            await _readable(loop, sock)
            try:
                chunk, got, _flags, _addr = socket.recv_fds(sock, MAX_REPLY, 4, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                continue
            fds += got
            if not chunk:
                raise RuntimeFailure("the supervisor closed the connection during the request")
            data += chunk
            if len(data) > MAX_REPLY:
                raise RuntimeFailure("the supervisor's reply is too long")
        line, rest = data.split(b"\n", 1)
        result: dict[str, Any] = protocol.unwrap(protocol.decode(line))
        names = list(result.get("fds") or [])
        if len(names) != len(fds):
            raise RuntimeFailure(f"the supervisor sent {len(fds)} fds for {names}")
        for fd in fds:
            os.set_blocking(fd, False)
        return sock, result, fds, rest
    except BaseException:
        for fd in fds:
            os.close(fd)
        sock.close()
        raise


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def fire() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), fire)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
