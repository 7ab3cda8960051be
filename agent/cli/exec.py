"""``cellar exec [-i] [-t] [-e K=V] [-u USER] [-w DIR] CELL [-- ARGV]``: a process in a live cell, as
``docker exec`` / ``kubectl exec``.

One ``cellar.v1.Sessions/Exec`` stream. ``-i`` forwards stdin (a thread reads it into a bounded queue
that the request iterator drains: a slow cellard pauses the reading); ``-t`` asks for a pseudo-terminal,
puts the local one in raw mode (restored on every way out, signals included) and sends its size at the
start and on every SIGWINCH. ``-t`` without a terminal on stdin is a usage error (exit 2), as in docker.
The exit code is the remote process's (killed by signal N: 128+N, as shells report it); an RPC error is
``cellar: CODE: message`` and exit 1 (126 when the process could not be started, like docker).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from typing import Any

import click
import grpc

from agent.cli.complete import cell_names, cell_or_executable
from agent.cli.connection import Target
from proto.cellar.v1 import exec_pb2, exec_pb2_grpc

#: Requests waiting to be sent (each stdin chunk is at most CHUNK): the stdin reader blocks beyond.
QUEUE_DEPTH = 8
#: Bytes of stdin read at once (one frame: gRPC's per-message cost makes small frames slow).
CHUNK = 1024 * 1024
_END = None


def _window() -> exec_pb2.WindowSize:
    try:
        size = os.get_terminal_size(sys.stdin.fileno())
    except OSError:
        return exec_pb2.WindowSize()
    return exec_pb2.WindowSize(rows=size.lines, cols=size.columns)


def _read_stdin(out: queue.Queue[exec_pb2.ExecRequest | None]) -> None:
    fd = sys.stdin.fileno()
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        if not data:
            out.put(exec_pb2.ExecRequest(close_stdin=True))
            return
        out.put(exec_pb2.ExecRequest(stdin=data))


def _requests(start: exec_pb2.ExecStart,
              pending: queue.Queue[exec_pb2.ExecRequest | None]) -> Iterator[exec_pb2.ExecRequest]:
    yield exec_pb2.ExecRequest(start=start)
    while (item := pending.get()) is not _END:
        yield item


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    """Raw mode on stdin's terminal, restored on every exit path (SIGTERM/SIGHUP become SystemExit)."""
    if not enabled:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: what was typed ahead goes to the process
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="keep stdin open and send it to the process")
@click.option("-t", "--tty", "want_tty", is_flag=True, help="allocate a pseudo-terminal (stdin must be a terminal)")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="set an environment variable (repeatable)")
@click.option("-u", "--user", default="", metavar="USER", help="UID, UID:GID or user name (default: the cell's)")
@click.option("-w", "--workdir", default="", metavar="DIR", help="working directory inside the cell")
@click.argument("cell", shell_complete=cell_names)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def exec_(target: Target, interactive: bool, want_tty: bool, env: tuple[str, ...], user: str, workdir: str,
          cell: str, argv: tuple[str, ...]) -> int:
    """Run ARGV (default /bin/sh) in CELL, in its namespaces, cgroup and containment."""
    if argv[:1] == ("--",):  # after CELL, click keeps the separator
        argv = argv[1:]
    if want_tty and not os.isatty(sys.stdin.fileno()):
        raise click.UsageError("-t: the input device is not a TTY (drop -t, or run from a terminal)")
    for item in env:
        if "=" not in item or item.startswith("="):
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="-e")
    start = exec_pb2.ExecStart(cell_name=cell, argv=list(argv), env=list(env), cwd=workdir, user=user,
                               stdin=interactive, tty=want_tty)
    if want_tty:
        start.term = os.environ.get("TERM", "xterm")
        start.size.CopyFrom(_window())
    pending: queue.Queue[exec_pb2.ExecRequest | None] = queue.Queue(QUEUE_DEPTH)
    if want_tty:
        def resized(_signum: int, _frame: Any) -> None:
            with contextlib.suppress(queue.Full):
                pending.put_nowait(exec_pb2.ExecRequest(resize=_window()))

        signal.signal(signal.SIGWINCH, resized)
    channel = target.channel()
    call = exec_pb2_grpc.SessionsStub(channel).Exec(_requests(start, pending))
    code = 1
    try:
        with _raw_terminal(want_tty):
            if interactive:
                threading.Thread(target=_read_stdin, args=(pending,), daemon=True, name="stdin").start()
            for response in call:
                code = _show(response, response.WhichOneof("output"), code)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "executable.argv" in (exc.details() or ""):
            click.echo(f"cellar: {exc.code().name}: {exc.details()}", err=True)
            return 126
        raise
    finally:
        with contextlib.suppress(queue.Full):
            pending.put_nowait(_END)
        call.cancel()
        channel.close()
    return code


