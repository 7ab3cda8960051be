"""``cellar logs CELL[/EXE]`` and ``cellar daemon-logs``: read and follow logs like kubectl/docker.

Lines go to stdout byte for byte (a partial line gets no newline of its own); markers for lost
lines and the exit record go to stderr, so ``cellar logs x > file`` captures exactly the output.
The exit marker says when the run started and ended (``exited: code 0, ran <start> to <end> (1.3s)``);
``-t`` prefixes every line with its RFC 3339 time, the markers too, as ``kubectl logs --timestamps``.
``-o json`` prints one JSON object per record instead (an exit record with ``started``/``ended``).
Ctrl-C ends a follow cleanly (exit 0).
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc

from agent.cli.complete import cell_names, cell_or_executable, executable_names
from agent.cli.connection import Target
from agent.cli.human import rfc3339_ns
from agent.cli.logship import ship_all
from agent.cli.output import emit_object, stream_record, structured
from agent.cli.rows import exit_text
from agent.cli.units import Size, Time
from agent.logrecords import add_record
from observe.records import iter_packed
from proto.cellar.v1 import logs_pb2, logs_pb2_grpc, types_pb2


def _requests(target_name: str, base: logs_pb2.ReadLogsRequest) -> Iterator[logs_pb2.ReadLogsRequest]:
    """CELL/EXE first (the common case), then the whole cell CELL/EXE if that has no logs."""
    cell, sep, exe = target_name.rpartition("/")
    if sep and exe:
        req = logs_pb2.ReadLogsRequest()
        req.CopyFrom(base)
        req.cell_name, req.executable_name = cell, exe
        yield req
    req = logs_pb2.ReadLogsRequest()
    req.CopyFrom(base)
    req.cell_name = target_name
    yield req


def _unpacked(batch: logs_pb2.LogBatch, packed: bytes, cell: str) -> list[logs_pb2.LogRecord]:
    """A packed batch as the LogRecord messages the servicer would have sent (its own mapping,
    :func:`agent.logrecords.add_record`), so printing has one path (the CLI is not the hot end).
    ``packed`` is ``batch.packed`` read once by the caller: every read of that field copies it."""
    out = logs_pb2.LogBatch()
    for rec in iter_packed(packed):
        add_record(out, cell, batch.executable_name, batch.run, rec)
    return list(out.records)


def _run_length(ns: int) -> str:
    """``1.333s``, ``1m01s``, ``3h01m02s``."""
    if ns < 60 * 10**9:
        return f"{ns / 10**9:.3f}s"
    minutes, seconds = divmod(ns // 10**9, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def exit_line(exit: types_pb2.ExitStatus) -> str:
    """``code 0, ran <start> to <end> (1.333s)``: how the run ended, and when it ran (when known)."""
    text = exit_text(exit) or "unknown"
    if exit.started_at_ns and exit.ended_at_ns:
        text += (f", ran {rfc3339_ns(exit.started_at_ns)} to {rfc3339_ns(exit.ended_at_ns)}"
                 f" ({_run_length(max(exit.ended_at_ns - exit.started_at_ns, 0))})")
    elif exit.ended_at_ns:
        text += f", ended {rfc3339_ns(exit.ended_at_ns)}"
    return text


def _record_json(rec: logs_pb2.LogRecord) -> dict[str, Any]:
    channel = logs_pb2.LogChannel.Name(rec.channel).removeprefix("LOG_CHANNEL_").lower()
    out: dict[str, Any] = {"cell": rec.cell_name, "executable": rec.executable_name, "run": rec.run,
                           "seq": rec.seq, "time": rfc3339_ns(rec.timestamp_ns), "timestamp_ns": rec.timestamp_ns,
                           "channel": channel}
    if rec.channel == logs_pb2.LOG_CHANNEL_LOST:
        out["lost"] = rec.lost_count
    elif rec.channel == logs_pb2.LOG_CHANNEL_EXIT:
        out["exit"] = exit_text(rec.exit)
        out["started"] = rfc3339_ns(rec.exit.started_at_ns) if rec.exit.started_at_ns else None
        out["ended"] = rfc3339_ns(rec.exit.ended_at_ns) if rec.exit.ended_at_ns else None
        out["started_at_ns"], out["ended_at_ns"] = rec.exit.started_at_ns, rec.exit.ended_at_ns
    else:
        try:
            out["line"] = rec.data.decode("utf-8")
        except UnicodeDecodeError:
            out["line_base64"] = base64.b64encode(rec.data).decode()
        out["partial"] = rec.partial
    return out


@click.command()
@click.argument("name", metavar="CELL[/EXE]", required=False, shell_complete=cell_or_executable)
@click.option("-A", "--all", "every_cell", is_flag=True,
              help="every cell's logs (with -f: new cells too), for a log shipper: -o json is NDJSON")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path),
              help="with --all: resume from the position kept in FILE and keep it there (journalctl's flag)")
@click.option("-f", "--follow", is_flag=True, help="keep streaming until the executable(s) exit")
@click.option("--tail", type=click.IntRange(0, 2**32), help="only the last N lines (the exit marker is no line)")
@click.option("--since", type=Time(), help="only lines from TIME on: 10m, 1h30m or 2d ago, 2026-12-07, "
              "'2026-12-07 10:00', an RFC 3339 time (no zone = local time), today, yesterday, @EPOCH")
@click.option("--until", type=Time(), help="only lines before TIME (as --since)")
@click.option("--timestamps", "-t", is_flag=True, help="prefix each line (markers too) with its RFC 3339 timestamp")
@click.option("--stdout", "only_stdout", is_flag=True, help="only stdout")
@click.option("--stderr", "only_stderr", is_flag=True, help="only stderr")
@click.option("--previous", "-p", is_flag=True, help="the previous run instead of the latest")
@click.option("--cursor", default="", help="resume after this cursor (printed by -o json at the end)")
@click.option("--limit-bytes", type=Size(), default=0, help="stop before this many bytes of lines (SIZE: 64K, 1M)")
@click.pass_obj
def logs(target: Target, name: str | None, every_cell: bool, cursor_file: Path | None, follow: bool,
         tail: int | None, since: int | None, until: int | None, timestamps: bool, only_stdout: bool,
         only_stderr: bool, previous: bool, cursor: str, limit_bytes: int) -> None:
    """Print the logs of an executable (CELL/EXE) or of every executable of CELL, interleaved; --all: of
    every cell."""
    if every_cell == bool(name):
        raise click.UsageError("give CELL[/EXE] or --all")
    if cursor_file is not None and not every_cell:
        raise click.UsageError("--cursor-file needs --all (one cell: --cursor)")
    if every_cell and cursor:
        raise click.UsageError("--all resumes with --cursor-file, not --cursor")
    base = logs_pb2.ReadLogsRequest(follow=follow, cursor=cursor, limit_bytes=limit_bytes, run=-1 if previous else 0,
                                    packed=True)
    channels = []
    if only_stdout or not only_stderr:
        channels.append(logs_pb2.LOG_CHANNEL_STDOUT)
    if only_stderr or not only_stdout:
        channels.append(logs_pb2.LOG_CHANNEL_STDERR)
    base.channels.extend([*channels, logs_pb2.LOG_CHANNEL_EXIT])
    if tail is not None:
        base.tail = tail
    if since is not None:
        base.since_ns = since
    if until is not None:
        base.until_ns = until
    out = sys.stdout.buffer
    if every_cell:
        ship_all(target, base, cursor_file,
                 lambda rec: _print(rec, target.output, timestamps, many=True, out=out, cell=True), out.flush)
        return
    assert name is not None
    last_cursor = ""
    with target.channel() as channel:
        stub = logs_pb2_grpc.LogsStub(channel)
        for request in _requests(name, base):
            try:
                for batch in stub.Read(request, timeout=None if follow else target.timeout):
                    last_cursor = batch.cursor or last_cursor
                    packed = batch.packed
                    records = _unpacked(batch, packed, request.cell_name) if packed else batch.records
                    for rec in records:
                        _print(rec, target.output, timestamps, many=not request.executable_name, out=out)
                    out.flush()
                break
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND and request.executable_name:
                    continue
                raise
            except KeyboardInterrupt:
                break
    if structured(target.output) and last_cursor:
        click.echo(stream_record(target.output, {"cursor": last_cursor}))


@click.command("purge-logs")
@click.argument("cell_name", metavar="CELL", shell_complete=cell_names)
@click.argument("name", metavar="[EXE]", default="", shell_complete=executable_names)
@click.pass_obj
def purge_logs(target: Target, cell_name: str, name: str) -> None:
    """Delete the stored logs of EXE in CELL (every run), or of CELL and its child cells.

    Refused while one of them runs (stop it first).
    """
    with target.channel() as channel:
        reply = logs_pb2_grpc.LogsStub(channel).Purge(
            logs_pb2.PurgeLogsRequest(cell_name=cell_name, executable_name=name), timeout=target.timeout)
    emit_object(target.output, {"purged": f"{cell_name}/{name}" if name else cell_name,
                                "runs": reply.runs, "bytes": reply.bytes})


def _print(rec: logs_pb2.LogRecord, fmt: str, timestamps: bool, many: bool, out: Any, cell: bool = False) -> None:
    if structured(fmt):
        out.write(stream_record(fmt, _record_json(rec)).encode() + b"\n")
        return
    who = (f"[{rec.cell_name}/{rec.executable_name}] " if cell else f"[{rec.executable_name}] ") if many else ""
    stamp = (rfc3339_ns(rec.timestamp_ns) + " ") if timestamps else ""
    if rec.channel == logs_pb2.LOG_CHANNEL_LOST:
        click.echo(f"{stamp}cellar: {who}{rec.lost_count} lines lost (rotated away or dropped)", err=True)
    elif rec.channel == logs_pb2.LOG_CHANNEL_EXIT:
        click.echo(f"{stamp}cellar: {who}exited: {exit_line(rec.exit)}", err=True)
    else:
        out.write((stamp + who).encode() + rec.data + (b"" if rec.partial else b"\n"))
