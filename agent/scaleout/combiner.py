"""The node-local combiner's state: clients, their task queues, and what they report.

Everything a client or the operator is told was accepted is in SQLite (WAL, synchronous=FULL) under
``<state_dir>/scaleout.db`` before the reply, so a cellard crash loses no queued task and no record.
Liveness (last heartbeat or poll) lives in memory: after a restart a client is offline until it next
calls, which the official client does every 2 s (heartbeat) or 5 s (poll).

Task life: ``NEW`` (queued, FIFO per client) -> handed out by PollAndReport/TaskStream as ``PENDING``
-> the client's reports (``RUNNING``) -> done: ``COMPLETED`` / ``FAILED`` / ``INTERRUPTED``.
The operator can cancel: a ``NEW`` task becomes ``CANCELLED`` and is never delivered; a handed-out
one is answered ``INTERRUPTED`` on the client's next report. A task past its ``timeout_s`` is
answered ``TIMEOUT`` and recorded so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.core import counters
from agent.scaleout.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

log = structlog.get_logger("agent.scaleout.combiner")

OFFLINE_AFTER_S = 30.0
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$")
TASK_TYPES = ("Fedn_ModelUpdate", "Fedn_Validation", "Fedn_Prediction")
DONE = frozenset({"COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT", "CANCELLED"})
_DONE_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(DONE)) + ")"
REPORTED = frozenset({"PENDING", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED"})
RECORD_KINDS = ("status", "model_update", "model_validation", "model_prediction", "model_metric",
                "attributes", "telemetry", "announce")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, name TEXT NOT NULL, connected INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL, announced_ns INTEGER NOT NULL, version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, correlation_id TEXT UNIQUE NOT NULL, client_id TEXT NOT NULL,
    type TEXT NOT NULL, model_id TEXT NOT NULL, data TEXT NOT NULL, session_id TEXT NOT NULL,
    round_id TEXT NOT NULL, status TEXT NOT NULL, created_ns INTEGER NOT NULL, started_ns INTEGER NOT NULL,
    finished_ns INTEGER NOT NULL, timeout_s REAL NOT NULL, cancel_requested INTEGER NOT NULL,
    response TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (client_id, status, seq);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, client_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL, model_id TEXT NOT NULL, body TEXT NOT NULL, ts_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, id);
CREATE TABLE IF NOT EXISTS claims (
    client_id TEXT PRIMARY KEY, principal TEXT NOT NULL, claimed_ns INTEGER NOT NULL);
"""

_TASK_COLUMNS = ("seq, correlation_id, client_id, type, model_id, data, session_id, round_id, status, created_ns, "
                 "started_ns, finished_ns, timeout_s, cancel_requested, response")


def check_client_id(client_id: str, field: str = "client-id") -> str:
    if not CLIENT_ID.match(client_id):
        raise InvalidArgument(f"{field}: expected 1-128 characters [A-Za-z0-9._:@+=-] starting with a letter or "
                              f"digit, got {client_id[:80]!r}")
    return client_id


