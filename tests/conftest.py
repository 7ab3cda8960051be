"""The fixtures shared by every test directory (helper code lives in tests/support/).

- ``pki`` (session): a CA, a server certificate for 127.0.0.1/localhost, client certificates
  ``admin-user``/``op-user``/``obs-user`` (mapped to roles by ``TLS_IDENTITIES``) and ``stranger``
  (not mapped), plus a foreign CA with its own client ``intruder``.
- ``cellard_factory``: starts REAL ``python -m agent.daemon`` processes
  (:func:`tests.support.cellard.start_cellard`), each in its own short temp directory with a unique
  cgroup root and netns prefix, optionally with mTLS TCP, and tears every one down at the end.
  Nothing is shared between tests, so it is xdist-safe.
- ``cellard``: one daemon with defaults; ``run_cellard``: run cellard to completion (config errors).
- ``module_cellard`` (module) / ``fresh_cellard``: a daemon shared by a module's tests / one test's own.
- ``api``: :class:`tests.support.api.Api` bound to ``module_cellard``; every cell left at the end of a
  test is freed. tests/security overrides ``daemon`` and ``api`` with a fresh daemon per test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.api import Api, api_session, running_cellard
from tests.support.cellard import (
    PKI,
    REPO,
    TLS_IDENTITIES,
    Cellard,
    StartCellard,
    daemon_env,
    start_cellard,
    teardown,
)
from tests.support.timeouts import SCALE, scaled

if SCALE > 1:
    # A slow host (the emulated pure-v2 VM) generates examples slowly too: Hypothesis's too_slow health
    # check and per-example deadline would measure the host, not cellar.
    settings.register_profile("slow-host", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("slow-host")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    from agent.auth import pki as lib

    d = tmp_path_factory.mktemp("pki")
    other = tmp_path_factory.mktemp("pki-other")
    lib.init_ca(str(d))
    lib.issue(str(d), "server", "cellard-test", sans=("127.0.0.1", "localhost"))
    for name, role in TLS_IDENTITIES.items():
        lib.issue(str(d), "client", name, role=role)
    lib.issue(str(d), "client", "stranger", role="admin")  # valid CA, identity not in the config
    lib.init_ca(str(other), "another CA")
    lib.issue(str(other), "client", "intruder", role="admin")
    return PKI(d, other)


@pytest.fixture
def cellard_factory(pki: PKI) -> Iterator[StartCellard]:
    """``start(config=None, *, tcp=False, tls=True, args=(), wait=True, base_mode=0o700) -> Cellard``;
    every daemon it started is torn down at the end, also when the test failed."""
    started: list[Cellard] = []

    def start(config: dict[str, Any] | None = None, **options: Any) -> Cellard:
        daemon = start_cellard(config, pki=pki, **options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        teardown(daemon)


@pytest.fixture
def cellard(cellard_factory: StartCellard) -> Cellard:
    return cellard_factory()


@pytest.fixture
def run_cellard(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run cellard expecting it to exit by itself (bad config/flags): ``run(*args, config=None)``."""

    def run(*args: str, config: str | None = None, timeout: float = scaled(20)) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "agent.daemon"]
        if config is not None:
            path = tmp_path / "cellard.toml"
            path.write_text(config)
            argv += ["--config", str(path)]
        return subprocess.run(
            [*argv, *args], cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture(scope="module")
def module_cellard() -> Iterator[Cellard]:
    with running_cellard() as daemon:
        yield daemon


@pytest.fixture
def fresh_cellard() -> Iterator[Cellard]:
    with running_cellard() as daemon:
        yield daemon


@pytest.fixture
def api(module_cellard: Cellard) -> Iterator[Api]:
    with api_session(module_cellard) as client:
        yield client
