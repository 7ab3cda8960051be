"""Reading one executable run's log: history queries, resumable cursors, follow.

A reader shares nothing with the writer but the files: it opens segments read-only, re-reads
anything past the last whole record (the writer may be mid-write, or dead with a torn tail),
and keeps its segment open while following, so rotation deleting that file under it costs
nothing. When the segment it needs next is gone it says so with a LOST record covering exactly
the missing seqs, never a silent gap. Any number of readers run side by side, each at its own
pace; none of them can slow the writer, which never waits for a reader.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from observe.errors import InvalidCursor
from observe.logstore import list_segments, segment_name
from observe.records import (
    END,
    EXITED,
    HEADER_LEN,
    MORE,
    RECORD_HEADER,
    RECORD_MAGIC,
    SEGMENT_HEADER,
    Decoded,
    LogRecord,
    Stream,
    decode,
    encode,
    make_record,
    parse_segment_header,
    scan,
)

_CURSOR = re.compile(r"^v1\.(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,18})$")
_CHUNK = 1 << 20  # bytes per pread while following: ~8k records of 100 bytes
#: The data of a LOST record for lines rotated away behind a reader (a writer's own LOST records
#: say why it could not store them).
GAP_REASON = b"rotated"
_Batch = TypeVar("_Batch", list[LogRecord], list[bytes])
_T = TypeVar("_T")


@dataclass(frozen=True)
class Cursor:
    """Where a client stopped: the run and the last seq it has seen (0: before the first)."""

    run: int
    seq: int

    def encode(self) -> str:
        return f"v1.{self.run}.{self.seq}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor a client sent back; anything we did not issue is InvalidCursor."""
        if not isinstance(text, str) or len(text) > 48:
            raise InvalidCursor("cursor is not a cellar log cursor")
        m = _CURSOR.fullmatch(text)
        if m is None:
            raise InvalidCursor("cursor is not a cellar log cursor")
        seq = int(m.group(2))
        if seq >= 1 << 63:
            raise InvalidCursor("cursor seq out of range")
        return cls(int(m.group(1)), seq)


def _gap(first_missing: int, next_present: int, ts: int) -> LogRecord:
    """A LOST record for seqs ``first_missing .. next_present - 1``."""
    return make_record(next_present - 1, ts, Stream.LOST, GAP_REASON, False, next_present - first_missing)


class _Records:
    """What :meth:`Position.step` collects: decoded records, counted in records."""

    def __init__(self) -> None:
        self.out: list[LogRecord] = []
        self.size = 0

    def gap(self, records: list[LogRecord]) -> None:
        self.out.extend(records)
        self.size += len(records)

    def take(self, d: Decoded, _buf: bytes) -> None:
        self.out.extend(d.records)
        self.size += len(d.records)


