"""``cellar start --health-*`` (Docker's flags) and what ``ps``, ``-o json`` and ``events`` show of it (issue 14)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import click
import pytest

from agent.cli.healthcheck import health_check
from proto.cellar.v1 import types_pb2
from tests.support import REPO
from tests.support.api import Api
from tests.support.cli import CELLAR, cellar, cli_env, ps_json, table_rows
from tests.support.timeouts import scaled, wait_for


def test_the_flags_build_the_check() -> None:
    http = health_check(health_http="8080/healthz", health_interval=2, health_retries=5)
    assert http is not None and http.kind == types_pb2.HEALTH_CHECK_KIND_HTTP
    assert (http.port, http.path, http.interval_s, http.retries) == (8080, "/healthz", 2.0, 5)
    assert not http.HasField("timeout_s")  # the daemon's default
    grpc = health_check(health_grpc="50051/pkg.Svc")
    assert grpc is not None and (grpc.port, grpc.service) == (50051, "pkg.Svc")
    cmd = health_check(health_cmd="test -e /ok", health_start_period=5)
    assert cmd is not None and list(cmd.command) == ["/bin/sh", "-c", "test -e /ok"] and cmd.start_period_s == 5
    tcp = health_check(health_tcp="22")
    assert tcp is not None and tcp.port == 22 and tcp.kind == types_pb2.HEALTH_CHECK_KIND_TCP
    assert health_check() is None
    for bad in ({"health_tcp": "22", "health_http": "80"}, {"health_interval": 3.0}, {"health_http": "web"},
                {"health_tcp": "22/x"}):
        with pytest.raises(click.UsageError):
            health_check(**bad)


@pytest.mark.root
def test_start_with_a_health_check_ps_shows_it_like_docker(api: Api, tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    flag.touch()
    cellar(api, "cell", "allocate", "hc")
    cellar(api, "start", "hc", "svc", "--health-cmd", f"test -e {flag}", "--health-interval", "1",
           "--health-retries", "1", "--", "sleep", "1000")
    row = wait_for(lambda: next((r for r in ps_json(api, "hc") if r["health"] == "healthy"), None), "healthy")
    assert row["state"] == "running" and row["health_result"] == "exit 0" and row["health_failures"] == 0
    assert row["health_check"]["kind"] == "exec" and row["health_check"]["interval_s"] == 1
    assert row["health_check"]["command"] == ["/bin/sh", "-c", f"test -e {flag}"]
    assert "(healthy)" in table_rows(cellar(api, "ps", "hc").stdout)[0]["status"]
    flag.unlink()
    wait_for(lambda: table_rows(cellar(api, "ps", "hc").stdout)[0]["status"].endswith(" (unhealthy)"), "unhealthy in ps")
    bad = cellar(api, "start", "hc", "other", "--health-http", "80", "--health-interval", "0.01", "--",
                 "sleep", "1", ok=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "executable.health.interval_s" in bad.stderr
    usage = cellar(api, "start", "hc", "other", "--health-retries", "2", "--", "sleep", "1", ok=False)
    assert usage.returncode == 2 and "need --health-cmd" in usage.stderr
    cellar(api, "cell", "free", "hc")


@pytest.mark.root
def test_events_print_healthy_and_unhealthy(api: Api, tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    flag.touch()
    cellar(api, "cell", "allocate", "he")
    follow = subprocess.Popen([*CELLAR, "--addr", api.daemon.socket, "events", "he"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=cli_env(), cwd=REPO)
    try:
        time.sleep(1.0)  # the watch is on
        cellar(api, "start", "he", "svc", "--health-cmd", f"test -e {flag}", "--health-interval", "1",
               "--health-retries", "1", "--", "sleep", "1000")
        lines: list[str] = []
        deadline = time.monotonic() + scaled(20)
        assert follow.stdout is not None
        while time.monotonic() < deadline and not any(" unhealthy " in line for line in lines):
            lines.append(follow.stdout.readline())
            if any(" healthy " in line for line in lines) and flag.exists():
                flag.unlink()
    finally:
        follow.kill()
        follow.wait()
    events = [line.split()[1] for line in lines if line.strip()]
    assert events == ["started", "healthy", "unhealthy"], lines
    assert "he/svc" in lines[-1] and "probe=exit 1" in lines[-1], lines[-1]
    cellar(api, "cell", "free", "he")
