"""Attacks on the main socket from workloads (issue 12): a process in a cell is not a user.

A root process that lives in cellar's cell tree gets PERMISSION_DENIED on every method of the main
Unix socket (health included), whatever its uid, and the denial is logged naming its cell; unless
its cell (or an ancestor) was allocated with ``grant_role``, which then is its role. A root process
outside the cells keeps the socket's role (admin by default).

Two ways into a cell, both against a REAL cellard and its supervisor:

- directly: the test writes a plain subprocess's pid into the unified ``cgroup.procs`` of a running
  executable's leaf (the cell's cgroup path comes from Inspect), then lets it connect. This tests the
  rule whatever a workload can see of the filesystem.
- as a real executable of the cell, running a small gRPC client. Once workloads get their own mount
  view the socket may be invisible there: then the client reports that, and the test checks it really
  cannot reach it; where it can reach it, the answer must be the rule's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proto.cellar.v1 import logs_pb2
from tests.agent.conftest import REPO, Api, api_session, running_cellard
from tests.security.workload import run_client
from tests.timeouts import scaled

pytestmark = pytest.mark.root

#: The workload's side: wait for a line on stdin (the test moves it into a cell meanwhile), then call
#: the main socket and print {"visible": ..., "results": {call: status code name}} as one JSON line.
CLIENT = r"""
import json, os, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc

sock, calls, wait = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "wait"
if wait:
    print("ready", flush=True)
    sys.stdin.readline()
results = {}
with grpc.insecure_channel("unix:" + sock) as ch:
    for call in calls:
        what, _, arg = call.partition(":")
        try:
            if what == "health":
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            elif what == "list":
                cells_pb2_grpc.CellsStub(ch).List(cells_pb2.ListCellsRequest(), timeout=10)
            elif what == "allocate":
                runtime_pb2_grpc.CellServiceStub(ch).Allocate(
                    runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name=arg)), timeout=10)
            results[call] = "OK"
        except grpc.RpcError as exc:
            results[call] = exc.code().name
            results[call + ".details"] = exc.details()
print(json.dumps({"visible": os.path.exists(sock), "uid": os.getuid(), "results": results}), flush=True)
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    with running_cellard() as d:
        yield d


@pytest.fixture
def api(daemon: Any) -> Iterator[Api]:
    with api_session(daemon) as client:
        yield client


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLAR_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def leaf_of(api: Api, cell: str, exe: str) -> str:
    """The unified cgroup directory of a running executable (a leaf: processes may join it)."""
    return os.path.join(api.inspect(cell).cgroup_path, f"exe.{exe}")


def call_from_cgroup(api: Api, leaf: str | None, calls: list[str]) -> dict[str, Any]:
    """Run CLIENT as root; before it connects, move it into ``leaf`` (None: it stays on the host)."""
    out = run_client([sys.executable, "-c", CLIENT, api.daemon.socket, ",".join(calls), "wait"], leaf, cwd=str(REPO))
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def denied_events(api: Api, cell: str) -> list[dict[str, Any]]:
    return [e for e in api.daemon.events("authz.workload_denied") if e.get("cell") == cell]


def wait_for_event(api: Api, cell: str) -> dict[str, Any]:
    deadline = time.monotonic() + scaled(10)
    while not (found := denied_events(api, cell)):
        assert time.monotonic() < deadline, f"no authz.workload_denied for {cell} in the cellard log"
        time.sleep(0.05)
    return found[-1]


def sleeper(api: Api, cell: str, **fields: Any) -> str:
    api.allocate(cell, **fields)
    api.start(cell, "sleeper", "sleep", "3600")
    return leaf_of(api, cell, "sleeper")


# ---------------------------------------------------------------- the rule, directly


def test_a_root_process_in_a_cell_is_refused_every_method(api: Api) -> None:
    leaf = sleeper(api, "plain")
    got = call_from_cgroup(api, leaf, ["health", "list", "allocate:escape"])
    assert got["uid"] == 0
    for call in ("health", "list", "allocate:escape"):
        assert got["results"][call] == "PERMISSION_DENIED", got
    assert "cell 'plain'" in got["results"]["list.details"], got
    event = wait_for_event(api, "plain")
    assert event["uid"] == 0 and event["pid"] > 0
    assert [c.name for c in api.list()] == ["plain"], "the refused Allocate must not have made a cell"


def test_a_process_on_the_host_keeps_its_role(api: Api) -> None:
    got = call_from_cgroup(api, None, ["health", "list", "allocate:from-host"])
    assert got["results"] == {"health": "OK", "list": "OK", "allocate:from-host": "OK"}, got
    assert "from-host" in [c.name for c in api.list()]


