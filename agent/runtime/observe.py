"""observe.Observe (the seed's per-line streams) and cellar.v1.Logs (batched, resumable reads).

Seed semantics, documented here because the seed does not say:
- ``LogItem.channel`` is ``"stdout"`` or ``"stderr"`` for an executable's lines and ``"daemon"`` for
  cellard's own events; ``LogItem.line`` is the line without its newline, decoded as UTF-8 with
  invalid bytes replaced (proto ``string`` must be UTF-8; the batched RPC carries exact bytes).
- ``LogItem.timestamp`` is **seconds** since the Unix epoch, as Aurae sent it; the batched RPC
  carries nanoseconds.
- ``GetSubProcessStream(process_id)`` takes the executable's *host* pid (as returned by Start's
  ``host_pid``), streams its history, then follows until it exits. Unknown pid -> NOT_FOUND.
- A gap never passes silently (the seed has no field for it): lines rotated away before the stream
  reached them, or dropped while the log disk was full, arrive as one ``LogItem`` on the requested
  channel whose ``line`` is ``[cellar: N lines lost (REASON)]``, REASON as stored (``rotated``,
  ``disk-full``, ...). N counts lines of both streams: the store numbers them together and cannot
  tell which stream they were on, so a stdout and a stderr reader are both told. A workload printing
  the same text looks the same here; the batched RPC carries the gap as a LOST record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from agent.core.app import App
from agent.core.status import status_for
from agent.core.streamcaps import limiter_for
from agent.logrecords import CHANNELS, add_record
from agent.metadata import HISTORY_METADATA_KEY
from cells.spec import validate_cell_name, validate_executable_name
from observe.query import LogQuery, run_query, run_query_packed
from observe.records import LogRecord, Stream
from proto.aurae import observe_pb2, observe_pb2_grpc
from proto.cellar.v1 import logs_pb2, logs_pb2_grpc

_SEED_CHANNEL = {observe_pb2.CHANNEL_STDOUT: Stream.STDOUT, observe_pb2.CHANNEL_STDERR: Stream.STDERR}
_CHANNEL_NAME = {Stream.STDOUT: "stdout", Stream.STDERR: "stderr"}
_FROM_CHANNEL = {v: k for k, v in CHANNELS.items()}
#: A batch is sent when it holds this many bytes of line data, or at the end of a read step.
_BATCH_BYTES = 1 << 20

# Ranges of the integers a client sends (INVALID_ARGUMENT naming the field outside them). Chosen to
# cover every meaningful value, not to police taste: a tail of 2^32 lines already exceeds what one
# executable's store can hold (5 x 10 MiB segments at >= 2 bytes a line is 26 M lines); timestamps are
# nanoseconds since the epoch (>= 0, within int64); a byte limit above 2^48 is "no limit" in practice;
# a run counts back from the latest (uint32 on the wire of records); a pid must be positive, and one
# above the kernel's pid_max is merely unknown (NOT_FOUND, as the seed answers any unknown pid).
MAX_TAIL = 2**32
MAX_LIMIT_BYTES = 2**48
MIN_RUN = -(2**31 - 1)
MAX_PID = 2**63 - 1


def check_range(field: str, value: int, low: int, high: int) -> int:
    """``value`` if ``low <= value <= high``, else InvalidArgument naming ``field`` and the range."""
    from cells.errors import InvalidArgument

    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low} and {high}, got {value}")
    return value


class ObserveService(observe_pb2_grpc.ObserveServicer):
    def __init__(self, app: App) -> None:
        self._app = app

    async def GetAuraeDaemonLogStream(  # noqa: N802 - gRPC method names
        self, request: observe_pb2.GetAuraeDaemonLogStreamRequest,
        context: grpc.aio.ServicerContext[observe_pb2.GetAuraeDaemonLogStreamRequest, observe_pb2.LogItem],
    ) -> AsyncIterator[observe_pb2.LogItem]:
        async with status_for(context):
            with limiter_for(self._app).hold("GetAuraeDaemonLogStream", context):
                await context.send_initial_metadata(((HISTORY_METADATA_KEY, str(len(self._app.bus.history()))),))
                async for event in self._app.bus.subscribe():
                    yield observe_pb2.LogItem(
                        channel="daemon",
                        line=json.dumps(event, default=repr, sort_keys=True),
                        timestamp=_event_seconds(event),
                    )

    async def GetSubProcessStream(  # noqa: N802
        self, request: observe_pb2.GetSubProcessStreamRequest,
        context: grpc.aio.ServicerContext[observe_pb2.GetSubProcessStreamRequest, observe_pb2.LogItem],
    ) -> AsyncIterator[observe_pb2.LogItem]:
        async with status_for(context):
            if request.channel_type not in _SEED_CHANNEL:
                from cells.errors import InvalidArgument

                raise InvalidArgument("channel_type", "must be CHANNEL_STDOUT or CHANNEL_STDERR")
            check_range("process_id", request.process_id, 1, MAX_PID)
            with limiter_for(self._app).hold("GetSubProcessStream", context):
                info = await self._app.runtime.find_pid(request.process_id)
                stream = _SEED_CHANNEL[request.channel_type]
                query = LogQuery(cell=info.cell_name, executable=info.name, streams=frozenset({stream}), follow=True)
                query = _pin_run(query, self._log_root, info.run)
                channel = _CHANNEL_NAME[stream]
                async for batch, _cursor in run_query(self._log_root, query):
                    for _src, rec in batch:
                        if rec.stream is stream:
                            line = rec.data.decode("utf-8", "replace")
                        elif rec.stream is Stream.LOST:
                            line = lost_line(rec)
                        else:
                            continue
                        yield observe_pb2.LogItem(channel=channel, line=line, timestamp=rec.ts_ns // 1_000_000_000)

    @property
    def _log_root(self) -> Path:
        return Path(self._app.config.paths.log_dir)


class LogsService(logs_pb2_grpc.LogsServicer):
    def __init__(self, app: App) -> None:
        self._app = app

    async def Read(  # noqa: N802
        self, request: logs_pb2.ReadLogsRequest,
        context: grpc.aio.ServicerContext[logs_pb2.ReadLogsRequest, logs_pb2.LogBatch],
    ) -> AsyncIterator[logs_pb2.LogBatch]:
        async with status_for(context):
            query = _query(request)
            with limiter_for(self._app).hold("Logs/Read", context) if query.follow else contextlib.nullcontext():
                async for batch in self._read(query, request.packed):
                    yield batch

    async def _read(self, query: LogQuery, packed: bool) -> AsyncIterator[logs_pb2.LogBatch]:
        log_root = Path(self._app.config.paths.log_dir)
        if packed and query.executable:
            async for data, cursor, src in run_query_packed(log_root, query):
                yield logs_pb2.LogBatch(packed=data, cursor=cursor, executable_name=src.executable, run=src.run)
            return
        async for batch, cursor in run_query(log_root, query):
            out = logs_pb2.LogBatch()
            size = 0
            for src, rec in batch:
                add_record(out, query.cell, src.executable, src.run, rec)
                size += len(rec.data)
                if size >= _BATCH_BYTES:
                    yield out
                    out, size = logs_pb2.LogBatch(), 0
            out.cursor = cursor
            yield out

    async def Purge(  # noqa: N802
        self, request: logs_pb2.PurgeLogsRequest,
        context: grpc.aio.ServicerContext[logs_pb2.PurgeLogsRequest, logs_pb2.PurgeLogsResponse],
    ) -> logs_pb2.PurgeLogsResponse:
        async with status_for(context):
            runs, size = await self._app.runtime.purge_logs(request.cell_name, request.executable_name)
        return logs_pb2.PurgeLogsResponse(runs=runs, bytes=size)


def _query(request: logs_pb2.ReadLogsRequest) -> LogQuery:
    """Validate the request into a LogQuery; names are checked before they reach the filesystem."""
    from cells.errors import InvalidArgument

    validate_cell_name(request.cell_name, "cell_name")
    if request.executable_name:
        validate_executable_name(request.executable_name, "executable_name")
    streams = set()
    for channel in request.channels:
        if channel not in _FROM_CHANNEL:
            raise InvalidArgument("channels", f"unknown channel {channel}")
        streams.add(_FROM_CHANNEL[channel])
    if request.run > 0:
        raise InvalidArgument("run", "must be 0 (latest) or negative (-1: the previous run)")
    check_range("run", request.run, MIN_RUN, 0)
    if request.HasField("tail"):
        check_range("tail", request.tail, 0, MAX_TAIL)
    for name in ("since_ns", "until_ns"):
        if request.HasField(name):
            check_range(name, getattr(request, name), 0, 2**63 - 1)
    check_range("limit_bytes", request.limit_bytes, 0, MAX_LIMIT_BYTES)
    return LogQuery(
        cell=request.cell_name,
        executable=request.executable_name,
        streams=frozenset(streams) if streams else LogQuery.streams,
        tail=request.tail if request.HasField("tail") else None,
        since_ns=request.since_ns if request.HasField("since_ns") else None,
        until_ns=request.until_ns if request.HasField("until_ns") else None,
        cursor=request.cursor,
        follow=request.follow,
        limit_bytes=request.limit_bytes or None,
        run=request.run,
    )


def _pin_run(query: LogQuery, log_root: Path, run: int) -> LogQuery:
    """Read exactly run ``run`` of the executable (the one that had the pid), not just the latest."""
    from observe.query import CellCursor

    cursor = CellCursor({query.executable: (run, 0)}).encode()
    return LogQuery(**{**query.__dict__, "cursor": cursor})


def lost_line(rec: LogRecord) -> str:
    """The seed stream's stand-in for a LOST record (see module docstring)."""
    reason = rec.data.decode("ascii", "replace")
    return f"[cellar: {rec.lost} lines lost ({reason})]" if reason else f"[cellar: {rec.lost} lines lost]"


def _event_seconds(event: dict[str, Any]) -> int:
    """structlog events carry an ISO timestamp; the seed wants seconds (see module docstring)."""
    from datetime import datetime

    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    import time

    return int(time.time())
