"""cellar's read views of fronted state (``cellar.v1.Jobs``, ``cellar.v1.Queues``) and ``[front]`` names
that cellard does not serve, against REAL cellards.

A view can be fronted like any other service (it then lists the upstream's jobs/queues). While the
service it describes is fronted and the view is not, the view refuses with FAILED_PRECONDITION
naming the upstream, rather than listing local state nobody uses. A ``[front]`` table that no
served service would use is a config error, never silently ignored.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent.forward import NOT_FRONTABLE, NOT_SERVED, _load_descriptors
from cells.config import RuntimeConfig
from proto.cellar.v1 import jobs_pb2, jobs_pb2_grpc, queues_pb2, queues_pb2_grpc
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
from proto.sky import AgentService_pb2_grpc, Common_pb2, RunJob_pb2
from tests.agent.local.jobs.test_jobs_e2e import poll_until, run_job, write_file
from tests.support.cellard import REPO, Cellard, StartCellard, base_config, merge, new_base, toml_dumps
from tests.support.cleanup import destroy_runtime

pytestmark = pytest.mark.root

NO_LOCAL_TCP = {"local": {"tcp_listen": ""}}


def fronting(upstream: Cellard, *names: str) -> dict[str, object]:
    return {**NO_LOCAL_TCP, "front": {name: {"upstream": "unix:" + upstream.socket} for name in names}}


def cellar(daemon: Cellard, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CELLAR_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "agent.cli", "--addr", daemon.socket, *args],
                          capture_output=True, text=True, env=env, timeout=60, cwd=REPO)


def test_fronted_views_list_the_upstreams_jobs_and_queues(cellard_factory: StartCellard) -> None:
    upstream = cellard_factory(NO_LOCAL_TCP)
    front = cellard_factory(fronting(upstream, "Agent", "queue.v1.Queue", "cellar.v1.Jobs", "cellar.v1.Queues"))
    with front.channel() as fch, upstream.channel() as uch:
        run_sh = write_file(uch, "/parigot/app/views/run.sh", b"exit 4\n")
        agent = AgentService_pb2_grpc.AgentStub(fch)
        assert run_job(agent, "view-job", files=[Common_pb2.FileId(uuid=run_sh)]).code == RunJob_pb2.WAIT
        assert poll_until(agent, "view-job", RunJob_pb2.DONE).exit_code == 4
        queue_pb2_grpc.QueueStub(fch).CreateQueue(queue_pb2.CreateQueueRequest(queue_name="viewq"), timeout=10)

        jobs = jobs_pb2_grpc.JobsStub(fch)
        assert [j.job_id for j in jobs.List(jobs_pb2.ListJobsRequest(), timeout=10).jobs] == ["view-job"]
        got = jobs.Get(jobs_pb2.GetJobRequest(job_id="view-job"), timeout=10)
        assert (got.exit_code, got.work_dir.startswith(upstream.config["paths"]["state_dir"])) == (4, True)
        with pytest.raises(grpc.RpcError) as missing:
            jobs.Get(jobs_pb2.GetJobRequest(job_id="nope"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        queues = queues_pb2_grpc.QueuesStub(fch).List(queues_pb2.ListQueuesRequest(), timeout=10).queues
        assert "viewq" in [q.name for q in queues]
    assert "viewq" in cellar(front, "queue", "ls").stdout
    assert "view-job" in cellar(front, "jobs", "ls").stdout
    assert not (Path(front.config["paths"]["state_dir"]) / "jobs" / "view-job").exists()
    assert {"cellar.v1.Jobs", "cellar.v1.Queues"} <= {e["service"] for e in front.events("front.upstream")}


def test_views_of_fronted_state_refuse_naming_the_upstream(cellard_factory: StartCellard) -> None:
    upstream = cellard_factory(NO_LOCAL_TCP)
    front = cellard_factory(fronting(upstream, "Agent", "queue.v1.Queue"))
    where = "unix:" + upstream.socket
    with front.channel() as fch:
        queue_pb2_grpc.QueueStub(fch).CreateQueue(queue_pb2.CreateQueueRequest(queue_name="upq"), timeout=10)
        jobs = jobs_pb2_grpc.JobsStub(fch)
        calls = [
            lambda: jobs.List(jobs_pb2.ListJobsRequest(), timeout=10),
            lambda: jobs.Get(jobs_pb2.GetJobRequest(job_id="x"), timeout=10),
            lambda: queues_pb2_grpc.QueuesStub(fch).List(queues_pb2.ListQueuesRequest(), timeout=10),
        ]
        for call, what, view in zip(calls, ("jobs", "jobs", "queues"), ("Jobs", "Jobs", "Queues"), strict=True):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = err.value.details() or ""
            assert details.startswith(f"{what} are forwarded to {where}") and f'front."cellar.v1.{view}"' in details
    with upstream.channel() as uch:  # the queue went upstream, as the refusal says
        queues = queues_pb2_grpc.QueuesStub(uch).List(queues_pb2.ListQueuesRequest(), timeout=10).queues
        assert "upq" in [q.name for q in queues]
    for args in (("jobs", "ls"), ("queue", "ls")):
        result = cellar(front, *args)
        assert result.returncode == 1 and "FAILED_PRECONDITION" in result.stderr and where in result.stderr


def test_front_of_a_service_cellard_does_not_serve_is_a_config_error(run_cellard) -> None:  # type: ignore[no-untyped-def]
    """Found before anything starts: exit 2, one line naming the table; no supervisor."""
    base = new_base(0o700)
    try:
        cfg = base_config(base, f"cellar-test-{secrets.token_hex(4)}")
        for name in ("test.v1.UnderTest", "runtime.Spawn", "pb.WorkerSaver", "cellar.v1.Machines"):
            text = toml_dumps(merge(cfg, {"front": {name: {"upstream": "unix:/x"}}}))
            result = run_cellard(config=text)
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and f'front."{name}"' in lines[0] and "not serve" in lines[0], lines
        assert not (base / "state" / "supervisor.log").exists()
    finally:
        paths, cells = cfg["paths"], cfg["cells"]
        destroy_runtime(RuntimeConfig(state_dir=paths["state_dir"], run_dir=paths["run_dir"], log_dir=paths["log_dir"],
                                      cgroup_root_name=cells["cgroup_root"], netns_prefix=cells["netns_prefix"]))
        shutil.rmtree(base, ignore_errors=True)


def test_every_service_cellard_serves_is_frontable(cellard_factory: StartCellard) -> None:
    """agent.forward.NOT_SERVED is exactly what cellard knows but does not serve (saver enabled: all of it)."""
    daemon = cellard_factory({"saver": {"enabled": True}})
    with daemon.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        served = {s.name for r in replies for s in r.list_services_response.service}
    _load_descriptors()  # every generated module imported: every service cellard knows
    known = {s.full_name for name, module in list(sys.modules.items())
             if name.startswith("proto.") and name.endswith("_pb2")
             for s in module.DESCRIPTOR.services_by_name.values()}
    assert known >= NOT_SERVED
    assert known - NOT_SERVED == served - NOT_FRONTABLE
