"""observe.query: a whole-cell follow reads the runs that begin after it started.

The set of runs is not fixed when the request starts: an executable started later in the cell, and
a later run of one already read, join the follow in timestamp order, each record once, and the
cursor after every batch names the newest run of each executable. The end rule is unchanged: the
follow ends once every run it knows of has its EXIT record (and a last look finds no new one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from observe.logread import LogReader, merge_follow
from observe.logstore import LogWriter, run_dir
from observe.query import CellCursor, LogQuery, run_query
from observe.records import Stream, exit_payload

Seen = tuple[str, int, Stream, bytes]


async def collect(log_root: Path, query: LogQuery, into: list[Seen], cursors: list[str]) -> None:
    async for batch, cursor in run_query(log_root, query):
        into += [(src.executable, src.run, rec.stream, rec.data) for src, rec in batch]
        cursors.append(cursor)


async def settle() -> None:
    """Give the follower a few of its poll turns (it polls every 10 ms when idle)."""
    await asyncio.sleep(0.1)


def lines(seen: list[Seen]) -> list[tuple[str, int, bytes]]:
    return [(exe, run, data) for exe, run, stream, data in seen if stream is Stream.STDOUT]


def test_cell_follow_picks_up_later_executables_and_runs(tmp_path: Path) -> None:
    a1 = LogWriter(run_dir(tmp_path, "web", "a", 1))
    a1.append_lines(Stream.STDOUT, [(b"a1-1", False)])
    seen: list[Seen] = []
    cursors: list[str] = []

    async def scenario() -> None:
        reader = asyncio.create_task(collect(tmp_path, LogQuery(cell="web", follow=True), seen, cursors))
        await settle()  # history read; following a/1 alone
        b1 = LogWriter(run_dir(tmp_path, "web", "b", 1))  # a new executable
        b1.append_lines(Stream.STDOUT, [(b"b1-1", False)])
        await settle()
        a1.append_lines(Stream.STDOUT, [(b"a1-2", False)])
        a1.append_exit(exit_payload(code=0))
        await settle()
        a2 = LogWriter(run_dir(tmp_path, "web", "a", 2))  # a later run of a known executable
        a2.append_lines(Stream.STDOUT, [(b"a2-1", False)])
        a2.append_exit(exit_payload(code=1))
        await settle()
        b1.append_lines(Stream.STDOUT, [(b"b1-2", False)])
        b1.append_exit(exit_payload(code=0))
        await asyncio.wait_for(reader, 10)  # every known run has exited: the follow ends
        for w in (a1, a2, b1):
            w.close()

    asyncio.run(scenario())
    assert lines(seen) == [
        ("a", 1, b"a1-1"), ("b", 1, b"b1-1"), ("a", 1, b"a1-2"), ("a", 2, b"a2-1"), ("b", 1, b"b1-2"),
    ]
    assert [(exe, run) for exe, run, stream, _ in seen if stream is Stream.EXIT] == [("a", 1), ("a", 2), ("b", 1)]
    assert CellCursor.decode(cursors[-1]).positions == {"a": (2, 2), "b": (1, 3)}


def test_cell_follow_from_a_cursor_reads_the_runs_after_it(tmp_path: Path) -> None:
    """A resumed follower missed nothing: runs begun since the cursor's run are read from their start."""
    a1 = LogWriter(run_dir(tmp_path, "web", "a", 1))
    a1.append_lines(Stream.STDOUT, [(b"a1-%d" % i, False) for i in range(1, 4)])
    a1.append_exit(exit_payload(code=0))
    a2 = LogWriter(run_dir(tmp_path, "web", "a", 2))
    a2.append_lines(Stream.STDOUT, [(b"a2-1", False)])
    seen: list[Seen] = []
    cursors: list[str] = []

    async def scenario() -> None:
        query = LogQuery(cell="web", follow=True, cursor=CellCursor({"a": (1, 2)}).encode())
        reader = asyncio.create_task(collect(tmp_path, query, seen, cursors))
        await settle()
        a2.append_lines(Stream.STDOUT, [(b"a2-2", False)])
        a2.append_exit(exit_payload(code=0))
        await asyncio.wait_for(reader, 10)

    asyncio.run(scenario())
    for w in (a1, a2):
        w.close()
    assert lines(seen) == [("a", 1, b"a1-3"), ("a", 2, b"a2-1"), ("a", 2, b"a2-2")]
    assert CellCursor.decode(cursors[-1]).positions == {"a": (2, 3)}


def test_cell_follow_does_not_read_runs_that_existed_before_it(tmp_path: Path) -> None:
    """Only runs that begin after the request are added: an older run of another executable is not."""
    old = LogWriter(run_dir(tmp_path, "web", "old", 1))
    old.append_lines(Stream.STDOUT, [(b"old run", False)])
    old.append_exit(exit_payload(code=0))
    old2 = LogWriter(run_dir(tmp_path, "web", "old", 2))
    old2.append_lines(Stream.STDOUT, [(b"latest run", False)])
    live = LogWriter(run_dir(tmp_path, "web", "live", 1))
    seen: list[Seen] = []
    cursors: list[str] = []

    async def scenario() -> None:
        query = LogQuery(cell="web", follow=True, tail=1, streams=frozenset({Stream.STDOUT}))
        reader = asyncio.create_task(collect(tmp_path, query, seen, cursors))
        await settle()
        live.append_lines(Stream.STDOUT, [(b"live", False)])
        old2.append_exit(exit_payload(code=0))
        live.append_exit(exit_payload(code=0))
        await asyncio.wait_for(reader, 10)

    asyncio.run(scenario())
    for w in (old, old2, live):
        w.close()
    assert lines(seen) == [("old", 2, b"latest run"), ("live", 1, b"live")]


def test_merge_follow_holds_records_a_run_not_yet_found_could_precede(tmp_path: Path) -> None:
    """``grow`` says up to when it has looked: a later record waits for that, so order holds across runs."""
    stamps = iter([100, 101])
    a = LogWriter(tmp_path / "a", clock=lambda: next(stamps))
    a.append_lines(Stream.STDOUT, [(b"a at 100", False)])
    a.append_exit(exit_payload(code=0))
    b = LogWriter(tmp_path / "b", clock=iter([80, 81]).__next__)
    b.append_lines(Stream.STDOUT, [(b"b at 80", False)])
    b.append_exit(exit_payload(code=0))
    looks = iter([([], 50), ([(LogReader(tmp_path / "b"), 0)], 150)])

    def grow() -> tuple[list[tuple[LogReader, int]], int]:
        return next(looks, ([], 200))

    async def follow() -> list[tuple[int, bytes]]:
        out = []
        async for batch in merge_follow([LogReader(tmp_path / "a")], grow=grow, poll_interval=0.001):
            out += [(i, r.data) for i, r in batch if r.stream is Stream.STDOUT]
        return out

    assert asyncio.run(follow()) == [(1, b"b at 80"), (0, b"a at 100")]
    a.close()
    b.close()
