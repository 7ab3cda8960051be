"""The packed form of a log batch: records encoded back to back, decoded by iter_packed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observe.records import Stream, encode, iter_packed, make_record
from tests.observe.strategies import log_records


@given(log_records)
def test_round_trip(recs: list) -> None:  # type: ignore[type-arg]
    assert list(iter_packed(b"".join(encode(r) for r in recs))) == recs


@given(st.binary(min_size=1, max_size=200))
def test_garbage_raises_value_error_only(buf: bytes) -> None:
    with contextlib.suppress(ValueError):
        list(iter_packed(buf))


def test_truncated_batch_is_refused() -> None:
    buf = encode(make_record(1, 5, Stream.STDOUT, b"hello"))
    with pytest.raises(ValueError):
        list(iter_packed(buf[:-1]))


def test_an_exit_record_is_never_partial() -> None:
    """Hypothesis found it: a flags byte with the partial bit on an EXIT record (only a corrupt or
    foreign store writes one) read as partial through iter_packed but not through decode."""
    header = bytes([0xC5, 3, 1, 0]) + (0).to_bytes(4, "little") + (1).to_bytes(8, "little") + (1).to_bytes(8, "little")
    [rec] = list(iter_packed(header))
    assert rec.stream is Stream.EXIT and rec.partial is False
