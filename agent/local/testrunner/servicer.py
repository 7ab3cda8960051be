"""``test.v1.Test``: thin adapter over :class:`agent.local.testrunner.runner.SuiteRunner` (parigot errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from agent.core.app import App
from agent.local.jobs.decoding import strict_handler
from agent.local.parigot import abort_parigot, parigot_method
from agent.local.testrunner.errors import RunnerError
from agent.local.testrunner.runner import SuiteRunner
from proto.parigot.test.v1 import test_pb2, test_pb2_grpc

if TYPE_CHECKING:
    from agent.core.services import Service

SERVICE_NAME = "test.v1.Test"


class TestService(test_pb2_grpc.TestServicer):
    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, runner: SuiteRunner) -> None:
        self.runner = runner

    @parigot_method
    async def AddTestSuite(  # noqa: N802 - gRPC method names
        self, request: test_pb2.AddTestSuiteRequest,
        context: grpc.aio.ServicerContext[test_pb2.AddTestSuiteRequest, test_pb2.AddTestSuiteResponse],
    ) -> test_pb2.AddTestSuiteResponse:
        return test_pb2.AddTestSuiteResponse(succeeded=self.runner.add(request))

    @parigot_method
    async def Start(  # noqa: N802
        self, request: test_pb2.StartRequest,
        context: grpc.aio.ServicerContext[test_pb2.StartRequest, test_pb2.StartResponse],
    ) -> test_pb2.StartResponse:
        failed, count = await self.runner.start(request.filter_suite, request.filter_name, request.parallel)
        return test_pb2.StartResponse(regex_failed=failed, num_test=count)


def runner_for(app: App) -> SuiteRunner:
    if app.suite_runner is None:
        app.suite_runner = SuiteRunner(app.config.paths.state_dir, lambda: app.queue)
    return app.suite_runner


def test_service(app: App) -> Service:
    """``test.v1.Test`` as an agent.core.services.Service (node-local endpoint + main listeners)."""
    from agent.core.services import Service

    servicer = TestService(runner_for(app))
    handler = strict_handler(SERVICE_NAME, servicer, _unmarshal_error)
    return Service(SERVICE_NAME, lambda s: s.add_generic_rpc_handlers((handler,)))


async def _unmarshal_error(context: grpc.aio.ServicerContext[Any, Any], message: str) -> None:
    await abort_parigot(context, RunnerError("UnmarshalError", message))


test_service.__test__ = False  # type: ignore[attr-defined]
