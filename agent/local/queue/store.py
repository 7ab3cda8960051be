"""The durable queue behind queue.v1.Queue: SQLite in WAL mode, at-least-once delivery.

Queues belong to scopes (:func:`agent.auth.identity.caller_scope`: a cell, a local user, the host,
or cellar's own ``cellar:*`` services). A queue's name is looked up in its creator's scope, so two
cells may each have a queue ``jobs`` and neither can find, use or delete the other's, even by a leaked
id (NotFound: another scope's queue does not exist for you). Sharing is explicit: a queue created
``shared`` lives in one node-wide namespace of shared names, every scope finds it with Locate (after
its own private queue of that name) and may send, receive and mark done; only the creating scope may
delete it (PermissionError -> PERMISSION_DENIED, since parigot has no code for it).

A message lives in ``messages`` until MarkDone deletes it, so an acknowledged Send is on disk before
the reply (one transaction per RPC, ``synchronous`` FULL by default) and nothing not yet marked done
can be lost by a crash. Receive hands out the oldest *visible* messages and hides them for
``visibility_timeout_s``; with 0 they stay visible, which is parigot's "redeliver on the very next
Receive". As parigot's proto says, a delivered message carries ``receive_count`` = deliveries *before*
this one and ``received`` = its *first* receive time (zero on the first delivery). Message ids are
server-assigned IdRaw (letter ``m``), queue ids letter ``q``.

Every method is blocking; :meth:`QueueStore.run` runs one on the store's single worker thread (so the
event loop never waits on SQLite and no locks are needed: :mod:`agent.local.sqlite`). ``send``,
``receive`` and ``mark_done`` are each one transaction; their ``*_op`` bodies run inside a caller's
transaction, which is how :meth:`QueueStore.write` lets concurrent RPCs share one commit and one fsync
(:mod:`agent.local.queue.commit`). Every statement's SQL text is a constant below, run on the store's one
connection, so sqlite3's per-connection statement cache prepares each once (``bench/queue_throughput``
measures the cache off).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.local.parigot import new_id, storable
from agent.local.queue.commit import GroupCommit
from agent.local.queue.errors import QueueError
from agent.local.sqlite import SqliteStore, open_db

# parigot's QueueErr.InvalidName: "alphanumeric characters and the symbols ".", ",", "_" and "-". The first
# letter of a queue name must be an alphabetic character."
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.,-]*$")
MAX_NAME = 255
MAX_RECEIVE = 1000
Id = tuple[int, int]
SHARED = "*"  # the namespace of shared queues (no scope is spelled so)
SCHEMA_VERSION = 1
STATEMENT_CACHE = 64  # sqlite3's per-connection cache of prepared statements (all of ours fit)
T = TypeVar("T")

QUEUE_ROW = "SELECT id, ns, owner FROM queues WHERE high=? AND low=?"
INSERT_MESSAGE = "INSERT INTO messages(queue, high, low, sender, payload, sent_ns) VALUES (?,?,?,?,?,?)"
SELECT_VISIBLE = (
    "SELECT id, high, low, receive_count, sent_ns, sender, payload, received_ns FROM messages "
    "WHERE queue=? AND visible_ns<=? ORDER BY id LIMIT ?"
)
MARK_RECEIVED = (
    "UPDATE messages SET receive_count=receive_count+1, visible_ns=?, "
    "received_ns=CASE WHEN received_ns=0 THEN ? ELSE received_ns END WHERE id=?"
)
DELETE_MESSAGE = "DELETE FROM messages WHERE queue=? AND high=? AND low=?"

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL,
    ns TEXT NOT NULL,            -- the owner's scope, or SHARED
    name TEXT NOT NULL,
    owner TEXT NOT NULL,         -- the creating scope
    created_ns INTEGER NOT NULL,
    UNIQUE (high, low),
    UNIQUE (ns, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL,
    sender BLOB,
    payload BLOB NOT NULL,
    sent_ns INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    received_ns INTEGER NOT NULL DEFAULT 0,
    visible_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages(queue, visible_ns, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_ids ON messages(queue, high, low);
"""


@dataclass(frozen=True)
class QueueInfo:
    id: Id
    name: str
    owner: str
    created_ns: int
    length: int
    shared: bool = False


