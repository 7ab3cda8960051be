"""``cellar logs`` prints what the Logs servicer sends: an exit record's run times included.

The CLI asks for packed batches (one executable) and maps them to LogRecord messages itself; a
whole-cell read arrives as LogRecord messages. Either way the exit marker names when the run started
and ended, and ``-t``/``--timestamps`` prefixes every line it prints, markers too (kubectl's rule).
"""

from __future__ import annotations

import io
import json
import re
import time

import pytest

from agent.cli.human import rfc3339_ns
from agent.cli.logs import _print, _unpacked
from observe.records import LogRecord, Stream, encode, exit_payload
from proto.cellar.v1 import logs_pb2
from tests.agent.cli.test_cells_cli import cellar, wait_exited
from tests.support.api import Api
from tests.support.timeouts import scaled

STARTED = 1_765_000_000_123_456_789
ENDED = STARTED + 1_333_000_000
WRITTEN = ENDED + 2_000


def packed_batch() -> tuple[logs_pb2.LogBatch, bytes]:
    exit_rec = LogRecord(3, WRITTEN, Stream.EXIT, json.dumps(
        exit_payload(code=0, started_at_ns=STARTED, ended_at_ns=ENDED)).encode())
    lost = LogRecord(2, STARTED + 5, Stream.LOST, b"rotated", lost=1)
    packed = encode(LogRecord(1, STARTED + 1, Stream.STDOUT, b"hi")) + encode(lost) + encode(exit_rec)
    return logs_pb2.LogBatch(packed=packed, executable_name="hello", run=2), packed


def exit_record(started: int = STARTED, ended: int = ENDED) -> logs_pb2.LogRecord:
    rec = logs_pb2.LogRecord(cell_name="web", executable_name="hello", run=2, seq=3, timestamp_ns=WRITTEN,
                             channel=logs_pb2.LOG_CHANNEL_EXIT)
    rec.exit.code = 0
    rec.exit.started_at_ns, rec.exit.ended_at_ns = started, ended
    return rec


def test_packed_batch_keeps_the_run_times() -> None:
    batch, packed = packed_batch()
    records = _unpacked(batch, packed, "web")
    assert [r.channel for r in records] == [logs_pb2.LOG_CHANNEL_STDOUT, logs_pb2.LOG_CHANNEL_LOST,
                                            logs_pb2.LOG_CHANNEL_EXIT]
    assert records[2] == exit_record()


def test_exit_line_names_the_run_times(capsys: pytest.CaptureFixture[str]) -> None:
    _print(exit_record(), "text", timestamps=False, many=True, out=io.BytesIO())
    err = capsys.readouterr().err
    assert err == f"cellar: [hello] exited: code 0, ran {rfc3339_ns(STARTED)} to {rfc3339_ns(ENDED)} (1.333s)\n"


def test_exit_line_without_run_times_is_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    _print(exit_record(0, 0), "text", timestamps=False, many=False, out=io.BytesIO())
    assert capsys.readouterr().err == "cellar: exited: code 0\n"


def test_timestamps_prefix_every_line_markers_too(capsys: pytest.CaptureFixture[str]) -> None:
    batch, packed = packed_batch()
    out = io.BytesIO()
    for rec in _unpacked(batch, packed, "web"):
        _print(rec, "text", timestamps=True, many=False, out=out)
    assert out.getvalue() == f"{rfc3339_ns(STARTED + 1)} hi\n".encode()
    assert capsys.readouterr().err.splitlines() == [
        f"{rfc3339_ns(STARTED + 5)} cellar: 1 lines lost (rotated away or dropped)",
        f"{rfc3339_ns(WRITTEN)} cellar: exited: code 0, ran {rfc3339_ns(STARTED)} to {rfc3339_ns(ENDED)} (1.333s)",
    ]


@pytest.mark.parametrize(("ns", "text"), [(1_333_000_000, "1.333s"), (61 * 10**9, "1m01s"),
                                          (3 * 3600 * 10**9 + 62 * 10**9, "3h01m02s")])
def test_run_length(capsys: pytest.CaptureFixture[str], ns: int, text: str) -> None:
    _print(exit_record(STARTED, STARTED + ns), "text", timestamps=False, many=False, out=io.BytesIO())
    assert capsys.readouterr().err.endswith(f" ({text})\n")


def test_json_exit_has_the_run_times() -> None:
    out = io.BytesIO()
    _print(exit_record(), "json", timestamps=False, many=False, out=out)
    got = json.loads(out.getvalue())
    assert got["exit"] == "code 0" and got["time"] == rfc3339_ns(WRITTEN)
    assert (got["started"], got["ended"]) == (rfc3339_ns(STARTED), rfc3339_ns(ENDED))
    assert (got["started_at_ns"], got["ended_at_ns"]) == (STARTED, ENDED)


@pytest.mark.root
def test_cellar_logs_shows_the_run_times_of_a_real_run(api: Api) -> None:
    api.allocate("logtimes")
    before = time.time_ns()
    api.start("logtimes", "hello", "sh", "-c", "echo hi; sleep 0.2")
    wait_exited(api, "logtimes", "hello")
    after = time.time_ns()

    for target, who in (("logtimes/hello", ""), ("logtimes", "[hello] ")):  # a packed read, a whole-cell read
        proc = cellar(api, "logs", target)
        (line,) = [x for x in proc.stderr.splitlines() if "exited" in x]
        prefix = f"cellar: {who}exited: code 0, ran "
        assert line.startswith(prefix), line
        start, _to, end, length = line.removeprefix(prefix).split(" ")
        assert rfc3339_ns(before) <= start <= end <= rfc3339_ns(after), line
        assert re.fullmatch(r"\(\d+\.\d{3}s\)", length) and float(length[1:-2]) >= 0.2, line

        stamped = cellar(api, "logs", "-t", target)
        (line,) = [x for x in stamped.stderr.splitlines() if "exited" in x]
        stamp, rest = line.split(" ", 1)
        assert end <= stamp <= rfc3339_ns(after + int(scaled(1) * 10**9)) and rest.startswith(prefix), line

        records = [json.loads(x) for x in cellar(api, "-o", "json", "logs", target).stdout.splitlines()]
        (exit_json,) = [r for r in records if r.get("channel") == "exit"]
        assert (exit_json["started"], exit_json["ended"]) == (start, end)
