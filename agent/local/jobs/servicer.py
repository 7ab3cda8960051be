"""``Agent`` (sky job agent, proto2, no package): thin adapter over :class:`agent.local.jobs.runner.JobRunner`.

Who submits matters: a job id names a job of the caller's scope (``cell:<name>``, ``user:<uid>`` or
``host``): the same id from another scope is another job. The scope alone stages into it (before it
is submitted) and polls it, and stages only files of its own tree. Jobs run as root inside their cell (the work directory lives under cellard's 0700
state_dir), so only a caller that is root already may submit or poll one on the node-local endpoint:
a caller whose uid is not 0 gets PERMISSION_DENIED from every RunJob (it may still stage). On
cellard's main listeners an operator acts for the host scope (an admin may name another with
``cellar-scope``); cellar.v1.Jobs there shows every job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from agent.core.app import App
from agent.core.status import maps_errors
from agent.local.jobs.decoding import strict_handler
from agent.local.jobs.runner import JobRunner, NotYourJob
from agent.local.jobs.store import EXITED, FAILED, RUNNING, JobRecord
from cells.errors import InvalidArgument
from proto.cellar.v1 import jobs_pb2, jobs_pb2_grpc
from proto.sky import AgentService_pb2, AgentService_pb2_grpc, RunJob_pb2, StageInFile_pb2

if TYPE_CHECKING:
    from agent.core.services import Service

_CODE = {RUNNING: RunJob_pb2.RUN, EXITED: RunJob_pb2.DONE, FAILED: RunJob_pb2.DONE}


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, bool]:
    """(scope, may run jobs); see the module docstring."""
    try:
        from agent.auth.identity import caller_identity, caller_scope
    except ImportError:  # the node-local endpoint is not built in: the host it is
        return "host", True
    try:
        scope = caller_scope(context)  # an admin on the main listeners may name a cell (cellar-scope)
    except ValueError as exc:
        raise InvalidArgument("cellar-scope", str(exc)) from None
    except PermissionError as exc:
        raise NotYourJob(str(exc)) from None
    ident = caller_identity(context)
    return scope, ident.transport == "main" or ident.uid == 0


def run_job_response(record: JobRecord) -> RunJob_pb2.RunJobResponse:
    out = RunJob_pb2.RunJobResponse(code=_CODE.get(record.phase, RunJob_pb2.WAIT), phase=record.phase)
    if record.exit_code is not None:
        out.exit_code = record.exit_code
    if record.signal is not None:
        out.signal = record.signal
    if record.done:
        out.oom_killed = record.oom_killed
    if record.error:
        out.error = record.error
    if record.cell:
        out.cell_name, out.executable_name = record.cell, record.executable
    if record.started_at_ns:
        out.started_at_ns = record.started_at_ns
    if record.ended_at_ns:
        out.ended_at_ns = record.ended_at_ns
    return out


class AgentService(AgentService_pb2_grpc.AgentServicer):
    def __init__(self, app: App, runner: JobRunner | None = None) -> None:
        self.runner = runner or runner_for(app)

    @maps_errors
    async def StageInFiles(  # noqa: N802 - gRPC method names
        self, request: StageInFile_pb2.StageInFilesRequest,
        context: grpc.aio.ServicerContext[StageInFile_pb2.StageInFilesRequest, StageInFile_pb2.StageInFilesResponse],
    ) -> StageInFile_pb2.StageInFilesResponse:
        scope, _may_run = _caller(context)
        staged = await self.runner.stage(request.job.uuid, [f.uuid for f in request.files], scope)
        out = StageInFile_pb2.StageInFilesResponse()
        for uuid in staged:
            out.success_files.add().file.uuid = uuid
        return out

    @maps_errors
    async def RunJob(  # noqa: N802
        self, request: RunJob_pb2.RunJobRequest,
        context: grpc.aio.ServicerContext[RunJob_pb2.RunJobRequest, RunJob_pb2.RunJobResponse],
    ) -> RunJob_pb2.RunJobResponse:
        scope, may_run = _caller(context)
        version = next((r.python_version for r in request.requirements if r.python_version), "")
        record = await self.runner.run(request.job.uuid, [f.uuid for f in request.files], version, scope,
                                       may_submit=may_run)
        return run_job_response(record)


def runner_for(app: App) -> JobRunner:
    """The one JobRunner of ``app`` (shared by the main server and the node-local endpoint)."""
    if app.job_runner is None:
        app.job_runner = JobRunner(app.runtime, lambda: app.files, app.config.paths.state_dir,
                                   models=lambda: app.scaleout.models if app.scaleout is not None else None,
                                   limits=app.config.jobs)
    return app.job_runner


def agent_service(app: App) -> Service:
    """``Agent`` as an agent.core.services.Service (node-local endpoint + main listeners)."""
    from agent.core.services import Service

    servicer = AgentService(app)
    handler = strict_handler(AgentService_pb2.DESCRIPTOR.services_by_name["Agent"].full_name, servicer)
    return Service("Agent", lambda s: s.add_generic_rpc_handlers((handler,)))


def job_info(record: JobRecord, work_dir: str) -> jobs_pb2.JobInfo:
    out = jobs_pb2.JobInfo(
        job_id=record.id, phase=record.phase, code=RunJob_pb2.ResponseCode.Name(run_job_response(record).code),
        owner=record.owner, cell_name=record.cell, executable_name=record.executable if record.cell else "",
        work_dir=work_dir, argv=record.argv, oom_killed=record.oom_killed, error=record.error,
        created_at_ns=record.created_at_ns, started_at_ns=record.started_at_ns, ended_at_ns=record.ended_at_ns,
        python_version=record.python_version,
    )
    for name, fid in sorted(record.staged.items()):
        out.staged.add(name=name, file_id=fid)
    if record.exit_code is not None:
        out.exit_code = record.exit_code
    if record.signal is not None:
        out.signal = record.signal
    return out


class JobsService(jobs_pb2_grpc.JobsServicer):
    """``cellar.v1.Jobs``: the operator's read view (main listeners only)."""

    def __init__(self, app: App) -> None:
        self.runner = runner_for(app)

    @maps_errors
    async def List(  # noqa: N802
        self, request: jobs_pb2.ListJobsRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.ListJobsRequest, jobs_pb2.ListJobsResponse],
    ) -> jobs_pb2.ListJobsResponse:
        records = await self.runner.all()
        return jobs_pb2.ListJobsResponse(jobs=[job_info(r, self.runner.store.work_dir(r.label)) for r in records])

    @maps_errors
    async def Get(  # noqa: N802
        self, request: jobs_pb2.GetJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.GetJobRequest, jobs_pb2.JobInfo],
    ) -> jobs_pb2.JobInfo:
        record = await self.runner.get(request.job_id)
        return job_info(record, self.runner.store.work_dir(record.label))


def jobs_service(app: App) -> Service:
    """``cellar.v1.Jobs`` as an agent.core.services.Service (main listeners only)."""
    from agent.core.services import Service

    servicer = JobsService(app)
    return Service("cellar.v1.Jobs", lambda s: jobs_pb2_grpc.add_JobsServicer_to_server(servicer, s))
