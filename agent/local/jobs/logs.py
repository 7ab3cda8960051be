"""``cellar.v1.Logs`` on the node-local endpoint: a job's submitter reads (and follows) the logs of
its own jobs, and nothing else.

A caller may name only the cell of a job its scope owns (``jobs/<label>``, as RunJob answers it);
any other cell, or Purge, is PERMISSION_DENIED / UNIMPLEMENTED. The reading itself is the main
listeners' :class:`agent.runtime.observe.LogsService`. Only the node-local endpoint serves this;
on the main listeners Logs stays the operator's (role-checked) API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from agent.core.app import App
from agent.core.status import maps_errors
from agent.local.jobs.runner import NotYourJob
from agent.local.jobs.servicer import _caller, runner_for
from agent.runtime.observe import LogsService
from proto.cellar.v1 import logs_pb2, logs_pb2_grpc

if TYPE_CHECKING:
    from agent.core.services import Service


class JobLogsService(logs_pb2_grpc.LogsServicer):
    def __init__(self, app: App) -> None:
        self.runner = runner_for(app)
        self.logs = LogsService(app)

    @maps_errors
    async def Read(  # noqa: N802
        self, request: logs_pb2.ReadLogsRequest,
        context: grpc.aio.ServicerContext[logs_pb2.ReadLogsRequest, logs_pb2.LogBatch],
    ) -> AsyncIterator[logs_pb2.LogBatch]:
        scope, _may_run = _caller(context)
        if not self.runner.owns(scope, request.cell_name):
            raise NotYourJob(f"cell {request.cell_name[:256]!r}: only the logs of your own jobs are readable here")
        async for batch in self.logs.Read(request, context):
            yield batch


def job_logs_service(app: App) -> Service:
    """JobLogsService as an agent.core.services.Service (the node-local endpoint only)."""
    from agent.core.services import Service

    servicer = JobLogsService(app)
    return Service("cellar.v1.Logs", lambda s: logs_pb2_grpc.add_LogsServicer_to_server(servicer, s))
