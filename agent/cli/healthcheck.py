"""Executables' health checks in the CLI (``cellar health`` is the server's, :mod:`agent.cli.health`): Docker's ``--health-*`` flags for ``cellar start``, and the health in ``ps``.

``--health-cmd CMD`` (run through ``sh -c`` in the cell, like Docker's), ``--health-http PORT[/PATH]``,
``--health-tcp PORT`` or ``--health-grpc PORT[/SERVICE]``; with ``--health-interval``,
``--health-timeout``, ``--health-start-period`` (seconds) and ``--health-retries``. Unset values are
the daemon's defaults (Docker's: 30 s, 30 s, 0 s, 3). ``ps`` shows "running (healthy)" as ``docker ps``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from google.protobuf.json_format import MessageToDict

from proto.cellar.v1 import types_pb2

_KINDS = {
    types_pb2.HEALTH_CHECK_KIND_EXEC: "exec",
    types_pb2.HEALTH_CHECK_KIND_TCP: "tcp",
    types_pb2.HEALTH_CHECK_KIND_HTTP: "http",
    types_pb2.HEALTH_CHECK_KIND_GRPC: "grpc",
}
_STATES = {
    types_pb2.HEALTH_STATE_STARTING: "starting",
    types_pb2.HEALTH_STATE_HEALTHY: "healthy",
    types_pb2.HEALTH_STATE_UNHEALTHY: "unhealthy",
}
_TARGETS = ("health_cmd", "health_http", "health_tcp", "health_grpc")
_TUNING = ("health_interval", "health_timeout", "health_retries", "health_start_period")


def _port_and(text: str, what: str, flag: str) -> tuple[int, str]:
    """``PORT`` or ``PORT/REST`` -> (port, "/REST" or "")."""
    port, sep, rest = text.partition("/")
    if not port.isdigit():
        raise click.UsageError(f"{flag} {text!r}: expected PORT[/{what}]")
    return int(port), (sep + rest) if sep else ""


def health_check(health_cmd: str | None = None, health_http: str | None = None, health_tcp: str | None = None,
                 health_grpc: str | None = None, health_interval: float | None = None,
                 health_timeout: float | None = None, health_retries: int | None = None,
                 health_start_period: float | None = None) -> types_pb2.HealthCheck | None:
    """The check the flags ask for (None: none); the daemon validates the values."""
    given = [name for name, v in zip(_TARGETS, (health_cmd, health_http, health_tcp, health_grpc), strict=True)
             if v is not None]
    tuning = (health_interval, health_timeout, health_retries, health_start_period)
    if len(given) > 1:
        raise click.UsageError(f"give one of {', '.join('--' + g.replace('_', '-') for g in given)}")
    if not given:
        if any(v is not None for v in tuning):
            raise click.UsageError("--health-interval, --health-timeout, --health-retries and --health-start-period "
                                   "need --health-cmd, --health-http, --health-tcp or --health-grpc")
        return None
    check = types_pb2.HealthCheck()
    if health_cmd is not None:
        check.kind = types_pb2.HEALTH_CHECK_KIND_EXEC
        check.command.extend(["/bin/sh", "-c", health_cmd])
    elif health_http is not None:
        check.kind = types_pb2.HEALTH_CHECK_KIND_HTTP
        check.port, check.path = _port_and(health_http, "PATH", "--health-http")
    elif health_tcp is not None:
        check.kind = types_pb2.HEALTH_CHECK_KIND_TCP
        port, rest = _port_and(health_tcp, "", "--health-tcp")
        if rest:
            raise click.UsageError(f"--health-tcp {health_tcp!r}: expected PORT")
        check.port = port
    elif health_grpc is not None:
        check.kind = types_pb2.HEALTH_CHECK_KIND_GRPC
        check.port, service = _port_and(health_grpc, "SERVICE", "--health-grpc")
        check.service = service[1:]
    if health_interval is not None:
        check.interval_s = health_interval
    if health_timeout is not None:
        check.timeout_s = health_timeout
    if health_retries is not None:
        check.retries = health_retries
    if health_start_period is not None:
        check.start_period_s = health_start_period
    return check


def with_health(f: Callable[..., Any]) -> Callable[..., Any]:
    """Docker's ``--health-*`` options; the command gets them as one ``health`` argument (or None)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fields = {k: kwargs.pop(k) for k in (*_TARGETS, *_TUNING)}
        return f(*args, health=health_check(**fields), **kwargs)

    options = [
        click.option("--health-start-period", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="failures within this time of the start do not count (default 0)"),
        click.option("--health-retries", type=click.IntRange(min=0), metavar="N",
                     help="consecutive failures that make it unhealthy (default 3)"),
        click.option("--health-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="a probe that takes longer fails (default 30)"),
        click.option("--health-interval", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="time between probes (default 30, at least 1)"),
        click.option("--health-grpc", metavar="PORT[/SERVICE]", help="grpc.health.v1 Check on 127.0.0.1:PORT"),
        click.option("--health-tcp", metavar="PORT", help="a TCP connect to 127.0.0.1:PORT"),
        click.option("--health-http", metavar="PORT[/PATH]", help="HTTP GET on 127.0.0.1:PORT; 2xx/3xx is healthy"),
        click.option("--health-cmd", metavar="CMD",
                     help="health check: CMD (sh -c, in the cell like the executable) exits 0 when healthy; "
                          "an unhealthy executable with --restart is restarted"),
    ]
    out: Callable[..., Any] = wrapper
    for option in options:
        out = option(out)
    return out


def health_row(exe: types_pb2.ExecutableInfo) -> dict[str, Any]:
    """The health fields of an executable, raw (``-o json``)."""
    check: dict[str, Any] | None = None
    if exe.HasField("health_check"):
        check = MessageToDict(exe.health_check, preserving_proto_field_name=True,
                              always_print_fields_with_no_presence=True)
        check["kind"] = _KINDS.get(exe.health_check.kind, "")
    return {"health": _STATES.get(exe.health), "health_failures": exe.health_failures,
            "health_result": exe.health_result or None, "health_check": check}


def with_health_text(state: str, row: dict[str, Any]) -> str:
    """``running (healthy)``, as ``docker ps`` shows it (only while it runs)."""
    health = row.get("health")
    return f"{state} ({health})" if health and row.get("state") == "running" else state
