"""Several stateless savers over one REAL PostgreSQL database, as behind a load balancer."""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc, report_pb2
from proto.pb import workerServer_pb2 as pb
from proto.pb import workerServer_pb2_grpc
from tests.agent.pb.conftest import Postgres, Saver, free_port
from tests.support.timeouts import wait_for


@pytest.fixture
def shared_database(postgres: Postgres) -> Iterator[str]:
    name = f"saver_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres.dsn(name)
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def save(saver: Saver, machine: pb.Machine) -> None:
    with saver.channel() as ch:
        reply = workerServer_pb2_grpc.WorkerSaverStub(ch).SaveMachine(pb.SaveMachineReq(machine=machine), timeout=10)
    assert reply.status == pb.SaveMachineRes.ACCEPTED


def listed(saver: Saver) -> dict[str, inventory_pb2.MachineSummary]:
    with saver.channel() as ch:
        reply = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(), timeout=10)
    return {m.uuid: m for m in reply.machines}


def test_a_report_sent_to_one_saver_is_read_through_the_other(shared_database: str, tmp_path: Path) -> None:
    savers = [Saver(shared_database, free_port(), tmp_path / f"saver-{i}.log", extra=("--history", "5"))
              for i in range(2)]
    starting = [threading.Thread(target=s.start) for s in savers]  # both create the schema at once
    for t in starting:
        t.start()
    for t in starting:
        t.join()
    a, b = savers
    try:
        assert all(s.proc is not None and s.proc.poll() is None for s in savers)
        save(a, pb.Machine(uuid="m-1", hostname="web-1", cells=[report_pb2.ReportCell(name="api")]))
        seen = listed(b)["m-1"]
        assert (seen.hostname, seen.cells, seen.reports) == ("web-1", 1, 1)
        # reports of one machine alternating between the savers: one history, the newest wins
        for i in range(8):
            save(savers[i % 2], pb.Machine(uuid="m-1", hostname=f"web-1-v{i}"))
        for s in savers:
            m = listed(s)["m-1"]
            assert (m.hostname, m.reports) == ("web-1-v7", 5)
        with b.channel() as ch:
            shown = inventory_pb2_grpc.MachinesStub(ch).Show(
                inventory_pb2.ShowMachineRequest(uuid="m-1", history=10), timeout=10)
        assert [r.machine.hostname for r in shown.history] == [f"web-1-v{i}" for i in (6, 5, 4, 3)]
    finally:
        for s in savers:
            s.stop()


def test_workers_share_the_port_and_stop_together(shared_database: str, tmp_path: Path) -> None:
    saver = Saver(shared_database, free_port(), tmp_path / "saver.log", extra=("--workers", "2"))
    saver.start()
    assert saver.proc is not None
    try:
        wait_for(lambda: len(saver.events("saver.listening")) == 2, "the second worker")
        listening = subprocess.run(["ss", "-Hltnp", f"sport = :{saver.port}"], capture_output=True, text=True,
                                   check=True).stdout
        pids = set(re.findall(r"pid=(\d+)", listening))
        assert len(pids) == 2 and str(saver.proc.pid) in pids, listening
        for i in range(10):  # each on a connection of its own: the kernel spreads them over both
            save(saver, pb.Machine(uuid=f"w-{i}", hostname=f"w-{i}"))
        assert len(listed(saver)) == 10
    finally:
        saver.stop()
    (worker,) = pids - {str(saver.proc.pid)}
    assert not Path(f"/proc/{worker}").exists()  # stopped with the first, not orphaned
