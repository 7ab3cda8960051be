"""Hypothesis strategies shared by the observe tests."""

from __future__ import annotations

from hypothesis import strategies as st

from observe.records import Stream, make_record

#: Up to 40 well-formed records of every stream kind (LOST with a count, partial only on stdout/stderr).
log_records = st.lists(
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
