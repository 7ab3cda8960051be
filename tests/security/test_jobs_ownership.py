"""Attacks on the sky job agent through the node-local endpoint (issue 13), with workloads of real
cells (clients moved into a running executable's cgroup before they connect) and a user made by the
test (uid 65534, outside the cells).

- A job is its submitter's scope's: nobody else stages into it or polls it (the host included:
  owner = scope, no exception for ``host``); and nobody stages into it once it was submitted.
- RunJob's uid-0 check applies to every call, not only the one that submits.
- The submitter reads its job's outputs through the file store, below ``/parigot/app/jobs/<label>/``
  (``<label>`` is the job's cell name below ``jobs/``, as RunJob answers it): ``work/`` (the work
  dir) and ``files/`` (what the job wrote through file.v1.File); and follows its logs from the
  node-local endpoint (cellar.v1.Logs for its own jobs only).
- The log directory is 0750 (cell and job names are not for every local user to read).
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.local.jobs.ids import job_label
from tests.security.localcaller import NOBODY, call
from tests.support import REPO
from tests.support.api import Api
from tests.support.cellard import StartCellard
from tests.support.local import local_socket

pytestmark = pytest.mark.root

RUN_SH = "echo out-of-$CELLAR_JOB_ID; echo result > out.txt; mkdir -p sub; echo deep > sub/deep.txt\n"
#: The job also writes through file.v1.File (into its own scope, cell:jobs/<label>).
STORE_WRITE = (
    "import os, grpc\n"
    "from proto.parigot.file.v1 import file_pb2 as F, file_pb2_grpc as FG\n"
    "f = FG.FileStub(grpc.insecure_channel(os.environ['CELLAR_LOCAL_ENDPOINT']))\n"
    "r = f.Create(F.CreateRequest(path='/parigot/app/report/r.txt', content='via the store'), timeout=10)\n"
    "f.Close(F.CloseRequest(id=r.id), timeout=10)\n"
)





def workload(api: Api, cell: str) -> str:
    """A running executable's cgroup leaf in ``cell``: callers join it before they connect."""
    api.allocate(cell)
    api.start(cell, "sleeper", "sleep", "3600")
    return os.path.join(api.inspect(cell).cgroup_path, "exe.sleeper")


def codes(got: list[list[Any]]) -> list[str]:
    return [g[0] for g in got]


