"""Fixtures for the Scaleout combiner tests (the harness is tests/agent/scaleout/harness.py).

- ``scaleout_venv`` (session): the cached venv with the OFFICIAL client (:func:`harness.build_scaleout_venv`).
- ``run_client(daemon_addr, client_id)``: start ``client_flow.py`` under that venv as a real process;
  returns a :class:`harness.ClientProcess` to read its JSON events from. Killed at teardown.
- ``fl_daemon`` (module): a cellard with a small model store and its node-local TCP listener.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.scaleout.harness import (
    HERE,
    ClientProcess,
    build_scaleout_venv,
    client_env,
    start_daemon,
    stop_daemon,
)


@pytest.fixture(scope="session")
def scaleout_venv() -> Path:
    return build_scaleout_venv()


@pytest.fixture
def run_client(scaleout_venv: Path) -> Iterator[Callable[..., ClientProcess]]:
    started: list[ClientProcess] = []

    def run(addr: str, client_id: str, seconds: float = 60) -> ClientProcess:
        host, _, port = addr.rpartition(":")
        env = client_env()
        proc = subprocess.Popen(
            [str(scaleout_venv / "bin" / "python"), str(HERE / "client_flow.py"), host.strip("[]"), port, client_id,
             "--seconds", str(seconds)],
            cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        client = ClientProcess(proc)
        client.start_readers()
        started.append(client)
        return client

    yield run
    for client in started:
        if client.proc.poll() is None:
            client.proc.kill()
            client.proc.wait()


@pytest.fixture(scope="module")
def fl_daemon() -> Iterator[Any]:
    daemon = start_daemon()
    yield daemon
    stop_daemon(daemon)


