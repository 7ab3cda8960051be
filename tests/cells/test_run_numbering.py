"""Run numbers of an executable, and output a writer cannot store never vanishing silently.

A run number names the run's log directory, and logs outlive the cell (a freed cell's logs stay
readable) and the supervisor's state. So a new run continues after the runs on disk: reusing a number
would append to a finished run (every line refused) or, on a failed start, delete the old run's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from cells.capture import Capture
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.spec import CellSpec, ExecutableSpec
from cells.state import ExecutableInfo, ExecutableState
from observe.errors import RunFinished
from observe.logread import LogReader
from observe.logstore import LogWriter, list_runs, run_dir
from observe.records import LogRecord, Stream, exit_payload
from tests.support.cleanup import supervisor_pids
from tests.support.timeouts import scaled

# -- next_run: pure ----------------------------------------------------------------------------------


def test_next_run_continues_after_the_runtime_and_the_disk(tmp_path: Path) -> None:
    from observe.logstore import next_run

    assert next_run(tmp_path, "web", "api") == 1
    assert next_run(tmp_path, "web", "api", 4) == 5  # the runtime's own count (logs purged)
    for run in (1, 2, 7):
        run_dir(tmp_path, "web", "api", run).mkdir(parents=True)
    (run_dir(tmp_path, "web", "api", 1).parent / "notes").mkdir()  # not a run
    assert next_run(tmp_path, "web", "api") == 8  # a freed cell / a supervisor without state
    assert next_run(tmp_path, "web", "api", 3) == 8
    assert next_run(tmp_path, "web", "api", 9) == 10
    assert next_run(tmp_path, "web", "other") == 1
    assert next_run(tmp_path, "web/child", "api") == 1


# -- through a supervisor (root, real cgroups) -------------------------------------------------------


def arun(config: RuntimeConfig, body: Any) -> Any:
    async def main() -> Any:
        return await body(await RuntimeClient.connect(config))

    return asyncio.run(main())


async def wait_ended(c: RuntimeClient, cell: str, name: str) -> ExecutableInfo:
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        for exe in (await c.inspect(cell)).executables:
            if exe.name == name and exe.state in (ExecutableState.EXITED, ExecutableState.LOST):
                return exe
        await asyncio.sleep(0.02)
    raise AssertionError(f"{cell}/{name} did not exit")


def stored(config: RuntimeConfig, cell: str, name: str, run: int) -> list[tuple[Stream, Any]]:
    """Every record of one run: lines as text, EXIT as its exit code, LOST as its count."""
    out: list[tuple[Stream, Any]] = []
    for rec in LogReader(run_dir(Path(config.log_dir), cell, name, run)).read():
        if rec.stream is Stream.EXIT:
            out.append((rec.stream, rec.exit_info()["code"]))
        elif rec.stream is Stream.LOST:
            out.append((rec.stream, rec.lost))
        else:
            out.append((rec.stream, rec.data.decode()))
    return out


def one_run(config: RuntimeConfig, cell: str, text: str, code: int, allocate: bool = True) -> ExecutableInfo:
    async def body(c: RuntimeClient) -> ExecutableInfo:
        if allocate:
            await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "x", command=f"echo {text}; echo {text}-err >&2; exit {code}"))
        return await wait_ended(c, cell, "x")

    info: ExecutableInfo = arun(config, body)
    return info


def free(config: RuntimeConfig, cell: str) -> None:
    arun(config, lambda c: c.free(cell, grace_s=0))


def expected(text: str, code: int) -> set[tuple[Stream, Any]]:
    return {(Stream.STDOUT, text), (Stream.STDERR, f"{text}-err"), (Stream.EXIT, code)}


@pytest.mark.root
def test_reallocated_cell_continues_the_run_numbers_across_a_supervisor_restart(
    runtime_config: RuntimeConfig,
) -> None:
    cfg = runtime_config
    assert one_run(cfg, "a", "first", 3).run == 1
    free(cfg, "a")
    second = one_run(cfg, "a", "second", 4)  # same supervisor, the cell record is gone
    assert second.run == 2 and second.exit is not None and second.exit.code == 4
    free(cfg, "a")
    (pid,) = supervisor_pids(cfg)
    os.kill(pid, signal.SIGKILL)  # the next connect starts a supervisor that knows nothing of "a"
    deadline = time.monotonic() + scaled(10)
    while supervisor_pids(cfg) and time.monotonic() < deadline:
        time.sleep(0.02)
    third = one_run(cfg, "a", "third", 5)
    assert third.run == 3 and third.exit is not None and third.exit.code == 5
    free(cfg, "a")
    assert list_runs(Path(cfg.log_dir), "a", "x") == [1, 2, 3]
    for run, (text, code) in enumerate([("first", 3), ("second", 4), ("third", 5)], start=1):
        records = stored(cfg, "a", "x", run)
        assert set(records) == expected(text, code) and len(records) == 3, (run, records)
        assert records[-1][0] is Stream.EXIT


@pytest.mark.root
def test_a_run_on_disk_the_state_does_not_know_is_never_reopened(runtime_config: RuntimeConfig) -> None:
    """A live cell whose saved state lags its logs (a save that failed): the disk wins."""
    cfg = runtime_config
    assert one_run(cfg, "b", "first", 0).run == 1
    with LogWriter(run_dir(Path(cfg.log_dir), "b", "x", 2)) as w:  # a finished run 2 unknown to the state
        w.append_lines(Stream.STDOUT, [b"orphan"])
        w.append_exit(exit_payload(code=9, started_at_ns=1, ended_at_ns=2))
    third = one_run(cfg, "b", "third", 7, allocate=False)
    assert third.run == 3 and third.exit is not None and third.exit.code == 7
    assert set(stored(cfg, "b", "x", 3)) == expected("third", 7)
    assert stored(cfg, "b", "x", 2) == [(Stream.STDOUT, "orphan"), (Stream.EXIT, 9)]
    # A failed start leaves no run directory behind, and never touches another run's.
    async def bad(c: RuntimeClient) -> None:
        with contextlib.suppress(Exception):
            await c.start(ExecutableSpec("b", "x", argv=("/no/such/binary",)))

    arun(cfg, bad)
    assert list_runs(Path(cfg.log_dir), "b", "x") == [1, 2, 3]
    assert set(stored(cfg, "b", "x", 3)) == expected("third", 7)
    free(cfg, "b")


# -- Capture: a writer that cannot take the lines ----------------------------------------------------


class FailingOnBoom(LogWriter):
    """``append_lines`` raises (a bug, an unforeseen error) for the calls whose data says so."""

    def append_lines(self, stream: Stream, lines: Any) -> int:
        if any(b"boom" in (x if isinstance(x, bytes) else x[0]) for x in lines):
            raise RuntimeError("writer bug")
        return super().append_lines(stream, lines)

    def append_chunk(self, stream: Stream, data: bytes, max_line: int) -> tuple[int, int] | None:
        if b"boom" in data:  # Capture's fast path raises alike, before writing: it falls back to append_lines
            raise RuntimeError("writer bug")
        return super().append_chunk(stream, data, max_line)


async def feed(writer: LogWriter, chunks: list[bytes]) -> None:
    """Write ``chunks`` into a Capture's stdout pipe one by one, each read before the next is written."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    os.close(err_w)
    cap = Capture(writer, {Stream.STDOUT: out_r, Stream.STDERR: err_r}, "test/failing")
    try:
        for chunk in chunks:
            before = cap.lines + cap.refused
            os.write(out_w, chunk)
            deadline = time.monotonic() + scaled(10)
            while cap.lines + cap.refused == before:
                assert time.monotonic() < deadline, "the capture did not drain the pipe"
                await asyncio.sleep(0.005)
        os.close(out_w)
        out_w = -1
        await asyncio.wait_for(asyncio.shield(cap.closed), scaled(10))
    finally:
        if out_w >= 0:
            os.close(out_w)
        cap.close()


