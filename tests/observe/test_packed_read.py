"""Packed reads pass stored bytes through: byte for byte what encoding the decoded records gives."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observe.logread import LogReader, Position
from observe.logstore import LogWriter, segment_name
from observe.records import LogRecord, Stream, encode, exit_payload, iter_packed, make_record, segment_header


def encoded(records: Iterable[LogRecord]) -> bytes:
    return b"".join(encode(r) for r in records)


def packed(reader: LogReader, after_seq: int = 0, max_bytes: int = 1 << 20) -> bytes:
    """The packed history, checking that each piece's seq is the seq of its last record."""
    out = []
    for data, seq in reader.read_packed(after_seq=after_seq, max_bytes=max_bytes):
        assert data and list(iter_packed(data))[-1].seq == seq
        out.append(data)
    return b"".join(out)


def assert_same(reader: LogReader, after_seq: int = 0, max_bytes: int = 1 << 20) -> None:
    assert packed(reader, after_seq, max_bytes) == encoded(reader.read(after_seq=after_seq))


def write_run(d: Path, batches: list[list[tuple[bytes, bool]]], *, segment_bytes: int = 4096,
              max_segments: int = 1000, exit_code: int | None = 0) -> int:
    with LogWriter(d, segment_bytes=segment_bytes, max_segments=max_segments, clock=iter(range(10**6)).__next__) as w:
        for i, lines in enumerate(batches):
            w.append_lines(Stream.STDERR if i % 3 == 2 else Stream.STDOUT, lines)
        if exit_code is not None:
            w.append_exit(exit_payload(code=exit_code))
        return w.next_seq - 1


lines_st = st.lists(st.tuples(st.binary(max_size=700), st.booleans()), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(lines_st, max_size=30), data=st.data(), exited=st.booleans())
def test_history_identical_from_any_cursor(batches: list[list[tuple[bytes, bool]]], data: st.DataObject,
                                           exited: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        last = write_run(d, batches, exit_code=0 if exited else None)
        reader = LogReader(d)
        after = data.draw(st.integers(0, last + 1), label="after_seq")
        max_bytes = data.draw(st.sampled_from([1, 100, 5000, 1 << 20]), label="max_bytes")
        assert_same(reader, after, max_bytes)
        if exited and after < last:
            assert list(iter_packed(packed(reader, after)))[-1].stream is Stream.EXIT


def test_every_cursor_of_a_multi_segment_run(tmp_path: Path) -> None:
    d = tmp_path / "run"
    last = write_run(d, [[(b"line %d" % i, i % 7 == 0) for i in range(k, k + 13)] for k in range(0, 400, 13)])
    reader = LogReader(d)
    assert len(reader.segments()) > 1
    for after in range(last + 2):
        assert_same(reader, after)


def test_rotated_history_starts_with_the_same_lost_record(tmp_path: Path) -> None:
    d = tmp_path / "run"
    write_run(d, [[(b"x" * 90, False)] * 10 for _ in range(200)], max_segments=3)
    reader = LogReader(d)
    first = reader.segments()[0]
    assert first > 1
    for after in (0, 5, first - 2, first - 1, first, first + 3):
        assert_same(reader, after)
    head = next(iter_packed(packed(reader)))
    assert head.stream is Stream.LOST and head.lost == first - 1


def test_stored_lost_record_trimmed_at_the_cursor(tmp_path: Path) -> None:
    """A disk-full LOST record (seqs 2..6) is trimmed exactly as the decoded path trims it."""
    d = tmp_path / "run"
    d.mkdir()
    recs = [
        make_record(1, 10, Stream.STDOUT, b"one"),
        make_record(6, 11, Stream.LOST, b"disk-full", lost=5),
        make_record(7, 12, Stream.STDERR, b"seven", partial=True),
        make_record(8, 13, Stream.EXIT, b'{"code":0}'),
    ]
    (d / segment_name(1)).write_bytes(segment_header(1) + encoded(recs))
    reader = LogReader(d)
    for after in range(10):
        assert_same(reader, after)
    trimmed = list(iter_packed(packed(reader, 3)))
    assert (trimmed[0].seq, trimmed[0].lost) == (6, 3)


def test_torn_tail_then_completed(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    whole = encoded(make_record(i, i, Stream.STDOUT, b"l%d" % i) for i in range(1, 6))
    nxt = encode(make_record(6, 6, Stream.STDOUT, b"sixth line"))
    path = d / segment_name(1)
    path.write_bytes(segment_header(1) + whole + nxt[:9])
    raw, dec = Position(d, 0, None), Position(d, 0, None)
    try:
        got_raw, _ = raw.step_raw(1 << 30)
        got_dec, _ = dec.step(1 << 30)
        assert b"".join(got_raw) == encoded(got_dec) == whole
        with open(path, "ab") as f:
            f.write(nxt[9:])
        got_raw, moved = raw.step_raw(1 << 30)
        got_dec, _ = dec.step(1 << 30)
        assert moved and b"".join(got_raw) == encoded(got_dec) == nxt
        assert raw.nxt == dec.nxt == 7 and not raw.done
    finally:
        raw.close()
        dec.close()


def test_follower_behind_rotation_in_lockstep(tmp_path: Path) -> None:
    """Raw and decoded positions stepped at the same moments see the same bytes, LOST gap included."""
    d = tmp_path / "run"
    w = LogWriter(d, segment_bytes=4096, max_segments=2)
    raw, dec = Position(d, 0, None), Position(d, 0, None)
    got_raw: list[bytes] = []
    got_dec: list[LogRecord] = []

    def step() -> None:
        got_raw.extend(raw.step_raw(1 << 30)[0])
        got_dec.extend(dec.step(1 << 30)[0])

    try:
        w.append_lines(Stream.STDOUT, [(b"first", False)])
        step()  # both hold segment 1 open from here on
        for i in range(3000):
            w.append_lines(Stream.STDOUT, [(b"x%05d" % i, False)])
            if i in (10, 1500):
                step()
        w.append_exit(exit_payload(code=0))
        w.close()
        while not (raw.done and dec.done):
            step()
    finally:
        raw.close()
        dec.close()
    assert b"".join(got_raw) == encoded(got_dec)
    assert any(r.stream is Stream.LOST for r in got_dec)
    assert got_dec[-1].stream is Stream.EXIT


def test_step_raw_refuses_a_stream_filter(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Position(tmp_path, 0, frozenset({1})).step_raw(100)


def test_follow_packed_while_writing(tmp_path: Path) -> None:
    d = tmp_path / "run"

    async def main() -> list[tuple[bytes, int]]:
        async def follow() -> list[tuple[bytes, int]]:
            return [p async for p in LogReader(d).follow_packed(after_seq=3, poll_interval=0.001, max_bytes=500)]

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.01)  # the directory does not exist yet
        w = LogWriter(d, segment_bytes=4096, max_segments=1000)
        for i in range(300):
            w.append_lines(Stream.STDOUT if i % 2 else Stream.STDERR, [(b"l%d-%d" % (i, k), k == 3) for k in range(7)])
            if i % 10 == 0:
                await asyncio.sleep(0.002)
        w.append_exit(exit_payload(code=3))
        w.close()
        return await asyncio.wait_for(task, 10)

    pieces = asyncio.run(main())
    for data, seq in pieces:
        assert list(iter_packed(data))[-1].seq == seq
    reader = LogReader(d)
    assert b"".join(p for p, _ in pieces) == encoded(reader.read(after_seq=3))
    assert pieces[-1][1] == 2101
