"""Group commit of the queue store (agent.local.queue.commit) on a REAL SQLite file, in process: concurrent
writes share commits, each is answered only once committed, one failing op fails alone, a cancelled op
is not written, and what was answered is in the file when it is opened again."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from agent.local.parigot import ParigotError
from agent.local.queue.commit import MAX_GROUP, commit_group
from agent.local.queue.store import Outgoing, QueueStore


def _store(tmp_path: Path) -> QueueStore:
    return QueueStore(os.path.join(tmp_path, "queue.db"), visibility_timeout_s=30).open()


def _rows(path: Path) -> int:
    with sqlite3.connect(os.path.join(path, "queue.db")) as db:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])


def test_concurrent_sends_share_commits_and_all_land(tmp_path: Path) -> None:
    store = _store(tmp_path)
    qid = store.create("host", "jobs")

    async def main() -> list[list[tuple[int, int] | None]]:
        sends = [store.write(store.send_op, "host", qid, [Outgoing(b"p%d" % i)]) for i in range(3 * MAX_GROUP)]
        return await asyncio.gather(*sends)

    try:
        ids = asyncio.run(main())
        group = store.group
        assert group.ops == 3 * MAX_GROUP and group.groups < group.ops / 4, (group.groups, group.ops)
    finally:
        store.close()
    assert len({i[0] for i in ids}) == 3 * MAX_GROUP
    assert _rows(tmp_path) == 3 * MAX_GROUP  # a fresh connection sees every answered message


def test_an_op_that_fails_fails_alone_and_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    qid = store.create("host", "jobs")
    other = store.create("cell:a", "theirs")

    async def main() -> list[object]:
        return list(await asyncio.gather(
            store.write(store.send_op, "host", qid, [Outgoing(b"a")]),
            store.write(store.send_op, "host", other, [Outgoing(b"b")]),  # another scope's queue
            store.write(store.receive_op, "host", qid, -1),  # hostile limit
            store.write(store.send_op, "host", qid, [Outgoing(b"c")]),
            return_exceptions=True,
        ))

    try:
        first, theirs, bad, last = asyncio.run(main())
        assert isinstance(theirs, ParigotError) and theirs.name == "NotFound"
        assert isinstance(bad, ParigotError) and bad.name == "UnmarshalError" and "message_limit" in str(bad)
        assert isinstance(first, list) and isinstance(last, list)
        assert store.length("host", qid) == 2 and store.length("cell:a", other) == 0
    finally:
        store.close()


def test_a_savepoint_rolls_back_a_half_done_op(tmp_path: Path) -> None:
    """An op that wrote and then raised leaves none of its writes; the group's other ops commit."""
    store = _store(tmp_path)
    qid = store.create("host", "jobs")

    def half(scope: str) -> None:
        store.send_op(scope, qid, [Outgoing(b"half")])
        raise ValueError("after a write")

    try:
        out = commit_group(store.db, [(store.send_op, ("host", qid, [Outgoing(b"x")])), (half, ("host",))])
        assert out[0][0] and not out[1][0] and isinstance(out[1][1], ValueError)
        assert not store.db.in_transaction and store.length("host", qid) == 1
        [(ok, exc)] = commit_group(store.db, [(half, ("host",))])  # alone: no savepoint, the whole rollback
        assert not ok and isinstance(exc, ValueError)
        assert not store.db.in_transaction and store.length("host", qid) == 1
    finally:
        store.close()


def test_a_cancelled_write_is_not_made(tmp_path: Path) -> None:
    store = _store(tmp_path)
    qid = store.create("host", "jobs")

    async def main() -> None:
        first = asyncio.ensure_future(store.write(store.send_op, "host", qid, [Outgoing(b"kept")]))
        await asyncio.sleep(0)  # the first group is on the worker thread
        gone = asyncio.ensure_future(store.write(store.send_op, "host", qid, [Outgoing(b"gone")]))
        await asyncio.sleep(0)
        gone.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone
        await store.write(store.send_op, "host", qid, [])  # the drainer has passed the cancelled op

    try:
        asyncio.run(main())
        assert [m.payload for m in store.receive("host", qid, 10)] == [b"kept"]
    finally:
        store.close()
