"""Followers: everything exactly once across rotation, explicit LOST when left behind, end at EXIT."""

import asyncio
from pathlib import Path

from observe.logread import LogReader, merge, merge_follow
from observe.logstore import LogWriter
from observe.records import LogRecord, Stream, exit_payload


def covered(records: list[LogRecord]) -> list[int]:
    return [s for r in records for s in range(r.seq - r.span + 1, r.seq + 1)]


async def collect(reader: LogReader, **kw: object) -> list[LogRecord]:
    out: list[LogRecord] = []
    async for batch in reader.follow(poll_interval=0.001, **kw):  # type: ignore[arg-type]
        out += batch
    return out


def test_follower_started_first_sees_everything_once(tmp_path: Path) -> None:
    d = tmp_path / "run"

    async def main() -> list[LogRecord]:
        task = asyncio.create_task(collect(LogReader(d), max_batch=50))
        await asyncio.sleep(0.01)  # the directory does not even exist yet
        w = LogWriter(d, segment_bytes=4096, max_segments=1000)
        for i in range(300):
            w.append_lines(
                Stream.STDOUT if i % 2 else Stream.STDERR, [(b"l%d-%d" % (i, k), False) for k in range(7)]
            )
            if i % 10 == 0:
                await asyncio.sleep(0.002)
        w.append_exit(exit_payload(code=3))
        w.close()
        return await asyncio.wait_for(task, 10)

    recs = asyncio.run(main())
    assert [r.seq for r in recs] == list(range(1, 2102))
    assert recs[-1].stream is Stream.EXIT and recs[-1].exit_info()["code"] == 3
    assert recs[5].data == b"l0-5"


def test_follower_left_behind_gets_exact_lost_count(tmp_path: Path) -> None:
    d = tmp_path / "run"

    async def main() -> list[LogRecord]:
        w = LogWriter(d, segment_bytes=4096, max_segments=2)
        w.append_lines(Stream.STDOUT, [(b"first", False)])
        out: list[LogRecord] = []
        gen = LogReader(d).follow(poll_interval=0.001, max_batch=1)
        out += await anext(gen)  # holds segment 1 open from here on
        for i in range(2000):  # rotates segment 1 (and many more) away under the follower
            w.append_lines(Stream.STDOUT, [(b"x%05d" % i, False)])
        w.append_exit(exit_payload(code=0))
        w.close()
        async for batch in gen:
            out += batch
        return out

    recs = asyncio.run(main())
    lost = [r for r in recs if r.stream is Stream.LOST]
    assert len(lost) == 1 and lost[0].lost > 1000
    assert covered(recs) == list(range(1, 2003))  # no seq twice, none silently missing
    assert recs[-1].stream is Stream.EXIT


def test_follow_from_cursor_and_filter(tmp_path: Path) -> None:
    d = tmp_path / "run"
    with LogWriter(d) as w:
        for i in range(10):
            w.append_lines(Stream.STDOUT if i % 2 else Stream.STDERR, [(b"%d" % i, False)])
        w.append_exit(exit_payload(code=0))
    recs = asyncio.run(collect(LogReader(d), after_seq=6, streams=frozenset({Stream.STDOUT})))
    assert [r.data for r in recs] == [b"7", b"9"]


def test_merge_interleaves_by_time(tmp_path: Path) -> None:
    ticks = iter(range(1, 10**6))
    writers = [LogWriter(tmp_path / n, clock=lambda: next(ticks)) for n in ("a", "b")]
    for i in range(20):
        writers[i % 3 == 0].append_lines(Stream.STDOUT, [(b"%d" % i, False)])
    for w in writers:
        w.append_exit(exit_payload(code=0))
        w.close()
    readers = [LogReader(tmp_path / n) for n in ("a", "b")]
    lines = [r.data for _, r in merge(readers) if r.stream is Stream.STDOUT]
    assert lines == [b"%d" % i for i in range(20)]
    assert [r.data for _, r in merge(readers, tail=3, streams=frozenset({Stream.STDOUT}))] == [
        b"17",
        b"18",
        b"19",
    ]

    async def follow_all() -> list[bytes]:
        out = []
        async for batch in merge_follow(readers, poll_interval=0.001, grace_ns=0):
            out += [r.data for _, r in batch if r.stream is Stream.STDOUT]
        return out

    assert asyncio.run(follow_all()) == lines