class _Raw:
    """What :meth:`Position.step_raw` collects: encoded pieces, counted in bytes."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.size = 0

    def gap(self, records: list[LogRecord]) -> None:
        for rec in records:
            self.out.append(encode(rec))
            self.size += len(self.out[-1])

    def take(self, d: Decoded, buf: bytes) -> None:
        if d.head:
            self.out.append(d.head)
            self.size += len(d.head)
        if d.offset > d.start:
            self.out.append(buf[d.start : d.offset])
            self.size += d.offset - d.start


class Position:
    """A reading position in a run: the open segment, the offset of the next record, the seq it covers.

    ``step`` reads forward and moves to the next segment when the writer has; it is synchronous
    and bounded (``limit`` records, ~1 MiB of reads), so both history reads and followers use it.
    """

    def __init__(self, directory: Path, after_seq: int, streams: frozenset[int] | None) -> None:
        self.dir = directory
        self.want = after_seq + 1
        self.streams = streams
        self.fd = -1
        self.seg = 0  # first seq of the open segment (0: none opened yet)
        self.off = 0
        self.nxt = 1  # first seq the next record must cover
        self.done = False  # the EXIT record was consumed
        self.last_ts = 0
        self._buf = b""  # bytes read ahead; ``_buf[_bpos]`` is at file offset ``off``
        self._bpos = 0
        self._base = 0  # ``_bpos`` when the last decode started

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def step(self, limit: int) -> tuple[list[LogRecord], bool]:
        """Up to ``limit`` records, and whether the position moved (False: caught up for now)."""
        sink = _Records()
        return sink.out, self._walk(limit, sink)

    def _advance(self, d: Decoded) -> None:
        self.off += d.offset - self._base
        if d.status == MORE:
            self._bpos = d.offset
        else:
            self._buf, self._bpos = b"", 0
        self.nxt = d.next_seq
        if d.last_ts:
            self.last_ts = d.last_ts

    def step_raw(self, limit: int) -> tuple[list[bytes], bool]:
        """:meth:`step` for readers that pass records on encoded: the same records, as byte strings.

        Up to about ``limit`` bytes (whole records) in pieces to concatenate: ranges of segment files
        as stored, and LOST records encoded here (a gap behind the reader, a LOST record trimmed at
        ``want``). Only for a position without a stream filter: nothing is left out of a range.
        """
        if self.streams is not None:
            raise ValueError("step_raw reads every stream")
        sink = _Raw()
        return sink.out, self._walk(limit, sink)

    def _walk(self, limit: int, sink: _Records | _Raw) -> bool:
        """The loop of :meth:`step` and :meth:`step_raw`: read into ``sink`` until it holds ``limit``
        (records or bytes), the run ended, or the writer has nothing new; True if the position moved."""
        moved = False
        retried = False
        raw = isinstance(sink, _Raw)
        while not self.done and sink.size < limit:
            if self.fd < 0:
                gap: list[LogRecord] = []
                if not self._open_next(gap):
                    break
                sink.gap(gap)
                moved = True
            d = self._read(limit - sink.size, raw)
            sink.take(d, self._buf)
            if d.offset != self._base or d.status == EXITED:
                self._advance(d)
                moved = True
                if d.status == EXITED:
                    self.done = True
                continue
            self._buf, self._bpos = b"", 0
            # Nothing whole left here. If the writer has moved on to a later segment, read this one
            # once more (it may have appended just before rotating), then switch.
            if not any(s > self.seg for s in list_segments(self.dir)):
                break
            if not retried:
                retried = True
                continue
            retried = False
            self.close()
        return moved

    def _read(self, limit: int, raw: bool = False) -> Decoded:
        """Decode (or with ``raw``, :func:`scan`) from the read-ahead buffer, or a fresh pread at ``off``."""
        if self._bpos < len(self._buf):
            self._base = self._bpos
            d = self._parse(self._bpos, limit, raw)
            if d.offset != self._bpos or d.status != END:
                return d
        self._base = 0
        self._buf = os.pread(self.fd, _CHUNK, self.off)
        self._bpos = 0
        d = self._parse(0, limit, raw)
        if d.status == END and d.offset == 0 and d.need > len(self._buf):
            self._buf = os.pread(self.fd, d.need, self.off)  # one record bigger than a chunk
            d = self._parse(0, limit, raw)
        return d

    def _parse(self, offset: int, limit: int, raw: bool) -> Decoded:
        if raw:
            return scan(self._buf, offset, self.nxt, want=self.want, limit=limit)
        return decode(self._buf, offset, self.nxt, want=self.want, limit=limit, streams=self.streams)

    def _open_next(self, out: list[LogRecord]) -> bool:
        """Open the segment to read next; append a LOST record if seqs were rotated away."""
        for _ in range(100):  # retried only when rotation deletes the file between list and open
            segs = list_segments(self.dir)
            if self.seg == 0:
                before = [s for s in segs if s <= self.want]
                first = before[-1] if before else (segs[0] if segs else 0)
            else:
                first = next((s for s in segs if s > self.seg), 0)
            if not first:
                return False
            try:
                fd = os.open(self.dir / segment_name(first), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            head = os.pread(fd, SEGMENT_HEADER.size + HEADER_LEN, 0)
            parsed = parse_segment_header(head)
            self.fd, self.seg = fd, first
            self.off = parsed[1] if parsed else SEGMENT_HEADER.size
            self._buf, self._bpos = b"", 0
            low = max(self.nxt, self.want)
            if first > low:
                out.append(_gap(low, first, _first_ts(head, self.off) or self.last_ts))
            self.nxt = first
            return True
        return False


def _first_ts(head: bytes, off: int) -> int:
    if len(head) < off + HEADER_LEN:
        return 0
    magic, *_, ts = RECORD_HEADER.unpack_from(head, off)
    return int(ts) if magic == RECORD_MAGIC else 0


class LogReader:
    """Reads one run directory; cheap to create, holds no file open between calls except in follow."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._exit_pos: Position | None = None

    def segments(self) -> list[int]:
        return list_segments(self.directory)

    def read(
        self,
        *,
        after_seq: int = 0,
        tail: int | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        streams: Iterable[Stream] | None = None,
        limit_bytes: int | None = None,
    ) -> Iterator[LogRecord]:
        """History: records after ``after_seq`` with ``since_ns <= ts < until_ns``, oldest first.

        ``tail`` keeps the last N lines of those and the EXIT record after them (an exit is no
        line; a LOST record counts as one). ``streams`` filters
        STDOUT/STDERR/EXIT; LOST records always pass. When the range starts before the oldest
        retained seq a LOST record covering the missing seqs comes first. ``limit_bytes`` stops
        before the first line whose data would take the total past it.
        """
        if tail is not None and tail < 0:
            raise ValueError("tail must be >= 0")
        mask = None if streams is None else frozenset(int(s) for s in streams)
        if tail is not None:
            records: Iterable[LogRecord] = self._tail(after_seq, tail, since_ns, until_ns, mask)
        else:
            records = self._forward(after_seq, since_ns, until_ns, mask)
        if limit_bytes is None:
            yield from records
            return
        total = 0
        for rec in records:
            if rec.stream is Stream.STDOUT or rec.stream is Stream.STDERR:
                total += len(rec.data)
                if total > limit_bytes:
                    return
            yield rec

    def _forward(
        self, after_seq: int, since_ns: int | None, until_ns: int | None, mask: frozenset[int] | None
    ) -> Iterator[LogRecord]:
        pos = Position(self.directory, after_seq, mask)
        if since_ns is not None:
            # Start in the last segment that begins strictly before ``since_ns``: earlier ones hold
            # only older records (timestamps never decrease within a run).
            start = 0
            for first in list_segments(self.directory):
                ts = self._segment_first_ts(first)
                if ts is not None and ts < since_ns:
                    start = first
            if start > pos.want:
                pos.want = start
        try:
            while True:
                batch, moved = pos.step(4096)
                if since_ns is None and until_ns is None:
                    yield from batch
                    batch = []
                for rec in batch:
                    if until_ns is not None and rec.ts_ns >= until_ns:
                        return
                    if since_ns is None or rec.ts_ns >= since_ns:
                        yield rec
                if not moved or pos.done:
                    return
        finally:
            pos.close()

    def _tail(
        self, after_seq: int, n: int, since_ns: int | None, until_ns: int | None, mask: frozenset[int] | None
    ) -> list[LogRecord]:
        """Walk segments newest first, decoding each whole, until N lines are in hand (the EXIT
        record is not a line: it comes with them)."""
        if n == 0:
            return []
        want = after_seq + 1
        segs = list_segments(self.directory)
        picked: deque[LogRecord] = deque()
        lines = 0  # records of picked that count toward N: all but EXIT
        later_first = 0  # first seq of the segment after the current one (0: none)
        later_ts = 0
        for first in reversed(segs):
            if later_first and later_first <= want:
                break
            got = self._decode_segment(first, want, mask)
            if got is None:  # rotated away while we looked: the forward gap logic below reports it
                continue
            recs, next_seq, first_ts = got
            if later_first and next_seq < later_first and later_first - 1 >= want:
                picked.appendleft(_gap(max(next_seq, want), later_first, later_ts))
                lines += 1
            for rec in reversed(recs):
                if until_ns is not None and rec.ts_ns >= until_ns:
                    continue
                if since_ns is not None and rec.ts_ns < since_ns:
                    continue
                picked.appendleft(rec)
                lines += rec.stream is not Stream.EXIT
            later_first, later_ts = first, first_ts
            if lines >= n or (since_ns is not None and first_ts and first_ts < since_ns):
                break
        else:
            if later_first > want and lines < n and (since_ns is None or later_ts >= since_ns):
                picked.appendleft(_gap(want, later_first, later_ts))
                lines += 1
        return _last_lines(picked, n, _itself)

    def _decode_segment(
        self, first: int, want: int, mask: frozenset[int] | None
    ) -> tuple[list[LogRecord], int, int] | None:
        try:
            with open(self.directory / segment_name(first), "rb") as f:
                buf = f.read()
        except FileNotFoundError:
            return None
        parsed = parse_segment_header(buf)
        off = parsed[1] if parsed else SEGMENT_HEADER.size
        d = decode(buf, off, first, want=want, streams=mask)
        return d.records, d.next_seq, _first_ts(buf, off)

    def _segment_first_ts(self, first: int) -> int | None:
        try:
            with open(self.directory / segment_name(first), "rb") as f:
                head = f.read(SEGMENT_HEADER.size + HEADER_LEN)
        except FileNotFoundError:
            return None
        parsed = parse_segment_header(head)
        return _first_ts(head, parsed[1] if parsed else SEGMENT_HEADER.size) or None

    def finished(self) -> bool:
        """Whether the EXIT record is on disk. Incremental: repeated calls read only what is new."""
        if self._exit_pos is None:
            segs = list_segments(self.directory)
            if not segs:
                return False
            self._exit_pos = Position(self.directory, segs[-1] - 1, frozenset())
        pos = self._exit_pos
        while not pos.done:
            _, moved = pos.step(1 << 30)
            if not moved:
                break
        if pos.done:
            pos.close()
        return pos.done

    def last_seq(self) -> int:
        """The last seq on disk (0 if none yet)."""
        pos = Position(self.directory, 0, frozenset())
        segs = list_segments(self.directory)
        if segs:
            pos.want = segs[-1]
        try:
            while pos.step(1 << 30)[1] and not pos.done:
                pass
            return pos.nxt - 1 if pos.seg else 0
        finally:
            pos.close()

    async def follow(
        self,
        *,
        after_seq: int = 0,
        streams: Iterable[Stream] | None = None,
        poll_interval: float = 0.01,
        max_batch: int = 1000,
    ) -> AsyncIterator[list[LogRecord]]:
        """Batches of records after ``after_seq`` as they are written; ends after the EXIT record.

        Polls (``poll_interval`` when idle, none while behind); may start before the run directory
        exists, and ends early if it is purged. Reads are small synchronous preads from the page cache, one batch per loop turn.
        """
        mask = None if streams is None else frozenset(int(s) for s in streams)
        pos = Position(self.directory, after_seq, mask)
        try:
            async for batch in self._poll(pos, lambda: pos.step(max_batch), poll_interval):
                yield batch
        finally:
            pos.close()  # also when the consumer stops early: do not wait for _poll's finalizer

    def read_packed(self, *, after_seq: int = 0, max_bytes: int = 1 << 20) -> Iterator[tuple[bytes, int]]:
        """History as stored bytes: what ``read(after_seq=...)`` yields, encoded back to back.

        Pieces of about ``max_bytes`` (whole records), each with the seq of its last record. Stored
        records are passed on without being decoded, several times cheaper than encoding each one.
        """
        pos = Position(self.directory, after_seq, None)
        try:
            while True:
                pieces, moved = pos.step_raw(max_bytes)
                if pieces:
                    yield b"".join(pieces), pos.nxt - 1
                if not moved or pos.done:
                    return
        finally:
            pos.close()

    async def follow_packed(
        self, *, after_seq: int = 0, poll_interval: float = 0.01, max_bytes: int = 1 << 20
    ) -> AsyncIterator[tuple[bytes, int]]:
        """:meth:`follow` as stored bytes (see :meth:`read_packed`), each piece with its last seq."""
        pos = Position(self.directory, after_seq, None)
        try:
            async for pieces in self._poll(pos, lambda: pos.step_raw(max_bytes), poll_interval):
                yield b"".join(pieces), pos.nxt - 1
        finally:
            pos.close()

    async def _poll(
        self, pos: Position, step: Callable[[], tuple[_Batch, bool]], poll_interval: float
    ) -> AsyncIterator[_Batch]:
        """Run ``step`` until the EXIT record: no sleep while it moves, ``poll_interval`` when idle.

        The caller owns ``pos`` and closes it.
        """
        existed = False
        while True:
            batch, moved = step()
            if batch:
                yield batch
            if pos.done:
                return
            if moved:
                await asyncio.sleep(0)
                continue
            if self.directory.is_dir():
                existed = True
            elif existed:
                return  # purged under us
            await asyncio.sleep(poll_interval)


