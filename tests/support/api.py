"""The cells API of a REAL cellard, bound to one daemon, for tests that drive cells over gRPC.

- :func:`running_cellard`: a context manager around :func:`tests.support.cellard.start_cellard`
  (root only) that tears the daemon down, also after failures.
- :class:`Api`: stubs and small helpers (allocate, start, stop, free, inspect, list) plus what the
  daemon left on the host (cgroup dirs, views, data dirs, netns); ``free_all`` frees every cell,
  children first, so one failing test cannot poison the next.
- :func:`code_of`: the status code of a failed call.

The ``module_cellard``, ``fresh_cellard`` and ``api`` fixtures built on these are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, logs_pb2_grpc
from tests.support.cellard import Cellard, restart, start_cellard, teardown
from tests.support.cgroups import hierarchy_tops
from tests.support.cleanup import supervisor_pids
from tests.support.timeouts import scaled


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")


@contextlib.contextmanager
def running_cellard(config: dict[str, Any] | None = None) -> Iterator[Cellard]:
    require_root()
    daemon = start_cellard(config)
    try:
        yield daemon
    finally:
        teardown(daemon)


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
            if daemon.proc.poll() is None:  # a test may have stopped or killed it
                client.free_all()
        finally:
            channel.close()


def exe_info(api: Api, cell: str, name: str) -> cells_pb2.ExecutableInfo:
    """The executable ``name`` of ``cell`` as Inspect shows it."""
    (info,) = [e for e in api.inspect(cell).executables if e.name == name]
    return info


def code_of(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, grpc.Call), exc
    return exc.code()



__all__ = ["Api", "code_of", "require_root", "restart", "running_cellard", "teardown", "runtime_pb2", "cells_pb2"]