def test_a_granted_cell_gets_exactly_its_role(api: Api) -> None:
    leaf = sleeper(api, "watcher", grant_role="observer")
    assert api.inspect("watcher").cell.grant_role == "observer"
    got = call_from_cgroup(api, leaf, ["health", "list", "allocate:escape"])
    assert got["results"]["health"] == "OK" and got["results"]["list"] == "OK", got
    assert got["results"]["allocate:escape"] == "PERMISSION_DENIED", got
    assert "role observer" in got["results"]["allocate:escape.details"], got
    assert "escape" not in [c.name for c in api.list()]


def test_a_grant_reaches_the_cells_below(api: Api) -> None:
    """A controller's sub-cells share its grant; so an operator (the controller itself included) may
    not nest cells in a granted cell: that would hand its workloads the grant."""
    api.allocate("ctl", grant_role="operator")
    leaf = sleeper(api, "ctl/worker")
    got = call_from_cgroup(api, leaf, ["list", "allocate:made-by-worker", "allocate:ctl/nested"])
    assert got["results"]["list"] == "OK" and got["results"]["allocate:made-by-worker"] == "OK", got
    assert got["results"]["allocate:ctl/nested"] == "PERMISSION_DENIED", got
    assert "'ctl'" in got["results"]["allocate:ctl/nested.details"], got


def test_a_grant_dies_with_its_cell(api: Api) -> None:
    """Free a granted cell and allocate one of the same name without a grant: its workloads are refused
    at once (the cache follows Free; no window until some TTL runs out)."""
    sleeper(api, "again", grant_role="admin")
    api.free("again")
    leaf = sleeper(api, "again")
    got = call_from_cgroup(api, leaf, ["list"])
    assert got["results"]["list"] == "PERMISSION_DENIED", got


def test_an_unknown_cgroup_in_cellars_tree_is_refused(api: Api) -> None:
    """A cgroup below cellar's root that is no cell (made behind cellar's back): fail closed."""
    leaf = sleeper(api, "host-of-stray", grant_role="admin")
    stray = os.path.join(leaf, "stray")
    os.mkdir(stray)
    try:
        got = call_from_cgroup(api, stray, ["list"])
        assert got["results"]["list"] == "PERMISSION_DENIED", got
    finally:
        os.rmdir(stray)  # the client has exited: it is empty


# ---------------------------------------------------------------- as a real executable


def read_stdout(api: Api, cell: str, name: str) -> str:
    deadline = time.monotonic() + scaled(30)
    while True:
        req = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=name, channels=[logs_pb2.LOG_CHANNEL_STDOUT])
        try:
            text = b"".join(r.data for batch in api.logs.Read(req, timeout=scaled(30)) for r in batch.records).decode()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            text = ""
        if text.strip():
            return text
        assert time.monotonic() < deadline, f"{cell}/{name} printed nothing"
        time.sleep(0.1)


@pytest.mark.parametrize("isolate_process", [False, True], ids=["plain", "isolated"])
def test_an_executable_calling_the_main_socket(api: Api, isolate_process: bool) -> None:
    cell = "iso-exe" if isolate_process else "plain-exe"
    api.allocate(cell, isolate_process=isolate_process)
    api.start(cell, "client", sys.executable, "-c", CLIENT, api.daemon.socket, "health,list,allocate:escape", "nowait",
              env=_env(), cwd=str(REPO))
    got = json.loads(read_stdout(api, cell, "client").strip().splitlines()[-1])
    if not got["visible"]:  # its mount view hides the socket: then nothing may have reached it
        assert set(got["results"].values()) & {"OK", "PERMISSION_DENIED"} == set(), got
    else:
        assert {got["results"][c] for c in ("health", "list", "allocate:escape")} == {"PERMISSION_DENIED"}, got
        wait_for_event(api, cell)
    assert "escape" not in [c.name for c in api.list()]


@pytest.mark.parametrize("isolate_process", [False, True], ids=["plain", "isolated"])
def test_a_granted_executable_calling_the_main_socket(api: Api, isolate_process: bool) -> None:
    """A granted cell's mount view shows the main socket (a controller needs it), with its role only."""
    cell = "granted-iso" if isolate_process else "granted-exe"
    api.allocate(cell, grant_role="observer", isolate_process=isolate_process)
    api.start(cell, "client", sys.executable, "-c", CLIENT, api.daemon.socket, "list,allocate:escape",
              "nowait", env=_env(), cwd=str(REPO))
    got = json.loads(read_stdout(api, cell, "client").strip().splitlines()[-1])
    assert got["visible"], got
    assert got["results"]["list"] == "OK", got
    assert got["results"]["allocate:escape"] == "PERMISSION_DENIED", got
    assert "escape" not in [c.name for c in api.list()]