def records_of(directory: Path) -> list[LogRecord]:
    return list(LogReader(directory).read())


def test_lines_a_writer_refuses_become_a_lost_record_and_an_error_log(tmp_path: Path) -> None:
    writer = FailingOnBoom(tmp_path / "run")
    with structlog.testing.capture_logs() as logs:
        asyncio.run(feed(writer, [b"one\n", b"boom\nlost too\n", b"boom again\n", b"two\n"]))
    writer.append_exit(exit_payload(code=0, started_at_ns=1, ended_at_ns=2))
    writer.close()
    recs = records_of(tmp_path / "run")
    assert [(r.seq, r.stream, r.data if r.stream is not Stream.LOST else r.lost) for r in recs] == [
        (1, Stream.STDOUT, b"one"),
        (4, Stream.LOST, 3),  # seqs 2-4: the three lines of the two refused reads
        (5, Stream.STDOUT, b"two"),
        (6, Stream.EXIT, recs[-1].data),
    ]
    assert recs[1].data == b"writer-error"  # the LOST record's reason
    failures = [e for e in logs if e["event"] == "capture.append_failed"]
    assert len(failures) == 1, logs  # once per episode, not once per read
    assert failures[0]["log_level"] == "error" and "writer bug" in failures[0]["error"]
    (summary,) = [e for e in logs if e["event"] == "capture.lines_lost"]  # at EOF: the run's total
    assert (summary["lines"], summary["refused"]) == (3, 3)


