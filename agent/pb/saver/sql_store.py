"""The SQL both stores share: a table of reports and a table of machines (one row each, pointing at
its latest report), so listings read one row per machine instead of scanning the history.

Scaling (several savers over one PostgreSQL database, thousands of machines):
- savers keep no state of their own: every decision (a new machine over ``max_machines``, the
  latest report) is made in the database, and a newer report wins whichever saver wrote it;
- :meth:`SqlStore.save_many` writes a batch of reports in one transaction (the saver's servicer
  groups concurrent reports, one commit for many);
- history is pruned in bulk: a machine's rows are trimmed only when they exceed the kept history by
  a tenth, and readers cap at the kept history, so a prune deletes ~history/10 rows at once;
- indexes serve the dashboard: (uuid, id) for a machine's history, usage_at_ns for fleet charts.

Queries are written with ``?`` placeholders; a subclass converts them to its driver's style and
supplies the connection. Each call runs in one transaction under the store's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.pb.saver.store import (
    FleetPoint,
    NewReport,
    StoredReport,
    StoredSummary,
    StoreError,
    TooManyMachines,
)

# Columns added to `reports` after the first release, created on open when missing.
REPORT_COLUMNS = (("usage_at_ns", "BIGINT NOT NULL DEFAULT 0"), ("cpu_usage_us", "BIGINT NOT NULL DEFAULT 0"),
                  ("memory_used_bytes", "BIGINT NOT NULL DEFAULT 0"))
MACHINES_TABLE = (
    "CREATE TABLE IF NOT EXISTS machines (uuid TEXT PRIMARY KEY, latest_id BIGINT NOT NULL, "
    "received_at_ns BIGINT NOT NULL, hostname TEXT NOT NULL DEFAULT '', api_address TEXT NOT NULL DEFAULT '', "
    "reports BIGINT NOT NULL DEFAULT 0)"
)
# The latest report without its interfaces (NULL: read the report) and the interface counts, so that
# listings and the dashboard read a few KiB a machine instead of every port of the fleet.
MACHINE_COLUMNS = (("summary", "{blob}"), ("ifaces", "BIGINT NOT NULL DEFAULT 0"),
                   ("addresses", "BIGINT NOT NULL DEFAULT 0"), ("ports", "BIGINT NOT NULL DEFAULT 0"))
INDEXES = (
    "CREATE INDEX IF NOT EXISTS reports_uuid ON reports (uuid, id)",
    "CREATE INDEX IF NOT EXISTS reports_usage_at ON reports (usage_at_ns)",
    "CREATE INDEX IF NOT EXISTS machines_hostname ON machines (hostname)",
)
# The newer report (by id) wins each column, whichever saver wrote it last.
_NEWER = ("latest_id", "received_at_ns", "hostname", "api_address", "summary", "ifaces", "addresses", "ports")
UPSERT_MACHINE = (
    "INSERT INTO machines (uuid, latest_id, received_at_ns, hostname, api_address, summary, ifaces, addresses, "
    "ports, reports) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (uuid) DO UPDATE SET "
    + ", ".join(f"{c} = CASE WHEN excluded.latest_id > machines.latest_id THEN excluded.{c} ELSE machines.{c} END"
                for c in _NEWER)
    + ", reports = machines.reports + 1 RETURNING reports"
)
FLEET_USAGE = (
    "SELECT b, SUM(c), SUM(m), COUNT(*) FROM ("
    " SELECT uuid, b, AVG(cores) AS c, AVG(mem) AS m FROM ("
    "  SELECT uuid, usage_at_ns / ? AS b, memory_used_bytes AS mem,"
    "   (cpu_usage_us - LAG(cpu_usage_us) OVER w) * 1000.0 / NULLIF(usage_at_ns - LAG(usage_at_ns) OVER w, 0)"
    "   AS cores FROM reports WHERE usage_at_ns >= ? WINDOW w AS (PARTITION BY uuid ORDER BY id)"
    " ) x GROUP BY uuid, b"
    ") y GROUP BY b ORDER BY b"
)


class SqlStore:
    kind = "sql"
    schema: tuple[str, ...] = ()
    blob_type = "BLOB"

    def __init__(self, *, history: int, max_machines: int) -> None:
        self.history_limit = max(1, history)
        self.prune_slack = max(1, self.history_limit // 10)
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

    def _columns(self, cur: Any, table: str) -> set[str]:
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
        error = self.save_many([NewReport(uuid, report, received_at_ns, peer)])[0]
        if error is not None:
            raise error

    def _save_one(self, cur: Any, r: NewReport, known: list[int]) -> None:
        """``known``: [machines in the store] once counted in this transaction ([] before): one
        COUNT per batch, not per new machine."""
        q = self._q
        cur.execute(q("SELECT 1 FROM machines WHERE uuid = ?"), (r.uuid,))
        if cur.fetchone() is None:
            if not known:
                cur.execute("SELECT COUNT(*) FROM machines")
                known.append(int(cur.fetchone()[0]))
            if known[0] >= self.max_machines:
                raise TooManyMachines(f"the saver holds {self.max_machines} machines already")
            known[0] += 1
        cur.execute(q("INSERT INTO reports (uuid, received_at_ns, peer, report, usage_at_ns, cpu_usage_us, "
                      "memory_used_bytes) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"),
                    (r.uuid, r.received_at_ns, r.peer, r.report, r.usage_at_ns, r.cpu_usage_us, r.memory_used_bytes))
        new_id = int(cur.fetchone()[0])
        cur.execute(q(UPSERT_MACHINE), (r.uuid, new_id, r.received_at_ns, r.hostname, r.api_address,
                                        r.summary or None, r.ifaces, r.addresses, r.ports))
        if int(cur.fetchone()[0]) > self.history_limit + self.prune_slack:
            cur.execute(q("DELETE FROM reports WHERE uuid = ? AND id < (SELECT MIN(id) FROM "
                          "(SELECT id FROM reports WHERE uuid = ? ORDER BY id DESC LIMIT ?) k)"),
                        (r.uuid, r.uuid, self.history_limit))
            cur.execute(q("UPDATE machines SET reports = (SELECT COUNT(*) FROM reports WHERE uuid = ?) "
                          "WHERE uuid = ?"), (r.uuid, r.uuid))

    def save_many(self, reports: list[NewReport]) -> list[BaseException | None]:
        def body(cur: Any) -> list[BaseException | None]:
            results: list[BaseException | None] = []
            known: list[int] = []
            for r in reports:
                try:
                    self._save_one(cur, r, known)
                    results.append(None)
                except TooManyMachines as exc:  # checked before any write of this report
                    results.append(exc)
            return results

        out: list[BaseException | None] = self._run(body)
        return out

    def latest(self) -> list[StoredReport]:
        def body(cur: Any) -> list[StoredReport]:
            cur.execute("SELECT m.uuid, r.received_at_ns, r.peer, r.report, m.reports FROM machines m "
                        "JOIN reports r ON r.id = m.latest_id ORDER BY m.uuid")
            return [StoredReport(u, int(t), p, bytes(r), min(int(n), self.history_limit))
                    for u, t, p, r, n in cur.fetchall()]

        result: list[StoredReport] = self._run(body)
        return result

    def summaries(self) -> list[StoredSummary]:
        def body(cur: Any) -> list[StoredSummary]:
            cur.execute("SELECT m.uuid, m.received_at_ns, r.peer, COALESCE(m.summary, r.report), m.reports, "
                        "m.ifaces, m.addresses, m.ports FROM machines m JOIN reports r ON r.id = m.latest_id "
                        "ORDER BY m.uuid")
            return [StoredSummary(u, int(t), p, bytes(b), min(int(n), self.history_limit), int(i), int(a), int(o))
                    for u, t, p, b, n, i, a, o in cur.fetchall()]

        result: list[StoredSummary] = self._run(body)
        return result

    def history(self, uuid: str, limit: int) -> list[StoredReport]:
        def body(cur: Any) -> list[StoredReport]:
            cur.execute(self._q("SELECT uuid, received_at_ns, peer, report FROM reports WHERE uuid = ? "
                                "ORDER BY id DESC LIMIT ?"), (uuid, max(1, min(limit, self.history_limit))))
            return [StoredReport(u, int(t), p, bytes(r)) for u, t, p, r in cur.fetchall()]

        result: list[StoredReport] = self._run(body)
        return result

    def fleet_usage(self, since_ns: int, bucket_ns: int) -> list[FleetPoint]:
        def body(cur: Any) -> list[FleetPoint]:
            cur.execute(self._q(FLEET_USAGE), (max(1, bucket_ns), max(1, since_ns)))
            return [FleetPoint(int(b) * bucket_ns, float(c or 0.0), int(m or 0), int(n))
                    for b, c, m, n in cur.fetchall()]

        result: list[FleetPoint] = self._run(body)
        return result

    def ping(self) -> None:
        self._run(lambda cur: cur.execute("SELECT 1"))

    def _create_schema(self) -> None:
        def body(cur: Any) -> None:
            for statement in self.schema:
                cur.execute(statement)
            have = self._columns(cur, "reports")
            for name, decl in REPORT_COLUMNS:
                if name not in have:  # a database of an earlier saver
                    cur.execute(f"ALTER TABLE reports ADD COLUMN {name} {decl}")
            cur.execute(MACHINES_TABLE)
            have = self._columns(cur, "machines")
            for name, decl in MACHINE_COLUMNS:
                if name not in have:
                    cur.execute(f"ALTER TABLE machines ADD COLUMN {name} {decl.format(blob=self.blob_type)}")
            cur.execute("SELECT 1 FROM machines LIMIT 1")
            if cur.fetchone() is None:  # an earlier saver's reports: index them once
                cur.execute("INSERT INTO machines (uuid, latest_id, received_at_ns, reports) "
                            "SELECT uuid, MAX(id), MAX(received_at_ns), COUNT(*) FROM reports GROUP BY uuid")
            for statement in INDEXES:
                cur.execute(statement)

        self._run(body)