# -- whole-cell views ---------------------------------------------------------------------------


def merge(
    readers: Sequence[LogReader], *, tail: int | None = None, **query: object
) -> Iterator[tuple[int, LogRecord]]:
    """Interleave several runs' history by timestamp (ties: reader order) as ``(reader index, record)``.

    ``query`` goes to each :meth:`LogReader.read`; ``tail`` applies to the merged result.
    """

    def tagged(i: int, reader: LogReader) -> Iterator[tuple[int, LogRecord]]:
        for rec in reader.read(tail=tail, **query):  # type: ignore[arg-type]
            yield i, rec

    merged = heapq.merge(*(tagged(i, r) for i, r in enumerate(readers)), key=lambda t: (t[1].ts_ns, t[0]))
    if tail is None:
        yield from merged
    else:
        yield from _last_lines(merged, tail, _second)


def _itself(rec: LogRecord) -> LogRecord:
    return rec


def _second(item: tuple[int, LogRecord]) -> LogRecord:
    return item[1]


def _last_lines(items: Iterable[_T], n: int, record: Callable[[_T], LogRecord]) -> list[_T]:
    """The window of the last ``n`` lines: from the n-th last record that is a line (every stream
    but EXIT; a LOST record is one) to the end, the EXIT records in it included; everything when
    there are fewer lines. ``tail`` means lines, as ``docker logs --tail``: an exit is no line."""
    if n == 0:
        return []
    kept: deque[_T] = deque()
    lines = 0
    cut = False
    for item in items:
        kept.append(item)
        lines += record(item).stream is not Stream.EXIT
        while lines > n:
            lines -= record(kept.popleft()).stream is not Stream.EXIT
            cut = True
    while cut and kept and record(kept[0]).stream is Stream.EXIT:  # a cut window starts at its first line
        kept.popleft()
    return list(kept)


