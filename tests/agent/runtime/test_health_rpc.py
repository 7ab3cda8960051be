"""Health checks through the real gRPC API of a real cellard (issue 14's must-shows).

- an HTTP server whose health endpoint starts failing (the file it serves is deleted: 404) is
  restarted after the threshold, the events saying healthy, unhealthy, exited, backoff, restarting;
- a grpcio server in a cell, registered with pb.ServerDispatcher over the node-local socket, whose
  grpc.health.v1 answers NOT_SERVING becomes unhealthy and leaves the dispatcher's rotation, and comes
  back when it answers SERVING again. A server of an executable without a check is unaffected.
"""

from __future__ import annotations

import queue
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.auth import pki as pki_lib
from proto.cellar.v1 import cells_pb2, inventory_pb2, inventory_pb2_grpc, types_pb2
from proto.pb import dispatcherServer_pb2, dispatcherServer_pb2_grpc
from tests.support import REPO
from tests.support.api import Api, code_of, exe_info
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root

RUNNING = types_pb2.EXECUTABLE_STATE_RUNNING
HEALTHY, UNHEALTHY, STARTING = (types_pb2.HEALTH_STATE_HEALTHY, types_pb2.HEALTH_STATE_UNHEALTHY,
                                types_pb2.HEALTH_STATE_STARTING)

#: Serves the file argv[2] at /healthz (404 once it is gone).
HTTP_SERVER = textwrap.dedent("""
    import http.server, os, sys
    port, flag = int(sys.argv[1]), sys.argv[2]
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = os.path.exists(flag)
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")

#: A grpcio server with grpc.health.v1 (SERVING while the file argv[2] exists, else NOT_SERVING) that
#: registers itself with the ServerDispatcher over the node-local socket, then serves on.
GRPC_SERVER = textwrap.dedent("""
    import os, sys, time
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from proto.pb import dispatcherServer_pb2 as m, dispatcherServer_pb2_grpc as g
    port, flag, cert = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    S = health_pb2.HealthCheckResponse
    checks.set("", S.SERVING)
    with grpc.insecure_channel(os.environ["CELLAR_LOCAL_ENDPOINT"]) as ch:
        reply = g.ServerDispatcherStub(ch).Register(m.RegisterReq(certificate=cert), timeout=10)
    print(m.RegisterRes.RequestStatus.Name(reply.status), flush=True)
    while True:
        checks.set("", S.SERVING if flag == "-" or os.path.exists(flag) else S.NOT_SERVING)
        time.sleep(0.1)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def follow_events(api: Api, cell: str) -> tuple[queue.Queue[cells_pb2.ExecutableEvent], Any]:
    events: queue.Queue[cells_pb2.ExecutableEvent] = queue.Queue()
    stream = api.cells.WatchEvents(cells_pb2.WatchEventsRequest(cell_prefix=cell))

    def follow() -> None:
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.2)
    return events, stream


def test_an_http_server_whose_health_endpoint_fails_is_restarted_after_the_threshold(api: Api, tmp_path: Path) -> None:
    port = free_port()
    flag = tmp_path / "healthz"
    flag.touch()
    api.allocate("hweb")
    events, stream = follow_events(api, "hweb")
    check = types_pb2.HealthCheck(kind=types_pb2.HEALTH_CHECK_KIND_HTTP, port=port, path="/healthz",
                                  interval_s=1, timeout_s=2, retries=3)
    api.start("hweb", "web", "python3", "-c", HTTP_SERVER, str(port), str(flag), health=check,
              restart=types_pb2.RestartPolicy(mode=types_pb2.RESTART_MODE_ON_FAILURE, delay_s=0.1))
    info = wait_for(lambda: (i := exe_info(api, "hweb", "web")).health == HEALTHY and i, what="healthy")
    assert info.health_result == "HTTP 200" and info.health_check.kind == types_pb2.HEALTH_CHECK_KIND_HTTP
    assert (info.health_check.port, info.health_check.path, info.health_check.retries) == (port, "/healthz", 3)
    flag.unlink()  # the health endpoint now answers 404
    seen: list[cells_pb2.ExecutableEvent] = []
    deadline = time.monotonic() + scaled(40)
    while [e.kind for e in seen].count("started") < 2 and time.monotonic() < deadline:
        seen.append(events.get(timeout=scaled(40)))
    stream.cancel()
    kinds = [e.kind for e in seen]
    assert kinds == ["started", "healthy", "unhealthy", "exited", "backoff", "restarting", "started"], kinds
    unhealthy = seen[2].executable
    assert unhealthy.health == UNHEALTHY and unhealthy.health_failures == 3 and unhealthy.health_result == "HTTP 404"
    assert "unhealthy" in seen[3].executable.reason
    assert seen[6].executable.run == 2 and seen[6].executable.health == STARTING
    flag.touch()
    again = wait_for(lambda: (i := exe_info(api, "hweb", "web")).health == HEALTHY and i, what="healthy again")
    assert again.run == 2 and again.restarts == 1 and again.state == RUNNING
    api.free("hweb")


