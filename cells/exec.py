"""Exec sessions, the supervisor's side: one process run in a live cell for a client (``cellar exec``).

cellard asks with an ``exec`` request (:mod:`cells.protocol`) on a connection of its own, which then
stays open as the session's control channel. The process is spawned like a health probe
(:func:`cells.health.spawn_contained`: the cell's namespaces, mount view, security profile, uid),
in a leaf cgroup of its own, ``<cell>/_exec.<session>``, so the cell's limits count it and reconcile
removes one a crashed supervisor left. Its stdio is a pseudo-terminal (``tty``: the child is a session
leader and takes the slave as its controlling terminal, so Ctrl-C reaches its foreground job) or pipes.
The reply carries the parent's ends over SCM_RIGHTS, on the same bytes as the reply line: the pty
master, or stdin (write end, or none), stdout and stderr (read ends). cellard pumps them; the
supervisor never touches the data.

Control lines from cellard: ``{"signal": N}`` (to the terminal's foreground process group with a tty,
else to the process). The supervisor sends ``{"exit": wait status}`` once the process has ended and
what it left in its leaf has been killed (a session is one unit: its output then reaches EOF, and
nothing of it stays in the cell). When the control channel closes first (cellard gone, or the client
gone: cellard closes it), the session is hung up: SIGHUP to the process group (and the terminal's
foreground group), HANGUP_GRACE_S, then cgroup.kill of the leaf.

Bounded: at most MAX_SESSIONS sessions at once (ResourceExhausted beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import socket
import struct
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from cells import protocol
from cells.cgroup import kill_and_remove
from cells.errors import CellError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from cells.health import spawn_contained
from cells.spawn import PIPE_SIZE
from cells.spec import validate_cell_name
from cells.state import CellState

if TYPE_CHECKING:
    from cells.model import Executable
    from cells.runtime import Runtime

log = structlog.get_logger("cells.exec")

#: Leaf cgroup of an exec session inside its cell ('_' is not DNS: never a cell's name).
EXEC_CGROUP_PREFIX = "_exec."
#: Between the SIGHUP of a hung-up session and the cgroup.kill of its leaf.
HANGUP_GRACE_S = 2.0
#: Sessions at once, over all cells.
MAX_SESSIONS = 256
#: A control line longer than this ends the session (cellard only sends small ones).
MAX_CONTROL_LINE = 4096
MAX_WINDOW = 65535


def exec_leaf(cell_name: str, session: str) -> str:
    return f"{cell_name}/{EXEC_CGROUP_PREFIX}{session}"


def set_window(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a terminal (the kernel sends SIGWINCH to its foreground process group)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def open_pty(rows: int, cols: int) -> tuple[int, int]:
    """``(master, slave)`` of a new pseudo-terminal, both close-on-exec, sized when ``rows`` and ``cols``."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    if rows and cols:
        set_window(slave, rows, cols)
    return master, slave


def window_arg(args: dict[str, Any], name: str) -> int:
    value = args.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WINDOW:
        raise InvalidArgument(f"size.{name}", f"must be an integer within 0..{MAX_WINDOW}")
    return value


def keep_stdin(exe: Executable, fd: int) -> None:
    """Hold the write end of ``exe``'s stdin pipe (``ExecutableSpec.stdin``) for attach until its run ends."""
    exe.stdin_fd = fd

    def ended(_done: object) -> None:
        if exe.stdin_fd >= 0:
            os.close(exe.stdin_fd)
            exe.stdin_fd = -1

    exe.done.add_done_callback(ended)


