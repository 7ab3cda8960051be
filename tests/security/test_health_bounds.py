"""Health checks from a client are bounded and their probes contained (issue 14), as an attacker would try.

- bad values (negative, NaN, infinite, huge, a zero interval, a port out of range, a path with a
  space or a newline, a command on a tcp check): INVALID_ARGUMENT naming ``executable.health.<field>``,
  nothing started, never INTERNAL;
- an exec probe runs contained like the executable it checks: the cell's capabilities only (the
  executable's cap_drop too), no_new_privs, the seccomp filter, and the same view (cellar's run dir
  hidden but for the node-local socket);
- a probe flood (many executables, the minimum interval, probes that hang) is bounded: at most
  MAX_CELL_PROBES of one cell run at once, another cell's checks go on, and the supervisor keeps answering.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cells.capabilities import DEFAULT_CAPS, mask
from cells.errors import InvalidArgument
from cells.health import MAX_CELL_PROBES
from cells.spec import ExecutableSpec, HealthCheck
from proto.aurae import runtime_pb2
from proto.cellar.v1 import types_pb2
from tests.support.api import Api, running_cellard
from tests.support.timeouts import scaled

EXEC, TCP, HTTP = types_pb2.HEALTH_CHECK_KIND_EXEC, types_pb2.HEALTH_CHECK_KIND_TCP, types_pb2.HEALTH_CHECK_KIND_HTTP


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"kind": "ping"}, "executable.health.kind", "exec, tcp, http, grpc"),
    ({"kind": "tcp", "port": 0}, "executable.health.port", "[1, 65535]"),
    ({"kind": "tcp", "port": 70000}, "executable.health.port", "[1, 65535]"),
    ({"kind": "tcp", "port": 80, "interval_s": 0.0}, "executable.health.interval_s", "[1, 86400]"),
    ({"kind": "tcp", "port": 80, "interval_s": math.nan}, "executable.health.interval_s", "[1, 86400]"),
    ({"kind": "tcp", "port": 80, "timeout_s": math.inf}, "executable.health.timeout_s", "[0.1, 3600]"),
    ({"kind": "tcp", "port": 80, "timeout_s": -1.0}, "executable.health.timeout_s", "[0.1, 3600]"),
    ({"kind": "tcp", "port": 80, "start_period_s": 1e12}, "executable.health.start_period_s", "[0, 86400]"),
    ({"kind": "tcp", "port": 80, "retries": 0}, "executable.health.retries", "[1, 100]"),
    ({"kind": "tcp", "port": 80, "retries": 2**32 - 1}, "executable.health.retries", "[1, 100]"),
    ({"kind": "tcp", "port": 80, "retries": True}, "executable.health.retries", "integer"),
    ({"kind": "tcp", "port": 80, "interval_s": "5"}, "executable.health.interval_s", "number"),
    ({"kind": "http", "port": 80, "path": "/a b"}, "executable.health.path", "without spaces"),
    ({"kind": "http", "port": 80, "path": "/\r\nHost: evil"}, "executable.health.path", "control"),
    ({"kind": "http", "port": 80, "path": "/" + "a" * 2000}, "executable.health.path", "1024"),
    ({"kind": "grpc", "port": 80, "service": "x\n"}, "executable.health.service", "control"),
    ({"kind": "exec"}, "executable.health.command", "needs a command"),
    ({"kind": "exec", "command": ("",)}, "executable.health.command", "needs a command"),
    ({"kind": "exec", "command": ("a\0b",)}, "executable.health.command", "NUL"),
    ({"kind": "tcp", "port": 80, "command": ("true",)}, "executable.health.command", "only an exec"),
    ({"kind": "exec", "command": ("true",), "port": 80}, "executable.health.port", "only a tcp"),
])
def test_bad_checks_name_the_field_and_the_rule(fields: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        ExecutableSpec("c", "e", argv=("true",), health=HealthCheck(**fields)).validate()
    assert raised.value.field == field and rule in raised.value.rule, (raised.value.field, raised.value.rule)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    with running_cellard() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Any) -> Iterator[Api]:
    channel = daemon.channel()
    client = Api(daemon, channel)
    try:
        yield client
    finally:
        client.free_all()
        channel.close()


def start_status(api: Api, cell: str, name: str, check: types_pb2.HealthCheck) -> grpc.StatusCode:
    exe = runtime_pb2.Executable(cell_name=cell, name=name, argv=["sleep", "100"], health=check)
    try:
        api.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=scaled(30))
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.root
def test_bad_checks_over_the_wire_start_nothing(api: Api) -> None:
    api.allocate("hb")
    bad = [types_pb2.HealthCheck(kind=TCP, port=80, interval_s=0.001),
           types_pb2.HealthCheck(kind=TCP, port=80, interval_s=-1),
           types_pb2.HealthCheck(kind=TCP, port=80, timeout_s=float("nan")),
           types_pb2.HealthCheck(kind=TCP, port=2**32 - 1),
           types_pb2.HealthCheck(kind=HTTP, port=80, retries=2**32 - 1),
           types_pb2.HealthCheck(kind=99, port=80),  # type: ignore[arg-type]
           types_pb2.HealthCheck(kind=EXEC, command=["x" * 200_000])]
    for i, check in enumerate(bad):
        assert start_status(api, "hb", f"b{i}", check) == grpc.StatusCode.INVALID_ARGUMENT, check
    assert not api.inspect("hb").executables
    api.free("hb")


@pytest.mark.root
def test_an_exec_probe_runs_contained_like_its_executable(api: Api, daemon: Any, tmp_path: Path) -> None:
    """The probe and the executable run the same script: the same view (cellar's run dir hidden, but
    the node-local socket), the cell's capabilities minus the executable's cap_drop, no_new_privs and
    the seccomp filter."""
    os.chmod(tmp_path, 0o777)
    run_dir = daemon.config["paths"]["run_dir"]
    assert "supervisor.sock" in os.listdir(run_dir)  # what the host sees there

    def script(out: Path) -> str:
        return (f"grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > {out}.tmp; "
                f"echo run_dir: $(ls -A {run_dir}) >> {out}.tmp; mv {out}.tmp {out}")

    probe_out, exe_out = tmp_path / "probe.txt", tmp_path / "exe.txt"
    api.allocate("hx")
    check = types_pb2.HealthCheck(kind=EXEC, command=["/bin/sh", "-c", script(probe_out)], interval_s=1)
    api.start("hx", "svc", "/bin/sh", "-c", script(exe_out) + "; exec sleep 1000", health=check, cap_drop=["NET_RAW"])
    deadline = time.monotonic() + scaled(20)
    while not (probe_out.exists() and exe_out.exists()):
        assert time.monotonic() < deadline, "the probe never ran"
        time.sleep(0.1)
    probe = {k: v.strip() for k, _, v in (line.partition(":") for line in probe_out.read_text().splitlines())}
    assert probe_out.read_text() == exe_out.read_text(), (probe_out.read_text(), exe_out.read_text())
    want = mask(DEFAULT_CAPS - {"NET_RAW"})
    assert int(probe["CapEff"], 16) == want == int(probe["CapBnd"], 16), probe
    assert probe["NoNewPrivs"] == "1" and probe["Seccomp"] == "2", probe
    assert "supervisor.sock" not in probe["run_dir"], probe
    api.free("hx")


@pytest.mark.root
def test_a_probe_flood_is_bounded_and_the_supervisor_keeps_answering(api: Api, tmp_path: Path) -> None:
    """40 executables of one cell probed every second by probes that hang for 2 s: at most
    MAX_CELL_PROBES of them exist at once (each marks itself in a directory while it runs), another
    cell's check still turns healthy, and List stays quick."""
    running = tmp_path / "running"
    running.mkdir(mode=0o777)
    os.chmod(tmp_path, 0o777)
    api.allocate("hf")
    api.allocate("hok")
    probe = f"touch {running}/$$; sleep 2; rm -f {running}/$$"
    check = types_pb2.HealthCheck(kind=EXEC, command=["/bin/sh", "-c", probe], interval_s=1, timeout_s=5)
    for i in range(40):
        api.start("hf", f"s{i}", "sleep", "1000", health=check)
    api.start("hok", "fine", "sleep", "1000",
              health=types_pb2.HealthCheck(kind=EXEC, command=["true"], interval_s=1, retries=1))
    most, slowest = 0, 0.0
    deadline = time.monotonic() + scaled(8)
    while time.monotonic() < deadline:
        most = max(most, len(os.listdir(running)))
        began = time.monotonic()
        api.list("hf")
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.05)
    assert 0 < most <= MAX_CELL_PROBES, most
    assert slowest < scaled(2.0), slowest
    (fine,) = api.inspect("hok").executables
    assert fine.health == types_pb2.HEALTH_STATE_HEALTHY, fine
    api.free("hf")
    api.free("hok")
