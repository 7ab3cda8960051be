"""``cellar logs --all``: every cell's logs in one stream, for a log shipper (Fluent Bit, Vector, promtail).

One Read stream per executable run, merged as they come. A run is read to its end, then the next run
of that executable, so nothing between two looks is skipped; with ``-f`` new cells, executables and
runs are picked up (cellard is asked for its cells every ``POLL_S`` seconds). ``--cursor-file``
(journalctl's flag): the position of every executable (run and the last line's seq) is kept in FILE,
written atomically after each batch has been printed and flushed, and read at the start: a restarted
shipper goes on after the last batch it recorded, at least once (a batch printed but not yet recorded
is printed again), never with a gap while the runs are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import grpc

from agent.cli.connection import Target
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, logs_pb2, logs_pb2_grpc, types_pb2

#: Seconds between two looks for new cells, executables and runs while following.
POLL_S = 1.0
CURSOR_FILE_VERSION = 1
_ACTIVE = (types_pb2.EXECUTABLE_STATE_STARTING, types_pb2.EXECUTABLE_STATE_RUNNING, types_pb2.EXECUTABLE_STATE_STOPPING)

Key = tuple[str, str]  # (cell, executable)
Position = tuple[int, int]  # (run, last seq printed)


def read_cursor_file(path: Path | None) -> dict[Key, Position]:
    """The positions kept in FILE; none yet -> empty. Anything but a cellar cursor file is a usage error."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CURSOR_FILE_VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        out: dict[Key, Position] = {}
        for cell, exes in data["positions"].items():
            for exe, where in exes.items():
                run, _, seq = where.partition(".")
                out[(str(cell), str(exe))] = (int(run), int(seq))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.UsageError(f"--cursor-file {path}: not a cellar cursor file ({exc})") from None
    return out


def write_cursor_file(path: Path, positions: dict[Key, Position]) -> None:
    """Replace FILE atomically (a crash leaves the old or the new position, never half of one)."""
    nested: dict[str, dict[str, str]] = {}
    for (cell, exe), (run, seq) in sorted(positions.items()):
        nested.setdefault(cell, {})[exe] = f"{run}.{seq}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CURSOR_FILE_VERSION, "positions": nested}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Reader(threading.Thread):
    """One executable run's Read stream into the shared queue: ``(key, run, records)`` per batch, then
    ``(key, run, None)`` at its end (or the RpcError that ended it)."""

    def __init__(self, stub: logs_pb2_grpc.LogsStub, key: Key, run: int, request: logs_pb2.ReadLogsRequest,
                 out: queue.Queue[Any], timeout: float | None) -> None:
        super().__init__(daemon=True, name=f"logs {key[0]}/{key[1]}")
        self.key, self.run_number, self.request = key, run, request
        self._stub, self._out, self._timeout = stub, out, timeout
        self.call: Any = None

    def run(self) -> None:
        try:
            self.call = self._stub.Read(self.request, timeout=self._timeout)
            for batch in self.call:
                self._out.put((self.key, self.run_number, list(batch.records)))
        except grpc.RpcError as exc:
            if not (isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.CANCELLED):
                self._out.put((self.key, self.run_number, exc))
                return
        self._out.put((self.key, self.run_number, None))


class Shipper:
    """Which run of which executable to read next, from where; the positions after what was printed."""

    def __init__(self, base: logs_pb2.ReadLogsRequest, positions: dict[Key, Position]) -> None:
        self.base, self.positions = base, positions
        self.finished: dict[Key, int] = {}  # the run whose read ended (everything of it printed)

    def next_request(self, cell: str, exe: types_pb2.ExecutableInfo) -> tuple[int, logs_pb2.ReadLogsRequest] | None:
        key, current = (cell, exe.name), exe.run
        request = logs_pb2.ReadLogsRequest()
        request.CopyFrom(self.base)
        request.cell_name, request.executable_name, request.packed = cell, exe.name, False
        request.ClearField("run")
        pos = self.positions.get(key)
        if pos is None:
            if self.finished.get(key) == current and not (self.base.follow and exe.state in _ACTIVE):
                return None  # read, and nothing in it (while it runs, a follow looks again)
            return current, request  # never seen: its latest run (--tail, --since apply)
        run, seq = pos
        if self.finished.get(key) == run:
            if run < current:
                run, seq = run + 1, 0
                self.positions[key] = (run, seq)
            elif not (self.base.follow and exe.state in _ACTIVE):
                return None  # all of its latest run is printed
        request.ClearField("tail")
        request.cursor = f"v1:{exe.name}={run}.{seq}"
        return run, request

    def printed(self, key: Key, run: int, records: list[logs_pb2.LogRecord]) -> None:
        if records:
            last = records[-1]
            self.positions[key] = (last.run or run, last.seq)

    def ended(self, key: Key, run: int, error: grpc.RpcError | None) -> None:
        if error is not None and not (isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND):
            raise error  # NOT_FOUND: that run is gone (purged, rotated): go on with the next
        self.finished[key] = run


def ship_all(target: Target, base: logs_pb2.ReadLogsRequest, cursor_file: Path | None,
             show: Callable[[logs_pb2.LogRecord], None], flush: Callable[[], None]) -> None:
    """Print every cell's records (``show``), following with ``base.follow``, keeping ``cursor_file``."""
    shipper = Shipper(base, read_cursor_file(cursor_file))
    follow = base.follow
    inbox: queue.Queue[Any] = queue.Queue(maxsize=64)
    readers: dict[Key, _Reader] = {}
    with target.channel() as channel:
        cells_stub, logs_stub = cells_pb2_grpc.CellsStub(channel), logs_pb2_grpc.LogsStub(channel)

        def open_new() -> None:
            for info in cells_stub.List(cells_pb2.ListCellsRequest(), timeout=target.timeout).cells:
                for exe in info.executables:
                    key = (info.name, exe.name)
                    if key in readers:
                        continue
                    wanted = shipper.next_request(info.name, exe)
                    if wanted is not None:
                        run, request = wanted
                        readers[key] = _Reader(logs_stub, key, run, request, inbox,
                                               None if follow else target.timeout)
                        readers[key].start()

        try:
            open_new()
            next_poll = time.monotonic() + POLL_S
            while readers or follow:
                try:
                    key, run, records = inbox.get(timeout=max(0.05, next_poll - time.monotonic()))
                except queue.Empty:
                    key = None
                if key is not None:
                    if isinstance(records, list):
                        for rec in records:
                            show(rec)
                        flush()
                        shipper.printed(key, run, records)
                        if cursor_file is not None and records:
                            write_cursor_file(cursor_file, shipper.positions)
                    else:
                        readers.pop(key, None)
                        shipper.ended(key, run, records)
                        if not follow:
                            open_new()  # the next run of that executable, if any
                if follow and time.monotonic() >= next_poll:
                    open_new()
                    next_poll = time.monotonic() + POLL_S
        except KeyboardInterrupt:
            pass
        finally:
            for reader in readers.values():
                if reader.call is not None:
                    reader.call.cancel()
