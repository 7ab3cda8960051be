"""Attacks on the node-local Scaleout combiner's client ids (issue 13).

Before: a client was whoever its ``client-id`` metadata said, so an unprivileged user polled as
``edge-b`` and took the task the operator queued for it. Now a client id is claimed by the first
scope that uses it (a cell, ``user:<uid>``, ``host``; over mTLS the certificate identity) and any
other caller naming it gets PERMISSION_DENIED, on every CombinerClient RPC, over the Unix socket and
loopback TCP alike. Tests with workloads in real cells and the unprivileged user ``nobody``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from proto.scaleout import scaleout_pb2 as pb
from proto.scaleout import scaleout_pb2_grpc
from tests.security import workload
from tests.support.api import Api
from tests.support.local import local_socket

pytestmark = pytest.mark.root

#: arg: [client id, [rpc...]]; out: {rpc: status name} plus "task": the correlation id a poll got
CLIENT = r"""
from proto.scaleout import scaleout_pb2 as pb, scaleout_pb2_grpc as sg
cid, rpcs = arg
md = (("client-id", cid), ("client", cid), ("name", cid))
c = sg.CombinerClientStub(ch)
out = {}
for rpc in rpcs:
    try:
        if rpc == "poll":
            r = c.PollAndReport(pb.ActivityReport(node_id=cid), metadata=md, timeout=10)
            out["task"] = r.correlation_id
        elif rpc == "heartbeat":
            c.SendHeartbeat(pb.Heartbeat(client_id=cid), metadata=md, timeout=10)
        elif rpc == "status":
            c.SendStatus(pb.Status(client_id=cid, status="hi"), metadata=md, timeout=10)
        elif rpc == "announce":
            c.Announce(pb.ClientAnnounceRequest(client_id=cid, type="Connect"), metadata=md, timeout=10)
        elif rpc == "stream":
            next(iter(c.TaskStream(pb.ClientAvailableMessage(client_id=cid), metadata=md, timeout=2)))
        out[rpc] = "OK"
    except grpc.RpcError as e:
        out[rpc] = e.code().name
"""
ALL = ["heartbeat", "status", "announce", "stream", "poll"]


@pytest.fixture
def daemon(cellard_factory: Any) -> Any:
    # base 0755: an unprivileged user must reach <run_dir>/local.sock (as on a real node)
    return cellard_factory({"local": {"tcp_listen": "127.0.0.1:0"}}, base_mode=0o755)


@pytest.fixture
def leaves(daemon: Any) -> Iterator[dict[str, str]]:
    channel = daemon.channel()
    api = Api(daemon, channel)
    try:
        out = {}
        for cell in ("edgeb", "thief"):
            api.allocate(cell)
            api.start(cell, "sleeper", "sleep", "3600")
            out[cell] = os.path.join(api.inspect(cell).cgroup_path, "exe.sleeper")
        yield out
    finally:
        try:
            api.free_all()
        finally:
            channel.close()



def tcp(daemon: Any) -> str:
    return str(daemon.events("local.listening")[-1]["tcp"])


def push(daemon: Any, client_id: str) -> str:
    with daemon.channel() as ch:
        task = fl_pb2_grpc.FederationStub(ch).PushTask(
            fl_pb2.PushTaskRequest(client_id=client_id, type="Custom_probe"), timeout=10)
    return str(task.correlation_id)


def test_another_scope_cannot_use_a_claimed_client_id(daemon: Any, leaves: dict[str, str]) -> None:
    assert workload.run(local_socket(daemon), CLIENT, ["edge-b", ["poll"]], leaf=leaves["edgeb"]) == {"poll": "OK", "task": ""}
    wanted = push(daemon, "edge-b")
    denied = {rpc: "PERMISSION_DENIED" for rpc in ALL}
    for target in (local_socket(daemon), tcp(daemon)):
        assert workload.run(target, CLIENT, ["edge-b", ALL], uid=workload.NOBODY) == denied, target
        assert workload.run(target, CLIENT, ["edge-b", ALL], leaf=leaves["thief"]) == denied, target
    assert workload.run(local_socket(daemon), CLIENT, ["edge-b", ALL]) == denied  # root on the host: another scope
    got = workload.run(tcp(daemon), CLIENT, ["edge-b", ["poll"]], leaf=leaves["edgeb"])
    assert got == {"poll": "OK", "task": wanted}


def test_a_user_keeps_its_own_client_id_and_the_body_cannot_name_another(daemon: Any) -> None:
    mine = workload.run(local_socket(daemon), CLIENT, ["edge-nobody", ["heartbeat", "poll"]], uid=workload.NOBODY)
    assert mine == {"heartbeat": "OK", "poll": "OK", "task": ""}
    assert workload.run(tcp(daemon), CLIENT, ["edge-nobody", ["heartbeat"]], uid=workload.NOBODY) == {"heartbeat": "OK"}
    with grpc.insecure_channel("unix:" + local_socket(daemon)) as ch:  # root (host) claims x, then names edge-nobody in the body
        stub = scaleout_pb2_grpc.CombinerClientStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.SendHeartbeat(pb.Heartbeat(client_id="edge-nobody"), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_over_mtls_a_client_id_belongs_to_the_certificate_identity(cellard_factory: Any) -> None:
    remote = cellard_factory(tcp=True)
    md = (("client-id", "edge-m"),)
    with remote.tls_channel("op-user") as ch:
        scaleout_pb2_grpc.CombinerClientStub(ch).SendHeartbeat(pb.Heartbeat(), metadata=md, timeout=10)
    for channel in (remote.tls_channel("admin-user"), remote.channel()):  # another certificate; root on the main socket
        with channel as ch, pytest.raises(grpc.RpcError) as err:
            scaleout_pb2_grpc.CombinerClientStub(ch).SendHeartbeat(pb.Heartbeat(), metadata=md, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with remote.tls_channel("op-user") as ch:
        scaleout_pb2_grpc.CombinerClientStub(ch).SendHeartbeat(pb.Heartbeat(), metadata=md, timeout=10)


def test_over_mtls_a_relayed_cell_scope_claims_for_that_cell(cellard_factory: Any) -> None:
    """A downstream cellard fronting this combiner relays its caller's scope (``cellar-scope``, honoured
    from admins only): the claim is the certificate's *and* that scope's, so two cells behind one
    downstream cannot take each other's client ids."""
    remote = cellard_factory(tcp=True)

    def heartbeat(cert: str, scope: str) -> str:
        md = (("client-id", "edge-r"), ("cellar-scope", scope))
        with remote.tls_channel(cert) as ch:
            try:
                scaleout_pb2_grpc.CombinerClientStub(ch).SendHeartbeat(pb.Heartbeat(), metadata=md, timeout=10)
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name

    assert heartbeat("admin-user", "cell:a") == "OK"
    assert heartbeat("admin-user", "cell:b") == "PERMISSION_DENIED"
    assert heartbeat("op-user", "cell:a") == "PERMISSION_DENIED"  # only an admin may relay a scope
    assert heartbeat("admin-user", "cell:a") == "OK"
