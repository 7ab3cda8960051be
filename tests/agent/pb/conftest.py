"""Fixtures for the worker-saver tests: a real PostgreSQL server, real ``cellar-saver`` processes.

- ``postgres`` (session, i.e. one per xdist worker): a throwaway cluster made with the host's
  ``initdb`` + ``pg_ctl`` in a temp dir, run as the ``postgres`` user on a free loopback port, stopped
  and removed by the finalizer. Missing server binaries FAIL the test with the install command.
- ``database`` (parametrized sqlite | postgresql): a fresh, empty database for one test: a SQLite file
  in tmp_path, or a new PostgreSQL database in that cluster (dropped afterwards).
- ``saver_factory``: starts ``python -m agent.pb.saver.main --insecure --listen 127.0.0.1:PORT`` on a
  database and waits for ``saver.listening``; ``.stop()`` / ``.start()`` restart it on the same port.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support import REPO

INSTALL_HINT = "PostgreSQL server binaries are missing: install them with `apt-get install -y postgresql`"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    bindir: str
    datadir: str
    port: int
    socket_dir: str

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


def _as_postgres(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user="postgres", group="postgres", capture_output=True, text=True,
                          timeout=60, check=False, cwd="/", **kw)  # type: ignore[call-overload]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A throwaway cluster (also for bench/saver_load.py): initdb + pg_ctl as ``postgres``, removed after."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(INSTALL_HINT)
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no `postgres` user: " + INSTALL_HINT)
    bindir = os.path.dirname(found[-1])
    base = tempfile.mkdtemp(prefix="cellar-pg-", dir="/tmp")
    datadir, sockdir = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sockdir)
    shutil.chown(base, "postgres", "postgres")
    shutil.chown(sockdir, "postgres", "postgres")
    pg = Postgres(bindir, datadir, free_port(), sockdir)
    try:
        r = _as_postgres([f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync",
                          "-E", "UTF8"])
        assert r.returncode == 0, r.stderr
        r = _as_postgres([f"{bindir}/pg_ctl", "-D", datadir, "-l", os.path.join(base, "server.log"), "-w", "-t", "30",
                          "-o", f"-p {pg.port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        assert r.returncode == 0, r.stdout + r.stderr
        yield pg
    finally:
        _as_postgres([f"{bindir}/pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "saver.sqlite")
        return
    import psycopg

    pg: Postgres = request.getfixturevalue("postgres")
    name = f"saver_{secrets.token_hex(4)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield pg.dsn(name)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Saver:
    database: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    starts: int = field(default=0)
    insecure: bool = True  # False: give --tls-ca/--tls-cert/--tls-key in ``extra``

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Saver:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.pb.saver.main", *(["--insecure"] if self.insecure else []),
                 "--listen", self.address,
                 "--database", self.database, *self.extra],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cellar-saver exited {self.proc.returncode}:\n{self.log_text()}")
            if len(self.events("saver.listening")) >= self.starts:
                return self
            time.sleep(0.05)
        raise AssertionError(f"cellar-saver did not listen within {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, object]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == name:
                out.append(ev)
        return out

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)


@pytest.fixture
def saver_factory(tmp_path: Path) -> Iterator[Callable[..., Saver]]:
    started: list[Saver] = []

    def make(database: str, *extra: str) -> Saver:
        saver = Saver(database, free_port(), tmp_path / f"saver-{len(started)}.log", extra=extra)
        started.append(saver)
        return saver.start()

    yield make
    for saver in started:
        saver.stop()