@pytest.fixture
def cert(tmp_path: Path) -> bytes:
    pki_lib.init_ca(str(tmp_path))
    pki_lib.issue(str(tmp_path), "server", "grpc-srv", sans=("127.0.0.1",))
    return (tmp_path / "grpc-srv.pem").read_bytes()


def test_a_grpc_server_answering_not_serving_leaves_the_dispatchers_rotation(api: Api, tmp_path: Path,
                                                                              cert: bytes) -> None:
    port = free_port()
    flag = tmp_path / "serving"
    flag.touch()
    api.allocate("hgrpc")
    env = {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    check = types_pb2.HealthCheck(kind=types_pb2.HEALTH_CHECK_KIND_GRPC, port=port, interval_s=1, timeout_s=3,
                                  retries=2)
    api.start("hgrpc", "srv", sys.executable, "-c", GRPC_SERVER, str(port), str(flag), cert.decode(), env=env,
              health=check)
    dispatcher = dispatcherServer_pb2_grpc.ServerDispatcherStub(api.channel)
    res = dispatcherServer_pb2.GetNextServerRes

    def accepted() -> bool:
        reply = dispatcher.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip="127.0.0.1", certificate=cert),
                                         timeout=scaled(10))
        return bool(reply.status == res.ACCEPTED)

    wait_for(lambda: exe_info(api, "hgrpc", "srv").health == HEALTHY, what="healthy (SERVING)")
    assert exe_info(api, "hgrpc", "srv").health_result == "SERVING"
    wait_for(accepted, what="the registered server in the rotation")
    flag.unlink()  # NOT_SERVING from now on
    info = wait_for(lambda: (i := exe_info(api, "hgrpc", "srv")).health == UNHEALTHY and i, what="unhealthy")
    assert info.health_result == "NOT_SERVING" and info.state == RUNNING  # never: it keeps running
    wait_for(lambda: not accepted(), timeout=5, what="the server leaving the rotation")
    listed = inventory_pb2_grpc.DispatchStub(api.channel).List(inventory_pb2.ListDispatchRequest(), timeout=scaled(10))
    assert [s.healthy for s in listed.servers if s.pid and s.subject.endswith("grpc-srv")] == [False], listed
    flag.touch()
    wait_for(lambda: exe_info(api, "hgrpc", "srv").health == HEALTHY, what="healthy again")
    wait_for(accepted, timeout=5, what="the server back in the rotation")
    api.free("hgrpc")


