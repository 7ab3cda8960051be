"""The Prometheus endpoint of a REAL cellard: per-cell usage rises under load, names follow conventions.

The daemon runs with ``[metrics] listen = "127.0.0.1:0"`` (a free loopback port, read back from its
``metrics.listening`` event); a workload that burns CPU and grows its memory runs in a cell, and two
scrapes a moment apart must show that cell's CPU seconds and memory bytes higher in the second.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto.aurae import runtime_pb2, runtime_pb2_grpc

pytestmark = pytest.mark.root

GROW = (
    "import time\n"
    "blocks = []\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    blocks.append(bytearray(1 << 20))\n"  # +1 MiB (touched: bytearray zero-fills) ...
    "    end = time.monotonic() + 0.02\n"
    "    while time.monotonic() < end: pass\n"  # ... and 20 ms of CPU per round
    "    print(len(blocks), flush=True)\n"
    "    if len(blocks) >= 400: blocks.clear()\n"
)


def scrape(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in {family}")


def has_sample(families: dict[str, Any], sample: str, **labels: str) -> bool:
    return any(s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
               for f in families.values() for s in f.samples)


@pytest.fixture
def metered(cellard_factory: Any) -> Iterator[tuple[Any, str, Any]]:
    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}})
    events = daemon.events("metrics.listening")
    assert events, daemon.log_text()
    channel = daemon.channel()
    try:
        yield daemon, events[0]["address"], runtime_pb2_grpc.CellServiceStub(channel)
    finally:
        channel.close()


def test_metrics_follow_a_running_workload(metered: tuple[Any, str, Any]) -> None:
    daemon, address, stub = metered
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="busy")), timeout=30)
    exe = runtime_pb2.Executable(cell_name="busy", name="grow", argv=[sys.executable, "-c", GROW])
    stub.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)

    def sample() -> tuple[float, float]:
        f = scrape(address)
        return (value(f, "cellar_cell_cpu_usage_seconds", "cellar_cell_cpu_usage_seconds_total", cell="busy"),
                value(f, "cellar_cell_memory_usage_bytes", "cellar_cell_memory_usage_bytes", cell="busy"))

    time.sleep(0.5)
    cpu1, mem1 = sample()
    deadline = time.monotonic() + 30
    cpu2, mem2 = cpu1, mem1
    while (cpu2 <= cpu1 or mem2 <= mem1) and time.monotonic() < deadline:
        time.sleep(1.1)  # past the collector's 1 s cache
        cpu2, mem2 = sample()
    assert cpu2 > cpu1, (cpu1, cpu2)
    assert mem2 > mem1, (mem1, mem2)

    f = scrape(address)
    assert value(f, "cellar_runtime_up", "cellar_runtime_up") == 1
    assert value(f, "cellar_cell_pids", "cellar_cell_pids", cell="busy") >= 1
    assert value(f, "cellar_executable_state", "cellar_executable_state", cell="busy", executable="grow",
                 state="running") == 1
    assert value(f, "cellar_executable_state", "cellar_executable_state", cell="busy", executable="grow",
                 state="exited") == 0
    assert value(f, "cellar_executable_log_lines", "cellar_executable_log_lines_total", cell="busy",
                 executable="grow", stream="stdout") >= 1
    assert value(f, "cellar_executable_log_bytes", "cellar_executable_log_bytes_total", cell="busy",
                 executable="grow", stream="stdout") >= len("ready")
    assert value(f, "cellar_cell_oom_kills", "cellar_cell_oom_kills_total", cell="busy") == 0

    # RPC counts and latencies, by method and status code (the Allocate above, a refused one now).
    with pytest.raises(grpc.RpcError):
        stub.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="Bad_Name")), timeout=10)
    rpc = {"grpc_service": "runtime.CellService", "grpc_method": "Allocate", "grpc_type": "unary_unary"}
    # context.abort() sends the status to the client *before* it raises into the interceptor that
    # counts the call (grpc aio server.pyx.pxi), so the refusal is counted a moment after the client
    # sees it: poll, bounded, rather than race it.
    f = scrape(address)
    deadline = time.monotonic() + 10
    while not has_sample(f, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **rpc):
        assert time.monotonic() < deadline, "the refused Allocate was never counted"
        time.sleep(0.05)
        f = scrape(address)
    assert value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_code="OK", **rpc) >= 1
    assert value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **rpc) == 1
    assert value(f, "grpc_server_started", "grpc_server_started_total", **rpc) >= 2
    assert value(f, "grpc_server_handling_seconds", "grpc_server_handling_seconds_count", **rpc) >= 2
    stub.Free(runtime_pb2.FreeCellRequest(cell_name="busy", grace_period_ms=0), timeout=30)


UNITS = ("_seconds", "_bytes", "_total", "_info", "_ratio")


def test_names_follow_prometheus_conventions(metered: tuple[Any, str, Any]) -> None:
    daemon, address, stub = metered
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="idle")), timeout=30)
    exe = runtime_pb2.Executable(cell_name="idle", name="echo", argv=["/bin/echo", "hi"])
    stub.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)
    time.sleep(1.1)
    families = scrape(address)
    ours = {n: f for n, f in families.items() if n.startswith(("cellar_", "grpc_server_"))}
    assert {"cellar_cell_cpu_usage_seconds", "cellar_cell_memory_usage_bytes", "cellar_cell_pids",
            "cellar_cell_oom_kills", "cellar_executable_state", "cellar_executable_log_lines",
            "cellar_executable_log_bytes", "cellar_executable_log_dropped_lines", "grpc_server_handled",
            "grpc_server_handling_seconds"} <= set(ours)
    for name, family in ours.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        if family.type == "counter":
            assert all(s.name == name + "_total" or s.name == name + "_created" for s in family.samples), name
        if "seconds" in name or "bytes" in name:
            assert name.endswith(("_seconds", "_bytes")), f"{name}: unit must be the suffix"
        for s in family.samples:
            assert set(s.labels) <= {"cell", "executable", "state", "stream", "resource", "listener", "grpc_type",
                                     "grpc_service", "grpc_method", "grpc_code", "le", "version", "python",
                                     "saver", "status"}, s
    # The workload's cell and executable are labels, not part of metric names.
    assert any(s.labels.get("cell") == "idle" for s in families["cellar_cell_pids"].samples)
    assert not any("idle" in n for n in families)
    stub.Free(runtime_pb2.FreeCellRequest(cell_name="idle", grace_period_ms=0), timeout=30)


def test_metrics_are_off_by_default(cellard: Any) -> None:
    assert cellard.events("metrics.listening") == []
