"""A dispatch server registered over TCP is probed, so one that died is no longer handed out (issue 13).

Before: a server registered over TCP stayed healthy forever after it died (only Unix-socket servers
were tied to their process). Now a server that names its port (``RegisterReq.port``, cellar's field
10) is probed every few seconds, by gRPC health and else by a TCP connect: a dead one is skipped by
GetNextServer and GetTarget at once, and forgotten after it stayed dead for a while. Real servers on
loopback, registered through the node-local endpoint's TCP listener of a real cellard; the expiry
is checked in-process with short timers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.auth import pki as pki_lib
from agent.pb.dispatch import Dispatcher
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import (
    dispatcherFunction_pb2,
    dispatcherFunction_pb2_grpc,
    dispatcherServer_pb2,
    dispatcherServer_pb2_grpc,
)
from tests.support.api import running_cellard
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root
NEXT = dispatcherServer_pb2.GetNextServerRes


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("dpki")
    pki_lib.init_ca(str(d))
    pki_lib.issue(str(d), "server", "srv", sans=("127.0.0.1",))
    return (d / "srv.pem").read_bytes()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    with running_cellard({"local": {"tcp_listen": "127.0.0.1:0"}}) as d:
        yield d


def grpc_server(status: str = "SERVING") -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, servicer


def plain_listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_tcp_registered_server_that_dies_is_no_longer_handed_out(daemon: Any, cert: bytes) -> None:
    tcp = str(daemon.events("local.listening")[-1]["tcp"])
    server, port, _ = grpc_server()
    with grpc.insecure_channel(tcp) as ch:
        reply = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch).Register(
            dispatcherServer_pb2.RegisterReq(certificate=cert, port=port), timeout=10)
        assert reply.status == dispatcherServer_pb2.RegisterRes.REGISTERED
        disp = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch)
        fn = dispatcherFunction_pb2_grpc.FunctionDispatcherStub(ch)

        def accepted() -> bool:
            return disp.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip="127.0.0.1", certificate=cert),
                                      timeout=10).status == NEXT.ACCEPTED

        assert accepted()
        assert fn.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=b"f1"), timeout=10).ip == "127.0.0.1"
        server.stop(0)  # the server dies
        wait_until(lambda: not accepted(), "a dead server is still ACCEPTED")
        with pytest.raises(grpc.RpcError) as err:
            fn.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=b"f1"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with daemon.channel() as main:
        [listed] = [s for s in inventory_pb2_grpc.DispatchStub(main).List(
            inventory_pb2.ListDispatchRequest(), timeout=10).servers if s.ip == "127.0.0.1"]
        assert not listed.healthy


def probe_scenario(cert: bytes, start: Callable[[], tuple[Any, int]], stop: Callable[[Any], None]) -> None:
    """In-process Dispatcher with short timers: alive -> dead (skipped) -> back -> dead -> expired."""

    async def scenario() -> None:
        d = Dispatcher(probe_interval_s=0.2, expire_after_s=1.5)
        handle, port = start()
        d.register("127.0.0.1", cert, port=port)
        await asyncio.sleep(0.5)
        assert d.accepts("127.0.0.1", cert) and d.target(b"u").port == port
        stop(handle)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if not d.accepts("127.0.0.1", cert):
                break
        assert not d.accepts("127.0.0.1", cert)
        with pytest.raises(LookupError):
            d.target(b"u")
        assert len(d.servers()) == 1  # skipped, not yet forgotten
        await asyncio.sleep(2.5)
        assert d.servers() == []  # expired
        d.close()

    asyncio.run(scenario())


def test_a_grpc_server_is_probed_by_health_and_expires(cert: bytes) -> None:
    def start() -> tuple[Any, int]:
        server, port, _ = grpc_server()
        return server, port

    probe_scenario(cert, start, lambda s: s.stop(0))


def test_a_plain_tcp_server_is_probed_by_connect_and_expires(cert: bytes) -> None:
    def start() -> tuple[Any, int]:
        sock = plain_listener()
        return sock, sock.getsockname()[1]

    probe_scenario(cert, start, lambda s: s.close())


def test_a_grpc_server_that_says_not_serving_is_skipped(cert: bytes) -> None:
    async def scenario() -> None:
        d = Dispatcher(probe_interval_s=0.2, expire_after_s=60)
        server, port, servicer = grpc_server()
        d.register("127.0.0.1", cert, port=port)
        await asyncio.sleep(0.5)
        assert d.accepts("127.0.0.1", cert)
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(0.8)
        assert not d.accepts("127.0.0.1", cert)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await asyncio.sleep(0.8)
        assert d.accepts("127.0.0.1", cert)
        server.stop(0)
        d.close()

    asyncio.run(scenario())



REGISTER = r"""
from proto.pb import dispatcherServer_pb2 as m, dispatcherServer_pb2_grpc as g
cert, port = arg
r = g.ServerDispatcherStub(ch).Register(m.RegisterReq(certificate=cert.encode(), port=port), timeout=10)
out = m.RegisterRes.RequestStatus.Name(r.status)
"""


def test_another_user_cannot_replace_a_live_registration(daemon: Any, cert: bytes, tmp_path_factory: Any) -> None:
    """Over loopback TCP every registrant is 127.0.0.1: the registering scope keeps its registration."""
    from tests.security import workload

    tcp = str(daemon.events("local.listening")[-1]["tcp"])
    d = tmp_path_factory.mktemp("dpki2")
    pki_lib.init_ca(str(d))
    pki_lib.issue(str(d), "server", "evil", sans=("127.0.0.1",))
    evil = (d / "evil.pem").read_bytes()
    server, port, _ = grpc_server()
    try:
        assert workload.run(tcp, REGISTER, [cert.decode(), port]) == "REGISTERED"  # root: scope host
        assert workload.run(tcp, REGISTER, [evil.decode(), port], uid=workload.NOBODY) == "NOT_REGISTERED"
        with grpc.insecure_channel(tcp) as ch:
            stub = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch)
            ok = stub.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip="127.0.0.1", certificate=cert), timeout=10)
            bad = stub.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip="127.0.0.1", certificate=evil), timeout=10)
        assert (ok.status, bad.status) == (NEXT.ACCEPTED, NEXT.NOT_ACCEPTED)
    finally:
        server.stop(0)
