"""grpc.health.v1 follows what a service depends on, on a REAL cellard: the supervisor process.

Cells and jobs need the supervisor (it owns every workload): while it is gone those services are
NOT_SERVING on both listeners, services that do not need it stay SERVING, and a successor supervisor
(the one ``RuntimeClient.connect`` starts, as cellard does at start) turns them SERVING again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cells.client import RuntimeClient
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc
from tests.cleanup import supervisor_pids
from tests.foundation.healthwait import NOT_SERVING, SERVING, status, wait_for_status
from tests.timeouts import scaled

pytestmark = pytest.mark.root

NEEDS_SUPERVISOR = ["runtime.CellService", "cellar.v1.Cells", "Agent", "cellar.v1.Jobs"]
INDEPENDENT = ["", "observe.Observe", "cellar.v1.Logs", "file.v1.File", "pb.ServerDispatcher"]


def test_supervisor_down_then_back(cellard):
    local_sock = cellard.run_dir / "local.sock"
    with cellard.channel() as ch, grpc.insecure_channel(f"unix:{local_sock}") as local:
        wait_for_status(ch, NEEDS_SUPERVISOR + INDEPENDENT, SERVING)
        assert status(local, "Agent") == SERVING
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="runtime.CellService"),
                                                     timeout=scaled(60))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        [pid] = supervisor_pids(cellard.runtime_config())
        os.kill(pid, signal.SIGKILL)
        wait_for_status(ch, NEEDS_SUPERVISOR, NOT_SERVING)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        wait_for_status(local, ["Agent"], NOT_SERVING)  # the node-local endpoint says so too
        assert {s: status(ch, s) for s in INDEPENDENT} == dict.fromkeys(INDEPENDENT, SERVING)
        # A call that needs it says so, retryably (not INTERNAL: nothing is broken in cellard).
        with pytest.raises(grpc.RpcError) as refused:
            cells_pb2_grpc.CellsStub(ch).List(cells_pb2.ListCellsRequest(), timeout=scaled(10))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        assert "supervisor" in (refused.value.details() or "")
        deadline = time.monotonic() + scaled(10)
        while os.path.exists(f"/proc/{pid}"):  # cellard reaped the supervisor it had started: no zombie
            assert time.monotonic() < deadline, f"supervisor {pid} left as a zombie"
            time.sleep(0.05)

        runtime = asyncio.run(RuntimeClient.connect(cellard.runtime_config(), timeout=scaled(10)))
        try:
            wait_for_status(ch, NEEDS_SUPERVISOR, SERVING)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            wait_for_status(local, ["Agent"], SERVING)
        finally:
            watch.cancel()
            asyncio.run(runtime.shutdown_supervisor())
            if runtime.process is not None:
                runtime.process.wait(scaled(10))
    changes = [(e["dependency"], e["serving"]) for e in cellard.events("health.dependency")]
    assert changes[:2] == [("supervisor", False), ("supervisor", True)], changes
