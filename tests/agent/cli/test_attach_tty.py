"""``cellar start -i -t``: an executable on a pseudo-terminal the supervisor holds, attached from a real
terminal (tmux), and a terminal flooding output without newlines (issue 15). One cellard for the module."""

from __future__ import annotations

import json
import os
import queue
import re
import select
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.cellar.v1 import exec_pb2, exec_pb2_grpc
from tests.support.api import Api, api_session, exe_info, running_cellard
from tests.support.cellard import Cellard
from tests.support.cli import CELLAR, cellar, cli_env
from tests.support.terminal import Tmux, cli_shell_env, tmux_server
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root

#: The flood test's volume through the terminal, and what the supervisor and cellard may grow by meanwhile.
FLOOD_BYTES = 96 * 1024 * 1024
GROWTH_BOUND = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[Cellard]:
    with running_cellard() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Cellard) -> Iterator[Api]:
    with api_session(daemon) as a:
        a.allocate("tt")
        yield a


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    with tmux_server() as t:
        yield t


def attach_in(tmux: Tmux, daemon: Cellard, window: str, settings: Path) -> None:
    """``cellar attach tt/sh`` in a new tmux session ``window``, its exit code printed after it; the local
    terminal's settings before and after it go to ``settings``.before/.after."""
    cli = " ".join(shlex.quote(a) for a in [*CELLAR, "--addr", daemon.socket, "attach", "tt/sh"])
    seen = len(daemon.events("attach.started"))
    tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", window,
         f"stty -g > {settings}.before; env {cli_shell_env()} {cli}; echo CLI_EXIT=$?; "
         f"stty -g > {settings}.after; sleep 600")
    wait_for(lambda: daemon.events("attach.started")[seen:], "the attach to be established")


def test_a_shell_on_a_terminal_attached_detached_and_attached_again(daemon: Cellard, api: Api, tmux: Tmux,
                                                                    tmp_path: Path) -> None:
    cellar(daemon, "start", "-i", "-t", "tt", "sh", "--", "/bin/sh")
    try:
        attach_in(tmux, daemon, "t", tmp_path / "t")
        # The next prompt has no newline after it: only a partial record brings it to the attacher.
        tmux("send-keys", "-t", "t", "PS1='pr-$((6 * 7))> '", "Enter")
        tmux.wait_screen("pr-42>", "the prompt, before any newline")  # (tmux trims the space)
        tmux("send-keys", "-t", "t", "echo typed-but-not-run")  # no Enter: the terminal's echo alone
        tmux.wait_screen("pr-42> echo typed-but-not-run", "the echo of typed keys")
        tmux("send-keys", "-t", "t", "C-u")
        tmux("send-keys", "-t", "t", "tty; stty size", "Enter")
        screen = tmux.wait_screen("30 100", "the attacher's window size")
        assert re.search(r"^/dev/pts/\d+$", screen, re.M), screen
        tmux("resize-window", "-t", "t", "-x", "90", "-y", "20")
        tmux("send-keys", "-t", "t", "until [ \"$(stty size)\" = '20 90' ]; do sleep 0.1; done; "
             "echo size-$(stty size | tr ' ' x)", "Enter")
        tmux.wait_screen("size-20x90", "stty size following the resize")
        tmux("send-keys", "-t", "t", "sleep 100; echo after-sleep", "Enter")
        wait_for(lambda: "sleep 100" in tmux.screen(), "the sleep typed")
        tmux("send-keys", "-t", "t", "C-c")
        tmux("send-keys", "-t", "t", "echo still-$((40 + 2))", "Enter")
        screen = tmux.wait_screen("still-42", "the shell going on after Ctrl-C")
        assert "after-sleep" not in screen.replace("echo after-sleep", "")  # the line was interrupted
        tmux("send-keys", "-t", "t", "C-p", "C-q")
        tmux.wait_screen("CLI_EXIT=0", "the detach")
        after = wait_for(lambda: (tmp_path / "t.after").exists() and (tmp_path / "t.after").read_text(), "stty -g")
        assert after == (tmp_path / "t.before").read_text()  # raw mode restored
        assert exe_info(api, "tt", "sh").host_pid  # still running
        attach_in(tmux, daemon, "u", tmp_path / "u")
        tmux("send-keys", "-t", "u", "echo again-$((1 + 1))", "Enter")
        tmux("send-keys", "-t", "u", "")
        wait_for(lambda: "again-2" in tmux("capture-pane", "-p", "-t", "u"), "the shell answering the second attach")
        logs = cellar(daemon, "logs", "--stdout", "tt/sh").stdout
        assert "still-42" in logs and "pr-42> " in logs and "again-2" in logs, logs
        assert cellar(daemon, "logs", "--stderr", "tt/sh").stdout == ""  # a terminal has one output: stdout
        tmux("send-keys", "-t", "u", "exit 5", "Enter")
        wait_for(lambda: "CLI_EXIT=5" in tmux("capture-pane", "-p", "-t", "u"), "the run's end reaching the attacher")
    finally:
        cellar(daemon, "stop", "tt", "sh", ok=False)


