"""Run selected tests through the queue ``test_queue`` and report each suite (no servicer code here).

Start selects tests (filters below), sends one ``QueuePayload{name: <suite>, func_name: <function>}``
per test to the node's durable queue ``test_queue`` (created on first use) in the runner's own scope
:data:`RUNNER_SCOPE`, which no caller can have: a workload (or the host) that locates ``test_queue``
finds its own queue of that name, never the runner's, so it cannot drain it. Start returns how many it
queued. One worker task drains the queue: for each message it calls ``test.v1.UnderTest/Exec`` on the
suite's exec service (``ExecRequest{package, service, name: <function>}``), marks the message done,
and when every test a Start selected for a suite has a result, calls
``test.v1.MethodCallSuite/SuiteReport`` on the same service with the merged result. ``parallel``
runs up to :data:`PARALLEL` Exec calls at once instead of one by one.

Filters (parigot's, with its bug fixed): ``filter_suite`` matches suite names ``<package>.<service>``,
``filter_name`` matches test names ``<package>.<service>.<function>``; they are mutually exclusive
(both set -> RegexpFailed status); neither selects every test. Regexes are RE2 (Go's ``regexp``
syntax, as parigot used; linear time, so no client regex can stall cellard), matched anywhere in the
name like Go's ``MatchString``; one that does not compile answers ``regex_failed = true``.

A failed Exec (unreachable service, error status, deadline) is a failed test whose detail says why;
a report that cannot be delivered is logged (``test.report_undelivered``) and kept in
:attr:`SuiteRunner.reports`. Messages left in the queue by a cellard that died are dropped by the
next worker (their Start's report went with it): Start again to re-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import re2
import structlog
from google.protobuf import any_pb2

from agent.local.queue.store import Outgoing
from agent.local.testrunner.errors import RunnerError
from agent.local.testrunner.suites import Suite, SuiteRegistry
from proto.parigot.test.v1 import test_pb2

log = structlog.get_logger("agent.local.testrunner")

QUEUE_NAME = "test_queue"
#: The queue scope of the runner's ``test_queue``: callers' scopes are ``host``, ``user:<uid>`` or ``cell:<name>``.
RUNNER_SCOPE = "cellar:testrunner"
PARALLEL = 8
MAX_REGEX = 1024
EXEC_TIMEOUT_S = 60.0
REPORT_TIMEOUT_S = 10.0
#: A Start whose tests stop arriving (e.g. lost with a cellard that died) is ended after this long
#: without progress: the missing tests fail with "never delivered".
STALL_S = 2 * EXEC_TIMEOUT_S + 60
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a client's bad regex is an answer, not a line in cellard's stderr
_RE2_OPTIONS.max_mem = 8 << 20


def compile_filter(pattern: str) -> Any:
    """The compiled RE2 pattern, or None when it does not compile (or is too long)."""
    if len(pattern) > MAX_REGEX:
        return None
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return None


def select(suites: list[Suite], filter_suite: str, filter_name: str) -> list[tuple[Suite, str]] | None:
    """The selected (suite, function) pairs in registration order; None when a regex is bad."""
    if filter_suite and filter_name:
        raise RunnerError("RegexpFailed", "filter_suite and filter_name are mutually exclusive")
    regex = compile_filter(filter_suite or filter_name) if (filter_suite or filter_name) else None
    if (filter_suite or filter_name) and regex is None:
        return None
    match = regex.search if regex is not None else (lambda _name: True)
    out = []
    for suite in suites:
        if filter_suite and not match(suite.name):
            continue
        for fn in suite.functions:
            if filter_name and not match(f"{suite.name}.{fn}"):
                continue
            out.append((suite, fn))
    return out


@dataclass
class SuiteResult:
    suite: Suite
    pending: int
    report: test_pb2.SuiteReportRequest = field(default_factory=test_pb2.SuiteReportRequest)


@dataclass
class Run:
    """What one Start is waiting for: per suite name, its result so far."""

    suites: dict[str, SuiteResult]
    wanted: dict[tuple[str, str], int]  # (suite, function) -> queued and not yet executed
    progress_at: float = field(default_factory=time.monotonic)  # last time one of its tests finished


class SuiteRunner:
    def __init__(self, state_dir: str, queue: Callable[[], Any]) -> None:
        self.registry = SuiteRegistry(state_dir)
        self._queue = queue  # -> agent.local.queue.store.QueueStore
        self._runs: list[Run] = []
        self._in_flight: set[tuple[int, int]] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._worker: asyncio.Task[None] | None = None
        self.reports: dict[str, test_pb2.SuiteReportRequest] = {}  # last report per suite
        self.exec_timeout_s = EXEC_TIMEOUT_S
        self.stall_s = STALL_S

    def add(self, request: test_pb2.AddTestSuiteRequest) -> dict[str, bool]:
        infos = [(s.package_path, s.service, list(s.function_name)) for s in request.suite]
        return self.registry.add(infos, request.exec_package, request.exec_service)

    async def start(self, filter_suite: str, filter_name: str, parallel: bool) -> tuple[bool, int]:
        """(regex_failed, number of tests queued)."""
        selected = select(list(self.registry.suites.values()), filter_suite, filter_name)
        if selected is None:
            return True, 0
        if not selected:
            return False, 0
        store = self._queue()
        if store is None:
            raise RunnerError("Queue", "the node's queue service is not available")
        qid = await store.run(_test_queue, store)
        outgoing = [Outgoing(payload=_payload(suite.name, fn)) for suite, fn in selected]
        ids = await store.run(store.send, RUNNER_SCOPE, qid, outgoing)
        if any(i is None for i in ids):
            raise RunnerError("SendFailed", "the test queue refused a message")
        run = Run({}, {})
        for suite, fn in selected:
            result = run.suites.setdefault(suite.name, SuiteResult(suite, 0))
            result.pending += 1
            run.wanted[(suite.name, fn)] = run.wanted.get((suite.name, fn), 0) + 1
        for result in run.suites.values():
            result.report.package, result.report.service = result.suite.package, result.suite.service
        self._runs.append(run)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(qid, PARALLEL if parallel else 1))
        log.info("test.started", tests=len(selected), suites=sorted(run.suites), parallel=parallel)
        return False, len(selected)

    # -- the worker ---------------------------------------------------------------------------------------
    async def _drain(self, qid: tuple[int, int], width: int) -> None:
        store = self._queue()
        running: set[asyncio.Task[None]] = set()
        try:
            while self._runs or running:
                messages = await store.run(store.receive, RUNNER_SCOPE, qid, max(width - len(running), 1)) if len(running) < width else []
                fresh = [m for m in messages if m.id not in self._in_flight]
                for msg in fresh:
                    self._in_flight.add(msg.id)
                    task = asyncio.create_task(self._one(store, qid, msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await self._end_stalled()
                if not fresh:
                    if running:
                        await asyncio.wait(running, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                    elif self._runs:
                        await asyncio.sleep(0.05)  # queued messages not visible yet (redelivery timeout)
        except Exception as exc:  # the runner stops, cellard does not
            log.error("test.worker_failed", error=str(exc), exc_info=exc)
            self._runs.clear()

    async def _one(self, store: Any, qid: tuple[int, int], msg: Any) -> None:
        try:
            payload = test_pb2.QueuePayload()
            any_msg = any_pb2.Any.FromString(msg.payload)
            if not any_msg.Unpack(payload):
                raise ValueError("not a QueuePayload")
            key = (payload.name, payload.func_name)
            run = next((r for r in self._runs if r.wanted.get(key)), None)
            if run is not None:
                run.wanted[key] -= 1
                result = run.suites[payload.name]
                await self._exec(result, payload.func_name)
                run.progress_at = time.monotonic()
                await self._finished(run, result, 1)
            else:
                log.info("test.dropped_message", suite=payload.name, function=payload.func_name)
        except Exception as exc:
            log.warning("test.bad_message", error=str(exc))
        finally:
            with contextlib.suppress(Exception):
                await store.run(store.mark_done, RUNNER_SCOPE, qid, [msg.id])
            self._in_flight.discard(msg.id)

    async def _finished(self, run: Run, result: SuiteResult, count: int) -> None:
        result.pending -= count
        if result.pending == 0:
            await self._report(result)
        if all(r.pending == 0 for r in run.suites.values()) and run in self._runs:
            self._runs.remove(run)

    async def _end_stalled(self) -> None:
        now = time.monotonic()
        for run in [r for r in self._runs if now - r.progress_at > self.stall_s]:
            log.warning("test.run_stalled", missing=sum(run.wanted.values()))
            for (suite_name, fn), missing in list(run.wanted.items()):
                if not missing:
                    continue
                run.wanted[(suite_name, fn)] = 0
                result = run.suites[suite_name]
                result.report.test_success[fn] = False
                result.report.num_failure += missing
                result.report.detail[fn].CopyFrom(test_pb2.ComparisonResult(
                    name=fn, success=False, error_message="never delivered from test_queue"))
                await self._finished(run, result, missing)
            if run in self._runs:  # in-flight tests of this run still report into it when they end
                self._runs.remove(run)

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = grpc.aio.insecure_channel(target)
        return channel

    async def _exec(self, result: SuiteResult, fn: str) -> None:
        suite, report = result.suite, result.report
        request = test_pb2.ExecRequest(package=suite.package, service=suite.service, name=fn)
        try:
            call = self._channel(suite.exec_target).unary_unary(
                "/test.v1.UnderTest/Exec",
                request_serializer=test_pb2.ExecRequest.SerializeToString,
                response_deserializer=test_pb2.ExecResponse.FromString,
            )
            resp = await call(request, timeout=self.exec_timeout_s)
        except grpc.aio.AioRpcError as exc:
            report.test_success[fn] = False
            report.num_failure += 1
            report.detail[fn].CopyFrom(test_pb2.ComparisonResult(
                name=fn, success=False, error_message=f"Exec failed: {exc.code().name}: {exc.details()}"))
            return
        if resp.skipped:
            report.test_skip[fn] = True
            report.num_skip += 1
        else:
            report.test_success[fn] = resp.success
            if resp.success:
                report.num_success += 1
            else:
                report.num_failure += 1
        failed = next((d for d in resp.detail if not d.success), None)
        if failed is not None or (resp.detail and not resp.success):
            report.detail[fn].CopyFrom(failed or resp.detail[0])

    async def _report(self, result: SuiteResult) -> None:
        report = result.report
        report.success = report.num_failure == 0
        self.reports[result.suite.name] = report
        log.info("test.suite_report", suite=result.suite.name, success=report.success, passed=report.num_success,
                 failed=report.num_failure, skipped=report.num_skip)
        try:
            call = self._channel(result.suite.exec_target).unary_unary(
                "/test.v1.MethodCallSuite/SuiteReport",
                request_serializer=test_pb2.SuiteReportRequest.SerializeToString,
                response_deserializer=test_pb2.SuiteReportResponse.FromString,
            )
            await call(report, timeout=REPORT_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            log.warning("test.report_undelivered", suite=result.suite.name, code=exc.code().name, details=exc.details())


def _test_queue(store: Any) -> tuple[int, int]:
    """The id of the runner's ``test_queue``, created on first use (runs on the queue store's thread)."""
    from agent.local.queue.errors import QueueError

    try:
        return store.locate(RUNNER_SCOPE, QUEUE_NAME)  # type: ignore[no-any-return]
    except QueueError:
        try:
            return store.create(RUNNER_SCOPE, QUEUE_NAME)  # type: ignore[no-any-return]
        except QueueError:
            return store.locate(RUNNER_SCOPE, QUEUE_NAME)  # type: ignore[no-any-return]


def _payload(suite: str, fn: str) -> bytes:
    packed = any_pb2.Any()
    packed.Pack(test_pb2.QueuePayload(name=suite, func_name=fn))
    return packed.SerializeToString()
