"""The sky job agent end to end against a REAL cellard: files written through file.v1.File, staged
by id, run in a cell of their own, polled WAIT -> RUN -> DONE, logs and exit code readable, and a
cellard restart (SIGKILL) in the middle keeps answering polls.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from agent.local.jobs.ids import format_file_id, job_label
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, logs_pb2, logs_pb2_grpc
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.scaleout import scaleout_pb2, scaleout_pb2_grpc
from proto.sky import AgentService_pb2_grpc, Common_pb2, RunJob_pb2, StageInFile_pb2
from tests.support.cellard import REPO, Cellard, StartCellard, daemon_env

pytestmark = pytest.mark.root

LOCAL = {"local": {"tcp_listen": ""}}


def write_file(channel: grpc.Channel, path: str, data: bytes) -> str:
    """Create + Write (2048-byte pieces) + Close through file.v1.File; the FileId string."""
    files = file_pb2_grpc.FileStub(channel)
    created = files.Create(file_pb2.CreateRequest(path=path), timeout=10)
    for i in range(0, len(data), 2048):
        files.Write(file_pb2.WriteRequest(id=created.id, buf=data[i:i + 2048]), timeout=10)
    files.Close(file_pb2.CloseRequest(id=created.id), timeout=10)
    return format_file_id(created.id.high, created.id.low)


def run_job(agent: AgentService_pb2_grpc.AgentStub, job: str, **kw: object) -> RunJob_pb2.RunJobResponse:
    return agent.RunJob(RunJob_pb2.RunJobRequest(job=Common_pb2.JobId(uuid=job), **kw), timeout=30)  # type: ignore[arg-type]


def poll_until(agent: AgentService_pb2_grpc.AgentStub, job: str, code: int, timeout: float = 30) -> RunJob_pb2.RunJobResponse:
    deadline = time.monotonic() + timeout
    while True:
        resp = run_job(agent, job)
        if resp.code == code:
            return resp
        assert time.monotonic() < deadline, f"job {job} never reached {code}: {resp}"
        time.sleep(0.05)


def restart(daemon: Cellard) -> None:
    with open(daemon.log_path, "ab") as log:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(daemon.config_path)],
            cwd=REPO, env=daemon_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    daemon.wait_serving()


def test_job_staged_and_run_end_to_end(cellard_factory: StartCellard) -> None:
    daemon = cellard_factory(LOCAL)
    state = Path(daemon.config["paths"]["state_dir"])
    job = "3F2A9C1E-0000-4000-8000-00000000JOB1"  # not a DNS label: the cell gets a hashed label
    label = job_label(job)
    work = state / "jobs" / label / "work"
    script = b"echo hello from $CELLAR_JOB_ID; echo to-stderr >&2; pwd; cat data.txt\n" \
             b"while [ ! -e go ]; do sleep 0.02; done; exit 7\n"
    with daemon.channel() as ch:
        agent = AgentService_pb2_grpc.AgentStub(ch)
        run_id = write_file(ch, "/parigot/app/jobs/one/run.sh", script)
        data_id = write_file(ch, "/parigot/app/jobs/one/data.txt", b"x" * 5000 + b"\n")
        unknown = "66" + "0" * 30
        req = StageInFile_pb2.StageInFilesRequest(job=Common_pb2.JobId(uuid=job), files=[
            Common_pb2.FileId(uuid=run_id), Common_pb2.FileId(uuid=data_id.upper()),
            Common_pb2.FileId(uuid=unknown), Common_pb2.FileId(uuid="not-an-id")])
        staged = agent.StageInFiles(req, timeout=30)
        assert [s.file.uuid for s in staged.success_files] == [run_id, data_id.upper()]
        again = agent.StageInFiles(req, timeout=30)  # idempotent
        assert [s.file.uuid for s in again.success_files] == [run_id, data_id.upper()]
        assert sorted(os.listdir(work)) == ["data.txt", "run.sh"]
        assert (work / "run.sh").read_bytes() == script

        first = run_job(agent, job)
        assert first.code in (RunJob_pb2.WAIT, RunJob_pb2.RUN)
        running = poll_until(agent, job, RunJob_pb2.RUN)
        assert running.cell_name == f"jobs/{label}" and running.executable_name == "job"
        assert not running.HasField("exit_code")
        info = cells_pb2_grpc.CellsStub(ch).Inspect(cells_pb2.InspectCellRequest(cell_name=running.cell_name), timeout=10)
        assert info.isolate_process
        assert [e.name for e in info.executables] == ["job"]

    # cellard dies (SIGKILL) while the job runs; the next cellard still answers polls
    daemon.stop(signal.SIGKILL)
    restart(daemon)
    with daemon.channel() as ch:
        agent = AgentService_pb2_grpc.AgentStub(ch)
        assert run_job(agent, job).code == RunJob_pb2.RUN
        (work / "go").touch()
        done = poll_until(agent, job, RunJob_pb2.DONE)
        assert done.exit_code == 7 and done.phase == "exited" and not done.HasField("signal")
        assert done.ended_at_ns >= done.started_at_ns > 0
        assert run_job(agent, job) == done  # DONE stays DONE

        batches = logs_pb2_grpc.LogsStub(ch).Read(
            logs_pb2.ReadLogsRequest(cell_name=done.cell_name, executable_name="job"), timeout=10)
        records = [r for b in batches for r in b.records]
        out = [r.data for r in records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
        assert out == [f"hello from {job}".encode(), str(work).encode(), b"x" * 5000]
        assert [r.data for r in records if r.channel == logs_pb2.LOG_CHANNEL_STDERR] == [b"to-stderr"]
        assert [r.exit.code for r in records if r.channel == logs_pb2.LOG_CHANNEL_EXIT] == [7]


def test_a_model_is_staged_by_its_id(cellard_factory: StartCellard) -> None:
    """A model uploaded through scaleout.ModelService is staged by its id, after file-store ids."""
    daemon = cellard_factory(LOCAL)
    model_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"  # the Scaleout client names models by UUID
    model = os.urandom(3 * (1 << 20) + 5)
    job = "job-with-a-model"
    with daemon.channel() as ch:
        chunks = (scaleout_pb2.FileChunk(data=model[i:i + (1 << 20)]) for i in range(0, len(model), 1 << 20))
        meta = (("client", "c1"), ("client-id", "c1"), ("model-id", model_id))
        scaleout_pb2_grpc.ModelServiceStub(ch).Upload(chunks, metadata=meta, timeout=60)
        agent = AgentService_pb2_grpc.AgentStub(ch)
        run_id = write_file(ch, "/parigot/app/jobs/model/run.sh", f"sha256sum {model_id}\n".encode())
        req = StageInFile_pb2.StageInFilesRequest(job=Common_pb2.JobId(uuid=job), files=[
            Common_pb2.FileId(uuid=run_id), Common_pb2.FileId(uuid=model_id),
            Common_pb2.FileId(uuid="no-such-model"), Common_pb2.FileId(uuid="../escape")])
        staged = agent.StageInFiles(req, timeout=30)
        assert [s.file.uuid for s in staged.success_files] == [run_id, model_id]
        work = Path(daemon.config["paths"]["state_dir"]) / "jobs" / job_label(job) / "work"
        assert sorted(os.listdir(work)) == sorted(["run.sh", model_id])
        run_job(agent, job)
        done = poll_until(agent, job, RunJob_pb2.DONE)
        assert done.exit_code == 0
        batches = logs_pb2_grpc.LogsStub(ch).Read(
            logs_pb2.ReadLogsRequest(cell_name=done.cell_name, executable_name="job"), timeout=10)
        out = [r.data for b in batches for r in b.records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
        assert out == [f"{hashlib.sha256(model).hexdigest()}  {model_id}".encode()]


def test_submit_errors(cellard_factory: StartCellard) -> None:
    daemon = cellard_factory(LOCAL)
    with daemon.channel() as ch:
        agent = AgentService_pb2_grpc.AgentStub(ch)
        # nothing staged: no entry script
        with pytest.raises(grpc.RpcError) as err:
            run_job(agent, "empty")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "run.sh or main.py" in err.value.details()
        main_id = write_file(ch, "/parigot/app/p/main.py", b"import sys; print(sys.version_info[:2]); sys.exit(3)\n")
        files = [Common_pb2.FileId(uuid=main_id)]
        with pytest.raises(grpc.RpcError) as err:
            run_job(agent, "py-missing", files=files,
                    requirements=[RunJob_pb2.JobRequirement(python_version="2.1")])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "python2.1" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            run_job(agent, "py-bad", files=files, requirements=[RunJob_pb2.JobRequirement(python_version="3; rm")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for bad in ("", "x" * 300, "a\nb"):
            with pytest.raises(grpc.RpcError) as err:
                run_job(agent, bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # main.py with the host's python3 (files given to RunJob are staged on submit)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        resp = run_job(agent, "py-ok", files=files, requirements=[RunJob_pb2.JobRequirement(python_version=version)])
        assert resp.code in (RunJob_pb2.WAIT, RunJob_pb2.RUN)
        done = poll_until(agent, "py-ok", RunJob_pb2.DONE)
        assert done.exit_code == 3
        batches = logs_pb2_grpc.LogsStub(ch).Read(
            logs_pb2.ReadLogsRequest(cell_name=done.cell_name, executable_name="job"), timeout=10)
        out = [r.data for b in batches for r in b.records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
        assert out == [str((sys.version_info.major, sys.version_info.minor)).encode()]

    # the node-local endpoint serves Agent too (this test runs as root on the host: scope host)
    with grpc.insecure_channel("unix:" + str(daemon.run_dir / "local.sock")) as local:
        agent = AgentService_pb2_grpc.AgentStub(local)
        resp = run_job(agent, "via-local", files=files)
        assert resp.code in (RunJob_pb2.WAIT, RunJob_pb2.RUN)
        assert poll_until(agent, "via-local", RunJob_pb2.DONE).exit_code == 3

    # the CLI: ls, show, logs
    def cellar(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", "--addr", daemon.socket, *args], cwd=REPO,
                              env=daemon_env(), capture_output=True, text=True, timeout=60)

    listed = json.loads(cellar("-o", "json", "jobs", "ls").stdout)
    row = next(r for r in listed if r["job"] == "py-ok")
    assert (row["code"], row["phase"], row["exit"]) == ("DONE", "exited", "code 3")
    shown = json.loads(cellar("-o", "json", "jobs", "show", "py-ok").stdout)
    assert shown["staged"] == [f"main.py={main_id}"] and shown["command"].endswith("main.py")
    assert shown["python_version"] == version
    table = cellar("jobs", "ls")
    assert table.returncode == 0 and "py-ok" in table.stdout and "DONE" in table.stdout
    logs = cellar("jobs", "logs", "py-ok")
    assert logs.stdout.strip() == str((sys.version_info.major, sys.version_info.minor)) and "code 3" in logs.stderr
    missing = cellar("jobs", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("cellar: NOT_FOUND:")
