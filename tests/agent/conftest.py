"""Fixtures for the cells API tests: one REAL cellard per module, restartable on its own config.

- ``module_cellard``: a ``cellard`` started like ``cellard_factory`` does (own short temp dir, unique
  ``cellar-test-<hex>`` cgroup root and netns prefix), shared by the tests of one module to save the
  start-up time. Its finalizer stops the daemon, SIGKILLs its supervisor, kills and removes the cgroup
  root and the netns (tests.cleanup.destroy_runtime) and removes the directory, also after failures.
- ``fresh_cellard``: the same for one test (for tests that kill or restart the daemon).
- ``restart_cellard(daemon)``: re-Popen ``python -m agent.daemon --config <same path>`` (same socket,
  dirs and cgroup root) after the old process died, and wait for SERVING. The daemon object is updated
  in place, so the finalizer cleans up the new process too.
- ``api``: stubs and small helpers bound to ``module_cellard``; every cell left at the end of a test is
  freed (children first), so one failing test cannot poison the next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, logs_pb2_grpc
from tests.cgroups import hierarchy_tops
from tests.cleanup import destroy_runtime, supervisor_pids
from tests.timeouts import scaled

REPO = Path(__file__).resolve().parent.parent.parent


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")


def _import_foundation() -> Any:
    """The foundation's Cellard and config helpers (tests/conftest.py is loaded as ``conftest``)."""
    import importlib

    for name in ("conftest", "tests.conftest"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "Cellard") and hasattr(mod, "base_config"):
            return mod
    return importlib.import_module("tests.conftest")


def launch(config: dict[str, Any] | None = None) -> Any:
    """Start a cellard like ``cellard_factory`` (fresh base dir, unique cgroup root/netns prefix)."""
    foundation = _import_foundation()
    base = foundation._new_base(0o700)
    token = f"cellar-test-{secrets.token_hex(4)}"
    cfg = foundation.merge(foundation.base_config(base, token), config or {})
    config_path = base / "cellard.toml"
    config_path.write_text(foundation.toml_dumps(cfg))
    log_path = base / "cellard.log"
    daemon = foundation.Cellard(_popen(config_path, log_path), base, config_path, log_path, token, cfg)
    return daemon


def _popen(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("CELLAR_CONFIG", None)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(config_path)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )


def restart(daemon: Any) -> Any:
    """Start a new cellard on ``daemon``'s own config file; the old process must be gone."""
    if daemon.proc.poll() is None:
        raise AssertionError("restart: the old cellard is still running")
    daemon.proc = _popen(daemon.config_path, daemon.log_path)
    daemon.returncode = None
    daemon.wait_serving()
    return daemon


def teardown(daemon: Any) -> None:
    try:
        daemon.stop()
    finally:
        try:
            destroy_runtime(daemon.runtime_config())
        finally:
            shutil.rmtree(daemon.base, ignore_errors=True)


@contextlib.contextmanager
def running_cellard(config: dict[str, Any] | None = None) -> Iterator[Any]:
    require_root()
    daemon = launch(config)
    try:
        daemon.wait_serving()
        yield daemon
    finally:
        teardown(daemon)


@pytest.fixture(scope="module")
def module_cellard() -> Iterator[Any]:
    with running_cellard() as daemon:
        yield daemon


@pytest.fixture
def fresh_cellard() -> Iterator[Any]:
    with running_cellard() as daemon:
        yield daemon


@pytest.fixture
def restart_cellard() -> Callable[[Any], Any]:
    return restart


# ---------------------------------------------------------------- the API, bound to one daemon


