"""The bulk fast paths of the log path agree with the simple paths they shortcut, on any input.

- ``LogWriter.append_lines`` with plain bytes (one map builds every header) writes the same files as
  the per-line loop that ``(line, partial)`` pairs take;
- ``scan``'s tight loop over plain lines stops, trims and reports exactly as ``decode`` does;
- ``PackedBatch`` (columns, no object per line) sees what ``iter_packed`` yields, and refuses what it refuses;
- ``Capture``'s several reads per wake-up store a pipe's bytes exactly, in order;
- the C loops of ``observe._records`` (built with the package) answer exactly what their Python
  fallbacks answer, on any bytes, and refuse hostile ints instead of wrapping around.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells.capture import READ_SIZE, Capture
from observe import records
from observe.linesplit import LineSplitter
from observe.logread import LogReader
from observe.logstore import LogWriter
from observe.records import (
    CORRUPT,
    END,
    MORE,
    LogRecord,
    PackedBatch,
    Stream,
    decode,
    encode,
    exit_payload,
    iter_packed,
    make_record,
    scan,
)
from tests.observe.strategies import log_records

line_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"."))
batches_st = st.lists(st.tuples(st.sampled_from([Stream.STDOUT, Stream.STDERR]), st.lists(line_bytes, min_size=1,
                                                                                          max_size=40)), max_size=25)


@settings(max_examples=80, deadline=None)
@given(batches=batches_st, segment_bytes=st.sampled_from([4096, 5000, 1 << 20]))
def test_append_plain_bytes_writes_what_pairs_write(batches: list[tuple[Stream, list[bytes]]],
                                                   segment_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for name, form in (("pairs", lambda b: [(x, False) for x in b]), ("bytes", lambda b: b)):
            dirs[name] = Path(tmp) / name
            with LogWriter(dirs[name], segment_bytes=segment_bytes, max_segments=10**6,
                           clock=iter(range(1, 10**6)).__next__) as w:
                for stream, lines in batches:
                    assert w.append_lines(stream, form(lines)) == w.next_seq - 1
                w.append_exit(exit_payload(code=0))
        names = sorted(os.listdir(dirs["pairs"]))
        assert names == sorted(os.listdir(dirs["bytes"]))
        for seg in names:
            assert (dirs["pairs"] / seg).read_bytes() == (dirs["bytes"] / seg).read_bytes()
        got = [(r.stream, r.data) for r in LogReader(dirs["bytes"]).read()][:-1]
        assert got == [(stream, x) for stream, lines in batches for x in lines]


# -- scan against decode -----------------------------------------------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> tuple[bytes, int]:
    """Records of one run as stored (lines, LOST gaps, maybe an EXIT), maybe damaged; and the first seq."""
    first = draw(st.integers(1, 2**40))
    seq = first - 1
    recs = []
    for kind in draw(st.lists(st.sampled_from("lllllpgx"), max_size=40)):
        if kind == "g":
            lost = draw(st.integers(1, 5))
            seq += lost
            recs.append(make_record(seq, seq, Stream.LOST, b"disk-full", lost=lost))
            continue
        seq += 1
        if kind == "x":
            recs.append(make_record(seq, seq, Stream.EXIT, b'{"code":0}'))
            break
        stream = draw(st.sampled_from([Stream.STDOUT, Stream.STDERR]))
        recs.append(make_record(seq, seq, stream, draw(line_bytes), kind == "p"))
    buf = bytearray(b"".join(encode(r) for r in recs))
    damage = draw(st.sampled_from(["none", "none", "flip", "cut"]))
    if buf and damage == "flip":
        buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif buf and damage == "cut":
        del buf[draw(st.integers(0, len(buf) - 1)):]
    return bytes(buf), first


@settings(max_examples=400, deadline=None)
@given(run=runs(), data=st.data())
def test_scan_stops_and_trims_like_decode(run: tuple[bytes, int], data: st.DataObject) -> None:
    buf, first = run
    want = data.draw(st.integers(first, first + 60), label="want")
    s = scan(buf, 0, first, want=want)
    d = decode(buf, 0, first, want=want)
    assert (s.offset, s.next_seq, s.status, s.need, s.last_ts) == (d.offset, d.next_seq, d.status, d.need, d.last_ts)
    # Compared decoded: a flipped bit in an unused header byte survives a pass-through, not a re-encode.
    assert list(iter_packed(s.head + buf[s.start : s.offset])) == d.records


@settings(max_examples=300, deadline=None)
@given(run=runs(), limit=st.integers(1, 600))
def test_scan_in_limited_steps_is_one_scan(run: tuple[bytes, int], limit: int) -> None:
    buf, first = run
    whole = scan(buf, 0, first)
    pieces, offset, nxt = [], 0, first
    while True:
        s = scan(buf, offset, nxt, limit=limit)
        pieces.append(buf[s.start : s.offset])
        if s.status != MORE:
            break
        assert s.offset - s.start >= limit  # stopped at the first record that reached the limit
        offset, nxt = s.offset, s.next_seq
    assert b"".join(pieces) == buf[whole.start : whole.offset]
    assert (s.offset, s.next_seq, s.status) == (whole.offset, whole.next_seq, whole.status)


def test_scan_of_a_flood_with_a_bad_seq_in_the_middle() -> None:
    recs = [make_record(i, i, Stream.STDOUT, b"line %d" % i) for i in range(1, 1001)]
    recs[500] = make_record(999_999, 501, Stream.STDOUT, b"out of order")
    buf = b"".join(encode(r) for r in recs)
    s = scan(buf, 0, 1)
    assert (s.status, s.next_seq) == (CORRUPT, 501)
    assert buf[s.start : s.offset] == b"".join(encode(r) for r in recs[:500])
    torn = scan(buf[: len(encode(recs[0])) * 3 + 5], 0, 1)
    assert (torn.status, torn.next_seq, torn.need) == (END, 4, 24)


# -- the C loops against their Python fallbacks -------------------------------------------------------

try:
    from observe import _records  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: only the Python loops run, and the tests above cover them
    _records = None
needs_c = pytest.mark.skipif(_records is None, reason="observe._records not built (no C compiler)")


@needs_c
def test_the_c_loops_are_the_ones_in_use() -> None:
    assert records._run is _records.run and records.frame is _records.frame


@needs_c
@settings(max_examples=400, deadline=None)
@given(run=runs(), data=st.data())
def test_c_run_walks_what_the_python_loop_walks(run: tuple[bytes, int], data: st.DataObject) -> None:
    buf, first = run
    offset = data.draw(st.integers(0, len(buf) + 30), label="offset")
    stop = data.draw(st.integers(0, len(buf) + 30), label="stop")
    nxt = data.draw(st.one_of(st.just(first), st.integers(0, 2**64 + 5)), label="nxt")
    assert _records.run(buf, offset, stop, nxt) == records._run_py(buf, offset, stop, nxt)


@needs_c
def test_c_run_at_the_end_of_the_seq_space() -> None:
    top = 2**64 - 1
    buf = encode(make_record(top, 1, Stream.STDOUT, b"x"))
    assert _records.run(buf, 0, len(buf), top) == (0, top, -1)  # not wrapped to 0: the general path decides
    assert _records.run(buf, 0, len(buf), 2**64) == (0, 2**64, -1)
    assert _records.run(buf, 0, len(buf), -1) == (0, -1, -1)
    s = scan(buf + buf, 0, top)
    d = decode(buf + buf, 0, top)
    assert (s.offset, s.next_seq, s.status) == (d.offset, d.next_seq, d.status) == (len(buf), 2**64, CORRUPT)


@needs_c
@given(lines=st.lists(line_bytes, max_size=50), stream=st.sampled_from([Stream.STDOUT, Stream.STDERR]),
       seq=st.integers(1, 2**63), ts=st.integers(0, 2**64 - 1))
def test_c_frame_builds_what_the_python_frame_builds(lines: list[bytes], stream: Stream, seq: int, ts: int) -> None:
    tag = 0xC5 | stream << 8
    framed = _records.frame(lines, tag, seq, ts)
    assert framed == records._frame_py(lines, tag, seq, ts)
    assert list(iter_packed(framed)) == [make_record(seq + i, ts, stream, x) for i, x in enumerate(lines)]


@needs_c
@pytest.mark.parametrize("args", [
    ([b"x"], 2**32, 1, 1), ([b"x"], -1, 1, 1), ([b"x", b"y"], 0xC5, 2**64 - 1, 1), ([b"x"], 0xC5, 1, 2**64),
    ([b"x"], 0xC5, -5, 1),
])
def test_c_frame_refuses_ints_out_of_range(args: tuple[list[bytes], int, int, int]) -> None:
    with pytest.raises(OverflowError):
        _records.frame(*args)


@needs_c
def test_c_frame_refuses_what_is_not_a_list_of_bytes() -> None:
    with pytest.raises(TypeError):
        _records.frame([b"x", "y"], 0xC5, 1, 1)
    with pytest.raises(TypeError):
        _records.frame((b"x",), 0xC5, 1, 1)


chunks_st = st.lists(st.tuples(st.sampled_from([Stream.STDOUT, Stream.STDERR]),
                                st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"\n"))), max_size=30)


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=chunks_st, max_line=st.sampled_from([1, 7, 64, 256 * 1024]), segment_bytes=st.sampled_from([4096, 1 << 20]))
def test_append_chunk_writes_what_splitting_then_append_lines_writes(
    chunks: list[tuple[Stream, bytes]], max_line: int, segment_bytes: int
) -> None:
    """Pipe bytes framed by the C split (falling back where Capture falls back) store exactly what
    LineSplitter + append_lines store: same files, byte for byte (one clock: same timestamps)."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for name in ("split", "chunk"):
            dirs[name] = Path(tmp) / name
            splitters = {s: LineSplitter(max_line) for s in (Stream.STDOUT, Stream.STDERR)}
            with LogWriter(dirs[name], segment_bytes=segment_bytes, max_segments=10**6, clock=lambda: 7) as w:
                for stream, chunk in chunks:
                    splitter = splitters[stream]
                    if name == "chunk" and chunk:
                        data = splitter.prefixed(chunk)
                        done = w.append_chunk(stream, data, max_line)
                        if done is not None:
                            splitter.hold(data[done[1]:])
                            continue
                    lines = splitter.split(chunk)
                    if lines:
                        w.append_lines(stream, lines)
                for stream, splitter in splitters.items():
                    if rest := splitter.flush():
                        w.append_lines(stream, rest)
                w.append_exit(exit_payload(code=0))
        names = sorted(os.listdir(dirs["split"]))
        assert names == sorted(os.listdir(dirs["chunk"]))
        for seg in names:
            assert (dirs["split"] / seg).read_bytes() == (dirs["chunk"] / seg).read_bytes()