@dataclass(frozen=True)
class Message:
    queue: Id
    id: Id
    receive_count: int
    received_ns: int
    sent_ns: int
    sender: bytes | None  # a serialized google.protobuf.Any, or None
    payload: bytes  # a serialized google.protobuf.Any


@dataclass(frozen=True)
class Outgoing:
    """A message to send: serialized Any payload (None = missing) and sender."""

    payload: bytes | None
    sender: bytes | None = None


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not NAME_RE.match(name):
        raise QueueError("InvalidName", f"queue_name: must match {NAME_RE.pattern} (at most {MAX_NAME}), got {name!r}")
    return name


@dataclass
class QueueStore(SqliteStore):
    path: str  # <state_dir>/queue.db
    visibility_timeout_s: float = 30.0
    synchronous: str = "full"
    clock: Callable[[], int] = time.time_ns
    statement_cache: int = STATEMENT_CACHE  # 0: every statement compiled anew (the bench's comparison)
    _db: sqlite3.Connection | None = None
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="queue"))
    _group: GroupCommit | None = None

    # run, db, close: SqliteStore
    def open(self) -> QueueStore:
        self._db = open_db(self.path, SCHEMA, synchronous="FULL" if self.synchronous == "full" else "NORMAL",
                           version=SCHEMA_VERSION, migrate=_migrate, foreign_keys=True,
                           cached_statements=self.statement_cache)
        return self

    @property
    def group(self) -> GroupCommit:
        """The store's group committer (made on first use, on the event loop)."""
        if self._group is None:
            self._group = GroupCommit(lambda: self.db, self._executor)
        return self._group

    async def write(self, op: Callable[..., T], *args: Any) -> T:
        """``op(*args)`` (a ``*_op`` method) in a transaction shared with concurrent writes; returns
        after it is committed (on disk with synchronous FULL), as its own transaction would."""
        return await self.group.write(op, *args)

    def _atomically(self, op: Callable[..., T], *args: Any) -> T:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return op(*args)

    def _queue_row(self, scope: str, qid: Id, *, delete: bool = False) -> int:
        """The row of queue ``qid`` as ``scope`` may use it; another scope's private queue is NotFound."""
        if storable(*qid):
            row = self.db.execute(QUEUE_ROW, qid).fetchone()
            if row is not None and row[1] in (scope, SHARED):
                if delete and row[2] != scope:
                    raise PermissionError(f"queue is shared by {row[2]}: only its creator may delete it")
                return int(row[0])
        raise QueueError("NotFound", "no queue with that id")

    # -- Queue RPCs ---------------------------------------------------------------------------------
    def create(self, scope: str, name: str, shared: bool = False) -> Id:
        check_name(name)
        ns = SHARED if shared else scope
        while True:
            qid = new_id("q")
            try:
                self.db.execute(
                    "INSERT INTO queues(high, low, ns, name, owner, created_ns) VALUES (?,?,?,?,?,?)",
                    (*qid, ns, name, scope, self.clock()),
                )
                return qid
            except sqlite3.IntegrityError:
                if self.db.execute("SELECT 1 FROM queues WHERE ns=? AND name=?", (ns, name)).fetchone():
                    what = "a shared queue" if shared else "queue"
                    raise QueueError("AlreadyExists", f"{what} {name!r} exists") from None

    def locate(self, scope: str, name: str) -> Id:
        """``scope``'s own queue ``name``, else the shared one."""
        check_name(name)
        row = self.db.execute(
            "SELECT high, low FROM queues WHERE name=? AND ns IN (?, ?) ORDER BY ns=? LIMIT 1",
            (name, scope, SHARED, SHARED),
        ).fetchone()
        if row is None:
            raise QueueError("NotFound", f"no queue named {name!r}")
        return int(row[0]), int(row[1])

    def delete(self, scope: str, qid: Id) -> Id:
        row = self._queue_row(scope, qid, delete=True)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM messages WHERE queue=?", (row,))
            self.db.execute("DELETE FROM queues WHERE id=?", (row,))
        return qid

    def send(self, scope: str, qid: Id, messages: list[Outgoing]) -> list[Id | None]:
        """Ids of the stored messages, None where a message had no payload (all in one transaction)."""
        return self._atomically(self.send_op, scope, qid, messages)

    def send_op(self, scope: str, qid: Id, messages: list[Outgoing]) -> list[Id | None]:
        """:meth:`send` inside the caller's transaction."""
        row = self._queue_row(scope, qid)
        now = self.clock()
        out: list[Id | None] = []
        for msg in messages:
            if msg.payload is None:
                out.append(None)
                continue
            mid = new_id("m")
            self.db.execute(INSERT_MESSAGE, (row, *mid, msg.sender, msg.payload, now))
            out.append(mid)
        return out

    def receive(self, scope: str, qid: Id, limit: int) -> list[Message]:
        """Up to ``limit`` oldest visible messages, hidden for the visibility timeout: 0 = 1; a limit is
        a most, so above 1000 it is 1000; negative is a malformed request (UnmarshalError).

        Each carries the deliveries before this one and its first receive time (0: never received)."""
        return self._atomically(self.receive_op, scope, qid, limit)

    def receive_op(self, scope: str, qid: Id, limit: int) -> list[Message]:
        """:meth:`receive` inside the caller's transaction."""
        if limit < 0:
            raise QueueError("UnmarshalError", f"message_limit: expected 0 or more, got {limit}")
        row = self._queue_row(scope, qid)
        limit = min(max(limit, 1), MAX_RECEIVE)
        now = self.clock()
        hidden_until = now + int(self.visibility_timeout_s * 1e9)
        rows = self.db.execute(SELECT_VISIBLE, (row, now, limit)).fetchall()
        self.db.executemany(MARK_RECEIVED, [(hidden_until, now, r[0]) for r in rows])
        return [Message(qid, (int(r[1]), int(r[2])), int(r[3]), int(r[7]), int(r[4]), r[5], r[6]) for r in rows]

    def mark_done(self, scope: str, qid: Id, ids: list[Id]) -> list[Id]:
        """Delete the given messages; returns the ids that matched nothing (``unmodified``)."""
        return self._atomically(self.mark_done_op, scope, qid, ids)

    def mark_done_op(self, scope: str, qid: Id, ids: list[Id]) -> list[Id]:
        """:meth:`mark_done` inside the caller's transaction."""
        row = self._queue_row(scope, qid)
        unmodified: list[Id] = []
        for mid in ids:
            if not storable(*mid) or self.db.execute(DELETE_MESSAGE, (row, *mid)).rowcount == 0:
                unmodified.append(mid)
        return unmodified

    def length(self, scope: str, qid: Id) -> int:
        """Messages not yet marked done (visible or in flight)."""
        row = self._queue_row(scope, qid)
        return int(self.db.execute("SELECT count(*) FROM messages WHERE queue=?", (row,)).fetchone()[0])

    def list(self) -> list[QueueInfo]:
        """Every queue of every scope (the operator's listing; cellar's own ``cellar:*`` ones included)."""
        rows = self.db.execute(
            "SELECT q.high, q.low, q.name, q.owner, q.created_ns, "
            "(SELECT count(*) FROM messages m WHERE m.queue=q.id), q.ns FROM queues q ORDER BY q.name, q.owner"
        ).fetchall()
        return [QueueInfo((int(r[0]), int(r[1])), r[2], r[3], int(r[4]), int(r[5]), r[6] == SHARED) for r in rows]


def _migrate(db: sqlite3.Connection) -> None:
    """Version 0 (one node-wide namespace) -> 1: each queue moves to its recorded owner's scope.

    SQLite cannot drop a UNIQUE constraint: the table is rebuilt under a new name and renamed back,
    foreign keys off, so the messages that reference ``queues`` by row id stay as they are."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='queues'").fetchone()
    if not exists or version >= SCHEMA_VERSION:
        return
    db.execute("PRAGMA foreign_keys=OFF")
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(SCHEMA.split(";", 1)[0].replace("EXISTS queues (", "EXISTS queues_v1 ("))
        db.execute(
            "INSERT INTO queues_v1(id, high, low, ns, name, owner, created_ns) "
            "SELECT id, high, low, owner, name, owner, created_ns FROM queues"
        )
        db.execute("DROP TABLE queues")
        db.execute("ALTER TABLE queues_v1 RENAME TO queues")