def poll_done(sock: str, job: str, leaf: str, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = call(sock, [["run", job]], join=leaf)[0]
        if got[0] != "OK" or got[1] == "DONE" or time.monotonic() > deadline:
            return got  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_only_the_owner_stages_and_polls_its_job(daemon: Any, api: Api) -> None:
    sock = local_socket(daemon)
    a, b = workload(api, "a"), workload(api, "b")
    got = call(sock, [["write", "/parigot/app/run.sh", RUN_SH]], join=a)
    mine = got[0][1]
    assert call(sock, [["stage", "ja", [mine]]], join=a) == [["OK", [mine]]]
    evil_b = call(sock, [["write", "/parigot/app/run.sh", "echo pwned\n"]], join=b)[0][1]
    evil_host = call(sock, [["write", "/parigot/app/run.sh", "echo pwned\n"]])[0][1]
    evil_user = call(sock, [["write", "/parigot/app/run.sh", "echo pwned\n"]], uid=NOBODY)[0][1]
    # the same id in another scope names that scope's own job (the host is a scope like any other)
    assert codes(call(sock, [["stage", "ja", [evil_b]]], join=b)) == ["OK"]
    assert codes(call(sock, [["stage", "ja", [evil_host]]])) == ["OK"]
    assert codes(call(sock, [["stage", "ja", [evil_user]], ["run", "ja"]], uid=NOBODY)) == ["OK", "PERMISSION_DENIED"]
    jobs = Path(daemon.config["paths"]["state_dir"]) / "jobs"
    assert (jobs / job_label("ja", "cell:a") / "work" / "run.sh").read_text() == RUN_SH
    assert codes(call(sock, [["stage", "ja", [mine]]], join=a)) == ["OK"]  # still a's alone
    assert sorted(os.listdir(jobs / job_label("ja", "cell:a") / "work")) == ["run.sh"]


def test_nobody_squats_a_job_id_another_scope_will_use(daemon: Any, api: Api) -> None:
    """Found: a job id was node-wide, so whoever staged into it first owned it. An unprivileged user
    who staged into ``nightly`` got the host's RunJob(nightly) PERMISSION_DENIED (its legitimate job
    refused, and the answer told the user the id was taken); another cell the same. Ids are per scope."""
    sock = local_socket(daemon)
    a, b = workload(api, "a"), workload(api, "b")
    evil_user = call(sock, [["write", "/parigot/app/run.sh", "echo pwned\n"]], uid=NOBODY)[0][1]
    evil_b = call(sock, [["write", "/parigot/app/run.sh", "echo pwned\n"]], join=b)[0][1]
    assert codes(call(sock, [["stage", "nightly", [evil_user]]], uid=NOBODY)) == ["OK"]
    assert codes(call(sock, [["stage", "nightly", [evil_b]]], join=b)) == ["OK"]
    host_run = call(sock, [["write", "/parigot/app/run.sh", "echo host-job\n"]])[0][1]
    a_run = call(sock, [["write", "/parigot/app/run.sh", "echo a-job\n"]], join=a)[0][1]
    assert call(sock, [["stage", "nightly", [host_run]]]) == [["OK", [host_run]]]
    assert call(sock, [["stage", "nightly", [a_run]]], join=a) == [["OK", [a_run]]]
    jobs = Path(daemon.config["paths"]["state_dir"]) / "jobs"
    for scope, text in (("host", "echo host-job\n"), ("cell:a", "echo a-job\n"), ("cell:b", "echo pwned\n"),
                        (f"user:{NOBODY}", "echo pwned\n")):
        assert (jobs / job_label("nightly", scope) / "work" / "run.sh").read_text() == text, scope
    assert call(sock, [["run", "nightly"]])[0][:2] == ["OK", "WAIT"]
    assert poll_done(sock, "nightly", a)[0] == "OK"  # a's own job, submitted on its first RunJob


def test_nothing_is_staged_once_the_job_was_submitted(daemon: Any, api: Api) -> None:
    sock = local_socket(daemon)
    a = workload(api, "a")
    run_id = call(sock, [["write", "/parigot/app/run.sh", "sleep 2\n"]], join=a)[0][1]
    other = call(sock, [["write", "/parigot/app/other/run.sh", "echo swapped\n"]], join=a)[0][1]
    got = call(sock, [["stage", "jb", [run_id]], ["run", "jb"], ["stage", "jb", [other]]], join=a)
    assert codes(got) == ["OK", "OK", "FAILED_PRECONDITION"], got


def test_every_run_job_needs_uid_0(daemon: Any, api: Api) -> None:
    sock = local_socket(daemon)
    a = workload(api, "a")
    run_id = call(sock, [["write", "/parigot/app/run.sh", "sleep 1\n"]], join=a)[0][1]
    assert codes(call(sock, [["stage", "jc", [run_id]], ["run", "jc"]], join=a)) == ["OK", "OK"]
    got = call(sock, [["run", "jc"]], uid=NOBODY, join=a)  # same cell, not root
    assert codes(got) == ["PERMISSION_DENIED"], got


def test_the_submitter_reads_its_outputs_and_logs(daemon: Any, api: Api) -> None:
    sock = local_socket(daemon)
    a, b = workload(api, "a"), workload(api, "b")
    script = RUN_SH + f"PYTHONPATH={REPO} PYTHONDONTWRITEBYTECODE=1 {sys.executable} store.py\n"
    run_id = call(sock, [["write", "/parigot/app/run.sh", script]], join=a)[0][1]
    py_id = call(sock, [["write", "/parigot/app/store.py", STORE_WRITE]], join=a)[0][1]
    assert codes(call(sock, [["stage", "jd", [run_id, py_id]], ["run", "jd"]], join=a)) == ["OK", "OK"]
    done = poll_done(sock, "jd", a)
    assert done[1:] == ["DONE", "exited"], done
    label = job_label("jd", "cell:a")
    outputs = f"/parigot/app/jobs/{label}/"
    got = call(sock, [["read", outputs + "work/out.txt"], ["read", outputs + "work/sub/deep.txt"],
                      ["read", outputs + "files/report/r.txt"], ["logs", f"jobs/{label}", "job"]], join=a)
    assert got == [["OK", "result\n"], ["OK", "deep\n"], ["OK", "via the store"], ["OK", ["out-of-jd"]]], got
    # another cell sees neither; nor may it read the logs of any cell but its own jobs'
    got = call(sock, [["read", outputs + "work/out.txt"], ["logs", f"jobs/{label}", "job"],
                      ["logs", "a", "sleeper"]], join=b)
    assert [g[:2] for g in got] == [["NOT_FOUND", "NotExistError"], ["PERMISSION_DENIED", ""],
                                    ["PERMISSION_DENIED", ""]], got


def test_a_job_cannot_publish_host_files_through_links(daemon: Any, api: Api) -> None:
    """The job runs as root: what it leaves in its work dir is copied by cellard, which must never
    follow a link out of it (a symlink to /etc/shadow, a directory symlink to /, a hard link)."""
    sock = local_socket(daemon)
    a = workload(api, "a")
    script = ("ln -s /etc/shadow leak; mkdir d; ln -s / d/root; ln /etc/passwd hard 2>/dev/null;"
              " echo ok > plain.txt\n")
    run_id = call(sock, [["write", "/parigot/app/run.sh", script]], join=a)[0][1]
    assert codes(call(sock, [["stage", "jl", [run_id]], ["run", "jl"]], join=a)) == ["OK", "OK"]
    assert poll_done(sock, "jl", a)[1] == "DONE"
    work = f"/parigot/app/jobs/{job_label('jl', 'cell:a')}/work/"
    got = call(sock, [["read", work + "plain.txt"], ["read", work + "leak"], ["read", work + "hard"],
                      ["stat", work + "d/"], ["read", work + "d/root/etc/passwd"]], join=a)
    assert got[0] == ["OK", "ok\n"], got
    assert [g[:2] for g in got[1:]] == [["NOT_FOUND", "NotExistError"]] * 4, got  # d/ held no file


def test_the_submitter_follows_its_running_job(daemon: Any, api: Api) -> None:
    sock = local_socket(daemon)
    a, b = workload(api, "a"), workload(api, "b")
    run_id = call(sock, [["write", "/parigot/app/run.sh", "echo one; sleep 2; echo two\n"]], join=a)[0][1]
    assert codes(call(sock, [["stage", "jf", [run_id]], ["run", "jf"]], join=a)) == ["OK", "OK"]
    deadline = time.monotonic() + 30
    while (state := call(sock, [["run", "jf"]], join=a)[0])[1] == "WAIT" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state[1] == "RUN", state
    cell = f"jobs/{job_label('jf', 'cell:a')}"
    assert call(sock, [["follow", cell, "job"]], join=a) == [["OK", ["one", "two"]]]
    assert codes(call(sock, [["follow", cell, "job"]], join=b)) == ["PERMISSION_DENIED"]


def test_the_log_directory_is_0750(cellard_factory: StartCellard, tmp_path: Path) -> None:
    fresh = cellard_factory({"local": {"tcp_listen": ""}}, base_mode=0o755)
    assert stat.S_IMODE(os.stat(fresh.config["paths"]["log_dir"]).st_mode) == 0o750
    old = tmp_path / "old-logs"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)  # as an older cellard left it
    cellard_factory({"local": {"tcp_listen": ""}, "paths": {"log_dir": str(old)}}, base_mode=0o755)
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o750