def _show(response: exec_pb2.ExecResponse, which: str | None, code: int) -> int:
    """An output frame of Exec or Attach: stdout/stderr written through, exit -> the new exit code."""
    if which == "stdout":
        _write(sys.stdout.fileno(), response.stdout)
    elif which == "stderr":
        _write(sys.stderr.fileno(), response.stderr)
    elif which == "exit":
        return int(response.exit.exit_code)
    return code


#: docker's default detach keys: Ctrl-P Ctrl-Q.
DETACH = b"\x10\x11"


def _read_attach_input(out: queue.Queue[exec_pb2.AttachRequest | None], detached: threading.Event,
                       detach: Callable[[], object]) -> None:
    """stdin -> requests until EOF or the detach keys (what precedes them is still sent)."""
    fd = sys.stdin.fileno()
    held = b""  # a lone Ctrl-P at the end of a read: the next byte decides
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        if not data:
            if held:
                out.put(exec_pb2.AttachRequest(stdin=held))
            return
        data, held = held + data, b""
        cut = data.find(DETACH)
        if cut >= 0:
            if cut:
                out.put(exec_pb2.AttachRequest(stdin=data[:cut]))
            detached.set()
            out.put(_END)
            detach()
            return
        if data.endswith(DETACH[:1]):
            data, held = data[:-1], DETACH[:1]
        if data:
            out.put(exec_pb2.AttachRequest(stdin=data))


@click.command("attach")
@click.argument("target_name", metavar="CELL/EXE", shell_complete=cell_or_executable)
@click.pass_obj
def attach(target: Target, target_name: str) -> int:
    """Attach to a running executable started with `cellar start -i`: its output from now on, and stdin
    when no one else writes it. Ctrl-P Ctrl-Q (or Ctrl-C, or the end of stdin) detaches; it keeps running.
    On a terminal executable (`start -i -t`) from a terminal: raw mode (Ctrl-C goes to it), its window
    follows ours."""
    cell, sep, name = target_name.rpartition("/")
    if not sep or not cell or not name:
        raise click.BadParameter(f"{target_name!r}: expected CELL/EXE", param_hint="CELL/EXE")
    pending: queue.Queue[exec_pb2.AttachRequest | None] = queue.Queue(QUEUE_DEPTH)
    pending.put(exec_pb2.AttachRequest(start=exec_pb2.AttachStart(cell_name=cell, executable_name=name)))

    def requests() -> Iterator[exec_pb2.AttachRequest]:
        while (item := pending.get()) is not _END:
            yield item

    detached = threading.Event()
    channel = target.channel()
    call = exec_pb2_grpc.SessionsStub(channel).Attach(requests())
    code = 0
    terminal = contextlib.ExitStack()
    try:
        for response in call:
            which = response.WhichOneof("output")
            if which == "started":
                if response.started.tty and response.started.writer and os.isatty(sys.stdin.fileno()):
                    _follow_window(terminal, pending)
                    terminal.enter_context(_raw_terminal(True))
                threading.Thread(target=_read_attach_input, args=(pending, detached, call.cancel), daemon=True,
                                 name="stdin").start()
            else:
                code = _show(response, which, code)
    except grpc.RpcError as exc:
        if not (detached.is_set() and exc.code() == grpc.StatusCode.CANCELLED):
            raise
    except KeyboardInterrupt:
        detached.set()
    finally:
        terminal.close()
        with contextlib.suppress(queue.Full):
            pending.put_nowait(_END)
        call.cancel()
        channel.close()
    return code


def _follow_window(stack: contextlib.ExitStack, pending: queue.Queue[exec_pb2.AttachRequest | None]) -> None:
    """Send our window size now and on every SIGWINCH (until ``stack`` closes)."""
    def resized(_signum: int = 0, _frame: Any = None) -> None:
        with contextlib.suppress(queue.Full):
            pending.put_nowait(exec_pb2.AttachRequest(resize=_window()))

    previous = signal.signal(signal.SIGWINCH, resized)
    stack.callback(signal.signal, signal.SIGWINCH, previous)
    resized()