def test_a_quiet_workload_still_gets_its_lost_record(tmp_path: Path) -> None:
    """Nothing written after the failure: flush_pending (the supervisor's timer, the exit path) reports it."""
    writer = FailingOnBoom(tmp_path / "run")
    asyncio.run(feed(writer, [b"one\n", b"boom\n"]))
    assert writer.dropped == 1
    assert writer.flush_pending()
    assert [(r.seq, r.stream, r.lost) for r in records_of(tmp_path / "run")] == [
        (1, Stream.STDOUT, 0),
        (2, Stream.LOST, 1),
    ]
    writer.close()


def test_a_writer_past_its_exit_record_still_logs_what_it_lost(tmp_path: Path) -> None:
    """Nothing may follow an EXIT record, so no LOST record is possible: the error log says how much."""
    with LogWriter(tmp_path / "run") as w:
        w.append_exit(exit_payload(code=0, started_at_ns=1, ended_at_ns=2))
    writer = LogWriter(tmp_path / "run")  # reopened: finished
    assert writer.finished
    with pytest.raises(RunFinished):
        writer.drop_lines(1)
    with structlog.testing.capture_logs() as logs:
        asyncio.run(feed(writer, [b"a\nb\n"]))
    writer.close()
    failures = [e for e in logs if e["event"] == "capture.append_failed"]
    assert len(failures) == 1 and failures[0]["lines"] == 2, logs
    assert "no LOST record possible" in failures[0]["error"]
    (summary,) = [e for e in logs if e["event"] == "capture.lines_lost"]
    assert (summary["lines"], summary["refused"]) == (2, 2)
    assert [r.stream for r in records_of(tmp_path / "run")] == [Stream.EXIT]


def test_a_purged_run_directory_is_logged_with_the_reason(tmp_path: Path) -> None:
    """An I/O failure (here the directory is gone) is counted by the writer and logged with its error."""
    writer = LogWriter(tmp_path / "run")
    for seg in (tmp_path / "run").iterdir():
        seg.unlink()
    (tmp_path / "run").rmdir()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(feed(writer, [b"a\n"]))
    writer.close()
    dropped = [e for e in logs if e["event"] == "capture.lines_dropped"]
    assert len(dropped) == 1 and dropped[0]["dropped"] == 1 and "No such file" in dropped[0]["error"], logs



@pytest.mark.root
def test_finished_runs_are_pruned_to_one_runs_bound(runtime_config: RuntimeConfig) -> None:
    """An executable restarted forever keeps at most segment bytes x segments of finished runs."""
    cfg = dataclasses.replace(runtime_config, log_segment_bytes=4096, log_max_segments=2)  # 8 KiB

    async def body(c: RuntimeClient) -> list[int]:
        await c.allocate(CellSpec("p"))
        runs = []
        for _ in range(5):  # ~3 KB of output per run
            await c.start(ExecutableSpec("p", "x", command="head -c 3000 /dev/zero | tr '\\0' a; echo"))
            runs.append((await wait_ended(c, "p", "x")).run)
        await c.free("p", grace_s=0)
        return runs

    assert arun(cfg, body) == [1, 2, 3, 4, 5]
    # Before run 5 started, 4 and 3 (~6 KB) fit, 2 did not; run 1 had gone before run 4.
    assert list_runs(Path(cfg.log_dir), "p", "x") == [3, 4, 5]
    assert stored(cfg, "p", "x", 5) == [(Stream.STDOUT, "a" * 3000), (Stream.EXIT, 0)]