# -- bounds on what staging leaves behind ---------------------------------------------------------------
def bounded(cellard_factory: StartCellard, **jobs: Any) -> Any:
    return cellard_factory({"local": {"tcp_listen": ""}, "jobs": jobs}, base_mode=0o755)


def test_pending_jobs_are_capped_per_scope(cellard_factory: StartCellard) -> None:
    """Found: every StageInFiles into a new job id left a record and a directory, without limit (an
    unprivileged user staging nothing into a million ids filled cellard's state dir)."""
    daemon = bounded(cellard_factory, max_pending_per_scope=3)
    sock = local_socket(daemon)
    got = call(sock, [["stage", f"p{i}", []] for i in range(5)], uid=NOBODY)
    assert codes(got) == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 2, got
    assert "jobs.max_pending_per_scope" in got[3][2]
    jobs = Path(daemon.config["paths"]["state_dir"]) / "jobs"
    assert sorted(os.listdir(jobs)) == sorted(job_label(f"p{i}", f"user:{NOBODY}") for i in range(3))
    assert codes(call(sock, [["stage", "p0", []], ["stage", "p9", []]])) == ["OK", "OK"]  # other scopes


def test_staged_files_and_bytes_per_job_are_capped(cellard_factory: StartCellard) -> None:
    """A refused StageInFiles copies nothing and, for a new job, leaves no record."""
    daemon = bounded(cellard_factory, max_staged_files=2, max_staged_bytes=2000)
    sock = local_socket(daemon)
    ids = [g[1] for g in call(sock, [["write", f"/parigot/app/f{i}", "x" * 1500] for i in range(3)], uid=NOBODY)]
    got = call(sock, [["stage", "many", ids], ["stage", "j", ids[:1]], ["stage", "j", ids[1:]],
                      ["stage", "j", ids[1:2]], ["stage", "j", ids[:1]]], uid=NOBODY)
    assert codes(got) == ["RESOURCE_EXHAUSTED", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED", "OK"], got
    assert "jobs.max_staged_files" in got[0][2] and "jobs.max_staged_files" in got[2][2]
    assert "jobs.max_staged_bytes" in got[3][2]  # 3000 bytes > 2000, though 2 files fit
    jobs = Path(daemon.config["paths"]["state_dir"]) / "jobs"
    assert not (jobs / job_label("many", f"user:{NOBODY}")).exists()
    assert sorted(os.listdir(jobs / job_label("j", f"user:{NOBODY}") / "work")) == ["f0"]  # re-staged: same name


def test_abandoned_staged_jobs_expire(tmp_path: Path) -> None:
    """A job staged and never submitted is removed once older than jobs.pending_ttl_s (checked when a
    scope stages), so the cap above frees itself; a submitted job is never expired. Driven by the
    runner's clock, no sleeping."""
    import asyncio

    from agent.config import JobsConfig
    from agent.local.jobs.runner import JobRunner
    from agent.local.jobs.store import PREPARING

    now = [1_000 * 10**9]
    runner = JobRunner(None, lambda: None, str(tmp_path), limits=JobsConfig(max_pending_per_scope=2, pending_ttl_s=60),
                       clock=lambda: now[0])

    async def scenario() -> list[str]:
        await runner.stage("old", [], "user:7")
        await runner.stage("kept", [], "user:7")
        kept = runner.store.load(job_label("kept", "user:7"))
        assert kept is not None
        kept.submitted, kept.phase = True, PREPARING
        runner.store.save(kept)
        await runner.stage("new", [], "user:7")
        try:
            await runner.stage("newer", [], "user:7")
        except Exception as exc:  # two pending: old and new
            assert "jobs.max_pending_per_scope" in str(exc)
        else:
            raise AssertionError("the cap held no job back")
        now[0] += 61 * 10**9
        await runner.stage("newer", [], "user:7")
        return sorted(os.listdir(tmp_path / "jobs"))

    assert asyncio.run(scenario()) == sorted(job_label(j, "user:7") for j in ("kept", "newer"))


def test_a_refused_submit_leaves_nothing(daemon: Any, api: Api) -> None:
    """Found: RunJob of a new id that cannot run (no run.sh/main.py staged) answered FAILED_PRECONDITION
    but left its work directory, with the files it copied, and no record to ever expire it."""
    sock = local_socket(daemon)
    a = workload(api, "a")
    data = call(sock, [["write", "/parigot/app/data.txt", "x" * 100]], join=a)[0][1]
    got = call(sock, [["stage", "nocmd-staged", [data]], ["run", "nocmd-staged"], ["run", "nocmd"]], join=a)
    assert codes(got) == ["OK", "FAILED_PRECONDITION", "FAILED_PRECONDITION"], got
    jobs = Path(daemon.config["paths"]["state_dir"]) / "jobs"
    assert not (jobs / job_label("nocmd", "cell:a")).exists()
    assert sorted(os.listdir(jobs / job_label("nocmd-staged", "cell:a") / "work")) == ["data.txt"]  # kept: staged
