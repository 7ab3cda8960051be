"""Forwarding against a second, REAL cellard acting as the upstream (``[front."<service>"]``).

Daemon ``upstream`` is an ordinary cellard. Daemon ``front`` fronts some of its services to the
upstream's Unix socket (``upstream = "unix:/path"``), so whatever ``front`` answers for them must be
the upstream's own state: its cells, its logs, its errors. Both daemons run as root, so the front
reaches the upstream's socket with the upstream's ``unix_role``.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.local.jobs.ids import format_file_id
from proto.aurae import observe_pb2, observe_pb2_grpc, runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, logs_pb2, logs_pb2_grpc
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.sky import AgentService_pb2_grpc, Common_pb2, StageInFile_pb2
from tests.support.cellard import Cellard, StartCellard, base_config, merge, new_base, toml_dumps

pytestmark = pytest.mark.root

FRONTED = ("cellar.v1.Logs", "cellar.v1.Cells", "observe.Observe", "file.v1.File", "Agent")
NO_LOCAL_TCP = {"local": {"tcp_listen": ""}}


@pytest.fixture
def pair(cellard_factory: StartCellard) -> Iterator[tuple[Cellard, Cellard]]:
    upstream = cellard_factory(NO_LOCAL_TCP)
    fronts = {"front": {name: {"upstream": "unix:" + upstream.socket} for name in FRONTED}}
    front = cellard_factory({**NO_LOCAL_TCP, **fronts})
    yield front, upstream


def _records(stream: grpc.Call) -> list[logs_pb2.LogRecord]:
    return [rec for batch in stream for rec in batch.records]


def test_front_relays_unary_streaming_errors_and_metadata(pair: tuple[Cellard, Cellard]) -> None:
    front, upstream = pair
    with front.channel() as fch, upstream.channel() as uch:
        # unary: Cells/Info through the front describes the upstream's cgroup root, not the front's
        info = cells_pb2_grpc.CellsStub(fch).Info(cells_pb2.InfoRequest(), timeout=10)
        assert upstream.token in info.cgroup_root and front.token not in info.cgroup_root

        # the embedded CellService of the front is untouched: a cell made there is not upstream
        runtime_pb2_grpc.CellServiceStub(fch).Allocate(
            runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="frontonly")), timeout=30)
        # a workload on the upstream, its logs read through the front (server streaming)
        up_rt = runtime_pb2_grpc.CellServiceStub(uch)
        up_rt.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="web")), timeout=30)
        exe = runtime_pb2.Executable(cell_name="web", name="hello", command="echo one; echo two >&2; exit 3")
        up_rt.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)
        logs = logs_pb2_grpc.LogsStub(fch)
        req = logs_pb2.ReadLogsRequest(cell_name="web", executable_name="hello", follow=True)
        records = _records(logs.Read(req, timeout=30))
        lines = sorted(r.data for r in records if r.channel in (logs_pb2.LOG_CHANNEL_STDOUT, logs_pb2.LOG_CHANNEL_STDERR))
        assert lines == [b"one", b"two"]
        assert [r.exit.code for r in records if r.channel == logs_pb2.LOG_CHANNEL_EXIT] == [3]
        direct = _records(logs_pb2_grpc.LogsStub(uch).Read(logs_pb2.ReadLogsRequest(cell_name="web"), timeout=30))
        assert [(r.seq, r.data) for r in direct] == [(r.seq, r.data) for r in records]

        # an error passes through unchanged: same code, same details as asking the upstream directly
        missing = logs_pb2.ReadLogsRequest(cell_name="frontonly")
        with pytest.raises(grpc.RpcError) as via_front:
            _records(logs.Read(missing, timeout=10))
        with pytest.raises(grpc.RpcError) as via_upstream:
            _records(logs_pb2_grpc.LogsStub(uch).Read(missing, timeout=10))
        assert via_front.value.code() == via_upstream.value.code() == grpc.StatusCode.NOT_FOUND
        assert via_front.value.details() == via_upstream.value.details()
        bad = logs_pb2.ReadLogsRequest(cell_name="../x")
        with pytest.raises(grpc.RpcError) as bad_front:
            _records(logs.Read(bad, timeout=10))
        assert bad_front.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # the deadline travels: a follow of a running workload ends with DEADLINE_EXCEEDED
        up_rt.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
            cell_name="web", name="sleeper", command="sleep 60")), timeout=30)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as late:
            _records(logs.Read(logs_pb2.ReadLogsRequest(cell_name="web", executable_name="sleeper", follow=True),
                               timeout=1.0))
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 20

        # initial metadata travels: the daemon log stream announces the upstream's history length,
        # and its events are the upstream's (its socket path), not the front's
        stream = observe_pb2_grpc.ObserveStub(fch).GetAuraeDaemonLogStream(
            observe_pb2.GetAuraeDaemonLogStreamRequest(), timeout=10)
        history = int(dict(stream.initial_metadata())["cellar-history-events"])
        assert history > 0
        seen = [next(stream).line for _ in range(history)]
        stream.cancel()
        assert any(upstream.socket in line for line in seen)
        assert not any(front.socket in line for line in seen)
    events = front.events("front.upstream")
    assert sorted({e["service"] for e in events}) == sorted(FRONTED)


def test_front_on_the_local_endpoint_parigot_errors_and_scope(pair: tuple[Cellard, Cellard]) -> None:
    """file.v1.File fronted: through the front's local endpoint, a file lands in the upstream's store;
    a parigot error keeps its status, details and parigot-error trailers; a client cannot pick the
    scope the upstream acts in."""
    front, upstream = pair
    local = grpc.insecure_channel("unix:" + str(front.run_dir / "local.sock"))
    with local, front.channel() as fch, upstream.channel() as uch:
        files_local = file_pb2_grpc.FileStub(local)
        created = files_local.Create(file_pb2.CreateRequest(path="/parigot/app/fw/a.txt", content="via front"), timeout=10)
        files_local.Close(file_pb2.CloseRequest(id=created.id), timeout=10)
        # the upstream has it (host scope: this test process is not in a cell); the front's own store does not
        up_files = file_pb2_grpc.FileStub(uch)
        opened = up_files.Open(file_pb2.OpenRequest(path="/parigot/app/fw/a.txt"), timeout=10)
        assert (opened.id.high, opened.id.low) == (created.id.high, created.id.low)
        assert up_files.Read(file_pb2.ReadRequest(id=opened.id), timeout=10).data == b"via front"
        up_files.Close(file_pb2.CloseRequest(id=opened.id), timeout=10)
        assert not (Path(front.config["paths"]["state_dir"]) / "files" / "host").exists()

        # a parigot error: NOT_FOUND + parigot-error trailers, identical through either cellard
        missing = file_pb2.OpenRequest(path="/parigot/app/fw/nope.txt")
        errors = []
        for stub in (files_local, file_pb2_grpc.FileStub(fch), up_files):
            with pytest.raises(grpc.RpcError) as err:
                stub.Open(missing, timeout=10)
            trailers = dict(err.value.trailing_metadata())
            errors.append((err.value.code(), err.value.details(), trailers["parigot-error"],
                           trailers["parigot-error-name"]))
        assert errors[0] == errors[1] == errors[2]
        assert errors[0][0] == grpc.StatusCode.NOT_FOUND and errors[0][3] == "NotExistError"

        # a workload's own cellar-scope never reaches the upstream: it stays in its own (host) scope
        sneaky = (("cellar-scope", "cell:other"),)
        made = files_local.Create(file_pb2.CreateRequest(path="/parigot/app/fw/b.txt"), metadata=sneaky, timeout=10)
        files_local.Close(file_pb2.CloseRequest(id=made.id), timeout=10)
        up_state = Path(upstream.config["paths"]["state_dir"]) / "files"
        assert (up_state / "host" / "fw" / "b.txt").exists()
        assert not (up_state / "cell").exists()

        # the job agent fronted too: StageInFiles by id through the front stages on the upstream
        fid = format_file_id(created.id.high, created.id.low)
        agent = AgentService_pb2_grpc.AgentStub(local)
        staged = agent.StageInFiles(StageInFile_pb2.StageInFilesRequest(
            job=Common_pb2.JobId(uuid="fw-job"), files=[Common_pb2.FileId(uuid=fid)]), timeout=10)
        assert [s.file.uuid for s in staged.success_files] == [fid]
        assert (Path(upstream.config["paths"]["state_dir"]) / "jobs" / "fw-job" / "work" / "a.txt").read_bytes() == b"via front"


def test_unknown_front_service_is_a_config_error(tmp_path, run_cellard) -> None:  # type: ignore[no-untyped-def]
    """Found before anything starts: exit 2, one line naming the table; no supervisor, no socket."""
    base = new_base(0o700)
    try:
        cfg = base_config(base, f"cellar-test-{secrets.token_hex(4)}")
        bad_tls = {"upstream": "127.0.0.1:1", "ca": str(base / "missing-ca.pem")}
        for name, table, words in (("no.such.Service", {"upstream": "unix:/x"}, "unknown service"),
                                   ("grpc.health.v1.Health", {"upstream": "unix:/x"}, "cannot be fronted"),
                                   ("file.v1.File", bad_tls, "missing-ca.pem")):
            text = toml_dumps(merge(cfg, {"front": {name: table}}))
            result = run_cellard(config=text)
            assert result.returncode == 2, result.stderr
            assert f'front."{name}"' in result.stderr and words in result.stderr
        assert not (base / "state" / "supervisor.log").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_front_over_mutual_tls(cellard_factory: StartCellard) -> None:
    """A TCP upstream with mutual TLS: the front presents its client certificate; the upstream's own
    authorization decides (a certificate it does not know -> PERMISSION_DENIED, passed through)."""
    upstream = cellard_factory(NO_LOCAL_TCP, tcp=True)
    assert upstream.pki is not None and upstream.tcp is not None
    pki = upstream.pki

    def tls_front(client: str) -> dict[str, object]:
        cert, key = pki.cert(client)
        return {"upstream": upstream.tcp, "ca": str(pki.ca), "cert": str(cert), "key": str(key),
                "server_name": "localhost"}

    front = cellard_factory({**NO_LOCAL_TCP, "front": {"cellar.v1.Cells": tls_front("obs-user"),
                                                      "cellar.v1.Logs": tls_front("stranger")}})
    with front.channel() as fch:
        info = cells_pb2_grpc.CellsStub(fch).Info(cells_pb2.InfoRequest(), timeout=10)
        assert upstream.token in info.cgroup_root
        with pytest.raises(grpc.RpcError) as denied:
            _records(logs_pb2_grpc.LogsStub(fch).Read(logs_pb2.ReadLogsRequest(cell_name="x"), timeout=10))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "stranger" in (denied.value.details() or "")
