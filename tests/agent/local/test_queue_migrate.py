"""A queue.db written before queues had scopes (one node-wide namespace, ``name`` UNIQUE) opens with
every queue in its recorded owner's scope, its messages kept; the same name may then exist per scope."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.local.queue.store import QueueStore

V0 = """
CREATE TABLE queues (id INTEGER PRIMARY KEY, high INTEGER NOT NULL, low INTEGER NOT NULL,
    name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, created_ns INTEGER NOT NULL, UNIQUE (high, low));
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE, high INTEGER NOT NULL, low INTEGER NOT NULL,
    sender BLOB, payload BLOB NOT NULL, sent_ns INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0,
    received_ns INTEGER NOT NULL DEFAULT 0, visible_ns INTEGER NOT NULL DEFAULT 0);
INSERT INTO queues VALUES (1, 8142508126285856768, 1, 'jobs', 'cell:web', 5);
INSERT INTO queues VALUES (2, 8142508126285856768, 2, 'test_queue', 'host', 6);
INSERT INTO messages(queue, high, low, payload, sent_ns) VALUES (1, 7854277750134145024, 9, x'0a00', 7);
"""


def test_a_version_0_database_moves_each_queue_into_its_owners_scope(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with sqlite3.connect(path) as db:
        db.executescript(V0)
    store = QueueStore(str(path), visibility_timeout_s=0).open()
    try:
        jobs = store.locate("cell:web", "jobs")
        assert jobs == (8142508126285856768, 1)
        assert store.length("cell:web", jobs) == 1
        assert [m.id for m in store.receive("cell:web", jobs, 10)] == [(7854277750134145024, 9)]
        assert store.locate("host", "test_queue") == (8142508126285856768, 2)
        store.create("host", "jobs")  # the name is free in another scope now
        store.delete("cell:web", jobs)  # cascade still reaches the messages
        assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert int(store.db.execute("PRAGMA user_version").fetchone()[0]) == 1
    finally:
        store.close()
    QueueStore(str(path)).open().close()  # opening again migrates nothing
