"""The node-local dispatchers hand out only servers that are alive, through a REAL cellard.

Each "server" is a real process that registers itself over cellard's Unix socket (so cellard knows
its pid from SO_PEERCRED) and then lives until the test ends it. Two local servers are two
registrations (not one IP overwriting the other); a server whose process is gone (a zombie counts as
gone) is NOT_ACCEPTED by GetNextServer and never returned by GetTarget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.auth import pki as pki_lib
from agent.pb.dispatch import Dispatcher, process_start
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import (
    common_pb2,
    dispatcherFunction_pb2,
    dispatcherFunction_pb2_grpc,
    dispatcherServer_pb2,
    dispatcherServer_pb2_grpc,
)
from tests.support import REPO
from tests.support.timeouts import scaled

LOCAL = "127.0.0.1"  # the address a server registered over the Unix socket gets
SERVER = """
import sys, grpc
from proto.pb import dispatcherServer_pb2 as m, dispatcherServer_pb2_grpc as g
cert = open(sys.argv[2], 'rb').read()
with grpc.insecure_channel('unix:' + sys.argv[1]) as ch:
    reply = g.ServerDispatcherStub(ch).Register(m.RegisterReq(certificate=cert), timeout=10)
print(m.RegisterRes.RequestStatus.Name(reply.status), flush=True)
sys.stdin.read()  # registered: live until the test closes stdin (or kills us)
"""
res = dispatcherServer_pb2.GetNextServerRes


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, bytes]:
    pki_lib.init_ca(str(tmp_path))
    out = {}
    for name in ("srv-a", "srv-b"):
        pki_lib.issue(str(tmp_path), "server", name, sans=(LOCAL,))
        out[name] = (tmp_path / f"{name}.pem").read_bytes()
    return out


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(scaled(10))


def start_server(started: list[subprocess.Popen[str]], socket: str, cert_path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, socket, str(cert_path)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    started.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "REGISTERED"
    return proc


def target(ch: grpc.Channel, uuid: bytes) -> bytes:
    stub = dispatcherFunction_pb2_grpc.FunctionDispatcherStub(ch)
    return bytes(stub.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=uuid), timeout=5).certificate)


def accepted(ch: grpc.Channel, cert: bytes, ip: str = LOCAL) -> bool:
    stub = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch)
    return stub.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip=ip, certificate=cert), timeout=5).status == res.ACCEPTED


def listed(ch: grpc.Channel) -> list[tuple[str, int, bool]]:
    reply = inventory_pb2_grpc.DispatchStub(ch).List(inventory_pb2.ListDispatchRequest(), timeout=5)
    return sorted((s.ip, s.pid, s.healthy) for s in reply.servers)


def function_check(ch: grpc.Channel) -> int:
    stub = dispatcherFunction_pb2_grpc.FunctionDispatcherStub(ch)
    return int(stub.Check(common_pb2.HealthCheckReq(), timeout=5).status)


@pytest.mark.root
def test_two_local_servers_then_one_dies_then_none(cellard, certs, servers, tmp_path):
    a = start_server(servers, cellard.socket, tmp_path / "srv-a.pem")
    b = start_server(servers, cellard.socket, tmp_path / "srv-b.pem")
    with cellard.channel() as ch:
        assert listed(ch) == sorted([(LOCAL, a.pid, True), (LOCAL, b.pid, True)])
        assert accepted(ch, certs["srv-a"]) and accepted(ch, certs["srv-b"]) and accepted(ch, b"")
        uuids = [f"fn-{i}".encode() for i in range(6)]
        first = {u: target(ch, u) for u in uuids}
        assert set(first.values()) == {certs["srv-a"], certs["srv-b"]}  # round-robin over both
        assert {u: target(ch, u) for u in uuids} == first  # sticky per uuid

        a.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + scaled(10)
        while os.waitid(os.P_PID, a.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # a zombie, not reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not accepted(ch, certs["srv-a"]) and accepted(ch, certs["srv-b"])
        assert {u: target(ch, u) for u in uuids} == dict.fromkeys(uuids, certs["srv-b"])
        assert (LOCAL, a.pid, False) in listed(ch)
        a.wait()

        assert function_check(ch) == common_pb2.HealthCheckRes.SERVING
        assert b.stdin is not None
        b.stdin.close()  # a clean exit
        b.wait(scaled(10))
        assert not accepted(ch, certs["srv-b"]) and not accepted(ch, b"")
        assert function_check(ch) == common_pb2.HealthCheckRes.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            target(ch, b"fn-0")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        c = start_server(servers, cellard.socket, tmp_path / "srv-a.pem")  # a restarted server is handed out again
        assert target(ch, b"fn-0") == certs["srv-a"] and accepted(ch, certs["srv-a"])
        assert (LOCAL, c.pid, True) in listed(ch)


def test_a_reused_pid_is_not_the_registered_server(certs):
    """Health compares the process start time too: another process that got the pid is not the server."""
    me = os.getpid()
    dispatcher = Dispatcher()
    server = dispatcher.register(LOCAL, certs["srv-a"], pid=me)
    assert server.healthy and process_start(me) is not None
    server.started = (process_start(me) or 0) + 1  # as if the pid now belonged to a later process
    assert not server.healthy and not dispatcher.accepts(LOCAL, certs["srv-a"])


def test_tcp_servers_are_keyed_by_address_and_local_ones_by_process(certs):
    dispatcher = Dispatcher()
    dispatcher.register("192.0.2.1", certs["srv-a"])
    dispatcher.register("192.0.2.1", certs["srv-b"])  # the same host again: replaces its registration
    dispatcher.register(LOCAL, certs["srv-a"], pid=os.getpid())
    dispatcher.register(LOCAL, certs["srv-b"], pid=os.getppid())
    assert sorted((s.ip, s.certificate == certs["srv-b"]) for s, _ in dispatcher.servers()) == [
        ("127.0.0.1", False), ("127.0.0.1", True), ("192.0.2.1", True)]
