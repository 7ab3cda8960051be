"""Issue 4, a reused name: free a cell, allocate it again, start the same executable name.

The logs of the freed cell stay readable, so the new run must not land in the old run's directory:
it gets the next run number after the runs on disk, also when the supervisor restarted in between
(its state of a freed cell is gone, the logs are not). Read back through a real cellard:
cellar.v1.Logs/Read for both runs and the seed GetSubProcessStream for the new pid.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.aurae import observe_pb2, observe_pb2_grpc
from proto.cellar.v1 import logs_pb2, types_pb2
from tests.support.api import Api, restart
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

STDOUT, STDERR = logs_pb2.LOG_CHANNEL_STDOUT, logs_pb2.LOG_CHANNEL_STDERR
EXIT, LOST = logs_pb2.LOG_CHANNEL_EXIT, logs_pb2.LOG_CHANNEL_LOST
ENDED = (types_pb2.EXECUTABLE_STATE_EXITED, types_pb2.EXECUTABLE_STATE_LOST)


def read(api: Api, cell: str, exe: str, **request: Any) -> list[logs_pb2.LogRecord]:
    req = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=exe, **request)
    return [r for batch in api.logs.Read(req, timeout=scaled(60)) for r in batch.records]


def follow_to_exit(api: Api, cell: str, exe: str) -> list[logs_pb2.LogRecord]:
    """The latest run, followed until its EXIT record (which is how a test waits for the exit)."""
    records = read(api, cell, exe, follow=True)
    assert records and records[-1].channel == EXIT, "follow must end with the EXIT record"
    return records


def seed_stream(api: Api, pid: int, channel: int) -> Iterator[str]:
    """GetSubProcessStream's lines: history, then followed until the process exits."""
    req = observe_pb2.GetSubProcessStreamRequest(channel_type=channel, process_id=pid)  # type: ignore[arg-type]
    items = observe_pb2_grpc.ObserveStub(api.channel).GetSubProcessStream(req, timeout=scaled(30))
    return (item.line for item in items)


def data(records: list[logs_pb2.LogRecord], channel: int) -> list[bytes]:
    return [r.data for r in records if r.channel == channel]


def supervisor_log(api: Api) -> str:
    return (Path(api.daemon.config["paths"]["state_dir"]) / "supervisor.log").read_text(errors="replace")


def run_old_then_free(api: Api, cell: str) -> None:
    api.allocate(cell)
    first = api.start(cell, "w", "sh", "-c", "echo old-out; echo old-err >&2; exit 3")
    assert first.run == 1
    records = follow_to_exit(api, cell, "w")
    assert data(records, STDOUT) == [b"old-out"] and records[-1].exit.code == 3
    api.free(cell)


def check_new_run(api: Api, cell: str) -> None:
    """Same cell, same executable name: a fresh run 2 whose output is all there; run 1 untouched."""
    api.allocate(cell)
    # The workload waits for a file: the seed stream shows history, then follows the live run.
    gate = Path(api.daemon.base) / "go"
    script = f"echo new-out; echo new-err >&2; until [ -e {gate} ]; do sleep .02; done; echo new-out-2; exit 5"
    second = api.start(cell, "w", "sh", "-c", script)
    assert second.run == 2, "the new run must not reuse the run number of the freed cell's run"
    try:
        out = seed_stream(api, second.host_pid, observe_pb2.CHANNEL_STDOUT)
        assert next(out) == "new-out"
        gate.touch()
        assert list(out) == ["new-out-2"]
        assert list(seed_stream(api, second.host_pid, observe_pb2.CHANNEL_STDERR)) == ["new-err"]
    finally:
        gate.unlink(missing_ok=True)
    latest = follow_to_exit(api, cell, "w")
    assert {r.run for r in latest} == {2}
    assert data(latest, STDOUT) == [b"new-out", b"new-out-2"] and data(latest, STDERR) == [b"new-err"]
    assert latest[-1].exit.code == 5 and not data(latest, LOST)
    assert [r.seq for r in latest] == list(range(1, len(latest) + 1))
    previous = read(api, cell, "w", run=-1)
    assert {r.run for r in previous} == {1}
    assert data(previous, STDOUT) == [b"old-out"] and data(previous, STDERR) == [b"old-err"]
    assert previous[-1].channel == EXIT and previous[-1].exit.code == 3
    (exe,) = api.inspect(cell).executables
    assert exe.run == 2 and exe.state in ENDED and exe.exit.code == 5
    log = supervisor_log(api)
    assert "capture.append_failed" not in log and "exe.exit_record_failed" not in log


def test_reallocated_cell_gets_a_new_run_with_all_its_output(api: Api) -> None:
    cell = "reuse"
    run_old_then_free(api, cell)
    # Logs of a freed cell stay readable.
    assert data(read(api, cell, "w"), STDOUT) == [b"old-out"]
    check_new_run(api, cell)
    api.free(cell)


def test_run_numbers_continue_after_a_supervisor_restart(fresh_cellard: Any) -> None:
    daemon = fresh_cellard
    cell = "reuse"
    with daemon.channel() as channel:
        api = Api(daemon, channel)
        run_old_then_free(api, cell)
        supervisor = api.supervisor_pid()
    # Both processes die: the new supervisor knows the cell no more, only its logs remain.
    daemon.proc.kill()
    daemon.proc.wait(scaled(10))
    os.kill(supervisor, signal.SIGKILL)
    restart(daemon)
    with daemon.channel() as channel:
        api = Api(daemon, channel)
        assert api.supervisor_pid() != supervisor
        check_new_run(api, cell)
        api.free(cell)