@dataclass
class Api:
    daemon: Any
    channel: grpc.Channel

    def __post_init__(self) -> None:
        self.runtime = runtime_pb2_grpc.CellServiceStub(self.channel)
        self.cells = cells_pb2_grpc.CellsStub(self.channel)
        self.logs = logs_pb2_grpc.LogsStub(self.channel)

    @property
    def root(self) -> str:
        return str(self.daemon.token)

    @property
    def prefix(self) -> str:
        return str(self.daemon.config["cells"]["netns_prefix"])

    def allocate(self, name: str, **fields: Any) -> runtime_pb2.AllocateCellResponse:
        return self.runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name=name, **fields)),
                                     timeout=scaled(30))

    def start(self, cell: str, name: str, *argv: str, **fields: Any) -> runtime_pb2.StartCellResponse:
        exe = runtime_pb2.Executable(cell_name=cell, name=name, argv=list(argv), **fields)
        return self.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=scaled(30))

    def stop(self, cell: str, name: str, grace_ms: int | None = None) -> runtime_pb2.StopCellResponse:
        req = runtime_pb2.StopCellRequest(cell_name=cell, executable_name=name)
        if grace_ms is not None:
            req.grace_period_ms = grace_ms
        return self.runtime.Stop(req, timeout=scaled(60))

    def free(self, name: str, grace_ms: int | None = 0) -> None:
        req = runtime_pb2.FreeCellRequest(cell_name=name)
        if grace_ms is not None:
            req.grace_period_ms = grace_ms
        self.runtime.Free(req, timeout=scaled(60))

    def inspect(self, name: str) -> cells_pb2.CellInfo:
        return self.cells.Inspect(cells_pb2.InspectCellRequest(cell_name=name), timeout=scaled(30))

    def list(self, prefix: str = "") -> list[cells_pb2.CellInfo]:
        return list(self.cells.List(cells_pb2.ListCellsRequest(prefix=prefix), timeout=scaled(30)).cells)

    def free_all(self) -> None:
        """Free every cell, deepest first (a failing test must not leave cells to the next one)."""
        for info in sorted(self.list(), key=lambda c: -c.name.count("/")):
            with contextlib.suppress(grpc.RpcError):
                self.free(info.name)

    # -- what is on the host -------------------------------------------------------------------
    def cgroup_dirs(self) -> list[str]:
        """Every directory under the cgroup root, in every hierarchy (relative, with hierarchy)."""
        out = []
        for hierarchy, top in hierarchy_tops(self.root).items():
            for dirpath, dirs, _files in os.walk(top):
                out += [f"{hierarchy}:{os.path.relpath(os.path.join(dirpath, d), top)}" for d in dirs]
        return sorted(out)

    def views(self) -> list[str]:
        """Pinned mount views of non-isolated cells (cells.mountview), and their mounts."""
        views_dir = self.daemon.runtime_config().views_dir
        pinned = sorted(os.listdir(views_dir)) if os.path.isdir(views_dir) else []
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(views_dir + "/")]
        return pinned + mounts

    def data_dirs(self) -> list[str]:
        """Data directories of process-isolated cells left behind (keep_data leaves them by design)."""
        data = self.daemon.runtime_config().data_dir
        return sorted(os.listdir(data)) if os.path.isdir(data) else []

    def netns(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir("/run/netns") if n.startswith(self.prefix))
        except FileNotFoundError:
            return []

    def supervisor_pid(self) -> int:
        pids = supervisor_pids(self.daemon.runtime_config())
        assert len(pids) == 1, pids
        return pids[0]


@contextlib.contextmanager
def api_session(daemon: Any) -> Iterator[Api]:
    """An :class:`Api` on a fresh channel to ``daemon``; every cell freed and the channel closed after."""
    channel = daemon.channel()
    client = Api(daemon, channel)
    try:
        yield client
    finally:
        try:
            client.free_all()
        finally:
            channel.close()


def code_of(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, grpc.Call), exc
    return exc.code()


@pytest.fixture
def api(module_cellard: Any) -> Iterator[Api]:
    channel = module_cellard.channel()
    client = Api(module_cellard, channel)
    try:
        yield client
    finally:
        try:
            if module_cellard.proc.poll() is None:
                client.free_all()
        finally:
            channel.close()


__all__ = ["Api", "code_of", "launch", "require_root", "restart", "running_cellard", "teardown",
           "runtime_pb2", "cells_pb2"]
