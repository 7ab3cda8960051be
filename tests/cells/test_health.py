"""Health checks (issue 14): exec, tcp, http probes, the state machine, liveness restarts.

Real supervisor, real processes and servers. Intervals are the minimum (1 s), every wait is bounded
generously (:func:`tests.support.timeouts.scaled`); no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cells import protocol
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.spec import CellSpec, ExecutableSpec, HealthCheck, RestartPolicy
from cells.state import ExecutableInfo, ExecutableState
from tests.support.runtime import collect_events
from tests.support.timeouts import scaled

T = TypeVar("T")

#: A tiny HTTP server: GET answers 200 while the file argv[2] exists, else 500 (argv[3]: that code).
HTTP_SERVER = """
import http.server, os, sys
port, flag = int(sys.argv[1]), sys.argv[2]
bad = int(sys.argv[3]) if len(sys.argv) > 3 else 500
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if os.path.exists(flag) else bad
        if self.path == "/moved":
            code = 302
        self.send_response(code)
        self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def run(config: RuntimeConfig, body: Callable[[RuntimeClient], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(await RuntimeClient.connect(config))

    return asyncio.run(main())


def unique(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_server(port: int, flag: Path, bad: int = 500) -> tuple[str, ...]:
    return ("python3", "-c", HTTP_SERVER, str(port), str(flag), str(bad))


async def exe_info(c: RuntimeClient, cell: str, name: str) -> ExecutableInfo:
    return next(e for e in (await c.inspect(cell)).executables if e.name == name)


async def wait_health(c: RuntimeClient, cell: str, name: str, health: str, timeout: float = 15.0,
                      run_no: int = 0) -> ExecutableInfo:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        info = await exe_info(c, cell, name)
        if info.health == health and info.run >= run_no:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{cell}/{name}: run {info.run} {info.state.value} health {info.health!r} "
                                 f"({info.health_result!r}), expected {health}")
        await asyncio.sleep(0.05)


def kinds(events: list[tuple[str, ExecutableInfo]]) -> list[str]:
    return [k for k, _ in events]


@pytest.fixture(scope="module")
def config(shared_runtime_config: RuntimeConfig) -> RuntimeConfig:
    return shared_runtime_config


# -- pure ----------------------------------------------------------------------------------------------


def test_defaults_are_dockers() -> None:
    check = HealthCheck()
    assert (check.kind, check.interval_s, check.timeout_s, check.retries, check.start_period_s) == ("", 30.0, 30.0, 3, 0.0)
    assert (check.path, check.service) == ("/", "")
    assert ExecutableSpec("c", "e", argv=("x",)).health == HealthCheck()


def test_the_check_crosses_the_supervisor_protocol() -> None:
    exe = ExecutableSpec("a", "b", argv=("x",), health=HealthCheck("exec", command=("true", "1"), interval_s=2))
    wire = json.loads(protocol.request("start", spec=exe))
    assert protocol.executable_spec_from_dict(wire["args"]["spec"]) == exe.validate()
    assert protocol.executable_spec_from_dict({"cell_name": "a", "name": "b", "argv": ["x"]}).health == HealthCheck()


# -- through a supervisor --------------------------------------------------------------------------------


@pytest.mark.root
def test_exec_check_passing_then_failing_with_never_stays_running_unhealthy(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    flag = tmp_path / "ok"
    flag.touch()
    check = HealthCheck("exec", command=("test", "-e", str(flag)), interval_s=1, timeout_s=5, retries=2)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: ("unhealthy", "svc") in
                                              [(k, i.name) for k, i in ev], 30))
        await asyncio.sleep(0.1)
        started = await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check))
        assert started.health == "starting" and started.health_check["kind"] == "exec"
        healthy = await wait_health(c, cell, "svc", "healthy")
        assert healthy.health_result == "exit 0" and healthy.health_failures == 0
        await c.start(ExecutableSpec(cell, "talks", argv=("sleep", "1000"), health=HealthCheck(
            "exec", command=("sh", "-c", "echo; echo 'not ready: 3 of 5' >&2; head -c 300000 /dev/zero; exit 1"),
            interval_s=1, retries=1)))
        talks = await wait_health(c, cell, "talks", "unhealthy")
        assert talks.health_result == "exit 1: not ready: 3 of 5", talks.health_result  # its first line
        await c.stop(cell, "talks", grace_s=0)
        flag.unlink()
        events = await watch
        assert [k for k, i in events if i.name == "svc"] == ["started", "healthy", "unhealthy"]
        info = await exe_info(c, cell, "svc")
        assert info.state is ExecutableState.RUNNING and info.health == "unhealthy"
        assert info.health_failures >= 2 and info.health_result == "exit 1" and info.run == 1
        await asyncio.sleep(scaled(1.5))  # never: not killed
        info = await exe_info(c, cell, "svc")
        assert info.state is ExecutableState.RUNNING and info.run == 1
        flag.touch()
        back = await wait_health(c, cell, "svc", "healthy")  # back to healthy on a success
        assert back.health_failures == 0
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_http_2xx_3xx_are_healthy_and_500_is_not(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    port = free_port()
    flag = tmp_path / "up"
    flag.touch()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "web", argv=http_server(port, flag),
                                     health=HealthCheck("http", port=port, path="/healthz", interval_s=1, retries=1)))
        await c.start(ExecutableSpec(cell, "moved", argv=("sleep", "1000"),
                                     health=HealthCheck("http", port=port, path="/moved", interval_s=1, retries=1)))
        info = await wait_health(c, cell, "web", "healthy")
        assert info.health_result == "HTTP 200"
        assert (await wait_health(c, cell, "moved", "healthy")).health_result == "HTTP 302"
        flag.unlink()
        info = await wait_health(c, cell, "web", "unhealthy")
        assert info.health_result == "HTTP 500" and info.state is ExecutableState.RUNNING
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_tcp_connect_and_a_closed_port(config: RuntimeConfig) -> None:
    cell = unique()
    port, closed = free_port(), free_port()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "srv", argv=http_server(port, Path("/")),
                                     health=HealthCheck("tcp", port=port, interval_s=1, retries=1)))
        await c.start(ExecutableSpec(cell, "none", argv=("sleep", "1000"),
                                     health=HealthCheck("tcp", port=closed, interval_s=1, retries=1)))
        assert (await wait_health(c, cell, "srv", "healthy")).health_result == "connected"
        assert "refused" in (await wait_health(c, cell, "none", "unhealthy")).health_result.lower()
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_failures_within_the_start_period_do_not_count(config: RuntimeConfig) -> None:
    cell = unique()
    check = HealthCheck("exec", command=("false",), interval_s=1, retries=1, start_period_s=scaled(3.5))

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "slow", argv=("sleep", "1000"), health=check))
        await asyncio.sleep(scaled(2.5))
        info = await exe_info(c, cell, "slow")
        assert info.health == "starting" and info.health_failures == 0 and info.health_failed_probes >= 1
        assert info.health_result == "exit 1"
        await wait_health(c, cell, "slow", "unhealthy")
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_retries_consecutive_failures_make_it_unhealthy(config: RuntimeConfig, tmp_path: Path) -> None:
    """A success in between starts the count over: 3 retries need 3 failures in a row."""
    cell = unique()
    counter = tmp_path / "n"
    # fails, fails, succeeds, then fails for good
    script = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" = 2 ]'
    check = HealthCheck("exec", command=("sh", "-c", script), interval_s=1, retries=3)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: "unhealthy" in kinds(ev), 40))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "flaky", argv=("sleep", "1000"), health=check))
        events = await watch
        assert kinds(events) == ["started", "healthy", "unhealthy"]
        assert int(counter.read_text()) >= 6  # 2 failures, 1 success, 3 failures
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_unhealthy_with_on_failure_is_restarted_after_the_threshold(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    port = free_port()
    flag = tmp_path / "up"
    flag.touch()
    check = HealthCheck("http", port=port, path="/healthz", interval_s=1, timeout_s=2, retries=2)
    policy = RestartPolicy("on-failure", delay_s=0.1, limit_interval_s=0)

    async def body(c: RuntimeClient) -> list[tuple[str, ExecutableInfo]]:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: kinds(ev).count("started") >= 2, 40))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "web", argv=http_server(port, flag), health=check, restart=policy))
        await wait_health(c, cell, "web", "healthy")
        flag.unlink()
        events = await watch
        flag.touch()
        info = await wait_health(c, cell, "web", "healthy", run_no=2)  # the new run starts over
        assert info.run == 2 and info.restarts == 1 and info.state is ExecutableState.RUNNING
        await c.free(cell, grace_s=0)
        return events

    events = run(config, body)
    assert kinds(events) == ["started", "healthy", "unhealthy", "exited", "backoff", "restarting", "started"]
    unhealthy = events[2][1]
    assert unhealthy.health_failures == 2 and unhealthy.health_result == "HTTP 500"
    exited = events[3][1]
    assert exited.exit is not None and exited.exit.signal == 15 and "unhealthy" in exited.reason
    assert events[6][1].health == "starting"


