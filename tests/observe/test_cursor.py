"""Cursors: what we issue decodes back; anything else is InvalidCursor and nothing worse."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observe.errors import InvalidCursor
from observe.logread import Cursor


@given(st.integers(0, 10**18 - 1), st.integers(0, 2**63 - 1))
def test_round_trip(run: int, seq: int) -> None:
    c = Cursor(run, seq)
    assert Cursor.decode(c.encode()) == c


@given(st.text(max_size=80) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_garbage_is_invalid_cursor(text: str) -> None:
    try:
        c = Cursor.decode(text)
    except InvalidCursor:
        return
    assert c.encode() == text  # only canonical cursors we could have issued are accepted


@pytest.mark.parametrize(
    "text",
    ["", "v1.", "v1.1", "v1.01.2", "v1.1.-2", "v2.1.2", "v1.1.2 ", "v1.1.99999999999999999999", "v1.1.٣"],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.decode(text)


def test_rejects_non_str() -> None:
    with pytest.raises(InvalidCursor):
        Cursor.decode(b"v1.1.2")  # type: ignore[arg-type]
