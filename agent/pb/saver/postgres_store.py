"""PostgreSQL store (psycopg 3), for a fleet that outgrows one SQLite file.

One connection under a lock, reopened after a failure (the server restarted, the network dropped),
so a saver outlives a database restart without being restarted itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from agent.pb.saver.sql_store import SqlStore
from agent.pb.saver.store import StoreError


class PostgresStore(SqlStore):
    kind = "postgresql"
    blob_type = "BYTEA"
    schema = (
        # Savers starting together over one database: one creates the schema, the others wait.
        "SELECT pg_advisory_xact_lock(7444)",
        "CREATE TABLE IF NOT EXISTS reports (id BIGSERIAL PRIMARY KEY, uuid TEXT NOT NULL, "
        "received_at_ns BIGINT NOT NULL, peer TEXT NOT NULL, report BYTEA NOT NULL)",
        # Reports are written far more often than read: store them out of line uncompressed (pglz
        # on every 30-KiB report costs more CPU than the disk it saves; the history is bounded).
        "ALTER TABLE reports ALTER COLUMN report SET STORAGE EXTERNAL",
    )

    def __init__(self, dsn: str, *, history: int = 100, max_machines: int = 100_000) -> None:
        super().__init__(history=history, max_machines=max_machines)
        self.dsn = dsn
        self.conn: psycopg.Connection[Any] | None = None
        self._create_schema()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.dsn, connect_timeout=5)
        return self.conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            conn = self._connection()
        except psycopg.Error as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    def _columns(self, cur: Any, table: str) -> set[str]:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s", (table,))
        return {str(row[0]) for row in cur.fetchall()}

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
