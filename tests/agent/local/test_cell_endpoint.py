"""Workloads in real cells reach the node-local endpoint through the address announced in their env,
are confined to their own file tree, and cannot reach CellService (or anything not fronted) there.

Each workload is a python3 one-liner run by the venv interpreter inside the cell; it prints JSON results
that the test reads back through the Logs API.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import textwrap
from typing import Any

import grpc
import pytest

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import (
    cells_pb2,
    cells_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
)
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from tests.support import REPO
from tests.support.local import local_socket, local_tcp, state_dir

pytestmark = pytest.mark.root

# Runs inside the cell: ACTIONS is a list of [op, args...]; prints one JSON line of results.
WORKLOAD = textwrap.dedent("""
    import json, os, sys, grpc
    from proto.parigot.file.v1 import file_pb2 as F, file_pb2_grpc as FG
    from proto.aurae import runtime_pb2 as R, runtime_pb2_grpc as RG
    from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
    from proto.pb import dispatcherFunction_pb2 as DF, dispatcherFunction_pb2_grpc as DFG
    use_tcp = sys.argv[1] == "tcp"
    target = os.environ["CELLAR_LOCAL_TCP"] if use_tcp else os.environ["CELLAR_LOCAL_ENDPOINT"]
    ch = grpc.insecure_channel(target)
    f = FG.FileStub(ch)
    out = {"env": {k: v for k, v in os.environ.items() if k.startswith("CELLAR_")}, "pid": os.getpid()}
    def code(fn):
        try:
            fn()
            return "OK"
        except grpc.RpcError as e:
            return e.code().name
    for op, *args in json.loads(sys.argv[2]):
        if op == "write":
            r = f.Create(F.CreateRequest(path=args[0], content=args[1]), timeout=10)
            f.Close(F.CloseRequest(id=r.id), timeout=10)
            out["id:" + args[0]] = [r.id.high, r.id.low]
        elif op == "open":
            out["open:" + args[0]] = code(lambda: f.Open(F.OpenRequest(path=args[0]), timeout=10))
        elif op == "read_id":
            out["read_id"] = code(lambda: f.Read(F.ReadRequest(id=IdRaw(high=args[0], low=args[1])), timeout=10))
        elif op == "cells":
            out["cells"] = code(lambda: RG.CellServiceStub(ch).Allocate(
                R.AllocateCellRequest(cell=R.Cell(name="evil")), timeout=10))
        elif op == "target":
            t = DFG.FunctionDispatcherStub(ch).GetTarget(DF.GetTargetReq(uuid=args[0].encode()), timeout=10)
            out["target"] = [t.ip, t.certificate.decode()]
        elif op == "health":
            from grpc_health.v1 import health_pb2 as H, health_pb2_grpc as HG
            out["health"] = HG.HealthStub(ch).Check(H.HealthCheckRequest(service=""), timeout=10).status
        elif op == "stat_root":
            out["root"] = [e.path for e in f.Stat(F.StatRequest(path="/parigot/app/"), timeout=10).entries]
    print(json.dumps(out), flush=True)
