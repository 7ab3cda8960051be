"""A full disk: the writer keeps accepting, drops and counts, and reports the gap once space returns."""

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from observe.logread import LogReader
from observe.logstore import LogWriter
from observe.records import Stream, exit_payload


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.root
def test_disk_full_drops_counts_then_writes_lost(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"f" * 64 * 1024)
    w = LogWriter(small_disk / "run", segment_bytes=32 * 1024, max_segments=100)
    line = b"y" * 200
    i = 0
    while not w.dropped:  # ~190 KiB fit, then the disk refuses
        w.append_lines(Stream.STDOUT, [(line + b"%d" % i, False)])
        i += 1
        assert i < 5000
    assert isinstance(w.last_error, OSError) and w.last_error.errno == errno.ENOSPC
    for _ in range(20):  # still accepting, nothing raised, nothing blocks
        w.append_lines(Stream.STDERR, [(b"more", False), (b"and more", False)])
    dropped = w.dropped
    assert dropped >= 41 and w.total_dropped == dropped
    assert not w.flush_pending()  # a quiet workload: the timer retry fails too while full

    os.unlink(filler)  # space returns
    assert w.flush_pending() and w.dropped == 0
    last = w.append_lines(Stream.STDOUT, [(b"back", False)])
    assert w.append_exit(exit_payload(code=0))
    w.close()

    recs = list(LogReader(small_disk / "run").read())
    lost = [r for r in recs if r.stream is Stream.LOST]
    assert len(lost) == 1 and lost[0].lost == dropped
    covered = [s for r in recs for s in range(r.seq - r.span + 1, r.seq + 1)]
    assert covered == list(range(1, last + 2))
    assert recs[-2].data == b"back" and recs[-1].stream is Stream.EXIT
    kept = [r for r in recs if r.stream is Stream.STDOUT and r.data != b"back"]
    assert [r.data for r in kept] == [line + b"%d" % k for k in range(len(kept))]


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"f" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.root
def test_exit_record_survives_a_full_disk(small_disk: Path) -> None:
    w = LogWriter(small_disk / "run")
    fill(small_disk / "filler")
    w.append_lines(Stream.STDOUT, [(b"z" * 8000, False)])
    assert w.dropped == 1
    assert not w.append_exit(exit_payload(code=1))
    os.unlink(small_disk / "filler")
    w.close()  # retries what is pending
    recs = list(LogReader(small_disk / "run").read())
    assert [(r.stream, r.seq, r.lost) for r in recs] == [(Stream.LOST, 1, 1), (Stream.EXIT, 2, 0)]
