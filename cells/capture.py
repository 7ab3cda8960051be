"""Pipe -> log store: drains an executable's stdout and stderr inside the supervisor's event loop.

One ``add_reader`` per pipe; each wake-up reads up to 1 MiB in 64 KiB reads, one ``append_lines``
each, so the pipes are never left undrained (a full pipe would block the workload) and one chatty
workload cannot hold the loop for long. Why 64 KiB and not one 1 MiB read: a read and the records
built from it stay below malloc's mmap threshold (128 KiB), so their memory is reused; a 1 MiB read
gets fresh pages each time and page faults cost more than the rest of the capture (measured: 100k
faults and +60% CPU per million 100-byte lines). A disk-full episode (``LogWriter.dropped``
growing) is logged once, draining continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import structlog

from observe.linesplit import LineSplitter
from observe.records import Stream

log = structlog.get_logger("cells.capture")

READ_SIZE = 64 * 1024
READS_PER_WAKEUP = 16


class Capture:
    """Both output pipes of one run; ``closed`` completes when both hit EOF (or :meth:`close`)."""

    def __init__(self, writer: Any, stdout_fd: int, stderr_fd: int, label: str) -> None:
        self.writer = writer
        self.label = label
        self._loop = asyncio.get_running_loop()
        self._fds: dict[int, tuple[Stream, LineSplitter]] = {
            stdout_fd: (Stream.STDOUT, LineSplitter()),
            stderr_fd: (Stream.STDERR, LineSplitter()),
        }
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._dropped_seen = 0
        self.lines = 0
        for fd in self._fds:
            self._loop.add_reader(fd, self._on_readable, fd)

    def _on_readable(self, fd: int) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("capture.read_failed", exe=self.label, error=str(exc))
                chunk = b""
            self._consume(fd, chunk)
            if len(chunk) < READ_SIZE:  # drained for now, or EOF (the fd is closed then)
                return

    def _consume(self, fd: int, chunk: bytes) -> None:
        stream, splitter = self._fds[fd]
        lines = splitter.split(chunk) if chunk else splitter.flush()
        if lines:
            self._append(stream, lines)
        if not chunk:
            self._close_fd(fd)

    def _append(self, stream: Stream, lines: list[bytes] | list[tuple[bytes, bool]]) -> None:
        try:
            self.writer.append_lines(stream, lines)
            self.lines += len(lines)
        except Exception as exc:  # never stop draining: the workload must not block on a full pipe
            log.error("capture.append_failed", exe=self.label, error=str(exc))
        dropped = getattr(self.writer, "dropped", 0)
        if dropped > self._dropped_seen:
            if self._dropped_seen == 0 or getattr(self, "_episode_over", True):
                log.error("capture.lines_dropped", exe=self.label, dropped=dropped)
            self._episode_over = False
            self._dropped_seen = dropped
        else:
            self._episode_over = True

    def _close_fd(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._fds[fd]
        if not self._fds and not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Drain what is buffered right now and close both pipes (a writer outside the leaf holds them)."""
        for fd in list(self._fds):
            while True:
                try:
                    chunk = os.read(fd, READ_SIZE)
                except OSError:
                    chunk = b""
                self._consume(fd, chunk)
                if not chunk:
                    break

    async def wait_closed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            self.close()
