"""A worker saver's health follows its database, on SQLite and on a real PostgreSQL.

While the database is unreachable, grpc.health.v1 says NOT_SERVING for pb.WorkerSaver and
cellar.v1.Machines (and the seed's own ``pb.WorkerSaver/Check`` agrees); once it is back, SERVING.
"Unreachable" for SQLite: the configured path no longer names the database file cellard has open
(its directory moved away or removed: reports would land in a file nobody finds again); for
PostgreSQL: the server refuses connections to the database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from proto.pb import common_pb2, workerServer_pb2, workerServer_pb2_grpc
from tests.support.healthwait import NOT_SERVING, SERVING, status, wait_for_status

SAVER = ["pb.WorkerSaver", "cellar.v1.Machines"]


@dataclass
class Outage:
    database: str
    cut: Callable[[], None]
    restore: Callable[[], None]


@pytest.fixture(params=["sqlite", "postgresql"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    """A fresh database and the means to make it unreachable (``cut``) and reachable again."""
    if request.param == "sqlite":
        home, away = tmp_path / "db", tmp_path / "db.away"
        home.mkdir()
        yield Outage(str(home / "saver.sqlite"), lambda: os.rename(home, away), lambda: os.rename(away, home))
        return
    import psycopg

    pg = request.getfixturevalue("postgres")
    name = f"saver_{secrets.token_hex(4)}"

    def admin(*statements: str) -> None:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]

    admin(f"CREATE DATABASE {name}")
    try:
        yield Outage(
            pg.dsn(name),
            lambda: admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
                          f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
            lambda: admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        )
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def seed_check(channel: grpc.Channel) -> int:
    return int(workerServer_pb2_grpc.WorkerSaverStub(channel).Check(common_pb2.HealthCheckReq(), timeout=10).status)


def save(channel: grpc.Channel, uuid: str) -> int:
    machine = workerServer_pb2.Machine(uuid=uuid)
    reply = workerServer_pb2_grpc.WorkerSaverStub(channel).SaveMachine(workerServer_pb2.SaveMachineReq(machine=machine),
                                                                       timeout=10)
    return int(reply.status)


def follows_the_database(channel: grpc.Channel, outage: Outage) -> None:
    wait_for_status(channel, SAVER, SERVING)
    assert save(channel, "before") == workerServer_pb2.SaveMachineRes.ACCEPTED
    outage.cut()
    try:
        wait_for_status(channel, SAVER, NOT_SERVING)
        assert seed_check(channel) == common_pb2.HealthCheckRes.NOT_SERVING
        assert status(channel, "") == SERVING  # the server itself still serves
    finally:
        outage.restore()
    wait_for_status(channel, SAVER, SERVING)
    assert seed_check(channel) == common_pb2.HealthCheckRes.SERVING
    assert save(channel, "after") == workerServer_pb2.SaveMachineRes.ACCEPTED


@pytest.mark.root
def test_saver_in_cellard_follows_its_database(cellard_factory, outage: Outage) -> None:
    daemon = cellard_factory({"saver": {"enabled": True, "database": outage.database}})
    with daemon.channel() as ch:
        follows_the_database(ch, outage)
        assert status(ch, "pb.ServerDispatcher") == SERVING
    changes = [(e["dependency"], e["serving"]) for e in daemon.events("health.dependency")]
    assert changes[:2] == [("saver database", False), ("saver database", True)], changes


def test_standalone_saver_follows_its_database(saver_factory, outage: Outage) -> None:
    saver = saver_factory(outage.database)
    with saver.channel() as ch:
        follows_the_database(ch, outage)
