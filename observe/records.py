"""The log record and its on-disk framing.

A segment file is a 16-byte segment header followed by records back to back::

    segment header  <4sHHQ   b"CLOG", version=1, header_len=16, first_seq
    record header   <BBBBIQQ magic=0xC5, stream, flags (bit 0: partial), 0, payload_len, seq, ts_ns
    payload         payload_len bytes

Payloads: STDOUT/STDERR carry the line without its newline; EXIT carries a JSON object (see
:func:`exit_payload`); LOST carries ``<Q`` (how many seqs it stands for) then a short ASCII reason.

Sequence numbers are per executable run, start at 1 and are contiguous *as ranges*: every record
covers ``span`` seqs ending at ``seq`` -- 1 for lines and EXIT, ``lost`` for a LOST record, which stands
for exactly that many lines that are not available (dropped on a full disk, or rotated away before a
reader got there). So a reader always knows exactly how many lines it misses, and a cursor is just
"the last seq I have seen".

There is no per-record checksum: a torn tail (the only damage a killed writer can leave, since
nothing is rewritten in place) is detected by the length running past the end of the file, and
garbage by the magic byte and the contiguity of seqs. Skipping a CRC keeps decoding above 2 M
records/s in pure Python.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import IntEnum
from itertools import repeat
from operator import itemgetter
from typing import Any


class Stream(IntEnum):
    STDOUT = 1
    STDERR = 2
    EXIT = 3
    LOST = 4


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One captured line (or a piece of one), an exit record, or a marker for lines that are gone."""

    seq: int
    ts_ns: int
    stream: Stream
    data: bytes
    partial: bool = False  # the line continues in the next record of the same stream
    lost: int = 0  # LOST records: how many lines (seqs) are missing, ending at ``seq``

    @property
    def span(self) -> int:
        """How many seqs this record covers, ending at ``seq``."""
        return self.lost if self.stream is Stream.LOST else 1

    def exit_info(self) -> dict[str, Any]:
        """The decoded JSON of an EXIT record."""
        if self.stream is not Stream.EXIT:
            raise ValueError("not an EXIT record")
        info: dict[str, Any] = json.loads(self.data)
        return info


SEGMENT_MAGIC = b"CLOG"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<4sHHQ")
RECORD_MAGIC = 0xC5
RECORD_HEADER = struct.Struct("<BBBBIQQ")
HEADER_LEN = RECORD_HEADER.size  # 24
#: RECORD_HEADER read as words: (tag = magic | stream << 8 | flags << 16 | 0 << 24, payload_len, seq,
#: ts_ns). The bulk paths (writer framing, PackedBatch) pack and unpack whole headers with it.
RECORD_HEADER_WORDS = struct.Struct("<IIQQ")
FLAG_PARTIAL = 1
#: Anything longer is garbage, not a record (lines are split at 256 KiB; exits and markers are tiny).
MAX_PAYLOAD = 1 << 30
_LOST_COUNT = struct.Struct("<Q")
_LINE_HEAD = struct.Struct("<HxxIQ")  # (magic | stream << 8, payload_len, seq): what scan checks of a line
_LINE_TAGS = frozenset((RECORD_MAGIC | 1 << 8, RECORD_MAGIC | 2 << 8))
_SCAN_HEADER = struct.Struct("<BBxxIQ")  # the record header without flags and timestamp
_TS = struct.Struct("<Q")  # the timestamp, at offset 16 of a record header

# Decoding builds records through the slot descriptors: a frozen dataclass __init__ costs ~0.5 us
# (six object.__setattr__ calls), half of the whole per-record budget.
_new = object.__new__
_set_seq = LogRecord.__dict__["seq"].__set__
_set_ts = LogRecord.__dict__["ts_ns"].__set__
_set_stream = LogRecord.__dict__["stream"].__set__
_set_data = LogRecord.__dict__["data"].__set__
_set_partial = LogRecord.__dict__["partial"].__set__
_set_lost = LogRecord.__dict__["lost"].__set__
_STREAMS = (None, Stream.STDOUT, Stream.STDERR, Stream.EXIT, Stream.LOST)
_PARTIAL = tuple(bool(f & FLAG_PARTIAL) for f in range(256))


