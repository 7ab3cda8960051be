"""Writer + history reader on real files: seq, framing, binary safety, rotation, torn tails, layout."""

import json
import os
from pathlib import Path

import pytest

from observe.errors import InvalidName, RunFinished, WriterBusy
from observe.linesplit import LineSplitter
from observe.logread import LogReader
from observe.logstore import (
    LogWriter,
    latest_run,
    list_executables,
    list_runs,
    list_segments,
    prune_runs,
    purge,
    run_dir,
    segment_name,
)
from observe.records import LogRecord, Stream, exit_payload


def covered(records: list[LogRecord]) -> list[int]:
    """Every seq the records cover, in order (a LOST record covers ``lost`` seqs)."""
    return [s for r in records for s in range(r.seq - r.span + 1, r.seq + 1)]


def lines(n: int, start: int = 0, size: int = 100) -> list[tuple[bytes, bool]]:
    return [(b"%09d" % i + b"x" * (size - 9), False) for i in range(start, start + n)]


def test_flood_keeps_seq_contiguous_and_in_order(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "run", segment_bytes=1 << 20, max_segments=100)
    expected = []
    for batch in range(200):
        stream = Stream.STDOUT if batch % 3 else Stream.STDERR
        chunk = lines(97, batch * 97)
        assert w.append_lines(stream, chunk) == (batch + 1) * 97
        expected += [(stream, data) for data, _ in chunk]
    w.append_exit(exit_payload(code=0, started_at_ns=1, ended_at_ns=2))
    w.close()
    recs = list(LogReader(tmp_path / "run").read())
    assert [r.seq for r in recs] == list(range(1, len(expected) + 2))
    assert [(r.stream, r.data) for r in recs[:-1]] == expected
    assert all(a.ts_ns <= b.ts_ns for a, b in zip(recs, recs[1:], strict=False))
    assert recs[-1].stream is Stream.EXIT and recs[-1].exit_info()["code"] == 0
    assert len(list_segments(tmp_path / "run")) > 1


