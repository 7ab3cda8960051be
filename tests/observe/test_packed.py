"""The packed form of a log batch: records encoded back to back, decoded by iter_packed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observe.records import Stream, encode, iter_packed, make_record

records = st.lists(
    st.tuples(
        st.integers(1, 2**40),
        st.integers(0, 2**62),
        st.sampled_from([Stream.STDOUT, Stream.STDERR, Stream.EXIT, Stream.LOST]),
        st.binary(max_size=300),
        st.booleans(),
        st.integers(1, 2**32),
    ).map(
        lambda t: make_record(
            t[0], t[1], t[2], t[3], t[4] and t[2] in (Stream.STDOUT, Stream.STDERR), t[5] if t[2] is Stream.LOST else 0
        )
    ),
    max_size=40,
)


@given(records)
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