def test_a_server_of_an_executable_without_a_check_is_unaffected(api: Api, tmp_path: Path) -> None:
    pki_lib.init_ca(str(tmp_path))
    pki_lib.issue(str(tmp_path), "server", "plain-srv", sans=("127.0.0.1",))
    cert = (tmp_path / "plain-srv.pem").read_bytes()
    api.allocate("hplain")
    env = {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    api.start("hplain", "srv", sys.executable, "-c", GRPC_SERVER, str(free_port()), "-", cert.decode(), env=env)
    dispatcher = dispatcherServer_pb2_grpc.ServerDispatcherStub(api.channel)
    res = dispatcherServer_pb2.GetNextServerRes
    wait_for(lambda: dispatcher.GetNextServer(dispatcherServer_pb2.GetNextServerReq(
        ip="127.0.0.1", certificate=cert), timeout=scaled(10)).status == res.ACCEPTED, what="accepted")
    assert exe_info(api, "hplain", "srv").health == types_pb2.HEALTH_STATE_UNSPECIFIED
    api.free("hplain")


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": types_pb2.HEALTH_CHECK_KIND_HTTP}, "executable.health.port"),
    ({"kind": types_pb2.HEALTH_CHECK_KIND_TCP, "port": 80, "interval_s": 0.01}, "executable.health.interval_s"),
    ({"kind": types_pb2.HEALTH_CHECK_KIND_EXEC}, "executable.health.command"),
    ({"kind": 42}, "executable.health.kind"),
    ({"kind": types_pb2.HEALTH_CHECK_KIND_HTTP, "port": 80, "path": "no-slash"}, "executable.health.path"),
    ({"kind": types_pb2.HEALTH_CHECK_KIND_TCP, "port": 80, "retries": 0}, "executable.health.retries"),
])
def test_bad_checks_are_invalid_argument_naming_the_field(api: Api, fields: dict[str, Any], field: str) -> None:
    api.allocate("hbad") if not any(c.name == "hbad" for c in api.list("hbad")) else None
    with pytest.raises(grpc.RpcError) as raised:
        api.start("hbad", "x", "sleep", "1", health=types_pb2.HealthCheck(**fields))
    assert code_of(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(raised.value.details())  # type: ignore[attr-defined]


def test_health_is_a_prometheus_gauge_and_failed_probes_a_counter(cellard_factory: Any, tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}})
    address = daemon.events("metrics.listening")[0]["address"]
    channel = daemon.channel()
    api = Api(daemon, channel)
    flag = tmp_path / "ok"
    flag.touch()
    try:
        api.allocate("hm")
        check = types_pb2.HealthCheck(kind=types_pb2.HEALTH_CHECK_KIND_EXEC, command=["test", "-e", str(flag)],
                                      interval_s=1, retries=1)
        api.start("hm", "svc", "sleep", "1000", health=check)

        def sample(family: str, name: str) -> float | None:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
            values = [s.value for s in families[family].samples
                      if s.name == name and s.labels == {"cell": "hm", "executable": "svc"}]
            return values[0] if values else None

        wait_for(lambda: sample("cellar_executable_healthy", "cellar_executable_healthy") == 1, what="healthy 1")
        flag.unlink()
        wait_for(lambda: sample("cellar_executable_healthy", "cellar_executable_healthy") == 0, what="healthy 0")
        wait_for(lambda: (sample("cellar_executable_health_failed_probes",
                                 "cellar_executable_health_failed_probes_total") or 0) >= 2, what="failed probes")
        api.free("hm")
    finally:
        channel.close()


APPLIED = """
[cells.happ.executables.api]
argv = ["sleep", "3600"]
restart = "on-failure"
health = { kind = "exec", command = ["true"], interval_s = 1 }

[cells.happ.executables.other]
argv = ["sleep", "3601"]
"""


def test_an_applied_check_runs_and_a_changed_check_restarts_only_that_executable(api: Api) -> None:
    def apply(text: str) -> list[tuple[str, str]]:
        reply = api.cells.Apply(cells_pb2.ApplyRequest(manifest=text, file_name="node.toml"), timeout=scaled(60))
        return [(c.action, c.executable_name) for c in reply.changes]

    apply(APPLIED)
    info = wait_for(lambda: (i := exe_info(api, "happ", "api")).health == HEALTHY and i, what="healthy")
    assert list(info.health_check.command) == ["true"] and info.health_check.interval_s == 1
    other = exe_info(api, "happ", "other")
    assert apply(APPLIED) == []  # the same file twice changes nothing
    assert exe_info(api, "happ", "api").host_pid == info.host_pid
    assert apply(APPLIED.replace("interval_s = 1", "interval_s = 2")) == [("restart", "api")]
    after = exe_info(api, "happ", "api")
    assert after.host_pid != info.host_pid and after.health_check.interval_s == 2
    assert exe_info(api, "happ", "other").host_pid == other.host_pid
    api.free("happ")