def test_the_terminal_survives_a_supervisor_crash(daemon: Cellard, api: Api) -> None:
    """The fd store keeps the master: a successor resumes the capture (prompts still flushed as partial
    records) and attach still writes to the same shell."""
    api.start("tt", "crash", "/bin/sh", stdin=True, tty=True)
    attached = None
    try:
        shell = exe_info(api, "tt", "crash").host_pid
        old = api.supervisor_pid()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: _successor(api, old), "a successor supervisor")
        seen = len(daemon.events("attach.started"))
        attached = subprocess.Popen([*CELLAR, "--addr", daemon.socket, "attach", "tt/crash"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
        wait_for(lambda: daemon.events("attach.started")[seen:], "the attach to be established")
        assert attached.stdin is not None and attached.stdout is not None
        attached.stdin.write(b"PS1='after-$((2 * 21))> '; echo $$\n")
        attached.stdin.flush()
        out = b""
        while b"after-42> " not in out:  # the prompt, without a newline: a partial record
            assert select.select([attached.stdout], [], [], scaled(20))[0], out
            chunk = os.read(attached.stdout.fileno(), 65536)
            assert chunk, out
            out += chunk
        assert f"\r\n{shell}\r\n".encode() in out, out  # the same shell, its output through the terminal (CRLF)
        assert exe_info(api, "tt", "crash").host_pid == shell
    finally:
        if attached is not None:
            attached.kill()
            attached.wait()
        api.stop("tt", "crash", grace_ms=100)  # an interactive shell ignores SIGTERM


def _successor(api: Api, old: int) -> bool:
    try:
        return api.supervisor_pid() != old and bool(api.list())
    except (AssertionError, grpc.RpcError):
        return False


def test_hostile_and_foreign_resizes_change_nothing(daemon: Cellard, api: Api) -> None:
    """Only the writer sizes the terminal, and an out-of-range size is ignored without ending its attach."""
    api.start("tt", "sized", "/bin/sh", stdin=True, tty=True)
    stub = exec_pb2_grpc.SessionsStub(api.channel)
    start = exec_pb2.AttachRequest(start=exec_pb2.AttachStart(cell_name="tt", executable_name="sized"))
    writer_q: queue.Queue[exec_pb2.AttachRequest | None] = queue.Queue()
    reader_q: queue.Queue[exec_pb2.AttachRequest | None] = queue.Queue()

    def requests(q: queue.Queue[exec_pb2.AttachRequest | None]) -> Iterator[exec_pb2.AttachRequest]:
        yield start
        while (item := q.get()) is not None:
            yield item

    writer = stub.Attach(requests(writer_q), timeout=scaled(60))
    reader = None
    try:
        first = next(writer)
        assert first.started.writer and first.started.tty
        reader = stub.Attach(requests(reader_q), timeout=scaled(60))
        assert not next(reader).started.writer
        reader_q.put(exec_pb2.AttachRequest(resize=exec_pb2.WindowSize(rows=10, cols=10)))  # not the writer
        writer_q.put(exec_pb2.AttachRequest(resize=exec_pb2.WindowSize(rows=2**32 - 1, cols=70000)))
        writer_q.put(exec_pb2.AttachRequest(stdin=b"echo size-$(stty size | tr ' ' x)\n"))
        out = b""
        while b"\nsize-" not in out or not out.endswith(b"\n"):
            out += next(writer).stdout
        assert b"\nsize-24x80\r\n" in out, out  # the supervisor's initial size, untouched
        writer_q.put(exec_pb2.AttachRequest(resize=exec_pb2.WindowSize(rows=33, cols=77)))
        writer_q.put(exec_pb2.AttachRequest(stdin=b"echo size-$(stty size | tr ' ' x)\n"))
        while b"size-33x77" not in out:  # the writer's attach goes on and its own resize applies
            out += next(writer).stdout
    finally:
        for q, call in ((writer_q, writer), (reader_q, reader)):
            q.put(None)
            if call is not None:
                call.cancel()
        api.stop("tt", "sized", grace_ms=100)


def test_a_terminal_needs_stdin(daemon: Cellard, api: Api) -> None:
    with pytest.raises(grpc.RpcError) as err:
        api.start("tt", "nostdin", "/bin/sh", tty=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "executable.tty" in (err.value.details() or "")
    usage = cellar(daemon, "start", "-t", "tt", "nostdin", "--", "/bin/sh", ok=False)
    assert usage.returncode == 2 and "-t needs -i" in usage.stderr


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def written(pid: int) -> int:
    return int(re.search(r"^wchar: (\d+)", Path(f"/proc/{pid}/io").read_text(), re.M).group(1))  # type: ignore[union-attr]


def test_a_terminal_flooding_without_newlines_keeps_memory_bounded(daemon: Cellard, api: Api) -> None:
    """``cat /dev/zero`` on a terminal: no newline ever. The supervisor cuts it into max_line partial records
    (it never holds an unbounded line), and an attacher that never reads does not grow cellard."""
    supervisor = api.supervisor_pid()
    base = {"supervisor": rss(supervisor), "cellard": rss(daemon.proc.pid)}
    api.start("tt", "flood", "cat", "/dev/zero", stdin=True, tty=True)
    stalled = subprocess.Popen([*CELLAR, "--addr", daemon.socket, "attach", "tt/flood"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=cli_env())  # never read
    try:
        cat = exe_info(api, "tt", "flood").host_pid
        peak = dict(base)

        def flooded() -> bool:
            for name, pid in (("supervisor", supervisor), ("cellard", daemon.proc.pid)):
                peak[name] = max(peak[name], rss(pid))
            return written(cat) >= FLOOD_BYTES

        wait_for(flooded, f"{FLOOD_BYTES} bytes through the terminal", timeout=scaled(120))
        for name in base:
            assert peak[name] - base[name] < GROWTH_BOUND, (name, base, peak)
        out = cellar(daemon, "-o", "json", "logs", "--stdout", "--tail", "3", "tt/flood").stdout
        pieces = [p for p in map(json.loads, out.splitlines()) if "line" in p]
        assert pieces and all(p["partial"] and 0 < len(p["line"]) <= 256 * 1024 for p in pieces), \
            [(p.get("partial"), len(p.get("line", ""))) for p in pieces]
    finally:
        stalled.send_signal(signal.SIGKILL)
        stalled.wait()
        api.stop("tt", "flood")
