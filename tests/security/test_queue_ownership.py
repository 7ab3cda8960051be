"""Attacks on queue.v1.Queue from workloads in real cells (issue 13): a queue belongs to the scope
that created it. Another cell cannot find it by name, nor use or delete it by a leaked id (NotFound:
its existence is not revealed). A queue created ``shared`` is found by every scope, and only its
creator may delete it (PERMISSION_DENIED). The test runner's own ``test_queue`` belongs to no caller.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security import workload
from tests.support.api import Api, running_cellard
from tests.support.local import local_socket
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

#: arg: [op, name-or-[high, low], text]; out: [status name, [high, low] | texts | length]
QUEUE = r"""
from google.protobuf import wrappers_pb2
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from proto.parigot.queue.v1 import queue_pb2 as Q, queue_pb2_grpc as QG
q = QG.QueueStub(ch)
results = []
for op, what, text in arg:
    qid = IdRaw(high=what[0], low=what[1]) if isinstance(what, list) else None
    try:
        if op in ("create", "create_shared"):
            r = q.CreateQueue(Q.CreateQueueRequest(queue_name=what, **({"shared": True} if op == "create_shared" else {})), timeout=10)
            results.append(["OK", [r.id.high, r.id.low]])
        elif op == "locate":
            r = q.Locate(Q.LocateRequest(queue_name=what), timeout=10)
            results.append(["OK", [r.id.high, r.id.low]])
        elif op == "send":
            m = Q.QueueMsg(); m.payload.Pack(wrappers_pb2.StringValue(value=text))
            r = q.Send(Q.SendRequest(id=qid, msg=[m]), timeout=10)
            results.append(["OK", len(r.succeed)])
        elif op == "receive":
            r = q.Receive(Q.ReceiveRequest(id=qid, message_limit=100), timeout=10)
            texts = []
            for m in r.message:
                v = wrappers_pb2.StringValue(); m.payload.Unpack(v); texts.append(v.value)
            if text == "done":
                q.MarkDone(Q.MarkDoneRequest(id=qid, msg=[m.msg_id for m in r.message]), timeout=10)
            results.append(["OK", texts])
        elif op == "length":
            results.append(["OK", q.Length(Q.LengthRequest(id=qid), timeout=10).length])
        elif op == "done":
            q.MarkDone(Q.MarkDoneRequest(id=qid, msg=[qid]), timeout=10)
            results.append(["OK", None])
        elif op == "delete":
            q.DeleteQueue(Q.DeleteQueueRequest(id=qid), timeout=10)
            results.append(["OK", None])
    except grpc.RpcError as e:
        results.append([e.code().name, None])
out = results
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    with running_cellard({"queue": {"visibility_timeout_s": 0.0}}) as d:
        yield d


@pytest.fixture(scope="module")
def cells(daemon: Any) -> Iterator[dict[str, str]]:
    """Two cells, each with a running executable; name -> its leaf cgroup (processes may join it)."""
    channel = daemon.channel()
    api = Api(daemon, channel)
    try:
        leaves = {}
        for cell in ("qa", "qb"):
            api.allocate(cell)
            api.start(cell, "sleeper", "sleep", "3600")
            leaves[cell] = os.path.join(api.inspect(cell).cgroup_path, "exe.sleeper")
        yield leaves
    finally:
        try:
            api.free_all()
        finally:
            channel.close()



def ops(daemon: Any, leaf: str | None, *actions: tuple[str, Any, str]) -> list[list[Any]]:
    return workload.run(local_socket(daemon), QUEUE, [list(a) for a in actions], leaf=leaf)  # type: ignore[no-any-return]


def test_another_cell_can_neither_find_nor_use_nor_delete_a_cells_queue(daemon: Any, cells: dict[str, str]) -> None:
    a, b = cells["qa"], cells["qb"]
    [[st, qid]] = ops(daemon, a, ("create", "jobs", ""))
    assert st == "OK"
    assert ops(daemon, a, ("send", qid, "secret")) == [["OK", 1]]

    stolen = ops(daemon, b, ("locate", "jobs", ""), ("receive", qid, "done"), ("length", qid, ""),
                 ("send", qid, "forged"), ("done", qid, ""), ("delete", qid, ""))
    assert [s for s, _ in stolen] == ["NOT_FOUND"] * 6, stolen
    [[st, own]] = ops(daemon, b, ("create", "jobs", ""))  # the same name in another scope is another queue
    assert st == "OK" and own != qid
    assert ops(daemon, None, ("locate", "jobs", ""), ("delete", qid, "")) == [["NOT_FOUND", None]] * 2  # the host too

    assert ops(daemon, a, ("length", qid, ""), ("receive", qid, "done"), ("locate", "jobs", "")) == \
        [["OK", 1], ["OK", ["secret"]], ["OK", qid]]


def test_another_cells_failing_writes_sharing_commits_with_the_owners_neither_see_nor_undo_them(
        daemon: Any, cells: dict[str, str]) -> None:
    """Group commit puts concurrent writes of different scopes in one transaction: cell qb's flood of
    Send/Receive/MarkDone on qa's queue id, running alongside qa's own Sends, fails (NotFound) op by op
    and neither rolls back nor receives any of qa's messages."""
    a, b = cells["qa"], cells["qb"]
    [[st, qid]] = ops(daemon, a, ("create", "crowded", ""))
    assert st == "OK"
    results: dict[str, list[list[Any]]] = {}

    def run(who: str, leaf: str, actions: list[tuple[str, Any, str]]) -> None:
        results[who] = ops(daemon, leaf, *actions)

    flood = [("send", qid, "forged"), ("receive", qid, "done"), ("done", qid, "")] * 40
    threads = [threading.Thread(target=run, args=("a", a, [("send", qid, f"a{i}") for i in range(120)])),
               threading.Thread(target=run, args=("b", b, flood))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(120))
    assert results["a"] == [["OK", 1]] * 120
    assert [s for s, _ in results["b"]] == ["NOT_FOUND"] * len(flood)
    assert ops(daemon, a, ("receive", qid, "done")) == [["OK", [f"a{i}" for i in range(100)]]]  # 100 a Receive
    assert ops(daemon, a, ("length", qid, "")) == [["OK", 20]]


