"""test.v1.Test against a REAL cellard and a REAL test.v1.UnderTest server process.

The UnderTest server (undertest_server.py) logs every Exec and SuiteReport it receives, so the tests
see exactly what cellard sent: which tests ran (filters), and the merged report per suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.local.parigot import ERROR_NAME_KEY
from agent.local.testrunner.runner import RUNNER_SCOPE
from proto.cellar.v1 import queues_pb2, queues_pb2_grpc
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
from proto.parigot.test.v1 import test_pb2, test_pb2_grpc
from tests.support.cellard import REPO, Cellard, StartCellard, daemon_env

pytestmark = pytest.mark.root


class UnderTestProcess:
    def __init__(self, base: Path) -> None:
        self.socket = str(base / "ut.sock")
        self.log = base / "ut.log"
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("undertest_server.py")),
                                      self.socket, str(self.log)], cwd=REPO, env=daemon_env(),
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"

    def entries(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            if kind in entry:
                out.append(entry[kind])
        return out

    def wait_reports(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(reports := self.entries("report")) < n:
            assert time.monotonic() < deadline, f"{len(reports)} of {n} reports: {self.log.read_text()}"
            time.sleep(0.05)
        return reports

    def reset(self) -> None:
        self.log.write_text("")


@pytest.fixture
def setup(cellard_factory: StartCellard) -> Iterator[tuple[Cellard, UnderTestProcess]]:
    daemon = cellard_factory({"local": {"tcp_listen": ""}})
    server = UnderTestProcess(daemon.base)
    try:
        yield daemon, server
    finally:
        server.proc.kill()
        server.proc.wait()


def suite(package: str, service: str, *functions: str) -> test_pb2.SuiteInfo:
    return test_pb2.SuiteInfo(package_path=package, service=service, function_name=list(functions))


def test_add_start_filters_and_reports(setup: tuple[Cellard, UnderTestProcess]) -> None:
    daemon, ut = setup
    with daemon.channel() as ch:
        test = test_pb2_grpc.TestStub(ch)
        added = test.AddTestSuite(test_pb2.AddTestSuiteRequest(
            suite=[suite("app.math", "Adder", "ok_add", "bad_overflow", "skip_big"),
                   suite("app.text", "Upper", "ok_upper", "ok_lower")],
            exec_package="app", exec_service="unix:" + ut.socket), timeout=10)
        assert dict(added.succeeded) == {"app.math.Adder.ok_add": True, "app.math.Adder.bad_overflow": True,
                                         "app.math.Adder.skip_big": True, "app.text.Upper.ok_upper": True,
                                         "app.text.Upper.ok_lower": True}
        # merge: present functions are reported false, new ones true
        merged = test.AddTestSuite(test_pb2.AddTestSuiteRequest(
            suite=[suite("app.math", "Adder", "ok_add", "ok_sub")], exec_service="unix:" + ut.socket), timeout=10)
        assert dict(merged.succeeded) == {"app.math.Adder.ok_add": False, "app.math.Adder.ok_sub": True}

        # suite filter: only app.math.Adder's four tests, one report for it
        started = test.Start(test_pb2.StartRequest(filter_suite=r"^app\.math\."), timeout=10)
        assert (started.regex_failed, started.num_test) == (False, 4)
        [report] = ut.wait_reports(1)
        assert sorted(e["name"] for e in ut.entries("exec")) == ["bad_overflow", "ok_add", "ok_sub", "skip_big"]
        assert report["package"] == "app.math" and report["service"] == "Adder"
        assert report.get("success", False) is False
        assert (report["num_success"], report["num_failure"], report["num_skip"]) == (2, 1, 1)
        assert report["test_success"] == {"ok_add": True, "ok_sub": True, "bad_overflow": False}
        assert report["test_skip"] == {"skip_big": True}
        assert report["detail"]["bad_overflow"]["error_message"] == "expected 1, got 2"

        # name filter (the original ignored it): only the matching tests, across suites, in parallel
        ut.reset()
        started = test.Start(test_pb2.StartRequest(filter_name=r"\.ok_(upper|add)$", parallel=True), timeout=10)
        assert (started.regex_failed, started.num_test) == (False, 2)
        reports = ut.wait_reports(2)
        assert sorted(e["name"] for e in ut.entries("exec")) == ["ok_add", "ok_upper"]
        by_suite = {f'{r["package"]}.{r["service"]}': r for r in reports}
        assert by_suite["app.text.Upper"]["test_success"] == {"ok_upper": True}
        assert by_suite["app.text.Upper"]["success"] is True
        assert by_suite["app.math.Adder"]["num_success"] == 1

        # no filter: everything (6 tests, 2 reports); the runner's own queue is drained afterwards
        ut.reset()
        assert test.Start(test_pb2.StartRequest(), timeout=10).num_test == 6
        ut.wait_reports(2)
        listing = queues_pb2_grpc.QueuesStub(ch)
        deadline = time.monotonic() + 10
        while [q.length for q in listing.List(queues_pb2.ListQueuesRequest(), timeout=10).queues
               if q.name == "test_queue" and q.owner == RUNNER_SCOPE] != [0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as hidden:  # no caller's scope holds it
            queue_pb2_grpc.QueueStub(ch).Locate(queue_pb2.LocateRequest(queue_name="test_queue"), timeout=10)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

        # a filter that matches nothing queues nothing
        assert test.Start(test_pb2.StartRequest(filter_suite="^nothing$"), timeout=10).num_test == 0


def test_bad_input(setup: tuple[Cellard, UnderTestProcess]) -> None:
    daemon, ut = setup
    with daemon.channel() as ch:
        test = test_pb2_grpc.TestStub(ch)
        for pattern in ("(", "[z-a]", "a{99999}", "x" * 2000):
            resp = test.Start(test_pb2.StartRequest(filter_suite=pattern), timeout=10)
            assert resp.regex_failed and resp.num_test == 0
            assert test.Start(test_pb2.StartRequest(filter_name=pattern), timeout=10).regex_failed
        with pytest.raises(grpc.RpcError) as both:
            test.Start(test_pb2.StartRequest(filter_suite="a", filter_name="b"), timeout=10)
        assert both.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(both.value.trailing_metadata())[ERROR_NAME_KEY] == "RegexpFailed"
        for target in ("", "10.1.2.3:80", "example.com:80", "unix:relative", "host"):
            with pytest.raises(grpc.RpcError) as err:
                test.AddTestSuite(test_pb2.AddTestSuiteRequest(suite=[suite("p", "S", "f")], exec_service=target),
                                  timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert dict(err.value.trailing_metadata())[ERROR_NAME_KEY] == "ServiceNotFound"
        with pytest.raises(grpc.RpcError) as err:
            test.AddTestSuite(test_pb2.AddTestSuiteRequest(suite=[suite("", "S", "f")],
                                                           exec_service="unix:" + ut.socket), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # an unreachable exec service: every test fails with the reason; no report can be delivered
        test.AddTestSuite(test_pb2.AddTestSuiteRequest(suite=[suite("gone", "Away", "ok_x")],
                                                       exec_service="unix:/nonexistent/ut.sock"), timeout=10)
        assert test.Start(test_pb2.StartRequest(filter_suite="^gone"), timeout=10).num_test == 1
        deadline = time.monotonic() + 30
        while not daemon.events("test.report_undelivered"):
            assert time.monotonic() < deadline, daemon.log_text()[-3000:]
            time.sleep(0.05)
        [ev] = daemon.events("test.suite_report")
        assert ev["suite"] == "gone.Away" and ev["failed"] == 1 and ev["success"] is False

    # registered suites survive a restart
    daemon.stop()
    with open(daemon.log_path, "ab") as log:
        daemon.proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", str(daemon.config_path)],
                                       cwd=REPO, env=daemon_env(), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT)
    daemon.wait_serving()
    with daemon.channel() as ch:
        again = test_pb2_grpc.TestStub(ch).AddTestSuite(test_pb2.AddTestSuiteRequest(
            suite=[suite("gone", "Away", "ok_x")], exec_service="unix:/nonexistent/ut.sock"), timeout=10)
        assert dict(again.succeeded) == {"gone.Away.ok_x": False}