def make_record(
    seq: int, ts_ns: int, stream: Stream, data: bytes, partial: bool = False, lost: int = 0
) -> LogRecord:
    """Same as ``LogRecord(...)`` but about twice as fast; for hot loops."""
    rec = _new(LogRecord)
    _set_seq(rec, seq)
    _set_ts(rec, ts_ns)
    _set_stream(rec, stream)
    _set_data(rec, data)
    _set_partial(rec, partial)
    _set_lost(rec, lost)
    return rec


def exit_payload(
    *,
    code: int | None,
    signal: int | None = None,
    oom_killed: bool = False,
    started_at_ns: int = 0,
    ended_at_ns: int = 0,
) -> dict[str, Any]:
    """The EXIT record's object, with every key present so readers need no defaults."""
    return {
        "code": code,
        "signal": signal,
        "oom_killed": oom_killed,
        "started_at_ns": started_at_ns,
        "ended_at_ns": ended_at_ns,
    }


def segment_header(first_seq: int) -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_HEADER.size, first_seq)


def parse_segment_header(buf: bytes) -> tuple[int, int] | None:
    """``(first_seq, header_len)``, or None when the header is torn or not ours."""
    if len(buf) < SEGMENT_HEADER.size:
        return None
    magic, version, header_len, first_seq = SEGMENT_HEADER.unpack_from(buf)
    if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION or header_len < SEGMENT_HEADER.size:
        return None
    return first_seq, header_len


def encode(rec: LogRecord) -> bytes:
    """One record in its on-disk form (the writer inlines this for lines)."""
    payload = rec.data
    if rec.stream is Stream.LOST:
        payload = _LOST_COUNT.pack(rec.lost) + rec.data
    flags = FLAG_PARTIAL if rec.partial else 0
    return RECORD_HEADER.pack(RECORD_MAGIC, rec.stream, flags, 0, len(payload), rec.seq, rec.ts_ns) + payload


# Why ``decode`` stopped.
MORE = 0  # hit the record limit; more complete records may follow
END = 1  # no complete record left in the buffer (end of data, or a torn/in-progress tail)
CORRUPT = 2  # bytes that are not the next record: bad magic, broken seq chain, absurd length
EXITED = 3  # consumed the EXIT record; nothing may follow it


@dataclass(slots=True)
class Decoded:
    records: list[LogRecord]
    offset: int  # where the first unconsumed record starts
    next_seq: int  # the first seq the next record must cover
    status: int
    need: int = 0  # with END: bytes from ``offset`` needed to complete the next record, if known
    last_ts: int = 0  # ts of the last consumed record (0 if none)
    # :func:`scan` only (``records`` stays empty): the consumed records to pass on are ``buf[start:offset]``,
    # preceded by ``head`` (a LOST record straddling ``want``, re-encoded trimmed) when not empty.
    start: int = 0
    head: bytes = b""


