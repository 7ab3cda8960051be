"""A log query addressed by cell and executable: which runs to read, history then follow, cursors.

This is the "batched log RPC" of the issue without the gRPC: the servicer converts its request
into a :class:`LogQuery` and streams what :func:`run_query` yields. A whole-cell query interleaves
the latest run of every executable of the cell by timestamp; a whole-cell follow also reads every
run that begins after it started (a new executable, a new run of a known one, and with a cursor the
runs after the ones it names), and ends as before, once every run it reads has exited.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from observe import kinds
from observe.errors import InvalidCursor, LogError
from observe.logread import LogReader, merge, merge_follow
from observe.logstore import cell_dir, executable_dir, list_executables, list_runs, run_dir
from observe.records import LogRecord, Stream, encode

#: What a query returns when it names no channel: the lines and the exit record. LOST always passes.
DEFAULT_STREAMS = frozenset({Stream.STDOUT, Stream.STDERR, Stream.EXIT})
#: Packed pieces hold about this many bytes (well below gRPC's 4 MiB default message limit).
PACKED_BYTES = 1 << 20
_CURSOR_ITEM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})=(\d{1,18})\.(\d{1,20})$")
#: A directory whose mtime is younger than this is listed again at every look: a change in the same
#: tick of the filesystem's coarse clock (up to 1 s on some filesystems) would leave its mtime as is.
_SETTLE_NS = 2_000_000_000
_T = TypeVar("_T")


class NoLogs(LogError, kinds.NotFound):
    """Nothing was ever logged under that cell / executable / run."""


@dataclass(frozen=True)
class Source:
    """One executable run being read."""

    executable: str
    run: int
    directory: Path


@dataclass(frozen=True)
class LogQuery:
    cell: str
    executable: str = ""  # empty: every executable of the cell
    streams: frozenset[Stream] = DEFAULT_STREAMS
    tail: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    cursor: str = ""
    follow: bool = False
    limit_bytes: int | None = None
    run: int = 0  # 0: latest run, -1: the one before, ...; ignored when a cursor names the runs


@dataclass
class CellCursor:
    """Where a reader is: the last seq seen per executable run. ``v1:api=3.1042,web=1.77``."""

    positions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def encode(self) -> str:
        return "v1:" + ",".join(f"{exe}={run}.{seq}" for exe, (run, seq) in sorted(self.positions.items()))

    @classmethod
    def decode(cls, text: str) -> CellCursor:
        if not text.startswith("v1:") or len(text) > 65536:
            raise InvalidCursor("cursor: not a cursor returned by cellar")
        positions: dict[str, tuple[int, int]] = {}
        for item in filter(None, text[3:].split(",")):
            m = _CURSOR_ITEM.match(item)
            if not m:
                raise InvalidCursor("cursor: not a cursor returned by cellar")
            positions[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        return cls(positions)


def sources(log_root: Path, query: LogQuery) -> list[Source]:
    """The runs a query reads: named by the cursor, else the selected run of each executable."""
    if query.cursor:
        cursor = CellCursor.decode(query.cursor)
        return [
            Source(exe, run, run_dir(log_root, query.cell, exe, run))
            for exe, (run, _seq) in sorted(cursor.positions.items())
            if not query.executable or exe == query.executable
        ]
    names = [query.executable] if query.executable else list_executables(log_root, query.cell)
    found = []
    for exe in names:
        runs = list_runs(log_root, query.cell, exe)
        index = len(runs) - 1 + query.run
        if 0 <= index < len(runs):
            found.append(Source(exe, runs[index], run_dir(log_root, query.cell, exe, runs[index])))
    if not found:
        what = f"{query.cell}/{query.executable}" if query.executable else query.cell
        raise NoLogs(f"no logs for {what}" + (f" (run {query.run})" if query.run else ""))
    return found


class _NewRuns:
    """Finds the runs of a cell that began since the last look, for a follow of the whole cell.

    Asked on every turn of the follow, so a look is one stat per directory: a directory is listed
    again only when its mtime moved, or moved so recently that a later change could share it.
    """

    def __init__(self, log_root: Path, cell: str, known: dict[str, int]) -> None:
        self._root = log_root
        self._cell = cell
        self._known = known  # executable -> its newest run already read (or older than the follow)
        self._listed: dict[Path, tuple[int, int, list[Any]]] = {}  # dir -> mtime, when listed, names

    def __call__(self) -> tuple[list[Source], int]:
        """New runs, oldest first per executable, and the time of the look (see merge_follow's ``grow``)."""
        looked = time.time_ns()
        found = []
        root, cell = self._root, self._cell
        for exe in self._list(cell_dir(root, cell), lambda: list_executables(root, cell)):
            for run in self._list(executable_dir(root, cell, exe), partial(list_runs, root, cell, exe)):
                if run > self._known.get(exe, -1):
                    found.append(Source(exe, run, run_dir(root, cell, exe, run)))
                    self._known[exe] = run
        return found, looked

    def _list(self, directory: Path, lister: Callable[[], list[_T]]) -> list[_T]:
        now = time.time_ns()
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._listed.get(directory)
        if cached is not None and cached[0] == mtime and mtime < cached[1] - _SETTLE_NS:
            return cached[2]
        names = lister()
        self._listed[directory] = (mtime, now, names)
        return names


def _latest_runs(log_root: Path, cell: str) -> dict[str, int]:
    return {exe: runs[-1] for exe in list_executables(log_root, cell) if (runs := list_runs(log_root, cell, exe))}


async def run_query(log_root: Path, query: LogQuery) -> AsyncIterator[tuple[list[tuple[Source, LogRecord]], str]]:
    """Batches of ``(source, record)`` and the cursor after each batch: history first, then follow."""
    whole_cell_follow = query.follow and not query.executable and query.until_ns is None
    # Runs present before the sources are chosen are not new; anything later is (see _NewRuns).
    known = _latest_runs(log_root, query.cell) if whole_cell_follow else {}
    srcs = sources(log_root, query)
    for s in srcs:  # a cursor's run is what its reader saw last: later runs are new to it
        known[s.executable] = s.run if query.cursor else max(known.get(s.executable, -1), s.run)
    after = CellCursor.decode(query.cursor).positions if query.cursor else {}
    last = {s.executable: (s.run, after.get(s.executable, (s.run, 0))[1]) for s in srcs}
    readers = [LogReader(s.directory) for s in srcs]
    budget = query.limit_bytes

    def take(batch: Iterable[tuple[int, LogRecord]]) -> tuple[list[tuple[Source, LogRecord]], bool]:
        """Tag, advance the cursor and spend the byte budget; True when the budget ran out."""
        nonlocal budget
        out: list[tuple[Source, LogRecord]] = []
        for i, rec in batch:
            if budget is not None and rec.stream in (Stream.STDOUT, Stream.STDERR):
                if len(rec.data) > budget:
                    return out, True
                budget -= len(rec.data)
            src = srcs[i]
            if (src.run, rec.seq) > last.get(src.executable, (-1, 0)):  # runs of one executable follow each other
                last[src.executable] = (src.run, rec.seq)
            out.append((src, rec))
        return out, False

    def cursor() -> str:
        return CellCursor(dict(last)).encode()

    # A follow continues from where the history *looked*, even when a tail/since window matched nothing
    # there: `logs -f --tail 0` shows only what comes next. Taken before the history, so nothing written
    # meanwhile is skipped.
    windowed = query.follow and (query.tail is not None or query.since_ns is not None)
    looked = [r.last_seq() for r in readers] if windowed else []
    history: Iterator[tuple[int, LogRecord]]
    after_seqs = [last[s.executable][1] for s in srcs]
    if len(readers) == 1:
        history = (
            (0, r)
            for r in readers[0].read(
                after_seq=after_seqs[0],
                tail=query.tail,
                since_ns=query.since_ns,
                until_ns=query.until_ns,
                streams=query.streams,
            )
        )
    else:
        history = _merge_after(readers, after_seqs, query)
    chunk: list[tuple[int, LogRecord]] = []
    for item in history:
        chunk.append(item)
        if len(chunk) >= 1000:
            out, spent = take(chunk)
            chunk = []
            if out:
                yield out, cursor()
            if spent:
                return
    out, spent = take(chunk)
    if out:
        yield out, cursor()
    if spent or not query.follow or query.until_ns is not None:
        return
    for src, end in zip(srcs, looked, strict=False):
        run, seq = last[src.executable]
        last[src.executable] = (run, max(seq, end))
    after_seqs = [last[s.executable][1] for s in srcs]
    if query.executable and len(readers) == 1:
        async for batch in readers[0].follow(after_seq=after_seqs[0], streams=query.streams):
            out, spent = take((0, r) for r in batch)
            if out:
                yield out, cursor()
            if spent:
                return
    else:
        new_runs = _NewRuns(log_root, query.cell, known)

        def grow() -> tuple[list[tuple[LogReader, int]], int]:
            found, at = new_runs()
            srcs.extend(found)  # merge_follow numbers new readers on from the last, as take() indexes srcs
            return [(LogReader(s.directory), 0) for s in found], at

        async for tagged in merge_follow(
            readers, after_seqs=after_seqs, streams=query.streams, grow=grow if whole_cell_follow else None
        ):
            out, spent = take(tagged)
            if out:
                yield out, cursor()
            if spent:
                return


async def run_query_packed(log_root: Path, query: LogQuery) -> AsyncIterator[tuple[bytes, str, Source]]:
    """A single-executable query as packed pieces: ``(records back to back, cursor after them, source)``.

    Same records and cursors as :func:`run_query`. Where no record can be filtered out (every
    stream, no byte budget; for history also no tail and no time bounds) the stored bytes are
    passed on undecoded, which is most of the cost of a fast follower; otherwise run_query's
    records are encoded.
    """
    if not query.executable:
        raise ValueError("packed reads name one executable")
    srcs = sources(log_root, query)
    if not srcs:
        return
    src = srcs[0]
    after = CellCursor.decode(query.cursor).positions.get(src.executable, (src.run, 0))[1] if query.cursor else 0

    def cursor(seq: int) -> str:
        return CellCursor({src.executable: (src.run, seq)}).encode()

    everything = query.streams >= DEFAULT_STREAMS and query.limit_bytes is None
    if not everything:
        async for batch, _ in run_query(log_root, query):
            for data, seq in _encode([rec for _, rec in batch]):
                yield data, cursor(seq), src
        return
    reader = LogReader(src.directory)
    if query.tail is None and query.since_ns is None and query.until_ns is None:
        for data, seq in reader.read_packed(after_seq=after, max_bytes=PACKED_BYTES):
            after = seq
            yield data, cursor(seq), src
    else:
        looked = reader.last_seq() if query.follow else 0  # see run_query: follow from where history looked
        async for batch, _ in run_query(log_root, LogQuery(**{**query.__dict__, "follow": False})):
            for data, seq in _encode([rec for _, rec in batch]):
                after = seq
                yield data, cursor(seq), src
        after = max(after, looked)
    if not query.follow or query.until_ns is not None:
        return
    async for data, seq in reader.follow_packed(after_seq=after, max_bytes=PACKED_BYTES):
        yield data, cursor(seq), src


def _encode(records: list[LogRecord]) -> Iterator[tuple[bytes, int]]:
    """Records encoded back to back in pieces of about PACKED_BYTES, each with its last seq."""
    parts: list[bytes] = []
    size = 0
    for rec in records:
        parts.append(encode(rec))
        size += len(parts[-1])
        if size >= PACKED_BYTES:
            yield b"".join(parts), rec.seq
            parts, size = [], 0
    if parts:
        yield b"".join(parts), records[-1].seq


def _merge_after(
    readers: list[LogReader], after_seqs: list[int], query: LogQuery
) -> Iterator[tuple[int, LogRecord]]:
    """Whole-cell history; each run resumes after its own cursor position."""
    if not any(after_seqs):
        yield from merge(
            readers, tail=query.tail, since_ns=query.since_ns, until_ns=query.until_ns, streams=query.streams
        )
        return
    import heapq

    def tagged(i: int) -> Iterator[tuple[int, LogRecord]]:
        for rec in readers[i].read(
            after_seq=after_seqs[i], since_ns=query.since_ns, until_ns=query.until_ns, streams=query.streams
        ):
            yield i, rec

    yield from heapq.merge(*(tagged(i) for i in range(len(readers))), key=lambda t: (t[1].ts_ns, t[0]))
