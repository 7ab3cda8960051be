"""Attacks on and through ``cellar.v1.Sessions/Exec`` (issue 15): who may exec, hostile requests, and
that an exec'd process is held exactly as the cell's executables are (namespaces, cgroup and limits,
containment). One cellard (mTLS on loopback) for the module."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from cells.capabilities import DEFAULT_CAPS, mask
from proto.cellar.v1 import exec_pb2, exec_pb2_grpc
from tests.support.api import Api, api_session, code_of
from tests.support.cellard import PKI, Cellard, start_cellard, teardown
from tests.support.cli import CELLAR, cli_env
from tests.support.execsession import alive, exec_leaves
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def daemon(pki: PKI) -> Iterator[Cellard]:
    d = start_cellard(pki=pki, tcp=True)
    try:
        yield d
    finally:
        teardown(d)


@pytest.fixture(scope="module")
def api(daemon: Cellard) -> Iterator[Api]:
    with api_session(daemon) as client:
        client.allocate("plain")
        client.allocate("iso", isolate_process=True, isolate_network=True)
        client.start("iso", "sleeper", "sleep", "3600")
        yield client


class Session:
    """One Exec call driven from the test: requests go in through a queue, responses are read on demand."""

    def __init__(self, channel: grpc.Channel, start: exec_pb2.ExecStart | exec_pb2.AttachStart | None,
                 *more: Any, attach: bool = False) -> None:
        self.pending: queue.Queue[Any] = queue.Queue()
        stub = exec_pb2_grpc.SessionsStub(channel)
        attach = attach or isinstance(start, exec_pb2.AttachStart)
        if start is not None:
            self.pending.put(exec_pb2.AttachRequest(start=start) if attach else exec_pb2.ExecRequest(start=start))
        for request in more:
            self.pending.put(request)
        self.call = (stub.Attach if attach else stub.Exec)(self._requests(), timeout=scaled(60))

    def _requests(self) -> Iterator[Any]:
        while (item := self.pending.get()) is not None:
            yield item

    def started(self) -> exec_pb2.ExecStarted:
        first = next(self.call)
        assert first.WhichOneof("output") == "started", first
        return first.started

    def rest(self) -> tuple[bytes, exec_pb2.ExecExit | None]:
        out, exit_ = b"", None
        for response in self.call:
            out += response.stdout
            if response.HasField("exit"):
                exit_ = response.exit
        return out, exit_

    def end(self) -> None:
        self.pending.put(None)
        self.call.cancel()


def run(channel: grpc.Channel, cell: str, *argv: str, tty: bool = False) -> tuple[bytes, int]:
    session = Session(channel, exec_pb2.ExecStart(cell_name=cell, argv=list(argv), tty=tty))
    try:
        session.started()
        out, exit_ = session.rest()
    finally:
        session.end()
    assert exit_ is not None
    return out, exit_.exit_code


# -- who may exec --------------------------------------------------------------------------------------


def tls_cli(daemon: Cellard, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert daemon.pki is not None and daemon.tcp is not None
    pki = daemon.pki.dir
    return subprocess.run([*CELLAR, "--addr", daemon.tcp, "--ca", str(daemon.pki.ca), "--cert", str(pki / f"{user}.pem"),
                           "--key", str(pki / f"{user}-key.pem"), *args], capture_output=True, text=True,
                          env=cli_env(), timeout=scaled(60), stdin=subprocess.DEVNULL)


def test_over_mtls_an_observer_is_refused_and_an_operator_allowed(daemon: Cellard, api: Api) -> None:
    refused = tls_cli(daemon, "obs-user", "exec", "plain", "--", "sh", "-c", "echo ran > /tmp/observer-ran")
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused
    allowed = tls_cli(daemon, "op-user", "exec", "plain", "--", "sh", "-c", "echo via-mtls; exit 5")
    assert (allowed.returncode, allowed.stdout) == (5, "via-mtls\n"), allowed.stderr
    started = daemon.events("exec.started")
    assert any(e.get("who") == "cert:op-user" and e.get("argv", [])[:1] == ["sh"] for e in started), started
    assert not any(e.get("who") == "cert:obs-user" for e in started)


def test_an_operator_cannot_exec_into_an_admins_privileged_cell(daemon: Cellard, api: Api) -> None:
    api.allocate("priv", privileged=True)  # the Unix socket's caller is admin
    try:
        with daemon.tls_channel("op-user") as channel:
            session = Session(channel, exec_pb2.ExecStart(cell_name="priv", argv=["true"]))
            with pytest.raises(grpc.RpcError) as err:
                session.started()
            session.end()
        assert code_of(err.value) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        api.free("priv")


# -- hostile requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "field"), [
    (exec_pb2.ExecStart(cell_name="../etc", argv=["true"]), "cell_name"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], env=["=x"]), "env"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], env=["NOEQUALS"]), "env"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], user="0:root"), "user"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], user="99999999999"), "user"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], user="no-such-user-x"), "user"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], cwd="relative"), "cwd"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["tr\0ue"]), "argv"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], tty=True, size=exec_pb2.WindowSize(rows=70000)), "size.rows"),
    (exec_pb2.ExecStart(cell_name="plain", argv=["true"], tty=True, term="x" * 100), "term"),
])
def test_hostile_starts_are_invalid_argument_naming_the_field(api: Api, start: exec_pb2.ExecStart, field: str) -> None:
    session = Session(api.channel, start)
    with pytest.raises(grpc.RpcError) as err:
        session.started()
    session.end()
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT and field in (err.value.details() or ""), err.value.details()
    assert exec_leaves(api) == []


def test_a_first_message_that_is_not_start_and_an_unknown_cell(api: Api) -> None:
    session = Session(api.channel, None, exec_pb2.ExecRequest(stdin=b"rm -rf /\n"))
    with pytest.raises(grpc.RpcError) as err:
        session.started()
    session.end()
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT and "start" in (err.value.details() or "")
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="no-such-cell", argv=["true"]))
    with pytest.raises(grpc.RpcError) as err:
        session.started()
    session.end()
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("request_", "field"), [
    (exec_pb2.ExecRequest(resize=exec_pb2.WindowSize(rows=1, cols=99999)), "resize.cols"),
    (exec_pb2.ExecRequest(signal=4096), "signal"),
])
def test_hostile_frames_mid_session_end_it_and_leave_nothing(api: Api, request_: exec_pb2.ExecRequest,
                                                             field: str) -> None:
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="plain", argv=["sleep", "600"], tty=True))
    pid = session.started().host_pid
    session.pending.put(request_)
    with pytest.raises(grpc.RpcError) as err:
        session.rest()
    session.end()
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT and field in (err.value.details() or "")
    wait_for(lambda: not alive(pid) and exec_leaves(api) == [], "the session's process and leaf gone", timeout=10)


def test_a_client_that_stops_reading_pauses_the_producer_and_cellard_stays_small(daemon: Cellard, api: Api) -> None:
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="plain", argv=["yes", "x" * 1000]))
    try:
        pid = session.started().host_pid
        rss_before = _rss(daemon.proc.pid)

        def written() -> int:
            with open(f"/proc/{pid}/io") as f:
                return int(next(line for line in f if line.startswith("wchar:")).split()[1])

        wait_for(lambda: written() > 1 << 20, "the producer writing")
        last = -1
        for _ in range(int(scaled(50))):  # the producer blocks once every buffer on the way is full
            time.sleep(0.1)
            now = written()
            if now == last:
                break
            last = now
        else:
            pytest.fail(f"the producer never paused: {last} bytes written")
        time.sleep(0.5)
        assert written() == last  # still paused
        assert last < 256 << 20  # pipe, cellard's one frame, gRPC's windows: bounded
        assert _rss(daemon.proc.pid) - rss_before < 64 << 20
    finally:
        session.end()
    wait_for(lambda: exec_leaves(api) == [], "the session's leaf gone")


def test_a_client_flooding_stdin_is_paused_when_the_process_does_not_read(daemon: Cellard, api: Api) -> None:
    sent = [0]
    chunk = b"y" * (1 << 20)
    stop = threading.Event()

    def requests() -> Iterator[exec_pb2.ExecRequest]:
        yield exec_pb2.ExecRequest(start=exec_pb2.ExecStart(cell_name="plain", argv=["sleep", "600"], stdin=True))
        for _ in range(1024):  # 1 GiB offered
            if stop.is_set():
                return
            yield exec_pb2.ExecRequest(stdin=chunk)
            sent[0] += 1
        stop.wait()

    rss_before = _rss(daemon.proc.pid)
    call = exec_pb2_grpc.SessionsStub(api.channel).Exec(requests(), timeout=scaled(60))
    try:
        assert next(call).WhichOneof("output") == "started"
        last = -1
        for _ in range(int(scaled(50))):
            time.sleep(0.1)
            if sent[0] == last:
                break
            last = sent[0]
        time.sleep(0.5)
        assert sent[0] == last and last < 256, last  # the pipe (1 MiB) and gRPC's windows, then it waits
        assert _rss(daemon.proc.pid) - rss_before < 64 << 20
    finally:
        stop.set()
        call.cancel()
    wait_for(lambda: exec_leaves(api) == [], "the session's leaf gone")


def _runs(api: Api, *argv: str) -> bool:
    try:
        return run(api.channel, "plain", *argv)[1] == 0
    except grpc.RpcError as exc:
        assert code_of(exc) == grpc.StatusCode.UNAVAILABLE, exc  # until the successor answers
        return False


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


# -- held as the cell's executables are ------------------------------------------------------------


def test_the_process_is_in_the_cells_pid_and_net_namespaces_and_its_cgroup(api: Api) -> None:
    sleeper = [e for e in api.inspect("iso").executables if e.name == "sleeper"][0].host_pid
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="iso", argv=["sleep", "600"]))
    try:
        started = session.started()
        for ns in ("pid", "net", "mnt"):
            assert os.readlink(f"/proc/{started.host_pid}/ns/{ns}") == os.readlink(f"/proc/{sleeper}/ns/{ns}"), ns
        assert started.cell_pid != started.host_pid  # numbered in the cell's pid namespace
        with open(f"/proc/{started.host_pid}/cgroup") as f:
            cgroups = f.read()
        assert f"/{api.root}/iso/_exec.{started.session}\n" in cgroups, cgroups
    finally:
        session.end()
    wait_for(lambda: exec_leaves(api) == [], "the session's leaf gone")


def test_the_cells_pids_limit_counts_the_exec_session(api: Api) -> None:
    api.allocate("capped", pids_max=8)
    try:
        script = ("import os, time\nn = 0\nfor _ in range(30):\n    try:\n        pid = os.fork()\n"
                  "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
                  "    n += 1\nprint(n)\n")
        out, code = run(api.channel, "capped", "/usr/bin/python3", "-c", script)
        assert code == 0 and int(out) < 8, out
    finally:
        api.free("capped")


@pytest.mark.parametrize("cell", ["plain", "iso"])
def test_exec_is_no_way_around_containment(api: Api, cell: str) -> None:
    out, code = run(api.channel, cell, "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs|Seccomp):", "/proc/self/status")
    fields: dict[str, Any] = dict(line.split(":\t") for line in out.decode().splitlines())
    assert code == 0
    assert int(fields["CapEff"], 16) == mask(DEFAULT_CAPS) == int(fields["CapBnd"], 16)
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
    out, code = run(api.channel, cell, "sh", "-c", "unshare -U -r sh -c 'mount -t tmpfs none /tmp && echo MOUNTED'")
    assert code != 0 and b"MOUNTED" not in out
    script = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.syscall(169, 0, 0, 0, None); print(ctypes.get_errno())"
    out, code = run(api.channel, cell, "/usr/bin/python3", "-c", script)
    assert out.strip() == b"1"  # reboot: EPERM (EINVAL, past a bad magic, would mean it got through)


def test_freeing_the_cell_ends_its_exec_sessions(api: Api) -> None:
    api.allocate("doomed")
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="doomed", argv=["sleep", "600"]))
    try:
        session.started()
        api.free("doomed")
        _, exit_ = session.rest()
        assert exit_ is not None and exit_.signal == 9 and exit_.exit_code == 137
    finally:
        session.end()
    assert not [d for d in api.cgroup_dirs() if "doomed" in d]


def test_sessions_at_once_from_threads_all_end_cleanly(daemon: Cellard, api: Api) -> None:
    run(api.channel, "plain", "true")  # anything a first session opens for good is open now
    fds_before = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
    supervisor_fds = len(os.listdir(f"/proc/{api.supervisor_pid()}/fd"))
    results: list[tuple[bytes, int]] = []

    def one(i: int) -> None:  # every other one on a pseudo-terminal (its output: "\r\n")
        results.append(run(api.channel, "plain", "sh", "-c", f"echo {i}; exit {i % 7}", tty=i % 2 == 0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(60))
    assert sorted(results) == sorted((f"{i}\r\n".encode() if i % 2 == 0 else f"{i}\n".encode(), i % 7)
                                     for i in range(16))
    wait_for(lambda: exec_leaves(api) == [], "every session's leaf gone")
    assert len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) <= fds_before  # no pty, pipe or socket left open
    assert len(os.listdir(f"/proc/{api.supervisor_pid()}/fd")) <= supervisor_fds


def test_a_signal_frame_reaches_the_process(api: Api) -> None:
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="plain", argv=["sleep", "600"]))
    try:
        session.started()
        session.pending.put(exec_pb2.ExecRequest(signal=15))
        _, exit_ = session.rest()
        assert exit_ is not None and (exit_.exit_code, exit_.signal) == (143, 15)
    finally:
        session.end()


def test_a_supervisor_crash_ends_the_session_and_its_successor_kills_the_process(api: Api) -> None:
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="plain", argv=["sh", "-c", "trap '' HUP; sleep 600"]))
    try:
        pid = session.started().host_pid
        os.kill(api.supervisor_pid(), 9)
        with pytest.raises(grpc.RpcError) as err:
            session.rest()
        assert code_of(err.value) == grpc.StatusCode.UNAVAILABLE
        wait_for(lambda: not alive(pid) and exec_leaves(api) == [], "the leaf removed by the successor's reconcile",
                 timeout=30)
        wait_for(lambda: _runs(api, "true"), "exec working again with the successor", timeout=30)
    finally:
        session.end()


# -- attach ----------------------------------------------------------------------------------------------

READER = ("sh", "-c", 'while read l; do echo "got $l"; done')


def test_attach_over_mtls_an_observer_is_refused_and_an_operator_writes(daemon: Cellard, api: Api) -> None:
    api.start("plain", "reader", *READER, stdin=True)
    try:
        with daemon.tls_channel("obs-user") as channel:
            session = Session(channel, exec_pb2.AttachStart(cell_name="plain", executable_name="reader"))
            with pytest.raises(grpc.RpcError) as err:
                session.started()
            session.end()
        assert code_of(err.value) == grpc.StatusCode.PERMISSION_DENIED
        with daemon.tls_channel("op-user") as channel:
            session = Session(channel, exec_pb2.AttachStart(cell_name="plain", executable_name="reader"))
            try:
                assert session.started().writer
                session.pending.put(exec_pb2.AttachRequest(stdin=b"via-mtls\n"))
                assert next(session.call).stdout == b"got via-mtls\n"
            finally:
                session.end()
    finally:
        api.stop("plain", "reader")


def test_an_operator_cannot_attach_in_an_admins_privileged_cell(daemon: Cellard, api: Api) -> None:
    api.allocate("privattach", privileged=True)
    try:
        api.start("privattach", "reader", *READER, stdin=True)
        with daemon.tls_channel("op-user") as channel:
            session = Session(channel, exec_pb2.AttachStart(cell_name="privattach", executable_name="reader"))
            with pytest.raises(grpc.RpcError) as err:
                session.started()
            session.end()
        assert code_of(err.value) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        api.free("privattach")


@pytest.mark.parametrize(("start", "code", "text"), [
    (exec_pb2.AttachStart(cell_name="../etc", executable_name="x"), "INVALID_ARGUMENT", "cell_name"),
    (exec_pb2.AttachStart(cell_name="plain", executable_name="../x"), "INVALID_ARGUMENT", "executable_name"),
    (exec_pb2.AttachStart(cell_name="plain", executable_name="nobody-here"), "NOT_FOUND", "nobody-here"),
    (exec_pb2.AttachStart(cell_name="iso", executable_name="sleeper"), "FAILED_PRECONDITION", "start -i"),
    (None, "INVALID_ARGUMENT", "start"),
])
def test_hostile_attaches_fail_safely(api: Api, start: exec_pb2.AttachStart | None, code: str, text: str) -> None:
    more = [exec_pb2.AttachRequest(stdin=b"x")] if start is None else []  # None: the first message is stdin
    session = Session(api.channel, start, *more, attach=True)
    with pytest.raises(grpc.RpcError) as err:
        session.started()
    session.end()
    assert code_of(err.value).name == code and text in (err.value.details() or ""), err.value.details()


# -- last in the module: it kills the module's cellard -----------------------------------------------------


def test_cellard_sigkilled_hangs_its_sessions_up(daemon: Cellard, api: Api) -> None:
    session = Session(api.channel, exec_pb2.ExecStart(cell_name="plain", argv=["sh", "-c", "trap '' HUP; sleep 600"]))
    try:
        pid = session.started().host_pid
        daemon.proc.kill()  # its end of the control channel closes with it
        daemon.proc.wait()
        with pytest.raises(grpc.RpcError) as err:
            session.rest()
        assert code_of(err.value) == grpc.StatusCode.UNAVAILABLE
        wait_for(lambda: not alive(pid) and exec_leaves(api) == [], "the session's process and leaf gone", timeout=5)
    finally:
        session.end()
