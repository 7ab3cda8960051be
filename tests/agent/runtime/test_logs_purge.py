"""cellar.v1.Logs/Purge and `cellar purge-logs` on a REAL cellard: logs are deleted only when nothing
of theirs runs, bad names never reach the filesystem, and what is gone reads as NOT_FOUND."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from proto.aurae import observe_pb2, observe_pb2_grpc, runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import logs_pb2, logs_pb2_grpc
from tests.agent.cli.test_cells_cli import CELLAR
from tests.agent.runtime.test_logs_rpc import (  # noqa: F401
    allocate,
    ch,
    daemon,
    follow_to_exit,
    lines,
    read,
    rpc_code,
    start,
)
from tests.support.cellard import REPO, Cellard
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root


def purge(channel: grpc.Channel, cell: str, exe: str = "") -> logs_pb2.PurgeLogsResponse:
    return logs_pb2_grpc.LogsStub(channel).Purge(logs_pb2.PurgeLogsRequest(cell_name=cell, executable_name=exe),
                                            timeout=scaled(10))


def wait_for_line(channel: grpc.Channel, cell: str, exe: str, line: bytes) -> None:
    deadline = time.monotonic() + scaled(10)
    while line not in lines(read(channel, cell_name=cell, executable_name=exe)[0]):
        assert time.monotonic() < deadline, f"{cell}/{exe} never wrote {line!r}"
        time.sleep(0.05)


def test_purge_refuses_running_then_deletes(ch: grpc.Channel, daemon: Cellard) -> None:  # noqa: F811 - fixtures
    log_root = Path(daemon.config["paths"]["log_dir"])
    cell = allocate(ch)
    start(ch, cell, "done", "echo bye")
    follow_to_exit(ch, cell, "done")
    start(ch, cell, "done", "echo bye again")  # a second run: both go
    follow_to_exit(ch, cell, "done")
    start(ch, cell, "live", "echo up; exec sleep 3600")
    wait_for_line(ch, cell, "live", b"up")

    for exe in ("live", ""):  # the running executable, or the cell that holds it
        assert rpc_code(lambda exe=exe: purge(ch, cell, exe)) == grpc.StatusCode.FAILED_PRECONDITION
    assert lines(read(ch, cell_name=cell, executable_name="live")[0]) == [b"up"]

    reply = purge(ch, cell, "done")
    assert reply.runs == 2 and reply.bytes > 0
    assert rpc_code(lambda: read(ch, cell_name=cell, executable_name="done")) == grpc.StatusCode.NOT_FOUND
    assert rpc_code(lambda: purge(ch, cell, "done")) == grpc.StatusCode.NOT_FOUND
    assert lines(read(ch, cell_name=cell, executable_name="live")[0]) == [b"up"]  # the neighbour is untouched

    runtime_pb2_grpc.CellServiceStub(ch).Free(runtime_pb2.FreeCellRequest(cell_name=cell), timeout=scaled(30))
    assert purge(ch, cell).runs == 1  # freed: its logs were still readable, now they go
    assert rpc_code(lambda: read(ch, cell_name=cell)) == grpc.StatusCode.NOT_FOUND
    assert not any(p.name == cell for p in log_root.iterdir())


@pytest.mark.parametrize("cell, exe", [("../etc", ""), ("a/../../b", "x"), ("ok", "../x"), ("ok", "a/b"),
                                       ("", ""), ("ok", "x" * 300), ("-bad", "")])
def test_purge_bad_names_are_invalid_argument(ch: grpc.Channel, daemon: Cellard, cell: str, exe: str) -> None:  # noqa: F811
    log_root = Path(daemon.config["paths"]["log_dir"])
    before = sorted(os.listdir(log_root.parent))
    assert rpc_code(lambda: purge(ch, cell, exe)) == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(os.listdir(log_root.parent)) == before


def test_cli_purge_logs(ch: grpc.Channel, daemon: Cellard) -> None:  # noqa: F811
    cell = allocate(ch)
    start(ch, cell, "once", "echo one")
    follow_to_exit(ch, cell, "once")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLAR_")}
    env.update(HOME="/nonexistent-cellar-home", PYTHONPATH=str(REPO))
    out = subprocess.run([*CELLAR, "--addr", daemon.socket, "-o", "json", "purge-logs", cell, "once"],
                         capture_output=True, text=True, timeout=scaled(60), env=env, cwd=REPO, check=True).stdout
    got = json.loads(out)
    assert got["purged"] == f"{cell}/once" and got["runs"] == 1 and got["bytes"] > 0
    again = subprocess.run([*CELLAR, "--addr", daemon.socket, "purge-logs", cell, "once"],
                           capture_output=True, text=True, timeout=scaled(60), env=env, cwd=REPO)
    assert again.returncode != 0 and "no logs" in again.stderr


def test_seed_stream_of_an_executable_whose_cell_was_freed(ch: grpc.Channel) -> None:  # noqa: F811 - fixture
    """A job's cell is freed as soon as it ends; its pid still names its logs for GetSubProcessStream."""
    cell = allocate(ch)
    pid = start(ch, cell, "job", "echo done-1; echo done-2").host_pid
    follow_to_exit(ch, cell, "job")
    runtime_pb2_grpc.CellServiceStub(ch).Free(runtime_pb2.FreeCellRequest(cell_name=cell), timeout=scaled(30))
    req = observe_pb2.GetSubProcessStreamRequest(channel_type=observe_pb2.CHANNEL_STDOUT, process_id=pid)
    items = list(observe_pb2_grpc.ObserveStub(ch).GetSubProcessStream(req, timeout=scaled(10)))
    assert [i.line for i in items] == ["done-1", "done-2"]