@pytest.mark.root
def test_unhealthy_is_restarted_even_when_it_exits_0_on_sigterm(config: RuntimeConfig) -> None:
    """Liveness: the policy restarts an unhealthy kill whatever its exit code (on-failure too)."""
    cell = unique()
    check = HealthCheck("exec", command=("false",), interval_s=1, retries=1)
    policy = RestartPolicy("on-failure", delay_s=0.1, limit_interval_s=0)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "clean", command="trap 'exit 0' TERM; while :; do sleep 0.1; done",
                                     health=check, restart=policy))
        deadline = time.monotonic() + scaled(20)
        while (info := await exe_info(c, cell, "clean")).run < 2:
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_probing_stops_when_the_run_ends(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    marks = tmp_path / "marks"
    check = HealthCheck("exec", command=("sh", "-c", f"echo x >> {marks}"), interval_s=1)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check))
        await wait_health(c, cell, "svc", "healthy")
        await c.stop(cell, "svc", grace_s=0)
        await asyncio.sleep(0.5)
        count = len(marks.read_text().splitlines())
        await asyncio.sleep(scaled(2.5))
        assert len(marks.read_text().splitlines()) == count
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_a_hanging_probe_is_cut_at_its_timeout(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    pids = tmp_path / "pids"
    check = HealthCheck("exec", command=("sh", "-c", f"echo $$ >> {pids}; sleep 1000"), interval_s=1,
                        timeout_s=0.5, retries=1)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check))
        info = await wait_health(c, cell, "svc", "unhealthy")
        assert info.health_result == "timeout after 0.5s"
        await asyncio.sleep(0.5)
        first = int(pids.read_text().split()[0])
        assert not os.path.exists(f"/proc/{first}"), "the hung probe was killed"
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_an_isolated_network_cells_port_is_probed_inside_its_netns(config: RuntimeConfig, tmp_path: Path) -> None:
    """The host has nothing on the port; the cell's netns has the server: healthy."""
    cell = unique()
    port = free_port()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell, isolate_network=True))
        await c.start(ExecutableSpec(cell, "web", argv=http_server(port, Path("/")),
                                     health=HealthCheck("http", port=port, interval_s=1, retries=1)))
        await c.start(ExecutableSpec(cell, "tcp", argv=("sleep", "1000"),
                                     health=HealthCheck("tcp", port=port, interval_s=1, retries=1)))
        assert (await wait_health(c, cell, "web", "healthy")).health_result == "HTTP 200"
        assert (await wait_health(c, cell, "tcp", "healthy")).health_result == "connected"
        # an exec probe is in the netns too: only lo there (/proc/net/dev: 2 header lines + lo)
        only_lo = HealthCheck("exec", command=("sh", "-c", "[ $(wc -l < /proc/net/dev) -eq 3 ]"), interval_s=1,
                              retries=1)
        await c.start(ExecutableSpec(cell, "netns", argv=("sleep", "1000"), health=only_lo))
        assert (await wait_health(c, cell, "netns", "healthy")).health_result == "exit 0"
        assert len(Path("/proc/net/dev").read_text().splitlines()) > 3  # the host has more than lo
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))  # not on the host's loopback
        await c.free(cell, grace_s=0)

    run(config, body)


