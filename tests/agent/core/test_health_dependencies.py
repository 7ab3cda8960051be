"""grpc.health.v1 follows what a service depends on, on a REAL cellard: the supervisor process.

Cells and jobs need the supervisor (it owns every workload): once it dies those services are
NOT_SERVING on both listeners while services that do not need it stay SERVING; cellard then starts a
successor by itself, which re-adopts the running workloads, and they turn SERVING again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.core.status import code_for
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.errors import SupervisorUnavailable
from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, types_pb2
from tests.support.cleanup import supervisor_pids
from tests.support.healthwait import SERVING, status, wait_for_status
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

NEEDS_SUPERVISOR = ["runtime.CellService", "cellar.v1.Cells", "Agent", "cellar.v1.Jobs"]
INDEPENDENT = ["", "observe.Observe", "cellar.v1.Logs", "file.v1.File", "pb.ServerDispatcher"]


def test_supervisor_dies_then_is_replaced(cellard):
    local_sock = cellard.run_dir / "local.sock"
    with cellard.channel() as ch, grpc.insecure_channel(f"unix:{local_sock}") as local:
        wait_for_status(ch, NEEDS_SUPERVISOR + INDEPENDENT, SERVING)
        assert status(local, "Agent") == SERVING
        cells = cells_pb2_grpc.CellsStub(ch)
        runtime_pb2_grpc.CellServiceStub(ch).Allocate(
            runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="kept")), timeout=scaled(10))
        runtime_pb2_grpc.CellServiceStub(ch).Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
            cell_name="kept", name="sleeper", command="exec sleep 3600")), timeout=scaled(10))
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="runtime.CellService"),
                                                     timeout=scaled(60))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        [pid] = supervisor_pids(cellard.runtime_config())
        os.kill(pid, signal.SIGKILL)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # a successor, started by cellard
        watch.cancel()
        wait_for_status(ch, NEEDS_SUPERVISOR, SERVING)
        wait_for_status(local, ["Agent"], SERVING)
        assert {s: status(ch, s) for s in INDEPENDENT} == dict.fromkeys(INDEPENDENT, SERVING)
        [successor] = supervisor_pids(cellard.runtime_config())
        assert successor != pid and not os.path.exists(f"/proc/{pid}")  # the dead one was reaped: no zombie
        [kept] = cells.List(cells_pb2.ListCellsRequest(prefix="kept"), timeout=scaled(10)).cells
        assert [(e.name, e.state) for e in kept.executables] == [("sleeper", types_pb2.EXECUTABLE_STATE_RUNNING)]
    changes = [(e["dependency"], e["serving"]) for e in cellard.events("health.dependency")]
    assert changes[:2] == [("supervisor", False), ("supervisor", True)], changes
    assert cellard.events("supervisor.respawned")


def test_no_supervisor_is_unavailable_not_internal(tmp_path: Path) -> None:
    """Nobody listens on the supervisor's socket: the call never left, so UNAVAILABLE (retryable)."""
    config = RuntimeConfig(state_dir=str(tmp_path), run_dir=str(tmp_path))
    with pytest.raises(SupervisorUnavailable, match="does not answer") as err:
        asyncio.run(RuntimeClient(config).info())
    assert code_for(err.value) == grpc.StatusCode.UNAVAILABLE
