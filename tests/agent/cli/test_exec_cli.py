"""``cellar exec`` against a real cellard: piped and under a real terminal (tmux), exit codes, a 256 MiB
stream, and the client's kill -9 (issue 15). One cellard for the module."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.cellar.v1 import types_pb2
from tests.support.api import Api, api_session, exe_info, running_cellard
from tests.support.cellard import Cellard
from tests.support.cli import CELLAR, cli_env
from tests.support.execsession import alive, exec_leaves, leaf_pids
from tests.support.terminal import Tmux, cli_shell_env, tmux_server
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def daemon() -> Iterator[Cellard]:
    with running_cellard() as d:
        yield d


@pytest.fixture(scope="module")
def cell(daemon: Cellard) -> Iterator[tuple[Api, str]]:
    with api_session(daemon) as api:
        api.allocate("ex")
        yield api, "ex"


def exec_cmd(daemon: Cellard, *args: str) -> list[str]:
    return [*CELLAR, "--addr", daemon.socket, "exec", *args]


def run_exec(daemon: Cellard, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(exec_cmd(daemon, *args), input=stdin, capture_output=True, env=cli_env(),
                          timeout=scaled(120), stdin=None if stdin is not None else subprocess.DEVNULL)


def test_piped_commands_print_and_the_exit_code_is_the_remote_one(daemon: Cellard, cell: tuple[Api, str]) -> None:
    proc = run_exec(daemon, "-i", "ex", "--", "sh", stdin=b"echo hi\nexit 4\n")
    assert (proc.returncode, proc.stdout) == (4, b"hi\n"), proc.stderr
    assert exec_leaves(cell[0]) == []


def test_stderr_env_user_and_workdir_reach_the_process(daemon: Cellard, cell: tuple[Api, str]) -> None:
    proc = run_exec(daemon, "-e", "GREETING=hello", "-u", "65534:65534", "-w", "/tmp", "ex", "--",
                    "sh", "-c", 'echo "$GREETING $(id -u):$(id -g) $PWD"; echo oops >&2; exit 0')
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == (b"hello 65534:65534 /tmp\n", b"oops\n")


def test_a_signal_death_is_128_plus_n_and_a_missing_program_126(daemon: Cellard, cell: tuple[Api, str]) -> None:
    assert run_exec(daemon, "ex", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    proc = run_exec(daemon, "ex", "--", "/no/such/program")
    assert proc.returncode == 126 and b"/no/such/program" in proc.stderr


def test_dash_t_without_a_terminal_is_a_usage_error(daemon: Cellard, cell: tuple[Api, str]) -> None:
    proc = run_exec(daemon, "-t", "ex", "--", "true")
    assert proc.returncode == 2 and b"not a TTY" in proc.stderr


def test_256_mib_through_stdin_cat_and_stdout_arrive_intact(daemon: Cellard, cell: tuple[Api, str],
                                                           tmp_path: Path) -> None:
    sent = tmp_path / "sent.sha256"
    cli = " ".join(shlex.quote(a) for a in exec_cmd(daemon, "-i", "ex", "--", "cat"))
    script = (f"set -o pipefail; head -c {256 << 20} /dev/urandom | tee >(sha256sum > {sent}) | {cli} "
              "| tee >(wc -c >&2) | sha256sum")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=cli_env(), timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.split() == [str(256 << 20)]
    wait_for(lambda: sent.exists() and sent.read_text().strip(), "the sent data's digest")
    assert proc.stdout.split()[0] == sent.read_text().split()[0]


def test_kill_9_of_the_client_leaves_nothing_in_the_cell(daemon: Cellard, cell: tuple[Api, str]) -> None:
    api = cell[0]
    # a child that ignores SIGHUP: only the SIGKILL after the grace ends it
    client = subprocess.Popen(exec_cmd(daemon, "-i", "ex", "--", "sh", "-c",
                                       "trap '' HUP; sleep 1000 & sleep 1000 & echo started; wait"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=cli_env())
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        (leaf,) = exec_leaves(api)
        pids = leaf_pids(api, leaf)
        assert len(pids) == 3
        client.kill()
        client.wait()
        wait_for(lambda: not any(alive(p) for p in pids) and exec_leaves(api) == [],
                 "the session's processes and leaf gone", timeout=5)
    finally:
        client.kill()
        client.wait()


# -- under a real terminal ----------------------------------------------------------------------------


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    with tmux_server() as t:
        yield t


def test_an_interactive_terminal_session(daemon: Cellard, cell: tuple[Api, str], tmux: Tmux, tmp_path: Path) -> None:
    env = cli_shell_env()
    cli = " ".join(shlex.quote(a) for a in exec_cmd(daemon, "-it", "ex", "--", "/bin/sh"))
    before, after = tmp_path / "before", tmp_path / "after"
    tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "t",
         f"stty -g > {before}; env {env} {cli}; echo CLI_EXIT=$?; stty -g > {after}; sleep 600")
    tmux.wait_screen("#", "the remote shell's prompt")
    tmux("send-keys", "-t", "t", "tty; stty size", "Enter")
    screen = tmux.wait_screen("30 100", "the remote terminal's size")
    assert "/dev/pts/" in screen, screen
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
    tmux("send-keys", "-t", "t", "exit 3", "Enter")
    tmux.wait_screen("CLI_EXIT=3", "the CLI's exit code")
    wait_for(after.exists, "the terminal settings read after the CLI")
    assert after.read_text() == before.read_text()  # raw mode restored
    assert exec_leaves(cell[0]) == []


def test_a_terminated_cli_restores_the_terminal_and_hangs_the_session_up(daemon: Cellard, cell: tuple[Api, str],
                                                                       tmux: Tmux, tmp_path: Path) -> None:
    env = cli_shell_env()
    cli = " ".join(shlex.quote(a) for a in exec_cmd(daemon, "-it", "ex", "--", "sleep", "600"))
    before, after = tmp_path / "before", tmp_path / "after"
    tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", "t",
         f"stty -g > {before}; env {env} {cli}; echo CLI_EXIT=$?; stty -g > {after}; sleep 600")
    (leaf,) = wait_for(lambda: exec_leaves(cell[0]), "the session")
    shell = int(tmux("display-message", "-p", "-t", "t", "#{pane_pid}"))
    (cli_pid,) = [int(p) for task in os.listdir(f"/proc/{shell}/task")
                  for p in Path(f"/proc/{shell}/task/{task}/children").read_text().split()]
    os.kill(cli_pid, signal.SIGTERM)
    tmux.wait_screen(f"CLI_EXIT={128 + signal.SIGTERM}", "the CLI's exit code")
    wait_for(after.exists, "the terminal settings read after the CLI")
    assert after.read_text() == before.read_text()  # raw mode restored on a signal too
    wait_for(lambda: exec_leaves(cell[0]) == [], "the hung-up session's leaf gone", timeout=10)


# -- attach ----------------------------------------------------------------------------------------------


class Attached:
    """A ``cellar attach`` process; its stdout collected by a thread."""

    def __init__(self, daemon: Cellard, target: str) -> None:
        self.proc = subprocess.Popen([*CELLAR, "--addr", daemon.socket, "attach", target], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.out += chunk

    def type(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_attach_twice_one_writer_both_see_the_output_detach_and_attach_again(daemon: Cellard,
                                                                            cell: tuple[Api, str]) -> None:
    api = cell[0]
    start = subprocess.run([*CELLAR, "--addr", daemon.socket, "start", "-i", "ex", "echoer", "--", "sh", "-c",
                            'while read l; do echo "got $l"; done'], capture_output=True, text=True, env=cli_env(),
                           timeout=scaled(60))
    assert start.returncode == 0, start.stderr
    attached: list[Attached] = []

    def attach_one(writer: bool) -> Attached:
        seen = len(daemon.events("attach.started"))
        attached.append(Attached(daemon, "ex/echoer"))
        event = wait_for(lambda: daemon.events("attach.started")[seen:], "the attach to be established")[0]
        assert event["writer"] is writer
        return attached[-1]

    try:
        first, second = attach_one(True), attach_one(False)
        first.type(b"one\n")
        wait_for(lambda: b"got one\n" in first.out and b"got one\n" in second.out, "both attachers seeing the output")
        second.type(b"ignored\n")  # not the writer: dropped
        first.type(b"\x10\x11")  # Ctrl-P Ctrl-Q
        assert first.proc.wait(scaled(30)) == 0
        assert exe_state(api, "ex", "echoer") == "RUNNING"
        third = attach_one(True)  # the writer left: the next attacher writes
        third.type(b"two\n")
        wait_for(lambda: b"got two\n" in third.out and b"got two\n" in second.out, "the new writer's line echoed")
        assert b"ignored" not in second.out + third.out
        api.stop("ex", "echoer")
        assert third.proc.wait(scaled(30)) == 128 + signal.SIGTERM  # the run's end, as its exit status
        assert second.proc.wait(scaled(30)) == 128 + signal.SIGTERM
    finally:
        for one in attached:
            one.close()


def test_an_attachable_stdin_survives_a_supervisor_crash(daemon: Cellard, cell: tuple[Api, str]) -> None:
    api = cell[0]
    api.start("ex", "survivor", "sh", "-c", 'while read l; do echo "got $l"; done', stdin=True)
    attached: list[Attached] = []
    try:
        old = api.supervisor_pid()
        os.kill(old, signal.SIGKILL)  # the fd store keeps a copy of the stdin write end: no EOF for the shell
        wait_for(lambda: _successor(api, old), "a successor supervisor")
        seen = len(daemon.events("attach.started"))
        attached.append(Attached(daemon, "ex/survivor"))
        wait_for(lambda: daemon.events("attach.started")[seen:], "the attach to be established")
        attached[0].type(b"after\n")
        wait_for(lambda: b"got after\n" in attached[0].out, "the shell still reading its stdin")
        assert exe_state(api, "ex", "survivor") == "RUNNING"
    finally:
        for one in attached:
            one.close()
        api.stop("ex", "survivor")


def _successor(api: Api, old: int) -> bool:
    try:
        return api.supervisor_pid() != old and bool(api.list())
    except (AssertionError, grpc.RpcError):
        return False


def test_attach_refuses_an_executable_without_stdin(daemon: Cellard, cell: tuple[Api, str]) -> None:
    cell[0].start("ex", "nostdin", "sleep", "600")
    try:
        proc = subprocess.run([*CELLAR, "--addr", daemon.socket, "attach", "ex/nostdin"], capture_output=True,
                              text=True, env=cli_env(), timeout=scaled(60), stdin=subprocess.DEVNULL)
        assert proc.returncode == 1 and "FAILED_PRECONDITION" in proc.stderr and "start -i" in proc.stderr
    finally:
        cell[0].stop("ex", "nostdin")


def exe_state(api: Api, cell: str, name: str) -> str:
    return types_pb2.ExecutableState.Name(exe_info(api, cell, name).state).removeprefix("EXECUTABLE_STATE_")


# -- last in the module: it stops the module's cellard ---------------------------------------------------


def test_cellard_sigterm_gives_open_sessions_a_final_status(daemon: Cellard, cell: tuple[Api, str]) -> None:
    client = subprocess.Popen(exec_cmd(daemon, "-i", "ex", "--", "sh", "-c", "echo started; exec sleep 600"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        (leaf,) = exec_leaves(cell[0])
        (pid,) = leaf_pids(cell[0], leaf)
        assert daemon.stop(signal.SIGTERM) == 0
        _, err = client.communicate(timeout=scaled(30))
        assert client.returncode == 128 + signal.SIGHUP, err  # the shell's answer to a hung-up terminal
        assert b"cellard is stopping" in err
        assert not alive(pid)
    finally:
        client.kill()
        client.wait()
