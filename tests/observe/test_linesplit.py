"""LineSplitter: exact reassembly, bounded pieces, partial flags where no newline ended a piece."""

from hypothesis import given, settings
from hypothesis import strategies as st

from observe.linesplit import LineSplitter


def reassemble(pieces: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(p + (b"" if partial else b"\n") for p, partial in pieces)


def split_all(data: bytes, cuts: list[int], max_line: int) -> list[tuple[bytes, bool]]:
    sp = LineSplitter(max_line)
    out: list[tuple[bytes, bool]] = []
    prev = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        out += sp.feed(data[prev:cut])
        prev = cut
    return out + sp.flush()


def test_lines_and_unterminated_rest() -> None:
    sp = LineSplitter()
    assert sp.feed(b"a\nbb\ncc") == [(b"a", False), (b"bb", False)]
    assert sp.feed(b"c\n\n") == [(b"ccc", False), (b"", False)]
    assert sp.feed(b"tail") == []
    assert sp.flush() == [(b"tail", True)]
    assert sp.flush() == []


def test_over_long_line_is_cut_into_partial_pieces() -> None:
    sp = LineSplitter(max_line=4)
    assert sp.feed(b"abcdefghij\n") == [(b"abcd", True), (b"efgh", True), (b"ij", False)]
    # exactly max_line bytes before the newline: one whole line, no empty extra record
    assert sp.feed(b"abcd") == []
    assert sp.feed(b"\n") == [(b"abcd", False)]


def test_ten_megabytes_without_newline_stays_bounded() -> None:
    sp = LineSplitter()
    blob = bytes(b for b in range(256) if b != 10) * (10 * 2**20 // 255)  # NULs, invalid UTF-8
    out = []
    for i in range(0, len(blob), 65536):
        out += sp.feed(blob[i : i + 65536])
        assert sp.pending <= 256 * 1024
    out += sp.flush()
    assert all(partial for _, partial in out)
    assert all(len(p) <= 256 * 1024 for p, _ in out)
    assert b"".join(p for p, _ in out) == blob


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400)
    | st.lists(st.sampled_from([b"\n", b"x", b"\x00", b"\xff", b"ab\n"])).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    max_line=st.integers(min_value=1, max_value=12),
)
def test_any_chunking_reassembles_to_the_input(data: bytes, cuts: list[int], max_line: int) -> None:
    pieces = split_all(data, cuts, max_line)
    assert reassemble(pieces) == data
    assert all(len(p) <= max_line for p, _ in pieces)
    # a piece is partial exactly when it is not followed by a newline in the input
    assert pieces == split_all(data, [], max_line)


@settings(max_examples=200)
@given(st.binary(max_size=400).map(lambda b: b.replace(b"\x01", b"\n")), st.lists(st.integers(0, 400), max_size=6),
       st.integers(1, 40))
def test_split_is_feed_without_tuples_for_whole_lines(data: bytes, cuts: list[int], max_line: int) -> None:
    a, b = LineSplitter(max_line), LineSplitter(max_line)
    prev = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        got = b.split(data[prev:cut])
        if got and isinstance(got[0], bytes):
            assert all(isinstance(x, bytes) for x in got)
            got = [(x, False) for x in got]
        assert got == a.feed(data[prev:cut])
        assert a.pending == b.pending
        prev = cut
