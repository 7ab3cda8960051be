"""SQLite store (the default): one file, WAL mode, one connection shared under a lock."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.pb.saver.sql_store import SqlStore
from agent.pb.saver.store import StoreError


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a database file; None for SQLite's in-memory and temporary databases."""
    if path in ("", ":memory:"):
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


class SqliteStore(SqlStore):
    kind = "sqlite"
    schema = (
        "CREATE TABLE IF NOT EXISTS reports (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, "
        "received_at_ns INTEGER NOT NULL, peer TEXT NOT NULL, report BLOB NOT NULL)",
    )

    def __init__(self, path: str, *, history: int = 100, max_machines: int = 100_000) -> None:
        super().__init__(history=history, max_machines=max_machines)
        self.path = path
        try:
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._file = _identity(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"sqlite {path}: {exc}") from exc
        self._create_schema()

    def ping(self) -> None:
        """Also check that ``path`` still names the file we have open: SQLite keeps using a removed or
        moved-away file through its descriptor, and reports saved there are lost to the next start."""
        if self._file is not None:
            try:
                now = _identity(self.path)
            except OSError as exc:
                raise StoreError(f"sqlite {self.path}: {exc.strerror or exc}") from None
            if now != self._file:
                raise StoreError(f"sqlite {self.path}: the file was replaced since it was opened")
        super().ping()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _columns(self, cur: Any, table: str) -> set[str]:
        cur.execute(f"PRAGMA table_info({table})")
        return {str(row[1]) for row in cur.fetchall()}

    def close(self) -> None:
        with self.lock:
            self.conn.close()
