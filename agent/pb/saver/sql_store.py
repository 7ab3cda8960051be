"""The SQL both stores share: one table of reports, trimmed to a bounded history per machine.

Queries are written with ``?`` placeholders; a subclass converts them to its driver's style and
supplies the connection. Each call runs in one transaction under the store's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.pb.saver.store import StoredReport, StoreError, TooManyMachines


class SqlStore:
    kind = "sql"
    schema: tuple[str, ...] = ()

    def __init__(self, *, history: int, max_machines: int) -> None:
        self.history_limit = max(1, history)
        self.max_machines = max_machines
        self.lock = threading.Lock()

    # -- driver hooks ------------------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql

    @contextmanager
    def _tx(self) -> Iterator[Any]:  # yields a cursor inside a transaction
        raise NotImplementedError
        yield

    def _errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    # -- API -------------------------------------------------------------------------------------
    def _run(self, fn: Any) -> Any:
        with self.lock:
            try:
                with self._tx() as cur:
                    return fn(cur)
            except self._errors() as exc:
                raise StoreError(f"{self.kind}: {exc}") from exc

    def save(self, uuid: str, report: bytes, received_at_ns: int, peer: str) -> None:
        q = self._q

        def body(cur: Any) -> None:
            cur.execute(q("SELECT 1 FROM reports WHERE uuid = ? LIMIT 1"), (uuid,))
            if cur.fetchone() is None:
                cur.execute(q("SELECT COUNT(DISTINCT uuid) FROM reports"))
                if int(cur.fetchone()[0]) >= self.max_machines:
                    raise TooManyMachines(f"the saver holds {self.max_machines} machines already")
            cur.execute(q("INSERT INTO reports (uuid, received_at_ns, peer, report) VALUES (?, ?, ?, ?)"),
                        (uuid, received_at_ns, peer, report))
            cur.execute(
                q("DELETE FROM reports WHERE uuid = ? AND id NOT IN "
                  "(SELECT id FROM reports WHERE uuid = ? ORDER BY id DESC LIMIT ?)"),
                (uuid, uuid, self.history_limit),
            )

        self._run(body)

    def latest(self) -> list[StoredReport]:
        def body(cur: Any) -> list[StoredReport]:
            cur.execute(
                "SELECT r.uuid, r.received_at_ns, r.peer, r.report, c.n FROM reports r JOIN "
                "(SELECT uuid, MAX(id) AS top, COUNT(*) AS n FROM reports GROUP BY uuid) c "
                "ON r.id = c.top ORDER BY r.uuid"
            )
            return [StoredReport(u, int(t), p, bytes(r), int(n)) for u, t, p, r, n in cur.fetchall()]

        result: list[StoredReport] = self._run(body)
        return result

    def history(self, uuid: str, limit: int) -> list[StoredReport]:
        def body(cur: Any) -> list[StoredReport]:
            cur.execute(self._q("SELECT uuid, received_at_ns, peer, report FROM reports WHERE uuid = ? "
                                "ORDER BY id DESC LIMIT ?"), (uuid, max(1, limit)))
            return [StoredReport(u, int(t), p, bytes(r)) for u, t, p, r in cur.fetchall()]

        result: list[StoredReport] = self._run(body)
        return result

    def ping(self) -> None:
        self._run(lambda cur: cur.execute("SELECT 1"))

    def _create_schema(self) -> None:
        def body(cur: Any) -> None:
            for statement in self.schema:
                cur.execute(statement)

        self._run(body)
