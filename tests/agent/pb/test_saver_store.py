"""The saver's store on SQLite and a real PostgreSQL: machines index, bulk pruning, fleet usage, migration."""

from __future__ import annotations

import sqlite3

import pytest

from agent.pb.saver.store import NewReport, TooManyMachines, open_store


def test_history_is_pruned_in_bulk_but_reads_stay_exact(database):
    store = open_store(database, history=10, max_machines=10)
    try:
        for i in range(25):
            store.save("a", str(i).encode(), i, "p")
        (row,) = store.latest()
        assert (row.report, row.reports) == (b"24", 10)
        assert [r.report for r in store.history("a", 100)] == [str(i).encode() for i in range(24, 14, -1)]
        def kept() -> int:
            return len(store._run(lambda cur: (cur.execute("SELECT id FROM reports"), cur.fetchall())[1]))  # type: ignore[attr-defined]
        assert 10 <= kept() <= 11  # trimmed once over history + history/10, not on every insert
    finally:
        store.close()


def test_a_batch_refuses_only_the_machine_over_the_limit(database):
    store = open_store(database, history=5, max_machines=1)
    try:
        results = store.save_many([NewReport("a", b"1", 1, "p"), NewReport("b", b"2", 2, "p"),
                                   NewReport("a", b"3", 3, "p", hostname="host-a")])
        assert results[0] is None and isinstance(results[1], TooManyMachines) and results[2] is None
        assert [(r.uuid, r.report, r.reports) for r in store.latest()] == [("a", b"3", 2)]
    finally:
        store.close()


def test_an_older_report_never_replaces_the_latest(database):
    """Two savers racing: whichever commits last, the machine points at the newest row."""
    store = open_store(database, history=5, max_machines=5)
    try:
        store.save_many([NewReport("a", b"new", 2, "p", hostname="h2")])
        store._run(lambda cur: cur.execute("UPDATE machines SET latest_id = latest_id + 1000"))  # type: ignore[attr-defined]
        store.save_many([NewReport("a", b"late", 3, "p", hostname="h3")])
        assert store._run(lambda cur: (cur.execute("SELECT hostname FROM machines"), cur.fetchone())[1])[0] == "h2"  # type: ignore[attr-defined]
    finally:
        store.close()


def test_fleet_usage_sums_each_machines_rate(database):
    s = 1_000_000_000
    store = open_store(database, history=50, max_machines=5)
    try:
        rows = []
        for t in range(4):  # machine a burns 1 core, b burns 0.5, both report every 10 s
            rows.append(NewReport("a", b"x", t, "p", usage_at_ns=(100 + 10 * t) * s, cpu_usage_us=10_000_000 * t,
                                  memory_used_bytes=1000))
            rows.append(NewReport("b", b"x", t, "p", usage_at_ns=(101 + 10 * t) * s, cpu_usage_us=5_000_000 * t,
                                  memory_used_bytes=500))
        assert all(e is None for e in store.save_many(rows))
        points = store.fleet_usage(since_ns=1, bucket_ns=10 * s)
        assert [p.at_ns for p in points] == [100 * s, 110 * s, 120 * s, 130 * s]
        assert [round(p.cpu_cores, 3) for p in points[1:]] == [1.5, 1.5, 1.5]
        assert all(p.memory_used_bytes == 1500 and p.machines == 2 for p in points)
        assert store.fleet_usage(since_ns=125 * s, bucket_ns=10 * s)[0].at_ns == 130 * s
    finally:
        store.close()


def test_a_database_of_an_earlier_saver_is_migrated(tmp_path):
    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE reports (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, "
                 "received_at_ns INTEGER NOT NULL, peer TEXT NOT NULL, report BLOB NOT NULL)")
    conn.executemany("INSERT INTO reports (uuid, received_at_ns, peer, report) VALUES (?, ?, ?, ?)",
                     [("a", 1, "p", b"1"), ("a", 2, "p", b"2"), ("b", 3, "p", b"3")])
    conn.commit()
    conn.close()
    store = open_store(path, history=5)
    try:
        assert [(r.uuid, r.report, r.reports) for r in store.latest()] == [("a", b"2", 2), ("b", b"3", 1)]
        store.save("a", b"4", 4, "p")
        assert [r.report for r in store.history("a", 5)] == [b"4", b"2", b"1"]
    finally:
        store.close()


@pytest.mark.parametrize("history", [1, 3])
def test_small_histories_keep_exactly_that_many(tmp_path, history):
    store = open_store(str(tmp_path / "s.sqlite"), history=history)
    try:
        for i in range(7):
            store.save("a", bytes([i]), i, "p")
        assert [r.report for r in store.history("a", 99)] == [bytes([i]) for i in range(6, 6 - history, -1)]
        assert store.latest()[0].reports == history
    finally:
        store.close()


def test_listings_read_the_summary_not_every_port(database):
    from agent.pb.saver.servicers import new_report
    from proto.pb import workerServer_pb2 as pb

    machine = pb.Machine(uuid="a", hostname="web-1", ifaces=[pb.Iface(name="eth0", address=[
        pb.Address(ip="10.0.0.1", ports=[pb.Port(port=p) for p in range(1, 301)])])])
    store = open_store(database, history=5)
    try:
        store.save_many([new_report(machine, 1, "p")])
        store.save("old", machine.SerializeToString(), 2, "p")  # as an earlier saver stored it: no summary
        rows = {r.uuid: r for r in store.summaries()}
        light = pb.Machine.FromString(rows["a"].summary)
        assert (light.hostname, len(light.ifaces)) == ("web-1", 0)
        assert (rows["a"].ifaces, rows["a"].addresses, rows["a"].ports) == (1, 1, 300)
        assert len(rows["a"].summary) < len(machine.SerializeToString()) // 10
        assert rows["old"].summary == machine.SerializeToString()  # the report stands in for it
    finally:
        store.close()
