"""The worker ends a Start whose queued tests never come back (here taken from the runner's private
``test_queue`` by the test itself): the missing tests fail with a reason and the suite is still reported.
In-process: the real QueueStore in a temp dir, an exec service that does not exist."""

from __future__ import annotations

import asyncio
import tempfile

from agent.local.queue.store import QueueStore
from agent.local.testrunner.runner import QUEUE_NAME, RUNNER_SCOPE, SuiteRunner
from proto.parigot.test.v1 import test_pb2


def test_stolen_tests_fail_and_the_suite_is_reported() -> None:
    async def scenario(tmp: str) -> test_pb2.SuiteReportRequest:
        store = QueueStore(f"{tmp}/queue.db", visibility_timeout_s=3600).open()
        try:
            runner = SuiteRunner(tmp, lambda: store)
            runner.stall_s = 0.3
            runner.add(test_pb2.AddTestSuiteRequest(
                suite=[test_pb2.SuiteInfo(package_path="p", service="S", function_name=["a", "b"])],
                exec_service="unix:/nonexistent/ut.sock"))
            qid = store.create(RUNNER_SCOPE, QUEUE_NAME)
            store.receive(RUNNER_SCOPE, qid, 1000)  # nothing yet; now queue and steal before the worker sees them
            runner._worker = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # hold the worker
            assert await runner.start("", "", False) == (False, 2)
            assert len(store.receive(RUNNER_SCOPE, qid, 1000)) == 2  # a thief; hidden for an hour
            runner._worker = None
            await runner.start("^nomatch$", "", False)  # a Start that selects nothing starts no worker
            runner._worker = asyncio.create_task(runner._drain(qid, 1))
            await asyncio.wait_for(runner._worker, 10)
            return runner.reports["p.S"]
        finally:
            store.close()

    with tempfile.TemporaryDirectory(prefix="cellar-tr-") as tmp:
        report = asyncio.run(scenario(tmp))
    assert (report.success, report.num_failure, report.num_success) == (False, 2, 0)
    assert set(report.test_success) == {"a", "b"}
    assert "never delivered" in report.detail["a"].error_message