def test_a_shared_queue_is_found_by_every_scope_and_deleted_only_by_its_creator(
        daemon: Any, cells: dict[str, str]) -> None:
    a, b = cells["qa"], cells["qb"]
    [[st, qid]] = ops(daemon, a, ("create_shared", "bus", ""))
    assert st == "OK"
    assert ops(daemon, b, ("create_shared", "bus", "")) == [["ALREADY_EXISTS", None]]
    assert ops(daemon, b, ("locate", "bus", ""), ("send", qid, "from b")) == [["OK", qid], ["OK", 1]]
    assert ops(daemon, None, ("send", qid, "from the host")) == [["OK", 1]]
    assert ops(daemon, a, ("receive", qid, "done")) == [["OK", ["from b", "from the host"]]]
    assert ops(daemon, b, ("delete", qid, "")) == [["PERMISSION_DENIED", None]]
    assert ops(daemon, None, ("delete", qid, "")) == [["PERMISSION_DENIED", None]]
    assert ops(daemon, a, ("delete", qid, ""), ("locate", "bus", "")) == [["OK", None], ["NOT_FOUND", None]]


def test_a_private_queue_shadows_a_shared_one_of_the_same_name_for_its_owner(
        daemon: Any, cells: dict[str, str]) -> None:
    a, b = cells["qa"], cells["qb"]
    [[_, shared]] = ops(daemon, a, ("create_shared", "events", ""))
    [[_, private]] = ops(daemon, b, ("create", "events", ""))
    assert ops(daemon, b, ("locate", "events", "")) == [["OK", private]]
    assert ops(daemon, None, ("locate", "events", "")) == [["OK", shared]]


# ------------------------------------------------------------------------ the test runner's queue


def test_a_workload_cannot_drain_the_test_runners_queue(cellard_factory: Any, tmp_path: Path) -> None:
    """Before: a workload located ``test_queue`` and received the runner's tests; the suite never reported."""
    from proto.parigot.test.v1 import test_pb2, test_pb2_grpc
    from tests.agent.local.testrunner.test_testrunner import UnderTestProcess, suite

    daemon = cellard_factory({"local": {"tcp_listen": ""}, "queue": {"visibility_timeout_s": 3600.0}})
    ut = UnderTestProcess(daemon.base)
    channel = daemon.channel()
    api = Api(daemon, channel)
    stop = threading.Event()
    stolen: list[Any] = []
    try:
        api.allocate("thief")
        api.start("thief", "sleeper", "sleep", "3600")
        leaf = os.path.join(api.inspect("thief").cgroup_path, "exe.sleeper")
        # squat the name in the thief's own scope and in the host's: neither is the runner's queue
        assert ops(daemon, leaf, ("create", "test_queue", ""))[0][0] == "OK"
        assert ops(daemon, None, ("create", "test_queue", ""))[0][0] == "OK"

        def drain() -> None:
            while not stop.is_set():
                for who in (leaf, None):
                    [[st, qid]] = ops(daemon, who, ("locate", "test_queue", ""))
                    if st == "OK":
                        [[_, got]] = ops(daemon, who, ("receive", qid, "done"))
                        stolen.extend(got)

        thief = threading.Thread(target=drain, daemon=True)
        thief.start()
        time.sleep(0.5)
        test = test_pb2_grpc.TestStub(channel)
        test.AddTestSuite(test_pb2.AddTestSuiteRequest(
            suite=[suite("app.math", "Adder", "ok_add", "ok_sub", "ok_mul")], exec_service="unix:" + ut.socket),
            timeout=10)
        for _ in range(3):
            ut.reset()
            assert test.Start(test_pb2.StartRequest(), timeout=10).num_test == 3
            [report] = ut.wait_reports(1, timeout=scaled(30))
            assert report["num_success"] == 3, report
        stop.set()
        thief.join(scaled(60))
        assert stolen == []
    finally:
        stop.set()
        ut.proc.kill()
        ut.proc.wait()
        try:
            api.free_all()
        finally:
            channel.close()


def test_an_unprivileged_user_cannot_use_roots_queue(cellard_factory: Any) -> None:
    """Outside the cells, uid 0 is scope ``host`` and any other uid ``user:<uid>``: nobody's queues and
    root's are apart, over the Unix socket and loopback TCP."""
    daemon = cellard_factory({"local": {"tcp_listen": "127.0.0.1:0"}}, base_mode=0o755)
    tcp = str(daemon.events("local.listening")[-1]["tcp"])
    [[st, qid]] = ops(daemon, None, ("create", "work", ""))
    assert st == "OK" and ops(daemon, None, ("send", qid, "root's"))[0][0] == "OK"
    for target in (local_socket(daemon), tcp):
        got = workload.run(target, QUEUE, [["locate", "work", ""], ["receive", qid, "done"], ["delete", qid, ""]],
                           uid=workload.NOBODY)
        assert [s for s, _ in got] == ["NOT_FOUND"] * 3, (target, got)
    assert ops(daemon, None, ("receive", qid, "done")) == [["OK", ["root's"]]]
