"""``cellar health [SERVICE]``: the grpc.health.v1 status of every service (or one).

Exit status 0 when everything shown is SERVING, 1 otherwise, so scripts can wait on it.
"""

from __future__ import annotations

import click
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent.cli.connection import Target
from agent.cli.output import emit_rows


def list_services(target: Target) -> list[str]:
    """Service names via server reflection."""
    with target.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        for response in stub.ServerReflectionInfo(iter([request]), timeout=target.timeout):
            names.extend(s.name for s in response.list_services_response.service)
        return sorted(names)


@click.command()
@click.argument("service", required=False)
@click.pass_obj
def health(target: Target, service: str | None) -> None:
    """Show serving status per service ("" = the whole server)."""
    services = [service] if service is not None else ["", *list_services(target)]
    rows = []
    with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in services:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=target.timeout)
            rows.append({"service": name, "status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)})
    if target.output == "table":
        rows = [{**r, "service": r["service"] or "(server)"} for r in rows]
    emit_rows(target.output, rows, ["service", "status"])
    if any(r["status"] != "SERVING" for r in rows):
        raise click.exceptions.Exit(1)
