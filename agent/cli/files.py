"""``cellar files``: the node-local file store (file.v1.File) seen from the operator's side.

Paths are parigot paths (``/parigot/app/...``). Without ``--scope`` commands act on the host's tree;
``--scope cell:<name>`` or ``--scope user:<uid>`` (admin only) on a cell's or a local user's tree. Errors print parigot's code name too.
"""

from __future__ import annotations

import datetime as dt
import sys

import click
import grpc

from agent.cli.connection import Target
from agent.cli.output import emit_rows
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc

SCOPE_HELP = "whose tree: host (default), cell:<name> or user:<uid> (admin only)"


def _metadata(scope: str | None) -> list[tuple[str, str]]:
    return [("cellar-scope", scope)] if scope else []


def _when(ts: object) -> str:
    seconds = getattr(ts, "seconds", 0)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else "-"


def _row(info: file_pb2.FileInfo) -> dict[str, object]:
    return {"path": info.path, "type": "dir" if info.is_dir else "file", "size": info.size, "modified": _when(info.mod_time)}


@click.group()
def files() -> None:
    """List, print and remove files of the node-local file store."""


@files.command("ls")
@click.argument("path", default="/parigot/app/")
@click.option("--scope", help=SCOPE_HELP)
@click.pass_obj
def ls(target: Target, path: str, scope: str | None) -> None:
    """Entries under PATH (a directory's size is the sum of the files below it)."""
    with target.channel() as ch:
        reply = file_pb2_grpc.FileStub(ch).Stat(
            file_pb2.StatRequest(path=path), timeout=target.timeout, metadata=_metadata(scope)
        )
    rows = [_row(e) for e in reply.entries] if reply.file_info.is_dir else [_row(reply.file_info)]
    emit_rows(target.output, rows, ["path", "type", "size", "modified"])


@files.command("cat")
@click.argument("path")
@click.option("--scope", help=SCOPE_HELP)
@click.pass_obj
def cat(target: Target, path: str, scope: str | None) -> None:
    """Print the bytes of the file at PATH."""
    md = _metadata(scope)
    out = sys.stdout.buffer
    with target.channel() as ch:
        stub = file_pb2_grpc.FileStub(ch)
        opened = stub.Open(file_pb2.OpenRequest(path=path), timeout=target.timeout, metadata=md)
        try:
            while True:
                try:
                    reply = stub.Read(file_pb2.ReadRequest(id=opened.id), timeout=target.timeout, metadata=md)
                except grpc.RpcError as exc:
                    if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                        break  # EOFError
                    raise
                out.write(reply.data)
        finally:
            stub.Close(file_pb2.CloseRequest(id=opened.id), timeout=target.timeout, metadata=md)
    out.flush()


@files.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("--scope", help=SCOPE_HELP)
@click.pass_obj
def rm(target: Target, paths: tuple[str, ...], scope: str | None) -> None:
    """Delete the files at PATHS (closed files only)."""
    with target.channel() as ch:
        stub = file_pb2_grpc.FileStub(ch)
        for path in paths:
            stub.Delete(file_pb2.DeleteRequest(path=path), timeout=target.timeout, metadata=_metadata(scope))
