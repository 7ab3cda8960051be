"""Pipe -> log store: drains an executable's stdout and stderr inside the supervisor's event loop.

One ``add_reader`` per pipe; each wake-up reads up to 1 MiB in 64 KiB reads, one ``append_lines``
each, so the pipes are never left undrained (a full pipe would block the workload) and one chatty
workload cannot hold the loop for long. Why 64 KiB and not one 1 MiB read: a read and the records
built from it stay below malloc's mmap threshold (128 KiB), so their memory is reused; a 1 MiB read
gets fresh pages each time and page faults cost more than the rest of the capture (measured: 100k
faults and +60% CPU per million 100-byte lines).

Output is never lost silently. Lines the disk refuses (``LogWriter.dropped`` growing) and lines the
writer raised on (handed back with ``LogWriter.drop_lines``) both become a LOST record on the next
write; each episode is logged once as an error, and a run that lost lines says how many at EOF.
Draining continues either way.

A pseudo-terminal's output (``cellar start -i -t``) is a shell's prompt and the echo of typed keys, with
no newline to wait for: an unfinished line is written as a partial record once it has waited
PARTIAL_AFTER_S, so ``attach`` and ``logs -f`` show it at once (the next record continues the line).
Its size bound stays the splitter's ``max_line``. A pty master reads EIO, not EOF, once the terminal's
last slave fd is closed: that is its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import termios
from typing import Any

import structlog

from observe.linesplit import LineSplitter
from observe.records import Stream

log = structlog.get_logger("cells.capture")

READ_SIZE = 64 * 1024
READS_PER_WAKEUP = 16
#: How long a terminal's unfinished line waits for its newline before it is written as a partial record.
PARTIAL_AFTER_S = 0.02


def queued_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD); 0 when it cannot say."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class Capture:
    """The output pipes of one run (stdout and stderr; an adopted run may have only one left);
    ``closed`` completes when all hit EOF (or :meth:`close`)."""

    def __init__(self, writer: Any, pipes: dict[Stream, int], label: str) -> None:
        self.writer = writer
        self.label = label
        self._loop = asyncio.get_running_loop()
        self._fds: dict[int, tuple[Stream, LineSplitter]] = {fd: (stream, LineSplitter()) for stream, fd in pipes.items()}
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.lines = 0  # handed to the writer (it may still have dropped them: ``writer.total_dropped``)
        self.refused = 0  # lines ``append_lines`` raised on
        self._unrecorded = 0  # of those, lines not even ``drop_lines`` could count (past the EXIT record)
        self._dropping = False  # in a disk-full episode (logged at its start)
        self._refusing = False  # in an episode of ``append_lines`` raising (logged at its start)
        self._ttys = {fd for fd in self._fds if os.isatty(fd)}  # a pty master (a restart finds it so too)
        self._partial_timers: dict[int, asyncio.TimerHandle] = {}
        for fd in self._fds:
            self._loop.add_reader(fd, self._on_readable, fd)

    @property
    def pipes(self) -> dict[Stream, int]:
        """The read ends still open, by stream."""
        return {stream: fd for fd, (stream, _) in self._fds.items()}

    def _on_readable(self, fd: int) -> None:
        if fd in self._ttys:
            self._on_tty_readable(fd)
            return
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

    def _on_tty_readable(self, fd: int) -> None:
        """A pty master gives at most a few KiB per read: gather up to READ_SIZE from several reads and
        consume them at once (one read per wake-up ran the capture at a quarter of a plain reader's rate)."""
        chunks: list[bytes] = []
        size, end = 0, False
        while size < READ_SIZE:
            try:
                chunk = os.read(fd, READ_SIZE - size)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: no slave left, the terminal's end
                    log.warning("capture.read_failed", exe=self.label, error=str(exc))
                chunk = b""
            if not chunk:
                end = True
                break
            chunks.append(chunk)
            size += len(chunk)
        if chunks:
            self._consume(fd, b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if end:
            self._consume(fd, b"")

    def _arm_partial(self, fd: int) -> None:
        if fd not in self._partial_timers and self._fds[fd][1].pending:
            self._partial_timers[fd] = self._loop.call_later(PARTIAL_AFTER_S, self._write_partial, fd)

    def _consume(self, fd: int, chunk: bytes) -> None:
        stream, splitter = self._fds[fd]
        if not (chunk and self._append_chunk(stream, splitter, chunk)):
            lines = splitter.split(chunk) if chunk else splitter.flush()
            if lines:
                self._append(stream, lines)
            if not chunk:
                self._close_fd(fd)
                return
        if fd in self._ttys:
            self._arm_partial(fd)

    def _write_partial(self, fd: int) -> None:
        """A terminal's unfinished line has waited long enough: a partial record of what it holds."""
        self._partial_timers.pop(fd, None)
        if fd in self._fds:
            stream, splitter = self._fds[fd]
            lines = splitter.flush()
            if lines:
                self._append(stream, lines)

    def _append(self, stream: Stream, lines: list[bytes] | list[tuple[bytes, bool]]) -> None:
        writer = self.writer
        seq, dropped = writer.next_seq, writer.dropped
        try:
            writer.append_lines(stream, lines)
        except Exception as exc:  # never stop draining: the workload must not block on a full pipe
            self._refuse(len(lines) - (writer.next_seq - seq), exc)
            return
        self.lines += len(lines)
        self._refusing = False
        self._check_dropped(dropped)

    def _append_chunk(self, stream: Stream, splitter: LineSplitter, chunk: bytes) -> bool:
        """A flood's usual chunk: its whole lines framed straight from the pipe's bytes by the writer,
        no bytes object per line (a third of the supervisor's CPU on a flood); False when the general
        path must run instead (see ``LogWriter.append_chunk``), nothing appended then."""
        writer = self.writer
        append = getattr(writer, "append_chunk", None)
        if append is None or self._refusing:
            return False
        data = splitter.prefixed(chunk)
        dropped = writer.dropped
        try:
            done = append(stream, data, splitter.max_line)
        except Exception:  # raised before writing anything: the general path gets the chunk
            return False
        if done is None:
            return False
        count, consumed = done
        splitter.hold(data[consumed:])
        self.lines += count
        self._check_dropped(dropped)
        return True

    def _check_dropped(self, dropped: int) -> None:
        """After an append: log the start of a disk-full episode once, notice its end."""
        writer = self.writer
        if writer.dropped > dropped:  # the disk refused (some of) them
            if not self._dropping:
                error = str(writer.last_error)
                log.error("capture.lines_dropped", exe=self.label, dropped=writer.dropped, error=error)
            self._dropping = True
        else:  # written, after the LOST record of any earlier drop
            self._dropping = False

    def _refuse(self, count: int, exc: Exception) -> None:
        """``append_lines`` raised: count the lines so a LOST record reports them, log the episode once."""
        self.refused += count
        try:
            self.writer.drop_lines(count)
        except Exception as drop_exc:  # past the EXIT record (a bug): only this log can report them
            self._unrecorded += count
            error = f"{exc}; no LOST record possible: {drop_exc}"
        else:
            error = str(exc) or repr(exc)
        if not self._refusing:
            log.error("capture.append_failed", exe=self.label, error=error, lines=count)
        self._refusing = True

    def _close_fd(self, fd: int) -> None:
        timer = self._partial_timers.pop(fd, None)
        if timer is not None:
            timer.cancel()
        self._ttys.discard(fd)
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._fds[fd]
        if not self._fds and not self.closed.done():
            lost = self.writer.total_dropped + self._unrecorded
            if lost:
                log.error("capture.lines_lost", exe=self.label, lines=lost, refused=self.refused)
            self.closed.set_result(None)

    def close(self) -> None:
        """Drain what the pipes hold right now (not what a writer adds meanwhile: one that never
        stops would keep us here for ever), write out a pending partial line, close them."""
        for fd in list(self._fds):
            left = queued_bytes(fd)
            while left > 0:
                try:
                    chunk = os.read(fd, min(left, READ_SIZE))
                except OSError:
                    break
                if not chunk:
                    break
                left -= len(chunk)
                self._consume(fd, chunk)
            if fd in self._fds:
                self._consume(fd, b"")  # flush and close

    async def wait_closed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            self.close()