def decode(
    buf: bytes,
    offset: int,
    next_seq: int,
    *,
    want: int = 1,
    limit: int = 1 << 62,
    streams: Collection[int] | None = None,
) -> Decoded:
    """Parse records from ``buf[offset:]``; the first must cover ``next_seq``.

    Records wholly before ``want`` are skipped (positioning inside a segment); a LOST record that
    straddles ``want`` is trimmed to the part at or after it. ``streams`` filters STDOUT/STDERR/EXIT;
    LOST records always pass, so a filter never hides a gap. At most ``limit`` records are returned.
    """
    out: list[LogRecord] = []
    append = out.append
    unpack = RECORD_HEADER.unpack_from
    # Locals, not globals, in the loop: this is the hot path of every read.
    new, cls, kinds, partials, hl = _new, LogRecord, _STREAMS, _PARTIAL, HEADER_LEN
    set_seq, set_ts, set_stream, set_data, set_partial, set_lost = (
        _set_seq,
        _set_ts,
        _set_stream,
        _set_data,
        _set_partial,
        _set_lost,
    )
    n = len(buf)
    count = 0
    status = END
    need = 0
    last_ts = 0
    nxt = next_seq
    while count < limit:
        if offset + hl > n:
            need = hl
            break
        magic, st, flags, _, ln, seq, ts = unpack(buf, offset)
        if magic != RECORD_MAGIC or ln > MAX_PAYLOAD:
            status = CORRUPT
            break
        end = offset + hl + ln
        if end > n:
            need = hl + ln
            break
        if st == 1 or st == 2:
            if seq != nxt:
                status = CORRUPT
                break
            if seq >= want and (streams is None or st in streams):
                rec = new(cls)
                set_seq(rec, seq)
                set_ts(rec, ts)
                set_stream(rec, kinds[st])
                set_data(rec, buf[offset + hl : end])
                set_partial(rec, partials[flags])
                set_lost(rec, 0)
                append(rec)
                count += 1
        elif st == 4:
            if ln < 8:
                status = CORRUPT
                break
            lost = _LOST_COUNT.unpack_from(buf, offset + HEADER_LEN)[0]
            if lost < 1 or seq - lost + 1 != nxt:
                status = CORRUPT
                break
            if seq >= want:
                shown = min(lost, seq - want + 1)
                append(make_record(seq, ts, Stream.LOST, buf[offset + HEADER_LEN + 8 : end], False, shown))
                count += 1
        elif st == 3:
            if seq != nxt:
                status = CORRUPT
                break
            if seq >= want and (streams is None or st in streams):
                append(make_record(seq, ts, Stream.EXIT, buf[offset + HEADER_LEN : end]))
            offset = end
            nxt = seq + 1
            last_ts = ts
            status = EXITED
            break
        else:
            status = CORRUPT
            break
        nxt = seq + 1
        last_ts = ts
        offset = end
    else:
        status = MORE
    return Decoded(out, offset, nxt, status, need, last_ts)


def scan(buf: bytes, offset: int, next_seq: int, *, want: int = 1, limit: int = 1 << 62) -> Decoded:
    """:func:`decode` without decoding: the same checks and stops, but the result is a byte range.

    For readers that pass stored records on as they are (packed reads): no LogRecord is built, so
    a record costs one header unpack. Records wholly before ``want`` are consumed but left out of
    ``buf[start:offset]``; a LOST record straddling ``want`` comes back re-encoded in ``head``,
    trimmed exactly as :func:`decode` trims it. Stops with MORE once the range holds ``limit`` bytes.
    """
    unpack, hl, n, lost_count = _SCAN_HEADER.unpack_from, HEADER_LEN, len(buf), _LOST_COUNT.unpack_from
    start = offset
    head = b""
    status = END
    need = 0
    last = -1  # offset of the last consumed record: its timestamp is read once, at the end
    nxt = next_seq
    run = _run
    while True:
        if nxt >= want:
            stop = start + limit
            # The usual run: whole line records in seq order, nothing to trim. The same checks as
            # below in fewer steps; anything else (or the end of the buffer) falls through to them.
            offset, nxt, walked = run(buf, offset, stop, nxt)
            if walked >= 0:
                last = walked
            if offset >= stop:
                status = MORE
                break
        if offset + hl > n:
            need = hl
            break
        magic, st, ln, seq = unpack(buf, offset)
        if magic != RECORD_MAGIC or ln > MAX_PAYLOAD:
            status = CORRUPT
            break
        end = offset + hl + ln
        if end > n:
            need = hl + ln
            break
        if st == 1 or st == 2:
            if seq != nxt:
                status = CORRUPT
                break
        elif st == 4:
            if ln < 8:
                status = CORRUPT
                break
            lost = lost_count(buf, offset + hl)[0]
            if lost < 1 or seq - lost + 1 != nxt:
                status = CORRUPT
                break
            if nxt < want <= seq:
                ts = _TS.unpack_from(buf, offset + 16)[0]
                head = encode(make_record(seq, ts, Stream.LOST, buf[offset + hl + 8 : end], False, seq - want + 1))
                start = end
        elif st == 3:
            if seq != nxt:
                status = CORRUPT
                break
            if seq < want:
                start = end
            last = offset
            offset = end
            nxt = seq + 1
            status = EXITED
            break
        else:
            status = CORRUPT
            break
        if seq < want:
            start = end
        nxt = seq + 1
        last = offset
        offset = end
        if offset - start >= limit:
            status = MORE
            break
    last_ts = _TS.unpack_from(buf, last + 16)[0] if last >= 0 else 0
    return Decoded([], offset, nxt, status, need, last_ts, start, head)