def test_partial_flags_and_binary_round_trip_exactly(tmp_path: Path) -> None:
    blob = bytes(b for b in range(256) if b != 10) * (10 * 2**20 // 255)  # 10 MB, no newline
    stream_bytes = b"ok\n\xff\xfe\x00bad utf8\x00\n" + blob
    sp = LineSplitter()
    w = LogWriter(tmp_path / "run")
    for i in range(0, len(stream_bytes), 1 << 20):
        w.append_lines(Stream.STDOUT, sp.feed(stream_bytes[i : i + (1 << 20)]))
    w.append_lines(Stream.STDOUT, sp.flush())
    w.append_lines(Stream.STDERR, [(b"x" * 20 * 2**20, True)])  # the writer itself has no line limit
    w.close()
    recs = [r for r in LogReader(tmp_path / "run").read() if r.stream is Stream.STDOUT]
    assert recs[0].data == b"ok" and not recs[0].partial
    assert recs[1].data == b"\xff\xfe\x00bad utf8\x00" and not recs[1].partial
    assert all(r.partial for r in recs[2:])
    assert b"".join(r.data + (b"" if r.partial else b"\n") for r in recs) == stream_bytes
    big = list(LogReader(tmp_path / "run").read(streams=frozenset({Stream.STDERR})))
    assert len(big) == 1 and big[0].data == b"x" * 20 * 2**20 and big[0].partial


def test_rotation_keeps_max_segments_and_reports_lost_lines(tmp_path: Path) -> None:
    d = tmp_path / "run"
    w = LogWriter(d, segment_bytes=8192, max_segments=3)
    for i in range(100):
        w.append_lines(Stream.STDOUT, lines(10, i * 10))
    w.close()
    segs = list_segments(d)
    assert len(segs) == 3
    assert all(os.path.getsize(d / segment_name(s)) <= 8192 for s in segs)
    recs = list(LogReader(d).read())
    assert recs[0].stream is Stream.LOST and recs[0].lost == segs[0] - 1 and recs[0].seq == segs[0] - 1
    assert covered(recs) == list(range(1, 1001))
    # a cursor that points into rotated-away data gets the exact remainder
    recs = list(LogReader(d).read(after_seq=10))
    assert recs[0].lost == segs[0] - 11 and covered(recs) == list(range(11, 1001))
    # a cursor inside retained data: no marker
    recs = list(LogReader(d).read(after_seq=segs[1] + 3))
    assert recs[0].seq == segs[1] + 4 and covered(recs) == list(range(segs[1] + 4, 1001))


def test_tail_since_until_streams_limit(tmp_path: Path) -> None:
    clock = iter(range(1000, 10**8, 10))
    d = tmp_path / "run"
    w = LogWriter(d, segment_bytes=4096, max_segments=4, clock=lambda: next(clock))
    for i in range(1000):
        w.append_lines(Stream.STDOUT if i % 2 else Stream.STDERR, [(b"line-%d" % i, False)])
    w.close()
    r = LogReader(d)
    segs = list_segments(d)
    assert len(segs) == 4 and segs[0] > 1
    tail = list(r.read(tail=5))
    assert [x.data for x in tail] == [b"line-%d" % i for i in range(995, 1000)]
    err = list(r.read(tail=3, streams=frozenset({Stream.STDERR})))
    assert [x.data for x in err] == [b"line-994", b"line-996", b"line-998"]
    everything = list(r.read(tail=10_000))
    assert everything[0].stream is Stream.LOST and everything[0].lost == segs[0] - 1
    assert covered(everything) == list(range(1, 1001))
    window = list(r.read(since_ns=1000 + 10 * 950, until_ns=1000 + 10 * 960))
    assert [x.seq for x in window] == list(range(951, 961))
    tail_window = list(r.read(tail=2, since_ns=1000 + 10 * 950, until_ns=1000 + 10 * 960))
    assert [x.seq for x in tail_window] == [959, 960]
    before_retained = list(r.read(since_ns=0, until_ns=1000 + 10 * segs[0]))
    assert before_retained[0].stream is Stream.LOST and before_retained[0].lost == segs[0] - 1
    limited = list(r.read(after_seq=990, limit_bytes=len(b"line-990") * 3 + 1))
    assert [x.seq for x in limited] == [991, 992, 993]


def test_torn_tail_is_ignored_then_truncated_on_reopen(tmp_path: Path) -> None:
    d = tmp_path / "run"
    w = LogWriter(d)
    w.append_lines(Stream.STDOUT, lines(50))
    w.close()
    seg = d / segment_name(1)
    size = seg.stat().st_size
    for cut in (3, 30, 130):  # into the payload, into the header, a whole record plus a bit
        os.truncate(seg, size - cut)
        recs = list(LogReader(d).read())
        assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
        assert all(r.data == lines(1, r.seq - 1)[0][0] for r in recs)
    w = LogWriter(d)
    assert w.next_seq == 49
    assert w.append_lines(Stream.STDERR, [(b"after", False)]) == 49
    w.close()
    recs = list(LogReader(d).read())
    assert [r.seq for r in recs] == list(range(1, 50)) and recs[-1].data == b"after"


def test_zeros_after_the_last_record_are_cut(tmp_path: Path) -> None:
    d = tmp_path / "run"
    with LogWriter(d) as w:
        w.append_lines(Stream.STDOUT, lines(5))
    with open(d / segment_name(1), "ab") as f:  # a crash on some filesystems leaves zeros past the data
        f.write(b"\0" * 4000)
    assert [r.seq for r in LogReader(d).read()] == [1, 2, 3, 4, 5]
    with LogWriter(d) as w:
        assert w.append_lines(Stream.STDOUT, lines(1, 5)) == 6
    assert [r.data for r in LogReader(d).read()] == [x for x, _ in lines(6)]


def test_exit_is_final(tmp_path: Path) -> None:
    d = tmp_path / "run"
    w = LogWriter(d)
    w.append_lines(Stream.STDOUT, [(b"a", False)])
    assert w.append_exit(exit_payload(code=None, signal=9, oom_killed=True, started_at_ns=5, ended_at_ns=7))
    with pytest.raises(RunFinished):
        w.append_lines(Stream.STDOUT, [(b"b", False)])
    w.close()
    r = LogReader(d)
    assert r.finished()
    last = list(r.read())[-1]
    assert json.loads(last.data) == {
        "code": None,
        "signal": 9,
        "oom_killed": True,
        "started_at_ns": 5,
        "ended_at_ns": 7,
    }
    with pytest.raises(RunFinished):
        LogWriter(d).append_lines(Stream.STDOUT, [(b"c", False)])


def test_one_writer_per_run(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "run")
    with pytest.raises(WriterBusy):
        LogWriter(tmp_path / "run")
    w.close()
    LogWriter(tmp_path / "run").close()


def test_layout_lists_and_purge(tmp_path: Path) -> None:
    for cell, exe, run in [
        ("web", "api", 1),
        ("web", "api", 2),
        ("web", "worker.v2", 1),
        ("web/api", "x", 1),
    ]:
        LogWriter(run_dir(tmp_path, cell, exe, run)).close()
    assert run_dir(tmp_path, "web/api", "x", 1) == tmp_path / "web" / "api" / "exe.x" / "000001"
    assert list_executables(tmp_path, "web") == ["api", "worker.v2"]  # the child cell "api" is not one
    assert list_runs(tmp_path, "web", "api") == [1, 2] and latest_run(tmp_path, "web", "api") == 2
    assert latest_run(tmp_path, "nope", "api") is None
    purge(tmp_path, "web", "api")
    assert list_executables(tmp_path, "web") == ["worker.v2"]
    purge(tmp_path, "web")
    assert not (tmp_path / "web").exists()
    for cell, exe in [
        ("../x", "a"),
        ("web", "../a"),
        ("web", ".."),
        ("Web", "a"),
        ("web//x", "a"),
        ("web", "a/b"),
    ]:
        with pytest.raises(InvalidName):
            run_dir(tmp_path, cell, exe, 1)


def test_whole_lines_as_bytes_store_the_same_as_pairs(tmp_path: Path) -> None:
    """append_lines takes LineSplitter.split's plain-bytes form too: same records, same rotation."""
    batches = [[b"line %d-%d" % (i, k) + b"y" * (i % 50) for k in range(i % 9 + 1)] for i in range(300)]
    for name, form in (("pairs", lambda b: [(x, False) for x in b]), ("bytes", lambda b: b)):
        with LogWriter(tmp_path / name, segment_bytes=4096, max_segments=1000, clock=lambda: 7) as w:
            for batch in batches:
                w.append_lines(Stream.STDOUT, form(batch))
    assert os.listdir(tmp_path / "pairs") == os.listdir(tmp_path / "bytes")
    for seg in os.listdir(tmp_path / "pairs"):
        assert (tmp_path / "pairs" / seg).read_bytes() == (tmp_path / "bytes" / seg).read_bytes()
    assert [r.data for r in LogReader(tmp_path / "bytes").read()] == [x for b in batches for x in b]


def test_prune_runs_keeps_the_newest_and_what_fits(tmp_path: Path) -> None:
    for run, size in ((1, 500), (2, 400), (3, 300), (4, 5000)):
        directory = run_dir(tmp_path, "c", "x", run)
        directory.mkdir(parents=True)
        (directory / segment_name(1)).write_bytes(b"r" * size)
    assert prune_runs(tmp_path, "c", "x", keep_bytes=1000) == [3, 2, 1]  # the newest alone exceeds the bound
    assert list_runs(tmp_path, "c", "x") == [4]
    run_dir(tmp_path, "c", "x", 5).mkdir()
    assert prune_runs(tmp_path, "c", "x", keep_bytes=10_000) == [] and list_runs(tmp_path, "c", "x") == [4, 5]
    assert prune_runs(tmp_path, "c", "nothing", keep_bytes=0) == []
