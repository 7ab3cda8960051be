"""``cellar jobs ls|show|logs``: the sky job agent's jobs (submitted with ``/Agent/RunJob``).

``ls`` and ``show`` read ``cellar.v1.Jobs``; ``logs`` looks the job's cell up and prints its output
exactly like ``cellar logs <cell>/job`` (same options).
"""

from __future__ import annotations

import shlex
from typing import Any

import click

from agent.cli.connection import Target
from agent.cli.human import rfc3339_ns
from agent.cli.logs import logs as logs_command
from agent.cli.output import emit_object, emit_rows
from proto.cellar.v1 import jobs_pb2, jobs_pb2_grpc


def _exit(job: jobs_pb2.JobInfo) -> str | None:
    if job.HasField("signal"):
        return f"signal {job.signal}" + (" (OOM)" if job.oom_killed else "")
    if job.HasField("exit_code"):
        return f"code {job.exit_code}"
    return None


def job_row(job: jobs_pb2.JobInfo) -> dict[str, Any]:
    return {
        "job": job.job_id,
        "code": job.code,
        "phase": job.phase,
        "exit": _exit(job),
        "cell": job.cell_name or None,
        "owner": job.owner,
        "created": rfc3339_ns(job.created_at_ns) if job.created_at_ns else None,
        "error": job.error or None,
    }


def job_detail(job: jobs_pb2.JobInfo) -> dict[str, Any]:
    out = job_row(job)
    out.update({
        "executable": job.executable_name or None,
        "command": shlex.join(job.argv) or None,
        "python_version": job.python_version or None,
        "work_dir": job.work_dir,
        "staged": [f"{f.name}={f.file_id}" for f in job.staged],
        "started": rfc3339_ns(job.started_at_ns) if job.started_at_ns else None,
        "ended": rfc3339_ns(job.ended_at_ns) if job.ended_at_ns else None,
    })
    return out


def _get(target: Target, job_id: str) -> jobs_pb2.JobInfo:
    with target.channel() as channel:
        return jobs_pb2_grpc.JobsStub(channel).Get(jobs_pb2.GetJobRequest(job_id=job_id), timeout=target.timeout)


@click.group()
def jobs() -> None:
    """Jobs of the sky job agent (/Agent/RunJob): list, describe, read their logs."""


@jobs.command("ls")
@click.pass_obj
def ls(target: Target) -> None:
    """Every job on this node, oldest first."""
    with target.channel() as channel:
        reply = jobs_pb2_grpc.JobsStub(channel).List(jobs_pb2.ListJobsRequest(), timeout=target.timeout)
    emit_rows(target.output, [job_row(j) for j in reply.jobs],
              ["job", "code", "phase", "exit", "cell", "owner", "created", "error"])


@jobs.command("show")
@click.argument("job_id")
@click.pass_obj
def show(target: Target, job_id: str) -> None:
    """One job: phase, command, staged files, exit status."""
    emit_object(target.output, job_detail(_get(target, job_id)))


@jobs.command("logs", context_settings={"ignore_unknown_options": False})
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="keep streaming until the job exits")
@click.option("--tail", type=click.IntRange(0, 2**32), help="only the last N lines")
@click.option("--timestamps", "-t", is_flag=True, help="prefix each line with its RFC 3339 timestamp")
@click.pass_context
def job_logs(ctx: click.Context, job_id: str, follow: bool, tail: int | None, timestamps: bool) -> None:
    """The job's stdout and stderr (``cellar logs <cell>/job``)."""
    job = _get(ctx.obj, job_id)
    if not job.cell_name:
        raise click.ClickException(f"job {job_id} has not started yet ({job.phase})")
    ctx.invoke(logs_command, name=f"{job.cell_name}/{job.executable_name}", follow=follow, tail=tail,
               timestamps=timestamps)
