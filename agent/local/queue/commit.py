"""Group commit: concurrent queue writes share one SQLite transaction and one fsync.

With ``synchronous = FULL`` every commit is an fsync of the WAL, and one fsync per RPC capped the queue
at a few hundred Sends/s however many clients sent. Here a write (Send, Receive, MarkDone) is queued on
the event loop instead of run at once; one drainer takes everything queued so far (at most
:data:`MAX_GROUP` ops), runs it on the store's worker thread in ONE transaction (``BEGIN IMMEDIATE``,
each op inside its own SAVEPOINT unless it is alone, then ``COMMIT``), and only then resolves each
op's future: an RPC is acknowledged after the commit that holds its write, so durability is exactly
what one transaction per RPC gave.

The wait is bounded without a timer: an op waits for at most the group being committed when it
arrived, then commits with everything that arrived meanwhile (nothing waits for company, so a lone
client pays no delay). An op that raises (NotFound, PermissionError, a constraint) is rolled back to
its savepoint and fails alone; a failed COMMIT fails every op of the group (none was acknowledged).
An op whose caller went away (cancelled future) before its group ran is skipped, not written.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

MAX_GROUP = 256  # ops per transaction: bounds a group's commit time (and so the next group's wait)

Op = tuple[Callable[..., Any], tuple[Any, ...]]


def commit_group(db: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
    """Run ``ops`` in one transaction (on the store's thread); per op (ok, result or exception)."""
    out: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        if len(ops) == 1:  # alone: its failure rolls back the transaction, no savepoint needed
            fn, args = ops[0]
            try:
                out.append((True, fn(*args)))
            except Exception as exc:
                db.execute("ROLLBACK")
                return [(False, exc)]
            db.execute("COMMIT")
            return out
        for fn, args in ops:
            db.execute("SAVEPOINT op")
            try:
                out.append((True, fn(*args)))
            except Exception as exc:  # this op fails alone
                db.execute("ROLLBACK TO op")
                out.append((False, exc))
            db.execute("RELEASE op")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return out


class GroupCommit:
    """The queue of pending writes of one store and its drainer (lives on cellard's event loop)."""

    def __init__(self, db: Callable[[], sqlite3.Connection], executor: Executor) -> None:
        self._db = db
        self._executor = executor
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.groups = 0  # commits made (for the bench and tests: ops / groups = the sharing)
        self.ops = 0

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside a shared transaction; returns once that transaction is committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, args, fut))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                group = [p for p in group if not p[2].cancelled()]
                if not group:
                    continue
                ops: list[Op] = [(fn, args) for fn, args, _ in group]
                try:
                    results = await loop.run_in_executor(self._executor, commit_group, self._db(), ops)
                except BaseException as exc:  # the commit failed: nothing of this group is acknowledged
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("queue closed"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self.groups += 1
                self.ops += len(group)
                for (_, _, fut), (ok, value) in zip(group, results, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._drainer = None
            leftover, self._pending = self._pending, []  # only when the drainer itself died (loop shutdown)
            for _, _, fut in leftover:
                if not fut.done():
                    fut.set_exception(RuntimeError("queue closed"))