# -- the apply file and the metrics ------------------------------------------------------------------------


def test_an_apply_file_declares_a_check() -> None:
    from cells.manifest import ManifestError, cell_table, parse

    text = """\
[cells.web.executables.api]
argv = ["python3", "-m", "http.server", "8080"]
restart = "on-failure"
health = { kind = "http", port = 8080, path = "/healthz", interval_s = 5 }
"""
    api = parse(text, "node.toml").cells[0].executables[0]
    assert api.health == HealthCheck("http", port=8080, path="/healthz", interval_s=5.0)
    assert cell_table(CellSpec("web"), [api])["executables"]["api"]["health"] == {
        "kind": "http", "port": 8080, "path": "/healthz", "interval_s": 5.0}
    with pytest.raises(ManifestError) as bad:
        parse(text.replace("interval_s = 5", "interval_s = 0"), "node.toml")
    assert str(bad.value).startswith("node.toml:4: cells.web.executables.api.health.interval_s: must be"), bad.value
    with pytest.raises(ManifestError) as unknown:
        parse(text.replace("interval_s = 5", "every = 5"), "node.toml")
    assert "cells.web.executables.api.health.every: is not a known key" in str(unknown.value)


def test_metrics_say_healthy_and_count_failed_probes() -> None:
    from cells.metrics import health_families
    from cells.state import CellInfo, CellState

    def exe(name: str, health: str, failed: int, state: ExecutableState = ExecutableState.RUNNING) -> ExecutableInfo:
        return ExecutableInfo("c", name, state, health=health, health_failed_probes=failed)

    cell = CellInfo("c", CellState.ACTIVE, "/x", True, executables=[
        exe("ok", "healthy", 1), exe("bad", "unhealthy", 7), exe("new", "starting", 0), exe("none", "", 0),
        exe("gone", "unhealthy", 3, ExecutableState.EXITED)])
    healthy, failed = health_families([cell])
    assert {s.labels["executable"]: s.value for s in healthy.samples} == {"ok": 1, "bad": 0, "new": 0}
    assert healthy.name == "cellar_executable_healthy"
    totals = {s.labels["executable"]: s.value for s in failed.samples if s.name.endswith("_total")}
    assert totals == {"ok": 1, "bad": 7, "new": 0}
    assert failed.name == "cellar_executable_health_failed_probes"


