"""Where a worker saver keeps machine reports: the interface, and :func:`open_store`.

A report is stored as the serialized ``pb.Machine`` it arrived as (lossless, new fields included),
with its arrival time and the gRPC peer. Per machine the latest report plus a bounded history is
kept; the oldest are deleted on insert. Stores are synchronous (one connection and a lock);
servicers call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from observe import kinds


class StoreError(kinds.Unavailable):
    """The database failed (unreachable, disk full); the saver answers UNAVAILABLE."""


class TooManyMachines(kinds.Exhausted):
    """A report for a new machine while the store holds ``max_machines`` already."""


@dataclass(frozen=True)
class StoredReport:
    uuid: str
    received_at_ns: int
    peer: str
    report: bytes  # serialized pb.Machine
    reports: int = 1  # reports kept for this machine (listings only)


@dataclass(frozen=True)
class NewReport:
    """A report to store, with the columns the dashboard queries without parsing the report."""

    uuid: str
    report: bytes
    received_at_ns: int
    peer: str
    hostname: str = ""
    api_address: str = ""
    usage_at_ns: int = 0
    cpu_usage_us: int = 0
    memory_used_bytes: int = 0
    summary: bytes = b""  # the report without interfaces (b"": listings read the report)
    ifaces: int = 0
    addresses: int = 0
    ports: int = 0


@dataclass(frozen=True)
class StoredSummary:
    """A listing row: the latest report without interfaces (or the whole report when none was
    stored), with the interface counts."""

    uuid: str
    received_at_ns: int
    peer: str
    summary: bytes  # serialized pb.Machine
    reports: int
    ifaces: int
    addresses: int
    ports: int


@dataclass(frozen=True)
class FleetPoint:
    """The fleet's usage in one time bucket: summed over machines (each averaged in the bucket)."""

    at_ns: int
    cpu_cores: float
    memory_used_bytes: int
    machines: int


class MachineStore(Protocol):
    kind: str

    def save(self, uuid: str, report: bytes, received_at_ns: int, peer: str) -> None: ...

    def save_many(self, reports: list[NewReport]) -> list[BaseException | None]:
        """Store several reports in one transaction; per report None or the error that refused it."""
        ...

    def fleet_usage(self, since_ns: int, bucket_ns: int) -> list[FleetPoint]:
        """The fleet's CPU (cores, from consecutive reports' counters) and memory per time bucket."""
        ...

    def latest(self) -> list[StoredReport]:
        """The newest report of every machine, by uuid."""
        ...

    def summaries(self) -> list[StoredSummary]:
        """Every machine's listing row, by uuid (no interfaces: cheap for thousands of machines)."""
        ...

    def history(self, uuid: str, limit: int) -> list[StoredReport]:
        """Up to ``limit`` reports of one machine, newest first ([] for an unknown uuid)."""
        ...

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    def close(self) -> None: ...


def open_store(database: str, *, history: int = 100, max_machines: int = 100_000) -> MachineStore:
    """``postgresql://...`` / ``postgres://...`` -> PostgreSQL (psycopg 3); anything else is a SQLite path."""
    if database.startswith(("postgresql://", "postgres://")) or database.startswith("host="):
        try:
            from agent.pb.saver.postgres_store import PostgresStore
        except ImportError as exc:  # psycopg is the optional extra cellar[postgres]
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise StoreError(
                "a PostgreSQL database needs the psycopg driver, an optional extra: pip install 'cellar[postgres]' "
                f"(the Debian package includes it) ({exc})") from None

        return PostgresStore(database, history=history, max_machines=max_machines)
    from agent.pb.saver.sqlite_store import SqliteStore

    return SqliteStore(database, history=history, max_machines=max_machines)


class UnknownMachine(kinds.NotFound, LookupError):
    """No report stored for that uuid."""
