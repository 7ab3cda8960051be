"""Whatever a client sends to /Agent/* and /test.v1.Test/*, cellard answers a precise status and stays up.

Hypothesis drives random (but well-formed) requests and raw byte strings (including proto2 messages
missing their ``required`` fields) at one REAL cellard per module; afterwards the daemon must still
be SERVING and must not have answered INTERNAL or UNKNOWN to anything.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.parigot.test.v1 import test_pb2, test_pb2_grpc
from proto.sky import AgentService_pb2_grpc, Common_pb2, RunJob_pb2, StageInFile_pb2
from tests.support.cellard import REPO, Cellard, base_config, daemon_env, merge, new_base, toml_dumps
from tests.support.cleanup import destroy_runtime

pytestmark = pytest.mark.root

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.PERMISSION_DENIED}
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
ids = st.one_of(text, st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True), st.uuids().map(str))


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    """One cellard for the module, started and destroyed like cellard_factory does."""
    base = new_base(0o700)
    token = f"cellar-test-{secrets.token_hex(4)}"
    cfg = merge(base_config(base, token), {"local": {"tcp_listen": ""}})
    config_path = base / "cellard.toml"
    config_path.write_text(toml_dumps(cfg))
    log_path = base / "cellard.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", str(config_path)], cwd=REPO,
                                env=daemon_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    d = Cellard(proc, base, config_path, log_path, token, cfg)
    try:
        d.wait_serving()
        yield d
    finally:
        try:
            d.stop()
        finally:
            destroy_runtime(d.runtime_config())
            shutil.rmtree(base, ignore_errors=True)


def _call(fn: Any, *args: Any) -> None:
    try:
        fn(*args, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(job=text, files=st.lists(ids, max_size=5), versions=st.lists(text, max_size=3))
def test_agent_random_requests(daemon: Any, job: str, files: list[str], versions: list[str]) -> None:
    with daemon.channel() as ch:
        agent = AgentService_pb2_grpc.AgentStub(ch)
        fids = [Common_pb2.FileId(uuid=f) for f in files]
        _call(agent.StageInFiles, StageInFile_pb2.StageInFilesRequest(job=Common_pb2.JobId(uuid=job), files=fids))
        reqs = [RunJob_pb2.JobRequirement(python_version=v) for v in versions]
        _call(agent.RunJob, RunJob_pb2.RunJobRequest(job=Common_pb2.JobId(uuid=job), files=fids, requirements=reqs))


@SETTINGS
@given(method=st.sampled_from(["/Agent/RunJob", "/Agent/StageInFiles", "/test.v1.Test/AddTestSuite",
                               "/test.v1.Test/Start"]), payload=st.binary(max_size=200))
def test_raw_bytes(daemon: Any, method: str, payload: bytes) -> None:
    with daemon.channel() as ch:
        call = ch.unary_unary(method)
        try:
            call(payload, timeout=30)
        except grpc.RpcError as exc:
            # undecodable bytes (or a proto2 message missing a required field) are the client's fault
            assert exc.code() in ALLOWED, (exc.code(), exc.details())
            if method.startswith("/test.v1.") and exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                assert dict(exc.trailing_metadata() or ()).get("parigot-error-name") in ("UnmarshalError", "RegexpFailed")


@SETTINGS
@given(suites=st.lists(st.tuples(text, text, st.lists(text, max_size=4)), max_size=3), target=text,
       fs=text, fn=text)
def test_testrunner_random_requests(daemon: Any, suites: list[Any], target: str, fs: str, fn: str) -> None:
    with daemon.channel() as ch:
        test = test_pb2_grpc.TestStub(ch)
        infos = [test_pb2.SuiteInfo(package_path=p, service=s, function_name=f) for p, s, f in suites]
        _call(test.AddTestSuite, test_pb2.AddTestSuiteRequest(suite=infos, exec_service=target))
        _call(test.Start, test_pb2.StartRequest(filter_suite=fs))
        _call(test.Start, test_pb2.StartRequest(filter_name=fn))


def test_still_serving(daemon: Any) -> None:
    assert daemon.health() == "SERVING"
    assert not daemon.events("rpc.internal_error")