""")


def run_in_cell(daemon: Any, cell: str, actions: list[list[Any]], *, transport: str = "unix",
                isolate: bool = True) -> dict[str, Any]:
    """Allocate ``cell`` (process + network isolation when ``isolate``), run WORKLOAD, return its JSON."""
    with daemon.channel() as ch:
        rt = runtime_pb2_grpc.CellServiceStub(ch)
        try:
            rt.Allocate(runtime_pb2.AllocateCellRequest(
                cell=runtime_pb2.Cell(name=cell, isolate_process=isolate, isolate_network=isolate)), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                raise
        name = f"w{secrets.token_hex(3)}"
        exe = runtime_pb2.Executable(
            cell_name=cell, name=name, argv=[sys.executable, "-c", WORKLOAD, transport, json.dumps(actions)],
            env={"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        )
        rt.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)
        req = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=name, follow=True)
        records = [r for b in logs_pb2_grpc.LogsStub(ch).Read(req, timeout=60) for r in b.records]
    out = [r.data for r in records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
    errors = b"".join(r.data for r in records if r.channel == logs_pb2.LOG_CHANNEL_STDERR)
    assert out, f"workload printed nothing; stderr:\n{errors.decode(errors='replace')}"
    return json.loads(out[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cells(local_daemon: Any) -> dict[str, dict[str, Any]]:
    """Two isolated cells; A writes a secret, B tries to get at it. Run once for the module."""
    a = run_in_cell(local_daemon, "alpha", [["write", "/parigot/app/secret.txt", "alpha's secret"], ["cells"],
                                            ["stat_root"]])
    fid = a["id:/parigot/app/secret.txt"]
    b = run_in_cell(local_daemon, "beta", [["open", "/parigot/app/secret.txt"], ["read_id", *fid], ["stat_root"],
                                           ["write", "/parigot/app/mine.txt", "beta"]])
    return {"alpha": a, "beta": b}


def test_the_endpoint_is_announced_in_the_env(cells: dict[str, dict[str, Any]], local_daemon: Any) -> None:
    env = cells["alpha"]["env"]
    assert env["CELLAR_LOCAL_ENDPOINT"] == "unix:" + local_socket(local_daemon)
    assert env["CELLAR_LOCAL_TCP"] == local_tcp(local_daemon)
    assert cells["alpha"]["pid"] < 10, "the workload really ran in its own pid namespace"


def test_a_workload_writes_files_into_its_own_tree(cells: dict[str, dict[str, Any]], local_daemon: Any) -> None:
    assert cells["alpha"]["root"] == ["/parigot/app/secret.txt"]
    tree = state_dir(local_daemon) / "files" / "cell"
    assert (tree / "alpha" / "secret.txt").read_text() == "alpha's secret"
    assert (tree / "beta" / "mine.txt").read_text() == "beta"


def test_another_cell_cannot_read_it(cells: dict[str, dict[str, Any]]) -> None:
    beta = cells["beta"]
    assert beta["open:/parigot/app/secret.txt"] == "NOT_FOUND"
    assert beta["read_id"] == "NOT_FOUND", "not even by its file id"
    assert beta["root"] == [], "beta's tree holds nothing of alpha's"


def test_cell_service_is_not_on_the_local_endpoint(cells: dict[str, dict[str, Any]], local_daemon: Any) -> None:
    assert cells["alpha"]["cells"] == "UNIMPLEMENTED"
    with local_daemon.channel() as ch:
        names = [c.name for c in cells_pb2_grpc.CellsStub(ch).List(cells_pb2.ListCellsRequest(), timeout=10).cells]
    assert "evil" not in names


def test_the_host_sees_cell_files_only_by_naming_the_scope(cells: dict[str, dict[str, Any]], local_daemon: Any) -> None:
    with local_daemon.channel() as ch:
        f = file_pb2_grpc.FileStub(ch)
        md = (("cellar-scope", "cell:alpha"),)
        opened = f.Open(file_pb2.OpenRequest(path="/parigot/app/secret.txt"), metadata=md, timeout=10)
        assert f.Read(file_pb2.ReadRequest(id=opened.id), metadata=md, timeout=10).data == b"alpha's secret"
        f.Close(file_pb2.CloseRequest(id=opened.id), metadata=md, timeout=10)


def test_tcp_callers_are_identified_by_their_cgroup(local_daemon: Any) -> None:
    """A cell sharing the host network uses CELLAR_LOCAL_TCP; sock_diag's cgroup id names its cell."""
    out = run_in_cell(local_daemon, "gamma", [["write", "/parigot/app/via-tcp.txt", "tcp"], ["stat_root"]],
                      transport="tcp", isolate=False)
    assert out["root"] == ["/parigot/app/via-tcp.txt"]
    assert (state_dir(local_daemon) / "files" / "cell" / "gamma" / "via-tcp.txt").read_text() == "tcp"


def test_a_host_process_is_the_host_scope(local_daemon: Any) -> None:
    for target in ("unix:" + local_socket(local_daemon), local_tcp(local_daemon)):
        with grpc.insecure_channel(target) as ch:
            f = file_pb2_grpc.FileStub(ch)
            path = f"/parigot/app/host-{secrets.token_hex(3)}"
            f.Close(file_pb2.CloseRequest(id=f.Create(file_pb2.CreateRequest(path=path), timeout=10).id), timeout=10)
        assert (state_dir(local_daemon) / "files" / "host" / path.rsplit("/", 1)[1]).exists()


def test_the_dispatchers_are_on_the_local_endpoint(local_daemon: Any, tmp_path: Any) -> None:
    """A server on this node registers through the node-local Unix endpoint (healthy while its
    process lives: this test's); a client in an isolated cell gets it there as the target; the
    operator sees it in the dispatch table."""
    from agent.auth import pki
    from proto.pb import dispatcherServer_pb2, dispatcherServer_pb2_grpc

    pki.init_ca(str(tmp_path))
    pki.issue(str(tmp_path), "server", "cell-server", sans=("127.0.0.1",))
    cert = (tmp_path / "cell-server.pem").read_bytes()
    with grpc.insecure_channel("unix:" + local_socket(local_daemon)) as ch:
        reply = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch).Register(
            dispatcherServer_pb2.RegisterReq(certificate=cert), timeout=10)
    assert reply.status == dispatcherServer_pb2.RegisterRes.REGISTERED
    client = run_in_cell(local_daemon, "cli", [["target", "fn-1"]])
    assert client["target"] == ["127.0.0.1", cert.decode()]
    with local_daemon.channel() as ch:
        listed = inventory_pb2_grpc.DispatchStub(ch).List(inventory_pb2.ListDispatchRequest(), timeout=10)
    [mine] = [s for s in listed.servers if "cell-server" in s.subject]
    assert mine.pid == os.getpid() and mine.healthy and mine.ip == "127.0.0.1"


@pytest.mark.parametrize("isolate", [False, True], ids=["plain", "isolated"])
def test_a_contained_workload_reaches_the_endpoint_over_the_unix_socket(local_daemon: Any, isolate: bool) -> None:
    """Containment hides cellar's run dir from workloads but binds the node-local socket back at the
    address in their env: health and a file write work from both kinds of cell."""
    cell = f"reach-{'iso' if isolate else 'plain'}"
    out = run_in_cell(local_daemon, cell, [["health"], ["write", "/parigot/app/hello.txt", "hi"]], isolate=isolate)
    assert out["health"] == 1  # SERVING
    assert (state_dir(local_daemon) / "files" / "cell" / cell / "hello.txt").read_text() == "hi"