async def merge_follow(
    readers: Sequence[LogReader],
    *,
    after_seqs: Sequence[int] | None = None,
    streams: Iterable[Stream] | None = None,
    poll_interval: float = 0.01,
    max_batch: int = 1000,
    grace_ns: int = 100_000_000,
    grow: Callable[[], tuple[Sequence[tuple[LogReader, int]], int]] | None = None,
) -> AsyncIterator[list[tuple[int, LogRecord]]]:
    """Follow several runs at once, in timestamp order; ends when every run has its EXIT record.

    A record is released once every other unfinished run either has a later record queued or has
    been idle past ``grace_ns`` behind it: the supervisor stamps lines as it reads them, so a
    record older than the grace period can no longer be overtaken by one from a quiet run.

    ``grow`` lets the set of runs grow (a whole cell, where executables start later): asked once a
    turn, it returns the runs found since (reader, seq to start after; their index is the next one)
    and the time it looked at; no run it has not returned can hold an older record, so records are
    released only up to that time. The follow ends when every run is done at a look finding none.
    """
    mask = None if streams is None else frozenset(int(s) for s in streams)
    afters = list(after_seqs) if after_seqs is not None else [0] * len(readers)
    positions = [Position(r.directory, a, mask) for r, a in zip(readers, afters, strict=True)]
    queues: list[deque[LogRecord]] = [deque() for _ in readers]
    looked = 1 << 63
    try:
        while True:
            moved = False
            for pos, q in zip(positions, queues, strict=True):
                if not pos.done and len(q) < max_batch:
                    batch, m = pos.step(max_batch)
                    q.extend(batch)
                    moved = moved or m
            if grow is not None:
                found, looked = grow()
                for reader, after in found:
                    positions.append(Position(reader.directory, after, mask))
                    batch, m = positions[-1].step(max_batch)
                    queues.append(deque(batch))
                    moved = moved or m
            horizon = time.time_ns() - grace_ns
            out: list[tuple[int, LogRecord]] = []
            while len(out) < max_batch:
                heads = [(q[0].ts_ns, i) for i, q in enumerate(queues) if q]
                if not heads:
                    break
                ts, i = min(heads)
                blocked = ts > looked or any(
                    not queues[j] and not positions[j].done and ts > horizon
                    for j in range(len(queues))
                    if j != i
                )
                if blocked:
                    break
                out.append((i, queues[i].popleft()))
            if out:
                yield out
            if all(p.done for p in positions) and not any(queues):
                return
            await asyncio.sleep(0 if moved or out else poll_interval)
    finally:
        for pos in positions:
            pos.close()
