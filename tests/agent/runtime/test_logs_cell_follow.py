"""cellar.v1.Logs/Read following a whole cell, through a real cellard: executables started later join.

A follower of a cell (no executable named, ``follow``) is not limited to the runs that existed when
it started: an executable started afterwards, and a new run of one it already reads, appear in
timestamp order, each record once. The follow still ends when every run it knows of has exited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from proto.cellar.v1 import logs_pb2, types_pb2
from tests.support.api import Api, code_of
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

STDOUT, EXIT = logs_pb2.LOG_CHANNEL_STDOUT, logs_pb2.LOG_CHANNEL_EXIT


class Follower:
    """One ``Logs/Read(cell, follow=True)`` call read on a thread; records and cursors pile up."""

    def __init__(self, api: Api, cell: str) -> None:
        self.records: list[logs_pb2.LogRecord] = []
        self.cursor = ""
        self.error: BaseException | None = None
        self._call = api.logs.Read(logs_pb2.ReadLogsRequest(cell_name=cell, follow=True), timeout=scaled(120))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self._call:
                self.records.extend(batch.records)
                self.cursor = batch.cursor or self.cursor
        except grpc.RpcError as exc:
            self.error = exc

    def has(self, exe: str, run: int, channel: int, data: bytes = b"") -> bool:
        return any(r.executable_name == exe and r.run == run and r.channel == channel and (not data or r.data == data)
                   for r in list(self.records))

    def join(self) -> None:
        self._thread.join(scaled(60))
        assert not self._thread.is_alive(), "the cell follow did not end after every run exited"
        assert self.error is None, self.error

    def cancel(self) -> None:
        self._call.cancel()
        self._thread.join(scaled(10))


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start_again(api: Api, cell: str, name: str, script: str) -> int:
    """Start a new run of ``name`` once its previous run is no longer live; returns the run."""
    deadline = time.monotonic() + scaled(30)
    while True:
        try:
            return api.start(cell, name, "/bin/sh", "-c", script).run
        except grpc.RpcError as exc:  # the previous run's exit is still being recorded
            retry = code_of(exc) in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_cell_follow_picks_up_executables_started_after_it(api: Api, tmp_path: Path) -> None:
    cell = "late"
    api.allocate(cell)
    release = tmp_path / "release"
    first = api.start(cell, "first", "/bin/sh", "-c",
                      f"echo first-start; while [ ! -e {release} ]; do sleep 0.05; done; echo first-end").run
    follower = Follower(api, cell)
    try:
        wait_for(lambda: follower.has("first", first, STDOUT, b"first-start"), "the follower to read the history")
        later = api.start(cell, "later", "/bin/sh", "-c", "echo later-1; echo later-2").run
        wait_for(lambda: follower.has("later", later, EXIT), "an executable started after the follow began")
        again = start_again(api, cell, "later", "echo later-again")
        assert again == later + 1
        wait_for(lambda: follower.has("later", again, EXIT), "a new run of an executable being followed")
        release.touch()
        follower.join()
    finally:
        release.touch()
        follower.cancel()
    records = follower.records
    assert [(r.executable_name, r.run, r.data) for r in records if r.channel == STDOUT] == [
        ("first", first, b"first-start"),
        ("later", later, b"later-1"), ("later", later, b"later-2"),
        ("later", again, b"later-again"),
        ("first", first, b"first-end"),
    ]
    assert [(r.executable_name, r.run) for r in records if r.channel == EXIT] == [
        ("later", later), ("later", again), ("first", first)]
    keys = [(r.executable_name, r.run, r.seq) for r in records]
    assert len(keys) == len(set(keys)), "a record came twice"
    stamps = [r.timestamp_ns for r in records]
    assert stamps == sorted(stamps)
    assert follower.cursor == f"v1:first={first}.3,later={again}.2"
    # Nothing left unread: the cursor resumes to an empty answer.
    rest = list(api.logs.Read(logs_pb2.ReadLogsRequest(cell_name=cell, cursor=follower.cursor), timeout=scaled(30)))
    assert not [r for b in rest for r in b.records]
    info = {e.name: e.state for e in api.inspect(cell).executables}
    assert info == {"first": types_pb2.EXECUTABLE_STATE_EXITED, "later": types_pb2.EXECUTABLE_STATE_EXITED}
