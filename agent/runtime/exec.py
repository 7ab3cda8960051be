"""cellar.v1.Sessions/Exec: a process in a live cell, its stdio streamed both ways (``cellar exec -it``).

The supervisor spawns it (cellard never forks: :mod:`cells.exec`) and hands over its stdio fds (a pty
master, or pipes); this servicer pumps frames <-> fds. Flow control both ways, memory bounded per
session: an output fd is read only once the previous chunk was written to the call (gRPC's flow
control holds a write while the client is behind, so a fast producer is paused on its full pty or
pipe); the next request is read only once its stdin bytes are in the pipe (a slow consumer pauses the
client through gRPC's window). The exit frame comes after the output reached EOF (the supervisor
kills what the process left in its leaf first, so EOF follows the exit).

The session ends on every side: the process exits -> ``exit`` frame, status OK; the client goes away
(cancelled, killed, network lost) -> the call is cancelled, the control channel closes, and the
supervisor sends SIGHUP then SIGKILL after its grace (:data:`cells.exec.HANGUP_GRACE_S`); cellard
stopped (SIGTERM) -> the session is hung up the same way and the client gets UNAVAILABLE; cellard
SIGKILLed -> the kernel closes its end of the control channel: the same hangup, the client sees the
connection drop. Audited in the daemon log: ``exec.started`` (who, from where, cell, argv, tty) and
``exec.ended`` (exit, duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import structlog

from agent.auth import privilege
from agent.auth.authz import current_cert_identity, current_peer, current_peer_cred, current_role
from agent.auth.grants import CellPolicies
from agent.core.app import App
from agent.core.status import status_for
from cells.errors import InvalidArgument
from cells.exec import MAX_WINDOW, set_window
from cells.exec_channel import ExecChannel
from cells.spec import ExecutableSpec, validate_cell_name, validate_executable_name
from observe.query import LogQuery, run_query
from observe.records import Stream
from proto.cellar.v1 import exec_pb2, exec_pb2_grpc

log = structlog.get_logger("agent.exec")

#: Bytes of output sent in one frame at most (what the fd has, up to this: gRPC's per-message cost
#: makes 64 KiB frames latency-bound at ~15 MB/s).
CHUNK = 1024 * 1024
#: After the exit, how long the output may take to reach EOF (it does at once: the leaf is empty).
DRAIN_S = 5.0
DEFAULT_ARGV = ("/bin/sh",)

Context = grpc.aio.ServicerContext[exec_pb2.ExecRequest, exec_pb2.ExecResponse]


def parse_user(user: str) -> tuple[int | None, int | None]:
    """``UID``, ``UID:GID`` or a user name of the host's passwd -> (uid, gid); "" -> the cell's default."""
    if not user:
        return None, None
    name, _, group = user.partition(":")
    if name.isdigit() and (not group or group.isdigit()):
        uid, gid = int(name), int(group) if group else None
        if uid > 0xFFFFFFFE or (gid is not None and gid > 0xFFFFFFFE):
            raise InvalidArgument("user", "uid and gid must be below 4294967295")
        return uid, gid
    if group:
        raise InvalidArgument("user", "must be UID, UID:GID or a user name")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InvalidArgument("user", f"unknown user {name!r}") from None
    return entry.pw_uid, entry.pw_gid


def exec_spec(start: exec_pb2.ExecStart) -> ExecutableSpec:
    """The request as an executable of its cell (validated as a Start's), named ``exec-<random>``."""
    env = []
    for item in start.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument("env", f"{item[:64]!r} is not NAME=VALUE")
        env.append((key, value))
    uid, gid = parse_user(start.user)
    spec = ExecutableSpec(cell_name=start.cell_name, name=f"exec-{secrets.token_hex(6)}",
                          argv=tuple(start.argv) or DEFAULT_ARGV, env=tuple(env), cwd=start.cwd, uid=uid, gid=gid)
    return spec.validate()


def window(size: exec_pb2.WindowSize, field: str) -> tuple[int, int]:
    for name in ("rows", "cols"):
        if getattr(size, name) > MAX_WINDOW:
            raise InvalidArgument(f"{field}.{name}", f"must be at most {MAX_WINDOW}")
    return size.rows, size.cols


def caller() -> str:
    """Who is calling, for the audit line."""
    ident = current_cert_identity()
    if ident:
        return f"cert:{ident}"
    cred = current_peer_cred()
    return f"uid={cred.uid} pid={cred.pid}" if cred is not None else "unix"


class SessionsService(exec_pb2_grpc.SessionsServicer):
    def __init__(self, app: App) -> None:
        self._app = app
        if app.policies is None:
            app.policies = CellPolicies(app.runtime, app.config.paths.volumes_dir)
        self._policies: CellPolicies = app.policies
        self.open_sessions = 0

    async def Exec(self, request_iterator: object, context: Context) -> None:  # noqa: N802 - gRPC method name
        async with status_for(context):
            first = await context.read()
            if not isinstance(first, exec_pb2.ExecRequest) or first.WhichOneof("input") != "start":  # or EOF
                raise InvalidArgument("start", "the first message must be start")
            start = first.start
            spec = exec_spec(start)
            rows, cols = window(start.size, "size")
            await privilege.authorize_start(spec, current_role(), self._policies)
            channel = await self._app.runtime.exec_session(spec, tty=start.tty, stdin=start.stdin, rows=rows,
                                                           cols=cols, term=start.term)
        began = time.monotonic()
        log.info("exec.started", cell=spec.cell_name, session=spec.name, argv=list(spec.argv), tty=start.tty,
                 stdin=start.stdin, who=caller(), role=current_role(), peer=current_peer(context), pid=channel.pid)
        outcome = "hung up"
        self.open_sessions += 1
        try:
            async with status_for(context):
                status = await _Session(channel, context, start.tty, start.stdin, self._app.stopping).run()
            outcome = _describe(status)
        except asyncio.CancelledError:
            outcome = "client gone: hung up"
            raise
        finally:
            self.open_sessions -= 1
            channel.close()
            log.info("exec.ended", cell=spec.cell_name, session=spec.name, exit=outcome,
                     duration_s=round(time.monotonic() - began, 3), who=caller())


    async def Attach(self, request_iterator: object, context: AttachContext) -> None:  # noqa: N802
        async with status_for(context):
            first = await context.read()
            if not isinstance(first, exec_pb2.AttachRequest) or first.WhichOneof("input") != "start":  # or EOF
                raise InvalidArgument("start", "the first message must be start")
            cell = validate_cell_name(first.start.cell_name, "cell_name")
            name = validate_executable_name(first.start.executable_name, "executable_name")
            role = current_role()
            if role != privilege.ADMIN:
                found = await self._policies.admin_only(cell)
                if found is not None:
                    privilege.deny_unless_admin(role, [("cell_name", f"cell {found[0]!r} is an admin's ({found[1]})")],
                                                cell=cell, exe=name)
            channel, writer = await self._app.runtime.attach(cell, name)
        def audit() -> None:  # once its output is positioned: what is written from now on reaches it
            log.info("attach.started", cell=cell, exe=name, writer=writer, tty=channel.tty, who=caller(), role=role,
                     peer=current_peer(context), pid=channel.pid)

        try:
            async with status_for(context):
                await _Attachment(channel, context, writer, Path(self._app.config.paths.log_dir), cell, name).run(audit)
                info = await self._app.runtime.inspect(cell)
                status = next((e.exit for e in info.executables if e.name == name and e.host_pid == channel.pid), None)
                if status is not None and (status.code is not None or status.signal is not None):
                    sig = status.signal or 0
                    await context.write(exec_pb2.ExecResponse(exit=exec_pb2.ExecExit(
                        exit_code=128 + sig if sig else status.code or 0, signal=sig)))
        finally:
            channel.close()
            log.info("attach.ended", cell=cell, exe=name, writer=writer, who=caller())


class _Attachment:
    """One attacher: the executable's output from the log store (tail 0, follow), its stdin when writer."""

    def __init__(self, channel: ExecChannel, context: AttachContext, writer: bool, log_root: Path,
                 cell: str, name: str) -> None:
        self._ch = channel
        self._context = context
        self._writer = writer
        self._query = LogQuery(cell=cell, executable=name, streams=frozenset({Stream.STDOUT, Stream.STDERR, Stream.EXIT}),
                               tail=0, follow=True)
        self._log_root = log_root

    async def run(self, ready: Callable[[], None]) -> None:
        ch = self._ch
        loop = asyncio.get_running_loop()
        output = loop.create_task(self._output())
        tasks: list[asyncio.Task[Any]] = [output]
        try:
            await asyncio.sleep(0)  # the query takes its position ("from now on") before its first await
            ready()
            await self._context.write(exec_pb2.ExecResponse(started=exec_pb2.ExecStarted(
                host_pid=ch.pid, cell_pid=ch.cell_pid, writer=self._writer, tty=ch.tty)))
            ended = loop.create_task(ch.wait_exit())
            tasks += [ended, loop.create_task(self._input())]
            await asyncio.wait({output, ended}, return_when=asyncio.FIRST_COMPLETED)
            if ended.done():  # its output up to the exit record comes first
                await asyncio.wait({output}, timeout=DRAIN_S)
            if output.done():
                output.result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _output(self) -> None:
        async for batch, _cursor in run_query(self._log_root, self._query):
            for _src, rec in batch:
                if rec.stream is Stream.EXIT:
                    return
                data = rec.data if rec.partial else rec.data + b"\n"
                await self._context.write(exec_pb2.ExecResponse(stdout=data) if rec.stream is Stream.STDOUT else
                                          exec_pb2.ExecResponse(stderr=data))

    async def _input(self) -> None:
        while True:
            request = await self._context.read()
            if not isinstance(request, exec_pb2.AttachRequest):  # EOF: detached from input, still reading
                return
            which = request.WhichOneof("input")
            if not self._writer or self._ch.stdin < 0:
                continue
            if which == "stdin" and not await _write_all(self._ch.stdin, request.stdin):
                self._ch.close_stdin()  # the executable closed its stdin
            elif which == "resize" and self._ch.tty:  # the kernel sends SIGWINCH to its foreground job
                with contextlib.suppress(OSError, InvalidArgument):  # a hostile size is ignored
                    set_window(self._ch.stdin, *window(request.resize, "resize"))


def _describe(status: int | None) -> str:
    if status is None:
        return "unknown (the supervisor went away)"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


AttachContext = grpc.aio.ServicerContext[exec_pb2.AttachRequest, exec_pb2.ExecResponse]


class _Session:
    """The pumps of one open session."""

    def __init__(self, channel: ExecChannel, context: Context, tty: bool, stdin: bool, stopping: asyncio.Event) -> None:
        self._ch = channel
        self._stopping = stopping
        self._context = context
        self._tty = tty
        self._stdin = stdin
        self._write_lock = asyncio.Lock()

    async def _send(self, response: exec_pb2.ExecResponse) -> None:
        async with self._write_lock:
            await self._context.write(response)

    async def run(self) -> int | None:
        ch = self._ch
        await self._send(exec_pb2.ExecResponse(started=exec_pb2.ExecStarted(
            session=ch.leaf.rsplit(".", 1)[-1], host_pid=ch.pid, cell_pid=ch.cell_pid)))
        outputs = [(ch.master, "stdout")] if self._tty else [(ch.stdout, "stdout"), (ch.stderr, "stderr")]
        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(self._pump_out(fd, kind)) for fd, kind in outputs]
        feeder = loop.create_task(self._pump_in())
        exit_task: asyncio.Task[int | None] = loop.create_task(ch.wait_exit())
        stop_task = loop.create_task(self._stopping.wait())
        try:
            while not exit_task.done():  # a bad request from the client ends the session early
                waiting: set[asyncio.Task[Any]] = {exit_task, stop_task, feeder}
                await asyncio.wait({t for t in waiting if not t.done()} | {exit_task},
                                   return_when=asyncio.FIRST_COMPLETED)
                if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                if stop_task.done() and not ch.hung_up:  # cellard stops: the process is hung up,
                    ch.hang_up()                          # the client gets its final status
                    await self._send(exec_pb2.ExecResponse(stderr=b"cellar: cellard is stopping: the session was "
                                                                  b"hung up\r\n"))
            status = exit_task.result()
            done, _ = await asyncio.wait(pumps, timeout=DRAIN_S)
            for task in done:
                task.result()  # a failed write (client gone) ends the call here
            if status is None:
                await self._context.abort(grpc.StatusCode.UNAVAILABLE,
                                          "the supervisor went away: the session's process is killed when its "
                                          "successor reconciles")
            code = os.waitstatus_to_exitcode(status)
            sig = -code if code < 0 else 0
            await self._send(exec_pb2.ExecResponse(exit=exec_pb2.ExecExit(exit_code=128 + sig if sig else code,
                                                                          signal=sig)))
            return status
        finally:
            tasks: list[asyncio.Task[Any]] = [*pumps, feeder, exit_task, stop_task]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _pump_out(self, fd: int, kind: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, eof = _read_available(fd)
            if data:
                await self._send(exec_pb2.ExecResponse(stdout=data) if kind == "stdout" else
                                 exec_pb2.ExecResponse(stderr=data))
            if eof:
                return
            if not data:
                await _ready(fd, loop.add_reader, loop.remove_reader)

    async def _pump_in(self) -> None:
        ch = self._ch
        while True:
            request = await self._context.read()
            if not isinstance(request, exec_pb2.ExecRequest):  # EOF: the client is done sending
                if not self._tty:
                    ch.close_stdin()
                return
            which = request.WhichOneof("input")
            if which == "stdin":
                fd = ch.master if self._tty else ch.stdin
                if self._stdin and fd >= 0 and not await _write_all(fd, request.stdin) and not self._tty:
                    ch.close_stdin()  # the process closed its stdin: the rest is dropped
            elif which == "close_stdin":
                if not self._tty:
                    ch.close_stdin()
            elif which == "resize":
                rows, cols = window(request.resize, "resize")
                if self._tty and rows and cols:
                    with contextlib.suppress(OSError):
                        set_window(ch.master, rows, cols)
            elif which == "signal":
                sig = request.signal
                if not 0 < sig < signal.NSIG:
                    raise InvalidArgument("signal", f"must be a signal number within 1..{signal.NSIG - 1}")
                await ch.signal(sig)


def _read_available(fd: int) -> tuple[bytes, bool]:
    """What ``fd`` has now, up to CHUNK (one frame: fewer, bigger frames when the producer is fast),
    and whether it reached EOF."""
    data = bytearray()
    while len(data) < CHUNK:
        try:
            piece = os.read(fd, CHUNK - len(data))
        except BlockingIOError:
            return bytes(data), False
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty master whose slave side is closed: EOF
                return bytes(data), True
            raise
        if not piece:
            return bytes(data), True
        data += piece
    return bytes(data), False


async def _ready(fd: int, add: Callable[..., None], remove: Callable[[int], object]) -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    def fire() -> None:
        if not future.done():
            future.set_result(None)

    add(fd, fire)
    try:
        await future
    finally:
        remove(fd)


async def _write_all(fd: int, data: bytes) -> bool:
    """All of ``data`` into the non-blocking ``fd``; False when its reader is gone."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, loop.add_writer, loop.remove_writer)
            continue
        except (BrokenPipeError, OSError):
            return False
        view = view[n:]
    return True