@needs_c
def test_split_frame_refuses_hostile_ints_and_leaves_long_lines_to_the_general_path() -> None:
    assert _records.split_frame(b"abc\nde", 2, 0xC5, 1, 1, 1 << 20) is None  # a line above max_line
    assert _records.split_frame(b"ab\ndefg", 2, 0xC5, 1, 1, 1 << 20) is None  # the rest above it
    assert _records.split_frame(b"ab\n", 2, 0xC5, 1, 1, 10) is None  # no room in the segment
    assert _records.split_frame(b"ab", 2, 0xC5, 1, 1, 10) == (b"", 0, 0)
    for args in ((b"a\n", 0, 0xC5, 1, 1, 99), (b"a\n", 2, 2**32, 1, 1, 99), (b"a\n", 2, 0xC5, 2**63, 1, 99),
                 (b"a\n", 2, 0xC5, -1, 1, 99), (b"a\n", 2, 0xC5, 1, 2**64, 99)):
        with pytest.raises(OverflowError):
            _records.split_frame(*args)


# -- PackedBatch against iter_packed -----------------------------------------------------------------

@given(log_records)
def test_packed_batch_sees_what_iter_packed_yields(recs: list[LogRecord]) -> None:
    batch = PackedBatch(b"".join(encode(r) for r in recs))
    assert list(batch.records()) == recs == list(iter_packed(b"".join(encode(r) for r in recs)))
    assert len(batch) == len(recs)
    assert batch.seqs == [r.seq for r in recs]
    assert batch.streams == bytes(r.stream for r in recs)
    assert batch.flags == bytes(int(r.partial) for r in recs)
    for k in range(len(recs) + 1):
        assert list(batch.records(k)) == recs[k:]
    for stream in (Stream.STDOUT, Stream.STDERR):
        assert batch.only(stream) == (bool(recs) and all(r.stream is stream and not r.partial for r in recs))


