"""Where logs live on disk, and the writer the supervisor appends to.

Layout::

    <log_root>/<cell path>/exe.<executable>/<run:06d>/<first_seq:020d>.seg

The ``exe.`` prefix keeps an executable's directory apart from a child cell of the same name
(``.`` never occurs in a cell's DNS labels), the same rule the cgroup leaves follow
(:mod:`observe.names`).
One directory per executable run; inside it, append-only segments whose names carry the first
seq they cover, so a reader finds the segment holding a seq from a directory listing alone.

The writer is synchronous and touches nothing but the local disk: one ``os.write`` per
``append_lines`` call (two when a batch crosses a segment boundary), no fsync -- the page cache
survives the death of any process, and a torn tail is cut off on the next open.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from observe.errors import InvalidName, RunFinished, WriterBusy
from observe.names import EXE_PREFIX, MAX_CELL_NAME, is_dns_label, is_segment_name
from observe.records import (
    EXITED,
    FLAG_PARTIAL,
    RECORD_HEADER,
    RECORD_MAGIC,
    SEGMENT_HEADER,
    LogRecord,
    Stream,
    decode,
    encode,
    frame,
    parse_segment_header,
    segment_header,
    split_frame,
)

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_RUN_NAME = re.compile(r"^\d{6,18}$")


# -- layout -----------------------------------------------------------------------------------


def _cell_parts(cell: str) -> list[str]:
    parts = cell.split("/")
    if len(cell) > MAX_CELL_NAME or not all(is_dns_label(p) for p in parts):
        raise InvalidName(f"cell {cell!r} is not a path of DNS labels")
    return parts


def _exe_part(executable: str) -> str:
    if not is_segment_name(executable):
        raise InvalidName(f"executable {executable!r} must be 1-63 of [A-Za-z0-9_.-], starting alphanumeric")
    return EXE_PREFIX + executable


def cell_dir(log_root: Path, cell: str) -> Path:
    return Path(log_root).joinpath(*_cell_parts(cell))


def executable_dir(log_root: Path, cell: str, executable: str) -> Path:
    return cell_dir(log_root, cell) / _exe_part(executable)


def run_dir(log_root: Path, cell: str, executable: str, run: int) -> Path:
    """The directory of one run. Names are re-validated: they become path segments."""
    if not 0 <= run < 10**18:
        raise InvalidName(f"run {run} out of range")
    return executable_dir(log_root, cell, executable) / f"{run:06d}"


def list_runs(log_root: Path, cell: str, executable: str) -> list[int]:
    try:
        names = os.listdir(executable_dir(log_root, cell, executable))
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if _RUN_NAME.match(n))


def latest_run(log_root: Path, cell: str, executable: str) -> int | None:
    runs = list_runs(log_root, cell, executable)
    return runs[-1] if runs else None


def next_run(log_root: Path, cell: str, executable: str, after: int = 0) -> int:
    """The number of a new run: above ``after`` (the caller's last run) and above every run on disk.

    Logs outlive the cell and the supervisor's state (a freed and re-allocated cell, a restart),
    so only the disk knows every number taken; reusing one would append to a finished run.
    """
    return max(after, latest_run(log_root, cell, executable) or 0) + 1


#: Runs of one executable kept at most, however small: a restart policy's crash loop makes a run per
#: crash, and tiny runs never reach the byte bound. Every start looks at the runs on disk, so their
#: count is its cost: 14 ms a start at 75 runs of a crash loop (bench/restart.py) when each was sized.
MAX_FINISHED_RUNS = 32


class RunSizes:
    """Bytes of finished runs, remembered by directory, its inode and mtime: a finished run does not
    grow, and a purged and reused run number is another directory. Sizing 32 runs at each start cost
    2.3 ms (a scandir and a stat per file); a hit costs one stat. Bounded: forgets all past ``limit``."""

    def __init__(self, limit: int = 65_536) -> None:
        self.limit = limit
        self._sizes: dict[str, tuple[int, int, int]] = {}

    def size(self, entry: os.DirEntry[str]) -> int:
        st = entry.stat(follow_symlinks=False)
        known = self._sizes.get(entry.path)
        if known is not None and known[:2] == (st.st_ino, st.st_mtime_ns):
            return known[2]
        size = _directory_bytes(Path(entry.path))
        if len(self._sizes) >= self.limit:
            self._sizes.clear()
        self._sizes[entry.path] = (st.st_ino, st.st_mtime_ns, size)
        return size

    def forget(self, path: str) -> None:
        self._sizes.pop(path, None)


def prune_runs(
    log_root: Path, cell: str, executable: str, keep_bytes: int, keep_runs: int = MAX_FINISHED_RUNS,
    sizes: RunSizes | None = None,
) -> list[int]:
    """Remove the oldest runs of ``executable`` once its runs together exceed ``keep_bytes`` or
    ``keep_runs`` in number; returns them. ``sizes``: what earlier calls measured (the launcher's).

    The bound of one run (segment bytes x segments) is also the bound of the finished runs an
    executable keeps, so a workload that restarts forever cannot fill the disk. The newest run always
    stays (``run=-1``: the previous run, as ``kubectl logs --previous``). Called before a new run starts,
    when every run on disk has ended.
    """
    sizes = sizes or RunSizes()
    try:
        with os.scandir(executable_dir(log_root, cell, executable)) as listing:
            entries = sorted((e for e in listing if _RUN_NAME.match(e.name)), key=lambda e: int(e.name), reverse=True)
    except FileNotFoundError:
        return []
    return _prune(entries, keep_bytes, keep_runs, sizes)


def _prune(entries: list[os.DirEntry[str]], keep_bytes: int, keep_runs: int, sizes: RunSizes) -> list[int]:
    """Remove the runs of ``entries`` (newest first) beyond the bounds; the newest always stays."""
    removed = []
    total = 0
    for age, entry in enumerate(entries):
        if age < keep_runs and total <= keep_bytes:
            with contextlib.suppress(FileNotFoundError):
                total += sizes.size(entry)
        if age > 0 and (total > keep_bytes or age >= keep_runs):
            shutil.rmtree(entry.path, ignore_errors=True)
            sizes.forget(entry.path)
            removed.append(int(entry.name))
    return removed


def new_run(
    log_root: Path, cell: str, executable: str, after: int, keep_bytes: int, keep_runs: int = MAX_FINISHED_RUNS,
    sizes: RunSizes | None = None,
) -> tuple[Path, int, list[int]]:
    """``(directory, run, pruned)`` for a new run of ``executable``: :func:`next_run` and
    :func:`prune_runs` in one listing of its runs, the directory created (its parents too).

    What a Start does with its logs before the spawn, in the fewest syscalls: the number is above
    ``after`` and every run on disk, the finished runs are pruned to their bound before the new one
    exists (as ``prune_runs`` called first), and the directory is made with ``mkdir`` without
    ``exist_ok``: a run that exists already (another writer?) is never appended to (FileExistsError).
    """
    exe_dir = executable_dir(log_root, cell, executable)
    try:
        with os.scandir(exe_dir) as listing:
            entries = sorted((e for e in listing if _RUN_NAME.match(e.name)), key=lambda e: int(e.name), reverse=True)
    except FileNotFoundError:
        entries = []
    run = max(after, int(entries[0].name) if entries else 0) + 1
    if not 0 <= run < 10**18:
        raise InvalidName(f"run {run} out of range")
    removed = _prune(entries, keep_bytes, keep_runs, sizes or RunSizes())
    directory = exe_dir / f"{run:06d}"
    try:
        os.mkdir(directory)
    except FileNotFoundError:
        directory.mkdir(parents=True)
    return directory, run, removed


def log_usage(directory: Path) -> tuple[int, int]:
    """(runs, bytes) stored below ``directory`` (a cell's, an executable's or a run's directory)."""
    runs = total = 0
    for parent, dirs, files in os.walk(directory):
        runs += sum(1 for d in dirs if _RUN_NAME.match(d) and Path(parent).name.startswith(EXE_PREFIX))
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return runs, total


def _directory_bytes(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def list_executables(log_root: Path, cell: str) -> list[str]:
    try:
        names = os.listdir(cell_dir(log_root, cell))
    except FileNotFoundError:
        return []
    return sorted(
        n[len(EXE_PREFIX) :]
        for n in names
        if n.startswith(EXE_PREFIX) and is_segment_name(n[len(EXE_PREFIX) :])
    )


def purge(log_root: Path, cell: str, executable: str | None = None) -> None:
    """Delete the logs of one executable (all runs), or of a whole cell and its child cells.

    Meant for finished runs: a live writer keeps its open segment but drops (and counts) lines
    once its directory is gone. Empty parent directories up to ``log_root`` are removed too.
    """
    root = Path(log_root)
    target = cell_dir(root, cell) if executable is None else executable_dir(root, cell, executable)
    shutil.rmtree(target, ignore_errors=True)
    parent = target.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """First seqs of the segments present, ascending (no files opened)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _SEGMENT_NAME.match(n)))


# -- writer -----------------------------------------------------------------------------------


def _reason(exc: OSError | None) -> bytes:
    """A LOST record's reason for lines a failed write dropped."""
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return b"disk-full"
    return b"io-error"


_pack = RECORD_HEADER.pack
_SEG_HDR = SEGMENT_HEADER.size


class LogWriter:
    """Appends one executable run's records; used only by the supervisor.

    Never raises on I/O trouble after it is open: a failed write (ENOSPC, EDQUOT, EIO, a purged
    directory) drops the lines, counts them in :attr:`dropped` and remembers :attr:`last_error`.
    Dropped lines still consume their seqs; the next successful write first appends one LOST
    record covering exactly those seqs, so a reader sees the gap and its size. A caller whose
    ``append_lines`` raised anyway reports the lines with :meth:`drop_lines`, to the same effect.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 10 * 2**20,
        max_segments: int = 5,
        clock: Callable[[], int] = time.time_ns,
        fresh: bool = False,
    ) -> None:
        """``fresh``: the caller has just made ``directory`` (:func:`new_run`): it exists and holds
        nothing to resume, so neither is looked at again."""
        if segment_bytes < 4096:
            raise ValueError("segment_bytes must be >= 4096")
        if max_segments < 1:
            raise ValueError("max_segments must be >= 1")
        self.directory = Path(directory)
        self._cap = segment_bytes
        self._max_segments = max_segments
        self._clock = clock
        if not fresh:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._dir_fd)
            raise WriterBusy(f"another writer holds {self.directory}") from None
        self._fd = -1  # current segment, -1 when none is open (not created yet, or creation failed)
        self._seg_size = 0  # bytes in the current segment, header included (0: header not written)
        self._segments: list[int] = []
        self._next_seq = 1
        self._last_ts = 0
        self._finished = False
        self._dropped = 0  # seqs dropped and not yet covered by a LOST record on disk
        self._drop_first = 0  # first dropped seq of that range
        self._drop_reason = b""  # why the first of them was dropped: the LOST record's reason
        self._total_dropped = 0
        self._pending_exit: bytes | None = None
        self.last_error: OSError | None = None
        if not fresh:
            self._resume()

    # -- public surface

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def dropped(self) -> int:
        """Lines dropped for lack of space and not yet reported by a LOST record on disk."""
        return self._dropped

    @property
    def total_dropped(self) -> int:
        """Lines dropped over the writer's lifetime (reported or not)."""
        return self._total_dropped

    @property
    def finished(self) -> bool:
        """The EXIT record was accepted (it may still be pending if the disk is full)."""
        return self._finished

    def append_lines(self, stream: Stream, lines: Sequence[bytes] | Sequence[tuple[bytes, bool]]) -> int:
        """Append ``(line, partial)`` pieces of one stream; returns the last seq assigned.

        ``lines`` may also be plain ``bytes``, all whole lines (``LineSplitter.split``'s usual answer,
        no tuple per line); one call takes one form, not a mix. All lines of one call share one
        timestamp: they arrived in the same read from the pipe. Check :attr:`dropped` afterwards to
        learn whether the disk refused them.
        """
        if self._finished:
            raise RunFinished(f"{self.directory}: append after the EXIT record")
        if stream is not Stream.STDOUT and stream is not Stream.STDERR:
            raise ValueError("append_lines takes STDOUT or STDERR")
        if not lines:
            return self._next_seq - 1
        ts = self._now()
        seq = first = self._next_seq
        st = int(stream)
        cap = self._cap
        if not self._dropped and isinstance(lines[0], bytes):
            # The usual case, whole lines that fit the segment: every header in one C-level map, no
            # Python loop per line (a flood spends most of the supervisor's time here).
            lens = list(map(len, lines))  # type: ignore[arg-type]
            k = len(lens)
            if (self._seg_size or _SEG_HDR) + 24 * k + sum(lens) <= cap:
                framed = frame(lines if isinstance(lines, list) else list(lines), RECORD_MAGIC | st << 8, seq, ts)  # type: ignore[arg-type]
                self._write([framed], seq, seq + k - 1)
                self._next_seq = seq + k
                return seq + k - 1
        pack, magic = _pack, RECORD_MAGIC
        pairs: Iterable[tuple[bytes, int]]  # (data, flags); zip reuses its tuple, whole lines cost no tuple
        if isinstance(lines[0], bytes):
            pairs = zip(lines, repeat(0))  # type: ignore[arg-type]
        else:
            pairs = ((data, FLAG_PARTIAL if partial else 0) for data, partial in lines)  # type: ignore[misc]
        parts = []
        size = 0
        lost = self._lost_record(ts)
        if lost:
            parts.append(lost)
            size = len(lost)
        append = parts.append
        first_unwritten = seq  # first line seq in ``parts`` (a LOST record may precede it)
        base = self._seg_size or _SEG_HDR
        for data, flags in pairs:
            ln = len(data)
            if base + size + 24 + ln > cap and (size or base > _SEG_HDR):
                # The segment is full: finish it, start the next one named after ``seq``.
                if not self._write(parts, first_unwritten, seq - 1):
                    return self._drop_rest(seq, len(lines) - (seq - first))
                self._next_seq = seq  # those seqs are spent, even if something below raises
                self._rotate(seq)
                parts = []
                append = parts.append
                size = 0
                first_unwritten = seq
                base = _SEG_HDR
            append(pack(magic, st, flags, 0, ln, seq, ts))
            append(data)
            size += 24 + ln
            seq += 1
        self._write(parts, first_unwritten, seq - 1)
        self._next_seq = seq
        return seq - 1

    def append_chunk(self, stream: Stream, data: bytes, max_line: int) -> tuple[int, int] | None:
        """The whole lines of ``data`` (bytes read from a pipe, an unterminated line before them
        included) appended as ``append_lines`` appends them, without a bytes object per line:
        ``(lines, bytes of data they took)``; the rest of ``data`` is an unterminated line.

        None, and nothing appended, where the general path (a LineSplitter, then ``append_lines``)
        must run: no C extension, a line or the rest above ``max_line``, a batch crossing a segment
        boundary, a LOST record pending. Check :attr:`dropped` afterwards, as after ``append_lines``.
        """
        if split_frame is None or self._finished or self._dropped:
            return None
        if stream is not Stream.STDOUT and stream is not Stream.STDERR:
            raise ValueError("append_chunk takes STDOUT or STDERR")
        seq = self._next_seq
        room = self._cap - (self._seg_size or _SEG_HDR)
        done = split_frame(data, max_line, RECORD_MAGIC | int(stream) << 8, seq, self._now(), room)
        if done is None:
            return None
        framed, k, consumed = done
        if k:
            self._write([framed], seq, seq + k - 1)
            self._next_seq = seq + k
        return k, consumed

    def append_exit(self, exit: dict[str, Any]) -> bool:
        """Append the final EXIT record (see ``records.exit_payload``); later appends raise.

        Returns False when the disk refused it: it stays pending and :meth:`flush_pending` (or
        :meth:`close`) retries, so a full disk never loses the exit status while we live.
        """
        if self._finished:
            raise RunFinished(f"{self.directory}: second EXIT record")
        self._finished = True
        self._pending_exit = json.dumps(exit, sort_keys=True, separators=(",", ":")).encode()
        return self.flush_pending()

    def drop_lines(self, count: int, reason: bytes = b"writer-error") -> None:
        """Count ``count`` lines the caller could not append (``append_lines`` raised) as dropped.

        They take the next seqs and the next write (or :meth:`flush_pending`) reports them in a
        LOST record, so even a writer bug leaves a visible gap rather than a silent one. Raises
        :class:`RunFinished` after the EXIT record: nothing can be reported there any more.
        """
        if self._finished:
            raise RunFinished(f"{self.directory}: {count} lines dropped after the EXIT record")
        if count > 0:
            self._count_drop(self._next_seq, self._next_seq + count - 1, reason)
            self._next_seq += count

    def flush_pending(self) -> bool:
        """Write what a full disk held back (the LOST record, the EXIT record); True when none is left.

        The supervisor calls this on a timer while :attr:`dropped` is non-zero, so a quiet
        workload still gets its LOST marker once space returns.
        """
        if not self._dropped and self._pending_exit is None:
            return True
        ts = self._now()
        parts: list[bytes] = []
        lost = self._lost_record(ts)
        if lost:
            parts.append(lost)
        last = self._next_seq - 1
        if self._pending_exit is not None:
            last = self._next_seq
            parts.append(encode(LogRecord(self._next_seq, ts, Stream.EXIT, self._pending_exit)))
        if not self._write(parts, self._next_seq, last, count_drops=False):
            return False
        if self._pending_exit is not None:
            self._pending_exit = None
            self._next_seq += 1
        return True

    def close(self) -> None:
        """Retry anything pending once, then release the segment and the directory lock."""
        if self._dir_fd < 0:
            return
        self.flush_pending()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._dir_fd)
        self._dir_fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals

    def _now(self) -> int:
        """Wall clock, clamped non-decreasing within a run so readers can bisect and merge by time."""
        ts = self._clock()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def _lost_record(self, ts: int) -> bytes:
        if not self._dropped:
            return b""
        rec = LogRecord(
            self._drop_first + self._dropped - 1, ts, Stream.LOST, self._drop_reason, lost=self._dropped
        )
        return encode(rec)

    def _write(self, parts: list[bytes], first: int, last: int, count_drops: bool = True) -> bool:
        """Write ``parts`` (records covering seqs ``first..last`` plus any LOST record) to the segment.

        On failure cut the segment back to whole records and count ``first..last`` as dropped.
        """
        if not parts:
            return True
        if self._fd < 0 and not self._open_segment(self._drop_first if self._dropped else first):
            if count_drops:
                self._count_drop(first, last, _reason(self.last_error))
            return False
        buf = b"".join(parts)
        if self._seg_size == 0:
            buf = segment_header(self._segments[-1]) + buf
        try:
            n = os.write(self._fd, buf)
            if n == len(buf):
                self._seg_size += n
                self._dropped = 0
                return True
            raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self.last_error = exc
            self._truncate_to(self._seg_size)
            if count_drops:
                self._count_drop(first, last, _reason(exc))
            return False

    def _count_drop(self, first: int, last: int, reason: bytes) -> None:
        if last < first:
            return
        if not self._dropped:
            self._drop_first = first
            self._drop_reason = reason
        self._dropped += last - first + 1
        self._total_dropped += last - first + 1

    def _drop_rest(self, seq: int, remaining: int) -> int:
        """After a failed write mid-batch: the unwritten lines of this call are dropped too."""
        last = seq + remaining - 1
        self._count_drop(seq, last, _reason(self.last_error))
        self._next_seq = last + 1
        return last

    def _truncate_to(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            self.last_error = exc

    def _open_segment(self, first_seq: int) -> bool:
        try:
            fd = os.open(
                self.directory / segment_name(first_seq),
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                0o640,
            )
        except OSError as exc:
            self.last_error = exc
            return False
        self._fd = fd
        self._seg_size = 0
        self._segments.append(first_seq)
        self._retain()
        return True

    def _rotate(self, first_seq: int) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError as exc:  # the fd is released anyway; what was written is in the page cache
                self.last_error = exc
            self._fd = -1
        self._seg_size = 0
        self._open_segment(first_seq)

    def _retain(self) -> None:
        """Delete the oldest segments beyond ``max_segments``; open readers keep their unlinked file."""
        while len(self._segments) > self._max_segments:
            oldest = self._segments.pop(0)
            try:
                os.unlink(self.directory / segment_name(oldest))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.last_error = exc

    def _resume(self) -> None:
        """Continue a run a previous writer left (supervisor restart): cut the torn tail, go on."""
        self._segments = list_segments(self.directory)
        if not self._segments:
            return
        first = self._segments[-1]
        path = self.directory / segment_name(first)
        with open(path, "rb") as f:
            buf = f.read()
        header = parse_segment_header(buf)
        end = 0
        nxt = first
        if header is not None and header[0] == first:
            # Walk every whole record; the first byte that is not one starts the torn tail.
            result = decode(buf, header[1], first, want=1 << 62)
            end, nxt = result.offset, result.next_seq
            self._finished = result.status == EXITED
            self._last_ts = result.last_ts
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        os.ftruncate(fd, end)
        self._fd = fd
        self._seg_size = end
        self._next_seq = nxt
