"""``cellar version``: the client's version and, when cellard answers, the server's.

The server's version travels as ``cellar-version`` initial metadata on Health/Check replies.
"""

from __future__ import annotations

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.cli.connection import Target, format_rpc_error
from agent.cli.output import emit_object
from agent.metadata import VERSION_METADATA_KEY
from agent.version import VERSION


def server_version(target: Target) -> str | None:
    with target.channel() as channel:
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(service=""), timeout=target.timeout
        )
        for key, value in call.initial_metadata() or ():
            if key == VERSION_METADATA_KEY:
                return str(value)
    return None


@click.command()
@click.pass_obj
def version(target: Target) -> None:
    """Show client and server versions (the server part is skipped when unreachable)."""
    info: dict[str, str | None] = {"client": VERSION, "server": None}
    try:
        info["server"] = server_version(target)
    except grpc.RpcError as exc:
        info["server_error"] = format_rpc_error(exc, target).removeprefix("cellar: ")
    emit_object(target.output, info)
