"""SQLite for the node-local stores (the files index, the queue): one way to open and run a database.

Each store owns one connection and one worker thread, and runs every statement on that thread
(:meth:`SqliteStore.run`): the event loop never waits on SQLite, and since only that thread ever
touches the connection, ``check_same_thread`` is off and no locks are needed. Connections are in
autocommit mode (``isolation_level=None``); a store that needs several statements to land together
says ``BEGIN IMMEDIATE`` itself. WAL, so a reader never waits for the writer; ``synchronous=FULL`` by
default, so what a reply acknowledged is on disk (the queue may be configured down to ``NORMAL``).

A schema is ``CREATE ... IF NOT EXISTS`` statements, applied on every open; a store whose layout
changed keeps its version in ``PRAGMA user_version`` and brings an older file up to it first
(``migrate``), before the schema runs, so the statements meet the layout they were written for.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def open_db(
    path: str,
    schema: str,
    *,
    synchronous: str = "FULL",
    version: int = 0,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
    foreign_keys: bool = False,
    cached_statements: int = 128,
) -> sqlite3.Connection:
    """The database at ``path`` (its directory made 0700 if missing), with ``schema`` applied.

    ``migrate`` runs before the schema, ``foreign_keys`` is switched on after it (a migration may need
    them off); ``version`` (when not 0) is recorded as ``user_version`` once the schema is in place.
    ``cached_statements``: how many prepared statements the connection keeps, by SQL text (sqlite3's
    default, 128); a store that runs constant SQL on its one connection prepares each statement once.
    """
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous: FULL or NORMAL, got {synchronous!r}")
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=cached_statements)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if migrate is not None:
            migrate(db)
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
        db.executescript(schema)
        if version:
            db.execute(f"PRAGMA user_version={int(version)}")
    except BaseException:
        db.close()
        raise
    return db


class SqliteStore:
    """What a store built on one connection and one worker thread shares. The store (a dataclass)
    declares the two fields, so each names its own thread::

        _db: sqlite3.Connection | None = None
        _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="..."))
    """

    _db: sqlite3.Connection | None
    _executor: ThreadPoolExecutor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, f"{type(self).__name__}.open() first"
        return self._db

    def close(self) -> None:
        """Wait for the worker thread's last call, then close the database."""
        self._executor.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None