@given(st.binary(min_size=1, max_size=200) | log_records.map(lambda rs: b"".join(encode(r) for r in rs)[:-1]))
def test_packed_batch_refuses_what_iter_packed_refuses(buf: bytes) -> None:
    try:
        expected = list(iter_packed(buf))
    except ValueError:
        expected = None
    try:
        got = list(PackedBatch(buf).records())
    except ValueError:
        got = None
    assert got == expected


# -- Capture: a pipe to the log store ----------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 3 * READ_SIZE), min_size=1, max_size=12), tail=st.booleans())
def test_capture_stores_every_byte_in_order(sizes: list[int], tail: bool) -> None:
    """Writes of any size (several reads per wake-up, lines cut anywhere) come back exactly."""
    out = b"".join(b"%d:" % i + b"x" * (n - len(b"%d:" % i) - 1) + b"\n" if n > 8 else b"\n" * n
                   for i, n in enumerate(sizes)) + (b"no newline at the end" if tail else b"")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_capture(Path(tmp) / "run", out))
        recs = list(LogReader(Path(tmp) / "run").read())
    stored = b"".join(r.data + (b"" if r.partial else b"\n") for r in recs if r.stream is Stream.STDOUT)
    assert stored == out
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))


async def _capture(directory: Path, payload: bytes) -> None:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    os.close(err_w)

    def write() -> None:
        with contextlib.closing(os.fdopen(out_w, "wb", buffering=0)) as f:
            f.write(payload)

    with LogWriter(directory, segment_bytes=1 << 20, max_segments=10**6) as w:
        cap = Capture(w, {Stream.STDOUT: out_r, Stream.STDERR: err_r}, "test/capture")
        writer = threading.Thread(target=write)
        writer.start()
        try:
            await asyncio.wait_for(asyncio.shield(cap.closed), 60)
        finally:
            cap.close()  # a no-op after EOF; on failure it unblocks the writer
            writer.join()