@pytest.mark.root
def test_after_a_supervisor_crash_probing_starts_over_for_the_adopted_run(runtime_config: RuntimeConfig,
                                                                          tmp_path: Path) -> None:
    """The health state is not persisted, the check is: the successor probes the run it adopted (one
    with no restart policy, whose spec only its record keeps), from ``starting``."""
    import signal

    cfg = runtime_config
    cell = unique()
    flag = tmp_path / "ok"
    check = HealthCheck("exec", command=("test", "-e", str(flag)), interval_s=1, retries=1)

    async def before() -> int:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check))
        await wait_health(c, cell, "svc", "unhealthy")
        pid: int = (await c.info())["supervisor_pid"]
        return pid

    old_pid = asyncio.run(before())
    os.kill(old_pid, signal.SIGKILL)

    async def after() -> None:
        c = await RuntimeClient.connect(cfg)
        assert (await c.info())["supervisor_pid"] != old_pid
        info = await exe_info(c, cell, "svc")
        assert info.state is ExecutableState.RUNNING and info.run == 1
        assert info.health in ("starting", "unhealthy") and info.health_check["kind"] == "exec"
        flag.touch()
        healthy = await wait_health(c, cell, "svc", "healthy")
        assert healthy.run == 1 and healthy.health_result == "exit 0"
        await c.free(cell, grace_s=0)

    asyncio.run(after())


@pytest.mark.root
def test_grpc_health_serving_not_serving_and_an_unknown_service(config: RuntimeConfig) -> None:
    """The supervisor speaks grpc.health.v1 itself (cells imports no grpc): against a real grpcio server."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    checks.set("pkg.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    cell = unique()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        for name, service in (("up", ""), ("down", "pkg.Down"), ("unknown", "pkg.Nope")):
            await c.start(ExecutableSpec(cell, name, argv=("sleep", "1000"),
                                         health=HealthCheck("grpc", port=port, service=service, interval_s=1,
                                                            retries=1)))
        assert (await wait_health(c, cell, "up", "healthy")).health_result == "SERVING"
        assert (await wait_health(c, cell, "down", "unhealthy")).health_result == "NOT_SERVING"
        unknown = await wait_health(c, cell, "unknown", "unhealthy")
        assert "unknown service" in unknown.health_result or "no HealthCheckResponse" in unknown.health_result
        checks.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await wait_health(c, cell, "up", "unhealthy")).health_result == "NOT_SERVING"
        await c.free(cell, grace_s=0)

    try:
        run(config, body)
    finally:
        server.stop(0)


@pytest.mark.root
def test_a_frozen_cell_is_not_probed_and_an_isolated_cells_exec_probe_runs_inside(config: RuntimeConfig,
                                                                                  tmp_path: Path) -> None:
    """In a process-isolated cell the probe is in the cell's pid namespace (it sees the executable as a
    low pid, not the host's); freezing the cell pauses probing instead of failing it (no liveness kill)."""
    cell = unique()
    probe = "[ $$ -lt 100 ] && pgrep -x sleep > /dev/null"  # its private /tmp: nothing to write to
    check = HealthCheck("exec", command=("sh", "-c", probe), interval_s=1, timeout_s=0.5, retries=1)
    policy = RestartPolicy("on-failure", delay_s=0.1, limit_interval_s=0)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell, isolate_process=True))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check, restart=policy))
        await wait_health(c, cell, "svc", "healthy")  # a low pid: in the cell's pid namespace
        assert int(Path("/proc/sys/kernel/ns_last_pid").read_text()) >= 100
        await c.freeze(cell)
        await asyncio.sleep(scaled(3.0))
        info = await exe_info(c, cell, "svc")
        assert info.health == "healthy" and info.run == 1, info
        await c.thaw(cell)
        await asyncio.sleep(scaled(1.5))
        info = await exe_info(c, cell, "svc")
        assert info.health == "healthy" and info.run == 1, info
        await c.free(cell, grace_s=0)

    run(config, body)


@pytest.mark.root
def test_the_first_probe_comes_soon_after_the_start_then_every_interval(config: RuntimeConfig, tmp_path: Path) -> None:
    cell = unique()
    marks = tmp_path / "marks"
    check = HealthCheck("exec", command=("sh", "-c", f"echo x >> {marks}"), interval_s=3600)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), health=check))
        await wait_health(c, cell, "svc", "healthy", timeout=10)  # not an hour later
        await asyncio.sleep(scaled(1.5))
        assert len(marks.read_text().splitlines()) == 1  # then every interval
        await c.free(cell, grace_s=0)

    run(config, body)