def check_json(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{field}: not valid JSON ({str(exc)[:120]})") from None


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    online: bool
    connected: bool  # announced Connect and not Disconnect
    last_seen_ns: int  # 0 = not since this cellard started
    first_seen_ns: int
    version: str
    queued: int


@dataclass(frozen=True)
class Task:
    seq: int
    correlation_id: str
    client_id: str
    type: str
    model_id: str
    data: str
    session_id: str
    round_id: str
    status: str
    created_ns: int
    started_ns: int
    finished_ns: int
    timeout_s: float
    cancel_requested: bool
    response: str

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class Record:
    id: int
    kind: str
    client_id: str
    correlation_id: str
    model_id: str
    body: str
    ts_ns: int


class Combiner:
    """Clients, tasks and records. Single-threaded: call it from cellard's event loop only."""

    def __init__(self, db_path: str | Path, offline_after_s: float = OFFLINE_AFTER_S) -> None:
        self.offline_after_s = offline_after_s
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._last_seen: dict[str, int] = {}
        # Clients that said Disconnect: offline until they Connect again, whatever their polling
        # thread still sends while it winds down (the official client's can poll once more).
        self._departed: set[str] = set()
        self._known = {row[0] for row in self._db.execute("SELECT client_id FROM clients")}
        self._claims: dict[str, str] = dict(self._db.execute("SELECT client_id, principal FROM claims").fetchall())
        self._wakeups: dict[str, asyncio.Event] = {}

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ clients

    def claim(self, client_id: str, principal: str) -> None:
        """Bind ``client_id`` to the first ``principal`` that uses it (durably); another one is refused.

        A client id is only a name the caller sends: without this, any local user could poll as another
        client and take its tasks. ``principal`` is who the kernel or the certificate says the caller is
        (a scope, or ``cert:<identity>``)."""
        owner = self._claims.get(client_id)
        if owner is None:
            self._db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (client_id, principal, time.time_ns()))
            owner = str(self._db.execute("SELECT principal FROM claims WHERE client_id = ?", (client_id,)).fetchone()[0])
            self._claims[client_id] = owner
            if owner == principal:
                log.info("scaleout.client_claimed", client_id=client_id, principal=principal)
        if owner != principal:
            log.warning("scaleout.client_id_refused", client_id=client_id, principal=principal, owner=owner)
            raise PermissionDenied(f"client-id {client_id}: claimed by another caller; choose another client id")

    def seen(self, client_id: str, name: str = "") -> None:
        """Any call from ``client_id``: it exists and is alive now (unless it said Disconnect)."""
        now = time.time_ns()
        if client_id not in self._departed:
            self._last_seen[client_id] = now
        if client_id not in self._known:
            self._db.execute("INSERT OR IGNORE INTO clients VALUES (?, ?, 0, ?, 0, '')", (client_id, name or client_id, now))
            self._known.add(client_id)

    def announce(self, client_id: str, name: str, kind: str, version: str = "") -> None:
        """Record Connect / Disconnect (and the version a VersionCheck named)."""
        if kind == "Connect":
            self._departed.discard(client_id)
        self.seen(client_id, name)
        now = time.time_ns()
        if kind == "Connect":
            self._db.execute("UPDATE clients SET connected = 1, announced_ns = ?, name = ? WHERE client_id = ?",
                             (now, name or client_id, client_id))
        elif kind == "Disconnect":
            self._db.execute("UPDATE clients SET connected = 0, announced_ns = ? WHERE client_id = ?", (now, client_id))
            self._last_seen.pop(client_id, None)
            self._departed.add(client_id)
        elif kind == "VersionCheck" and version:
            self._db.execute("UPDATE clients SET version = ? WHERE client_id = ?", (version, client_id))
        self.add_record("announce", client_id, body=json.dumps({"type": kind, "name": name, "version": version}))

    def is_online(self, client_id: str) -> bool:
        seen = self._last_seen.get(client_id, 0)
        return seen > 0 and time.time_ns() - seen < self.offline_after_s * 1e9

    def clients(self) -> list[Client]:
        queued = dict(self._db.execute("SELECT client_id, COUNT(*) FROM tasks WHERE status = 'NEW' GROUP BY client_id"))
        out = []
        for cid, name, connected, first, _announced, version in self._db.execute(
            "SELECT * FROM clients ORDER BY client_id"
        ):
            out.append(Client(cid, name, self.is_online(cid), bool(connected), self._last_seen.get(cid, 0), first,
                              version, queued.get(cid, 0)))
        return out

    # ------------------------------------------------------------ tasks (operator side)

    def push(self, client_id: str, type: str, model_id: str, data: str = "", session_id: str = "",
             round_id: str = "", timeout_s: float = 0.0) -> Task:
        """Queue a task for ``client_id`` (which must have called at least once)."""
        check_client_id(client_id, "client_id")
        if client_id not in self._known:
            raise NotFound(f"client {client_id}: unknown (it has never called this combiner)")
        if type not in TASK_TYPES and not (type.startswith("Custom_") and len(type) <= 128 and type.isprintable()):
            raise InvalidArgument(f"type: expected one of {', '.join(TASK_TYPES)} or Custom_<name>, got {type[:80]!r}")
        data = data or "{}"
        if not isinstance(check_json(data, "data"), dict):
            raise InvalidArgument("data: expected a JSON object")
        if not 0 <= timeout_s <= 7 * 86400:
            raise InvalidArgument(f"timeout_s: expected 0 (none) to 604800 seconds, got {timeout_s}")
        for field, value in (("session_id", session_id), ("round_id", round_id)):
            if len(value) > 200 or not value.isprintable():
                raise InvalidArgument(f"{field}: expected at most 200 printable characters")
        cid = str(uuid.uuid4())
        now = time.time_ns()
        self._db.execute(
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, 'NEW', ?, 0, 0, ?, 0, '')",
            (cid, client_id, type, model_id, data, session_id, round_id, now, timeout_s),
        )
        counters.SCALEOUT_QUEUED.inc()
        log.info("scaleout.task_queued", correlation_id=cid, client_id=client_id, type=type, model_id=model_id)
        self._wake(client_id)
        return self.task(cid)

    def cancel(self, correlation_id: str) -> Task:
        """Cancel a task: a queued one never goes out, a handed-out one is interrupted at the next report."""
        task = self.task(correlation_id)
        if task.done:
            raise FailedPrecondition(f"task {correlation_id}: already {task.status}")
        if task.status == "NEW":
            self._set(correlation_id, status="CANCELLED", finished_ns=time.time_ns())
        else:
            self._set(correlation_id, cancel_requested=1)
        log.info("scaleout.task_cancelled", correlation_id=correlation_id, was=task.status)
        return self.task(correlation_id)

    def task(self, correlation_id: str) -> Task:
        row = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE correlation_id = ?", (correlation_id,)).fetchone()
        if row is None:
            raise NotFound(f"task {correlation_id[:80]!r}: unknown correlation id")
        return _task(row)

    def tasks(self, client_id: str = "", include_done: bool = True) -> list[Task]:
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE (? = '' OR client_id = ?)"
        if not include_done:
            sql += f" AND status NOT IN {_DONE_SQL}"
        return [_task(r) for r in self._db.execute(sql + " ORDER BY seq", (client_id, client_id))]

    def pending_model_ids(self) -> set[str]:
        """Models that tasks not yet done refer to: the model store must not evict them."""
        rows = self._db.execute(f"SELECT DISTINCT model_id FROM tasks WHERE status NOT IN {_DONE_SQL}")
        return {row[0] for row in rows if row[0]}

    # ------------------------------------------------------------ tasks (client side)

    def poll_and_report(self, client_id: str, correlation_id: str, status: str, done: bool,
                        response: str) -> Task | tuple[str, str] | None:
        """One PollAndReport: the next task, ``(correlation_id, INTERRUPTED|TIMEOUT)`` or None (nothing)."""
        counters.SCALEOUT_POLLS.inc()
        self.seen(client_id)
        if correlation_id:
            if status and status not in REPORTED:
                raise InvalidArgument(f"status: expected one of {', '.join(sorted(REPORTED))}, got {status[:40]!r}")
            task = self._own_task(client_id, correlation_id)
            if task is None:
                if not done:
                    return (correlation_id, "INTERRUPTED")  # not a task of ours: tell the client to stop it
            elif done:
                if task.status not in ("CANCELLED", "TIMEOUT"):
                    final = status if status in DONE else "COMPLETED"
                    self._set(correlation_id, status=final, finished_ns=time.time_ns(), response=response[:65536])
                    log.info("scaleout.task_done", correlation_id=correlation_id, client_id=client_id, status=final)
            else:
                return self._running(task, status)
        # The client is idle: a task we handed out and never heard finish is lost on its side.
        for lost in self._db.execute(
            "SELECT correlation_id FROM tasks WHERE client_id = ? AND status IN ('PENDING', 'RUNNING')", (client_id,)
        ).fetchall():
            if lost[0] != correlation_id:
                self._set(lost[0], status="FAILED", finished_ns=time.time_ns(),
                          response=json.dumps({"error": "client reported idle while the task was running"}))
        return self.next_task(client_id)

    def _running(self, task: Task, status: str) -> tuple[str, str] | None:
        """A report on a task the client is still running: interrupt it if cancelled or timed out."""
        cid = task.correlation_id
        if task.status == "COMPLETED":  # its result arrived; the client's done report follows
            return None
        if task.status in ("CANCELLED", "INTERRUPTED", "FAILED"):
            return (cid, "INTERRUPTED")
        if task.status == "TIMEOUT":
            return (cid, "TIMEOUT")
        if task.cancel_requested:
            return (cid, "INTERRUPTED")
        if task.timeout_s and time.time_ns() - task.started_ns > task.timeout_s * 1e9:
            self._set(cid, status="TIMEOUT", finished_ns=time.time_ns())
            log.info("scaleout.task_timeout", correlation_id=cid, client_id=task.client_id)
            return (cid, "TIMEOUT")
        if status in ("PENDING", "RUNNING") and task.status in ("PENDING", "RUNNING") and status != task.status:
            self._set(cid, status=status)
        return None

    def next_task(self, client_id: str) -> Task | None:
        """Hand out the oldest queued task of ``client_id`` (it becomes PENDING), if any."""
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE client_id = ? AND status = 'NEW' ORDER BY seq LIMIT 1", (client_id,)
        ).fetchone()
        if row is None:
            return None
        task = _task(row)
        self._set(task.correlation_id, status="PENDING", started_ns=time.time_ns())
        log.info("scaleout.task_delivered", correlation_id=task.correlation_id, client_id=client_id)
        return task

    async def wait_for_task(self, client_id: str, timeout: float) -> None:
        """Sleep until a task is queued for ``client_id`` or ``timeout`` passes (TaskStream)."""
        event = self._wakeups.setdefault(client_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    def result_for(self, client_id: str, correlation_id: str) -> None:
        """A model update/validation/prediction for ``correlation_id``: the task must be this client's."""
        if not correlation_id:
            return
        task = self._own_task(client_id, correlation_id)
        if task is None:
            raise NotFound(f"task {correlation_id[:80]!r}: not a task of client {client_id}")
        if task.status in ("PENDING", "RUNNING") and not task.cancel_requested:
            # TaskStream clients never report done: their result is the completion. (A polling
            # client's later done report still sets the final status.)
            self._set(correlation_id, status="COMPLETED", finished_ns=time.time_ns())

    # ------------------------------------------------------------ records

    def add_record(self, kind: str, client_id: str, *, correlation_id: str = "", model_id: str = "",
                   body: str = "") -> int:
        cur = self._db.execute(
            "INSERT INTO records (kind, client_id, correlation_id, model_id, body, ts_ns) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, client_id, correlation_id, model_id, body, time.time_ns()),
        )
        return int(cur.lastrowid or 0)

    def records(self, kind: str = "", client_id: str = "", after_id: int = 0, limit: int = 1000) -> list[Record]:
        if kind and kind not in RECORD_KINDS:
            raise InvalidArgument(f"kind: expected one of {', '.join(RECORD_KINDS)}, got {kind[:40]!r}")
        rows = self._db.execute(
            "SELECT * FROM records WHERE (? = '' OR kind = ?) AND (? = '' OR client_id = ?) AND id > ? "
            "ORDER BY id LIMIT ?",
            (kind, kind, client_id, client_id, after_id, max(1, min(limit, 10000))),
        )
        return [Record(*r) for r in rows]

    # ------------------------------------------------------------ internals

    def _own_task(self, client_id: str, correlation_id: str) -> Task | None:
        try:
            task = self.task(correlation_id)
        except NotFound:
            return None
        return task if task.client_id == client_id else None

    def _set(self, correlation_id: str, **values: Any) -> None:
        finishing = values.get("status") in DONE and self._db.execute(
            f"SELECT 1 FROM tasks WHERE correlation_id = ? AND status NOT IN {_DONE_SQL}", (correlation_id,)
        ).fetchone() is not None
        cols = ", ".join(f"{k} = ?" for k in values)
        self._db.execute(f"UPDATE tasks SET {cols} WHERE correlation_id = ?", (*values.values(), correlation_id))
        if finishing:  # counted once: a done report after the result (COMPLETED already) is no second end
            counters.SCALEOUT_FINISHED.labels(values["status"]).inc()

    def _wake(self, client_id: str) -> None:
        event = self._wakeups.get(client_id)
        if event is not None:
            event.set()


def _task(row: tuple[Any, ...]) -> Task:
    values = list(row)
    values[13] = bool(values[13])
    return Task(*values)