def _run_py(buf: bytes, offset: int, stop: int, nxt: int) -> tuple[int, int, int]:
    """Walk whole STDOUT/STDERR line records in seq order from ``offset`` while ``offset < stop``:
    ``(offset, next_seq, last)``, ``last`` the offset of the last record walked (-1: none). Stops
    before anything else (another stream, a broken chain, a torn header, a record past the end).
    The fallback of ``_records.run``, which does the same in C (a flood's every record passes here).
    """
    line, line_tags, hl, n = _LINE_HEAD.unpack_from, _LINE_TAGS, HEADER_LEN, len(buf)
    last = -1
    with contextlib.suppress(struct.error):  # a torn header: the caller's general path reports it
        while offset < stop:
            tag, ln, seq = line(buf, offset)
            end = offset + hl + ln
            if seq != nxt or tag not in line_tags or end > n:
                break
            nxt = seq + 1
            last = offset
            offset = end
    return offset, nxt, last


def _frame_py(lines: list[bytes], tag: int, seq: int, ts: int) -> bytes:
    """Whole lines framed as records back to back (header ``tag, len, seq + i, ts`` then the line):
    the fallback of ``_records.frame``."""
    k = len(lines)
    parts: list[bytes] = [b""] * (2 * k)
    parts[0::2] = map(RECORD_HEADER_WORDS.pack, repeat(tag, k), map(len, lines), range(seq, seq + k), repeat(ts))
    parts[1::2] = lines
    return b"".join(parts)


try:
    from observe import _records  # type: ignore[attr-defined]

    _run: Callable[[bytes, int, int, int], tuple[int, int, int]] = _records.run
    frame: Callable[[list[bytes], int, int, int], bytes] = _records.frame
    #: ``(data, max_line, tag, seq, ts, room) -> (framed, count, consumed) | None``: see _records.c.
    split_frame: Callable[[bytes, int, int, int, int, int], tuple[bytes, int, int] | None] | None = _records.split_frame
except ImportError:  # built without a C compiler: the same in Python, ~30x slower
    _run = _run_py
    frame = _frame_py
    split_frame = None  # the writer's callers split lines themselves (LineSplitter)


def _tag(stream: int, flags: int = 0) -> int:
    """The first four header bytes read as one little-endian number: magic, stream, flags, 0."""
    return RECORD_MAGIC | stream << 8 | flags << 16


