"""The seed's per-line GetSubProcessStream never leaves a silent gap: lost lines become a marker line.

The seed ``LogItem`` has no field for "lines lost", so a LOST record (lines rotated away before the
reader got to them, or dropped on a full disk) is sent as a ``LogItem`` on the requested channel
whose line is ``[cellar: N lines lost (REASON)]`` (see agent/runtime/observe.py). A real cellard
with the smallest rotation settings rotates a few thousand lines away.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from proto.aurae import observe_pb2, observe_pb2_grpc, runtime_pb2
from proto.cellar.v1 import logs_pb2
from tests.support.api import Api, running_cellard
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

LINES = 20_000
MARKER = re.compile(r"^\[cellar: (\d+) lines lost \(rotated\)\]$")


@pytest.fixture(scope="module")
def api() -> Any:
    with running_cellard({"cells": {"log_segment_bytes": 4096, "log_max_segments": 2}}) as daemon:
        channel = daemon.channel()
        client = Api(daemon, channel)
        try:
            yield client
        finally:
            client.free_all()
            channel.close()


def stream(api: Api, channel: int, pid: int) -> list[observe_pb2.LogItem]:
    req = observe_pb2.GetSubProcessStreamRequest(channel_type=channel, process_id=pid)  # type: ignore[arg-type]
    return list(observe_pb2_grpc.ObserveStub(api.channel).GetSubProcessStream(req, timeout=scaled(60)))


def wait_exit_record(api: Api, cell: str, exe: str) -> None:
    deadline = time.monotonic() + scaled(60)
    while True:
        batches = api.logs.Read(logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=exe, tail=1),
                                timeout=scaled(30))
        if any(r.channel == logs_pb2.LOG_CHANNEL_EXIT for b in batches for r in b.records):
            return
        assert time.monotonic() < deadline, f"{cell}/{exe} did not exit"
        time.sleep(0.05)


def test_rotated_lines_arrive_as_a_marker_line(api: Api) -> None:
    cell = "rotated"
    api.allocate(cell)
    started: runtime_pb2.StartCellResponse = api.start(cell, "flood", "seq", "1", str(LINES))
    wait_exit_record(api, cell, "flood")
    items = stream(api, observe_pb2.CHANNEL_STDOUT, started.host_pid)
    assert items and items[0].channel == "stdout"
    m = MARKER.match(items[0].line)
    assert m, f"first item should say how many lines were lost, got {items[0].line!r}"
    lost = int(m.group(1))
    assert 0 < lost < LINES
    assert [i.channel for i in items] == ["stdout"] * len(items)
    assert [int(i.line) for i in items[1:]] == list(range(lost + 1, LINES + 1)), "every other line, in order"
    assert abs(items[0].timestamp - time.time()) < 600  # seconds, like every seed LogItem
    # The batched RPC reports the same gap as a LOST record.
    records = [r for b in api.logs.Read(logs_pb2.ReadLogsRequest(cell_name=cell, executable_name="flood"),
                                        timeout=scaled(30)) for r in b.records]
    assert records[0].channel == logs_pb2.LOG_CHANNEL_LOST and records[0].lost_count == lost
    # The store cannot tell which stream the lost lines were on: the stderr reader is told too.
    err = stream(api, observe_pb2.CHANNEL_STDERR, started.host_pid)
    assert [(i.channel, i.line) for i in err] == [("stderr", items[0].line)]
