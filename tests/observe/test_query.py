"""observe.query: history then follow, addressed by cell and executable.

The follow after a history read starts where the history *looked*, not where it last *matched*:
`cellar logs -f --tail 0` and `--since 1s` on a quiet run must show only what comes next.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from observe.logstore import LogWriter, run_dir
from observe.query import LogQuery, run_query, run_query_packed
from observe.records import Stream, iter_packed

EXIT = {"code": 0, "signal": None, "oom_killed": False, "started_at_ns": 1, "ended_at_ns": 2}


async def follow_lines(log_root: Path, query: LogQuery, packed: bool) -> list[bytes]:
    out: list[bytes] = []
    if packed:
        async for data, _cursor, _src in run_query_packed(log_root, query):
            out += [r.data for r in iter_packed(data) if r.stream is Stream.STDOUT]
    else:
        async for batch, _cursor in run_query(log_root, query):
            out += [r.data for _src, r in batch if r.stream is Stream.STDOUT]
    return out


@pytest.mark.parametrize("packed", [False, True], ids=["records", "packed"])
@pytest.mark.parametrize("window", ["tail0", "since_now"])
def test_follow_after_an_empty_history_window_shows_only_new_lines(tmp_path: Path, packed: bool, window: str) -> None:
    writer = LogWriter(run_dir(tmp_path, "web", "api", 1))
    writer.append_lines(Stream.STDOUT, [(b"old %d" % i, False) for i in range(100)])

    async def scenario() -> list[bytes]:
        import time

        extra = {"tail": 0} if window == "tail0" else {"since_ns": time.time_ns() + 1}
        query = LogQuery(cell="web", executable="api", follow=True, **extra)  # type: ignore[arg-type]
        reader = asyncio.create_task(follow_lines(tmp_path, query, packed))
        await asyncio.sleep(0.2)  # the history is read and found empty
        writer.append_lines(Stream.STDOUT, [(b"new", False)])
        writer.append_exit(EXIT)
        return await asyncio.wait_for(reader, 10)

    assert asyncio.run(scenario()) == [b"new"]
    writer.close()


@pytest.mark.parametrize("packed", [False, True], ids=["records", "packed"])
def test_follow_after_tail_continues_after_the_tail(tmp_path: Path, packed: bool) -> None:
    writer = LogWriter(run_dir(tmp_path, "web", "api", 1))
    writer.append_lines(Stream.STDOUT, [(b"old %d" % i, False) for i in range(100)])

    async def scenario() -> list[bytes]:
        query = LogQuery(cell="web", executable="api", follow=True, tail=2)
        reader = asyncio.create_task(follow_lines(tmp_path, query, packed))
        await asyncio.sleep(0.2)
        writer.append_lines(Stream.STDOUT, [(b"new", False)])
        writer.append_exit(EXIT)
        return await asyncio.wait_for(reader, 10)

    assert asyncio.run(scenario()) == [b"old 98", b"old 99", b"new"]
    writer.close()
