"""RPC metrics cover the node-local endpoint too: calls from workloads are counted, labelled ``listener``.

A REAL cellard with ``[metrics] listen = "127.0.0.1:0"``; calls go to its local Unix socket (what a
workload uses) and to the internal socket behind it (no peer identity: refused, and still counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.agent.core.test_metrics import has_sample, scrape, value
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

CHECK = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary_unary"}


def wait_scraped(address: str, present: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Scrape until ``present`` holds (an aborted call is counted just after the client sees it)."""
    deadline = time.monotonic() + scaled(10)
    families = scrape(address)
    while not present(families):
        assert time.monotonic() < deadline, "the call never showed up in /metrics"
        time.sleep(0.05)
        families = scrape(address)
    return families


def check(target: str) -> grpc.RpcError | None:
    with grpc.insecure_channel(target) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=scaled(10))
        except grpc.RpcError as exc:
            return exc
    return None


def test_local_endpoint_calls_show_in_metrics(cellard_factory: Any) -> None:
    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}})
    (listening,) = daemon.events("metrics.listening")
    address = listening["address"]
    deadline = time.monotonic() + scaled(10)
    while not daemon.events("local.listening"):
        assert time.monotonic() < deadline, daemon.log_text()
        time.sleep(0.05)
    run_dir = Path(daemon.config["paths"]["run_dir"])
    before = scrape(address)
    main_checks = value(before, "grpc_server_started", "grpc_server_started_total", listener="main", **CHECK)
    assert main_checks >= 1  # the fixture's readiness probe, on the main socket

    assert check("unix:" + str(run_dir / "local.sock")) is None
    refused = check("unix:" + str(run_dir / "local-internal" / "grpc.sock"))
    assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED

    f = wait_scraped(address, lambda f: has_sample(
        f, "grpc_server_handled_total", listener="local", grpc_code="PERMISSION_DENIED", **CHECK))
    local = {"listener": "local", **CHECK}
    assert value(f, "grpc_server_started", "grpc_server_started_total", **local) == 2
    assert value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_code="OK", **local) == 1
    assert value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_code="PERMISSION_DENIED", **local) == 1
    assert value(f, "grpc_server_handling_seconds", "grpc_server_handling_seconds_count", **local) == 2
    # The main listener's series did not move: each call is counted once, on the server that took it.
    assert value(f, "grpc_server_started", "grpc_server_started_total", listener="main", **CHECK) == main_checks