class ExecSessions:
    """The exec sessions of one runtime, and the attachments to executables' stdin."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.active = 0
        self._writers: set[Executable] = set()  # one writer per executable's stdin at a time

    async def attach(self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``attach``: a copy of the stdin write end of a running executable started with ``stdin`` (to the
        first attacher while it stays; the others are readers: no fd), then ``{"ended": true}`` when its run
        ends, or nothing more when the channel closes first. The executable is never signalled: detaching
        (closing the channel) leaves it running."""
        cell_name, name = args.get("cell"), args.get("name")
        if not isinstance(cell_name, str) or not isinstance(name, str):
            raise InvalidArgument("executable_name", "cell and name must be strings")
        validate_cell_name(cell_name, "cell_name")
        cell = self._rt.cells.get(cell_name)
        exe = cell.exes.get(name) if cell is not None else None
        if exe is None or exe.done.done():
            raise NotFound(f"no running executable {name!r} in cell {cell_name!r}")
        if exe.stdin_fd < 0:
            raise FailedPrecondition(f"{cell_name}/{name} was not started with stdin (cellar start -i)")
        is_writer = exe not in self._writers
        if is_writer:
            self._writers.add(exe)
        try:
            line = protocol.ok({"pid": exe.info.host_pid, "cell_pid": exe.info.cell_pid, "run": exe.info.run,
                                "leaf": exe.leaf, "writer": is_writer, "fds": ["stdin"] if is_writer else [],
                                "tty": os.isatty(exe.stdin_fd)})
            await writer.drain()
            _send_with_fds(writer, line, [exe.stdin_fd] if is_writer else [])
            closed: asyncio.Future[Any] = asyncio.ensure_future(reader.read(1))
            try:
                await asyncio.wait({closed, exe.done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if exe.done.done():
                writer.write(protocol.encode({"ended": True}))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if is_writer:
                self._writers.discard(exe)

    async def serve(self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One session, from the request to its end; errors before the spawn are raised (the caller
        replies with them)."""
        rt = self._rt
        spec = protocol.executable_spec_from_dict(args.get("spec")).validate()
        tty, want_stdin = bool(args.get("tty")), bool(args.get("stdin"))
        rows, cols = window_arg(args, "rows"), window_arg(args, "cols")
        term = args.get("term") or "xterm"
        if not isinstance(term, str) or len(term) > 64 or "\0" in term:
            raise InvalidArgument("term", "must be a string of at most 64 characters")
        validate_cell_name(spec.cell_name, "cell_name")
        cell = rt.cells.get(spec.cell_name)
        if cell is None:
            raise NotFound(f"cell {spec.cell_name!r} not found")
        if cell.info.state is not CellState.ACTIVE:
            raise FailedPrecondition(f"cell {spec.cell_name!r} is {cell.info.state}: nothing can be run in it now")
        if self.active >= MAX_SESSIONS:
            raise ResourceExhausted(f"{MAX_SESSIONS} exec sessions are open already")
        leaf = exec_leaf(spec.cell_name, spec.name)
        self.active += 1
        try:
            await self._session(spec, leaf, tty, want_stdin, rows, cols, term, reader, writer)
        finally:
            self.active -= 1
            with contextlib.suppress(Exception):
                await kill_and_remove(rt.backend, leaf)

    async def _session(self, spec: Any, leaf: str, tty: bool, want_stdin: bool, rows: int, cols: int, term: str,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rt = self._rt
        cell = rt.cells[spec.cell_name]
        ours: list[int] = []  # parent ends, sent to cellard then closed here
        child_ends: list[int] = []  # the process's ends, until handed to the spawn
        master = -1
        rt.backend.create(leaf)
        try:
            if tty:
                master, slave = open_pty(rows, cols)
                ours = [master]
                stdio = (slave, slave, slave)
                child_ends = [slave]

                setup: Callable[[], None] | None = functools.partial(take_terminal, slave)
                extra_env: list[tuple[str, str]] = [("TERM", term)]
            else:
                in_r, in_w = os.pipe2(os.O_CLOEXEC) if want_stdin else (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                for fd in (in_w, out_w, err_w):  # bigger frames for cellard, fewer wake-ups
                    with contextlib.suppress(OSError, ValueError):
                        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                ours = [fd for fd in (in_w, out_r, err_r) if fd >= 0]
                stdio = (in_r, out_w, err_w)
                child_ends = [in_r, out_w, err_w]
                setup = None
                extra_env = []
            handed, child_ends = child_ends, []  # spawn_contained closes them in every case
            pid, ns_pid, early = await spawn_contained(rt.config, rt.launcher, cell, spec, spec.argv, leaf, stdio,
                                                       handed, setup=setup, extra_env=extra_env)
        except BaseException:
            for fd in (*ours, *child_ends):
                os.close(fd)
            raise
        ended = rt.reaper.exit_status(pid, early)
        log.info("exec.spawned", cell=spec.cell_name, session=spec.name, pid=pid, tty=tty)
        try:
            try:
                line = protocol.ok({"pid": pid, "cell_pid": ns_pid, "leaf": leaf,
                                    "fds": ["master"] if tty else (["stdin"] if want_stdin else []) + ["stdout", "stderr"]})
                await writer.drain()
                _send_with_fds(writer, line, ours)
            finally:
                for fd in ours:
                    if fd != master:
                        os.close(fd)
            status = await self._control(pid, master, leaf, ended, reader)
            with contextlib.suppress(Exception):
                await kill_and_remove(rt.backend, leaf)  # what it left: its output reaches EOF
            writer.write(protocol.encode({"exit": status}))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # cellard went away before the reply or the exit line: serve() kills what is left
        finally:
            if master >= 0:
                os.close(master)

    async def _control(self, pid: int, master: int, leaf: str, ended: asyncio.Future[int],
                       reader: asyncio.StreamReader) -> int:
        """Control lines until the process ends (its wait status); a hangup when the channel closes first."""
        while True:
            line_task: asyncio.Future[Any] = asyncio.ensure_future(reader.readline())
            try:
                done, _ = await asyncio.wait({line_task, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not line_task.done():
                    line_task.cancel()
            if ended in done:
                return ended.result()
            try:
                line = line_task.result()
            except (ValueError, ConnectionError, asyncio.LimitOverrunError):
                line = b""
            if not line or len(line) > MAX_CONTROL_LINE:
                return await self._hangup(pid, master, leaf, ended)
            with contextlib.suppress(ValueError, TypeError, OSError):
                message = protocol.decode(line)
                sig = message.get("signal")
                if isinstance(sig, int) and not isinstance(sig, bool) and 0 < sig < signal.NSIG:
                    self._signal(pid, master, sig)

    def _signal(self, pid: int, master: int, sig: int) -> None:
        if not ended_or_child(self._rt, pid):
            return
        target = -pid
        if master >= 0:
            with contextlib.suppress(OSError):
                target = -os.tcgetpgrp(master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)

    async def _hangup(self, pid: int, master: int, leaf: str, ended: asyncio.Future[int]) -> int:
        """The client is gone: SIGHUP, the grace, then cgroup.kill of what is left."""
        log.info("exec.hangup", pid=pid)
        if master >= 0:
            with contextlib.suppress(OSError):
                os.kill(-os.tcgetpgrp(master), signal.SIGHUP)
        if ended_or_child(self._rt, pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(-pid, signal.SIGHUP)
        try:
            return await asyncio.wait_for(asyncio.shield(ended), HANGUP_GRACE_S)
        except TimeoutError:
            pass
        log.info("exec.killed", pid=pid, leaf=leaf)
        with contextlib.suppress(OSError, CellError):
            self._rt.backend.kill(leaf)
        return await ended


def ended_or_child(rt: Runtime, pid: int) -> bool:
    """Whether ``pid`` is still our unreaped child (only then is signalling it safe)."""
    return rt.reaper.is_child(pid)


def take_terminal(fd: int) -> None:
    """Child side (a session leader already): ``fd``'s terminal becomes its controlling terminal."""
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def _send_with_fds(writer: asyncio.StreamWriter, line: bytes, fds: list[int]) -> None:
    """``line`` and ``fds`` in one sendmsg on the writer's socket (the fds ride on the line's bytes)."""
    sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
    try:
        sent = socket.send_fds(sock, [line], fds)
    finally:
        sock.close()  # the dup only
    if sent < len(line):  # the rest without fds (not in practice: the line is small, the buffer empty)
        writer.write(line[sent:])