class PackedBatch:
    """A packed buffer split into two parallel lists, one entry per record, without a LogRecord each.

    ``heads[i]`` is the header of record ``i`` as ``(tag, payload_len, seq, ts_ns)``, where ``tag``
    holds the magic, stream and flags bytes (see :func:`_tag`); ``data[i]`` is its payload (a LOST
    record's starts with its 8-byte count, as stored). For clients that go through many lines, a
    follower of a flood: one tight loop per batch, a third of the cost of :func:`iter_packed` and its
    consumer, and columns (:attr:`seqs`, :attr:`streams`, :attr:`flags`) that compare in bulk.
    Validated like :func:`iter_packed`, but up front: a torn or foreign buffer raises ValueError.
    """

    __slots__ = ("data", "heads", "tags")

    def __init__(self, buf: bytes) -> None:
        heads: list[tuple[int, int, int, int]] = []
        data: list[bytes] = []
        add_head, add_data, unpack, hl, n = heads.append, data.append, RECORD_HEADER_WORDS.unpack_from, HEADER_LEN, len(buf)
        offset = 0
        try:
            while offset < n:  # one tuple and one slice per record, nothing else: the checks run in bulk
                head = unpack(buf, offset)
                add_head(head)
                start = offset + hl
                offset = start + head[1]
                add_data(buf[start:offset])
        except struct.error:
            raise ValueError("packed log batch: truncated record header") from None
        self.heads = heads
        self.data = data
        #: The distinct tags in the batch: usually one or two, so checks per kind cost nothing per record.
        self.tags = frozenset(map(itemgetter(0), heads))
        if offset > n or not all(t & 0xFF == RECORD_MAGIC and 1 <= t >> 8 & 0xFF <= 4 for t in self.tags):
            raise ValueError(f"packed log batch: not a record at offset {self._first_bad()}")
        if any(t >> 8 & 0xFF == Stream.LOST for t in self.tags) and any(
            h[1] < _LOST_COUNT.size for h in heads if h[0] >> 8 & 0xFF == Stream.LOST
        ):
            raise ValueError("packed log batch: short LOST record")

    def _first_bad(self) -> int:
        offset = 0
        for tag, ln, _, _ in self.heads:
            if tag & 0xFF != RECORD_MAGIC or not 1 <= tag >> 8 & 0xFF <= 4:
                return offset
            offset += HEADER_LEN + ln
        return offset - HEADER_LEN - self.heads[-1][1]  # the last record runs past the end

    def only(self, stream: Stream) -> bool:
        """Whether every record is a whole line (no partial piece) of ``stream``; O(1)."""
        return self.tags == {_tag(stream)}

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def seqs(self) -> list[int]:
        return list(map(itemgetter(2), self.heads))

    @property
    def streams(self) -> bytes:
        """One byte per record: its :class:`Stream` value."""
        return bytes(h[0] >> 8 & 0xFF for h in self.heads)

    @property
    def flags(self) -> bytes:
        """One byte per record: its flags (``FLAG_PARTIAL``)."""
        return bytes(h[0] >> 16 & 0xFF for h in self.heads)

    def records(self, start: int = 0) -> Iterator[LogRecord]:
        """The records from index ``start`` on, as :func:`iter_packed` yields them (for the few a bulk check leaves)."""
        for i in range(start, len(self.heads)):
            tag, _, seq, ts = self.heads[i]
            payload = self.data[i]
            st = tag >> 8 & 0xFF
            if st == Stream.LOST:
                yield make_record(seq, ts, Stream.LOST, payload[8:], False, _LOST_COUNT.unpack_from(payload)[0])
            else:
                yield make_record(seq, ts, Stream(st), payload, _PARTIAL[tag >> 16 & 0xFF])


def iter_packed(buf: bytes) -> Iterator[LogRecord]:
    """The records of a packed buffer (records :func:`encode`-d back to back), in order.

    Unlike :func:`decode` there is no seq-chain check: a packed batch may be filtered (stdout only)
    and so have gaps. A torn or foreign buffer raises ValueError instead of yielding garbage.
    """
    unpack, hl, n, offset = RECORD_HEADER.unpack_from, HEADER_LEN, len(buf), 0
    # Locals and the slot setters, as in decode: a client following a flood spends most of its time here.
    new, cls, kinds, partials = _new, LogRecord, _STREAMS, _PARTIAL
    set_seq, set_ts, set_stream, set_data, set_partial, set_lost = (
        _set_seq,
        _set_ts,
        _set_stream,
        _set_data,
        _set_partial,
        _set_lost,
    )
    while offset < n:
        if offset + hl > n:
            raise ValueError("packed log batch: truncated record header")
        magic, st, flags, _, ln, seq, ts = unpack(buf, offset)
        end = offset + hl + ln
        if magic != RECORD_MAGIC or not 1 <= st <= 4 or end > n:
            raise ValueError(f"packed log batch: not a record at offset {offset}")
        if st == 4:
            if ln < _LOST_COUNT.size:
                raise ValueError("packed log batch: short LOST record")
            yield make_record(seq, ts, Stream.LOST, buf[offset + hl + 8 : end], False, _LOST_COUNT.unpack_from(buf, offset + hl)[0])
        elif st == 3:  # an exit is never partial, whatever its flags byte says (as in decode)
            yield make_record(seq, ts, Stream.EXIT, buf[offset + hl : end])
        else:
            rec = new(cls)
            set_seq(rec, seq)
            set_ts(rec, ts)
            set_stream(rec, kinds[st])
            set_data(rec, buf[offset + hl : end])
            set_partial(rec, partials[flags])
            set_lost(rec, 0)
            yield rec
        offset = end
