"""Logs under load, through a real cellard: many followers, a slow follower, a full log filesystem.

Figures are printed (run with ``-s`` to see them), never asserted as timings; the only numeric
assertion is a generous RSS bound on cellard.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.cellar.v1 import logs_pb2, logs_pb2_grpc
from tests.agent.runtime.test_logs_rpc import (
    EXIT,
    LOST,
    STDOUT,
    Daemons,
    allocate,
    expected_numbers,
    follow_to_exit,
    lines,
    read,
    require_root,
    start,
)
from tests.support.cellard import Cellard, StartCellard

pytestmark = pytest.mark.root

FLOOD_LINES = 200_000
FOLLOWERS = 50
RSS_BOUND_KB = 400 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[Cellard]:
    require_root()
    daemons = Daemons()
    try:
        yield daemons.start()
    finally:
        daemons.close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_exit(ch: grpc.Channel, cell: str, exe: str, timeout: float = 120) -> logs_pb2.LogRecord:
    """Poll (tail=1, no follow: no reader while it runs) until the EXIT record is on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            records, _ = read(ch, cell_name=cell, executable_name=exe, tail=1)
            if records and records[-1].channel == EXIT:
                return records[-1]
        time.sleep(0.1)
    raise AssertionError(f"{cell}/{exe} did not exit within {timeout}s")


async def _follow(target: str, cell: str, exe: str, *, delay: float = 0.0, progress: list[int] | None = None
                  ) -> tuple[list[bytes], list[int], float]:
    """One follower on its own channel: (lines, seqs, monotonic time it saw EXIT)."""
    data: list[bytes] = []
    seqs: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = logs_pb2_grpc.LogsStub(channel).Read(
            logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=exe, follow=True))
        async for batch in call:
            for rec in batch.records:
                seqs.append(rec.seq)
                if rec.channel == STDOUT:
                    data.append(rec.data)
            if progress is not None:
                progress[0] = len(data)
            if delay:
                await asyncio.sleep(delay)
    return data, seqs, time.monotonic()


def test_fifty_followers_and_a_slow_one(daemon: Cellard) -> None:
    script = f"sleep 1; seq 1 {FLOOD_LINES}"
    target = "unix:" + daemon.socket
    with daemon.channel() as ch:
        # Baseline: the same workload with nobody reading.
        alone_cell = allocate(ch)
        start(ch, alone_cell, "flood", script)
        alone = wait_exit(ch, alone_cell, "flood").exit
        alone_s = (alone.ended_at_ns - alone.started_at_ns) / 1e9

        cell = allocate(ch)
        start(ch, cell, "flood", script)
    rss_samples: list[int] = []
    slow_progress = [0]

    async def scenario() -> tuple[list[tuple[list[bytes], list[int], float]], float]:
        async def sample_rss() -> None:
            while True:
                rss_samples.append(rss_kb(daemon.proc.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_rss())
        slow = asyncio.create_task(_follow(target, cell, "flood", delay=1.0, progress=slow_progress))
        t0 = time.monotonic()
        results = await asyncio.gather(*(_follow(target, cell, "flood") for _ in range(FOLLOWERS)))
        elapsed = time.monotonic() - t0
        assert not slow.done(), "the slow follower cannot have finished: it sleeps 1 s per batch"
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        return results, elapsed

    rss_before = rss_kb(daemon.proc.pid)
    results, elapsed = asyncio.run(scenario())
    want = expected_numbers(FLOOD_LINES)
    for data, seqs, _done in results:
        assert len(data) == FLOOD_LINES
        assert b"\n".join(data) == want
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    with daemon.channel() as ch:
        loaded = wait_exit(ch, cell, "flood").exit
        assert daemon.health() == "SERVING"
    loaded_s = (loaded.ended_at_ns - loaded.started_at_ns) / 1e9
    peak = max(rss_samples)
    print(f"\nload: workload alone {alone_s:.2f} s, with {FOLLOWERS}+1 followers {loaded_s:.2f} s "
          f"(ratio {loaded_s / alone_s:.2f}; includes a 1 s sleep); {FOLLOWERS} followers done in {elapsed:.2f} s "
          f"({FOLLOWERS * FLOOD_LINES / elapsed:,.0f} lines/s total); slow follower at {slow_progress[0]} lines "
          f"when they were done; cellard RSS {rss_before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB")
    assert slow_progress[0] < FLOOD_LINES
    assert peak < RSS_BOUND_KB


# ---------------------------------------------------------------- the log filesystem fills up


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted (lazily if something still holds it) at the end."""
    require_root()
    mnt = Path(tempfile.mkdtemp(prefix="cellar-tfs-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        os.rmdir(mnt)


def test_log_filesystem_full(tiny_fs: Path, cellard_factory: StartCellard) -> None:
    # tiny_fs is set up before cellard_factory, so it is torn down after the daemon and supervisor.
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(b"\0" * 128 * 1024)
    daemon = cellard_factory({"paths": {"log_dir": str(tiny_fs / "logs")}})
    # One echo per line: the supervisor reads small chunks, so the disk fills record by record
    # (a `seq` flood arrives in ~1 MiB pipe reads that the writer refuses whole: everything LOST).
    n = 30_000  # ~29 bytes per record on disk: ~870 KB for ~380 KB free
    with daemon.channel() as ch:
        cell = allocate(ch)
        start(ch, cell, "flood", f"i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); done; echo done >&2")
        supervisor_log = Path(daemon.config["paths"]["state_dir"]) / "supervisor.log"
        deadline = time.monotonic() + 60
        while "exe.exited" not in (text := supervisor_log.read_text(errors="replace")):
            assert time.monotonic() < deadline, "the workload did not exit"
            time.sleep(0.1)
        assert "capture.lines_dropped" in text, "the supervisor did not log the disk-full condition"
        assert daemon.health() == "SERVING"
        # Before space returns: the records up to the fill.
        early, _ = read(ch, cell_name=cell, executable_name="flood")
        first_lost = next((i for i, r in enumerate(early) if r.channel == LOST), len(early))
        early_lines = lines(early[:first_lost])
        assert early_lines and b"\n".join(early_lines) == expected_numbers(len(early_lines))
        exit_pending = not early or early[-1].channel != EXIT
        # Free space: the supervisor writes the LOST record and then the EXIT record.
        ballast.unlink()
        records = follow_to_exit(ch, cell, "flood")
        assert daemon.health() == "SERVING"
    assert records[-1].exit.code == 0, "the workload ran to completion"
    lost = [r for r in records if r.channel == LOST]
    assert lost and all(r.lost_count > 0 for r in lost)
    got = lines(records)
    total = len(got) + sum(r.lost_count for r in lost)
    # Every line is either stored or counted as lost (the stderr "done" line included).
    assert total == n + 1, (len(got), [r.lost_count for r in lost])
    seqs = [r.seq for r in records]
    assert seqs == sorted(seqs)
    expect = records[0].seq
    for r in records:  # a LOST record's seq is the last one it covers
        assert r.seq == expect + (r.lost_count - 1 if r.channel == LOST else 0)
        expect = r.seq + 1
    stored = [x for x in got if x != b"done"]
    assert stored[: len(early_lines)] == early_lines
    print(f"\ndisk full: {len(early_lines)} lines stored up to the fill, {len(got)} in all, "
          f"{sum(r.lost_count for r in lost)} reported lost in {len(lost)} LOST record(s); "
          f"EXIT record pending until space was freed: {exit_pending}")
    text = supervisor_log.read_text(errors="replace")
    assert "capture.lines_dropped" in text
