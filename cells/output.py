"""A run's output after the spawn: its pipes, held in the fd store, and its log writer.

Copies of every live run's pipe read ends are held by a process that outlives the supervisor
(:mod:`cells.fdstore`): a workload that writes after our death neither dies of SIGPIPE nor loses the
output, and an adopted run's capture resumes from them (:meth:`Outputs.resume`). The store is best
effort: without it only the survival of output across a supervisor restart is lost, never a workload,
and its outage is logged once. Log writers of ended runs whose LOST/EXIT records a full disk held
back are retried on a timer, so quiet workloads get their markers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import structlog

from cells.capture import Capture
from cells.config import RuntimeConfig
from cells.exec import keep_stdin
from cells.fdstore import FdStore, StoreUnavailable
from cells.model import LIVE_STATES, Cell, Executable
from cells.state import ExecutableInfo
from observe.logstore import LogWriter, run_dir
from observe.records import Stream

log = structlog.get_logger("cells.output")

FLUSH_EVERY_S = 5.0
#: The fd store's name for the write end of an attachable executable's stdin (``ExecutableSpec.stdin``).
STDIN = "STDIN"


def pipes_key(info: ExecutableInfo) -> str:
    """The fd store's key of one run's pipes (executable names hold no '/')."""
    return f"{info.cell_name}/{info.name}/{info.run}"


class Outputs:
    """The pipes and log writers of every run of one runtime (``cells``, shared with it)."""

    def __init__(self, config: RuntimeConfig, cells: dict[str, Cell]) -> None:
        self.config = config
        self.log_root = Path(config.log_dir)
        self._cells = cells
        self.fdstore = FdStore(
            os.path.join(config.run_dir, "fdstore.sock"),
            start_timeout_s=config.supervisor_start_timeout_s,
            stderr_path=os.path.join(config.state_dir, "fdstore.stderr"),
            on_restart=self._keep_all,
        )
        self._fdstore_down = False  # an outage was logged (once)
        # Writers of ended runs whose LOST/EXIT records a full disk held back (retried by _flush).
        self._unflushed: set[LogWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.TimerHandle | None = None

    def _exes(self) -> list[Executable]:
        return [exe for cell in self._cells.values() for exe in cell.exes.values()]

    # -- log writers -------------------------------------------------------------------------------
    def open_log(self, info: ExecutableInfo) -> LogWriter:
        """The writer of an existing run's log, appending where it ends."""
        return LogWriter(
            run_dir(self.log_root, info.cell_name, info.name, info.run),
            segment_bytes=self.config.log_segment_bytes,
            max_segments=self.config.log_max_segments,
        )

    def start_flushing(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flush_handle = loop.call_later(FLUSH_EVERY_S, self._flush)

    def hold_unflushed(self, writer: LogWriter) -> None:
        """An ended run's writer whose EXIT (and LOST) record waits for disk space."""
        self._unflushed.add(writer)

    def drop_unflushed_under(self, directory: Path) -> None:
        """Its logs are being purged: nothing to add the held-back records to any more."""
        for writer in [w for w in self._unflushed if directory in w.directory.parents]:
            self._unflushed.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _flush(self) -> None:
        """Retry LOST/EXIT records a full disk held back, so quiet workloads get their markers too."""
        for exe in self._exes():
            if exe.writer is not None and exe.writer.dropped:
                with contextlib.suppress(Exception):
                    exe.writer.flush_pending()
        for writer in list(self._unflushed):
            with contextlib.suppress(Exception):
                if writer.flush_pending():
                    self._unflushed.discard(writer)
                    writer.close()
        if self._loop is not None:
            self._flush_handle = self._loop.call_later(FLUSH_EVERY_S, self._flush)

    # -- pipes in the fd store ---------------------------------------------------------------------
    def keep(self, exe: Executable) -> None:
        """Copies of ``exe``'s pipe read ends to the fd store. Best effort: without them only the
        survival of its output across a supervisor restart is lost, never the workload."""
        if exe.capture is None:
            return
        try:
            stdin = {STDIN: exe.stdin_fd} if exe.stdin_fd >= 0 else {}  # attach's stdin survives us too (cells.exec)
            self.fdstore.put(pipes_key(exe.info), {**{s.name: fd for s, fd in exe.capture.pipes.items()}, **stdin})
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("put", exc)
        else:
            self._fdstore_down = False

    def _keep_all(self) -> None:
        """A new store (the old one died): give it every live run's pipes again."""
        for exe in self._exes():
            self.keep(exe)

    def release(self, exe: Executable) -> None:
        """The run is over: the store's copies must not keep a stray writer's pipe open for ever."""
        try:
            self.fdstore.drop(pipes_key(exe.info))
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("drop", exc)

    def _fdstore_failed(self, what: str, exc: Exception) -> None:
        """Logged once per outage (every Start and exit would repeat it)."""
        if not self._fdstore_down:
            log.error("fdstore.unavailable", op=what, error=str(exc),
                      consequence="output written while no supervisor runs is lost, and the writer killed by SIGPIPE")
        self._fdstore_down = True

    def forget_unclaimed(self) -> None:
        """After reconcile: the store's copies of runs that are over (or never adopted) are closed.
        Also what starts the store on a fresh host, before the first Start needs it."""
        live = {pipes_key(e.info) for e in self._exes() if e.info.state in LIVE_STATES}
        try:
            for key in self.fdstore.held_keys():
                if key not in live:
                    self.fdstore.drop(key)
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("keys", exc)

    def resume(self, exe: Executable) -> None:
        """An adopted run (alive, or ended while no supervisor ran): take its pipes back from the
        store and append to its log where it ends. If that fails the store keeps its copies (a
        writer blocks on a full pipe rather than dying of SIGPIPE) until the run is over."""
        try:
            held = self.fdstore.get(pipes_key(exe.info))
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("get", exc)
            return
        if STDIN in held and not exe.done.done():
            keep_stdin(exe, held.pop(STDIN))
        pipes = {Stream[name]: fd for name, fd in held.items() if name in ("STDOUT", "STDERR")}
        unknown = [fd for name, fd in held.items() if name not in ("STDOUT", "STDERR")]
        for fd in unknown:
            os.close(fd)
        if not pipes:
            log.error("reconcile.output_lost", cell=exe.info.cell_name, exe=exe.info.name,
                      reason="its pipes are not in the fd store")
            return
        try:
            exe.writer = self.open_log(exe.info)
        except Exception as exc:
            for fd in pipes.values():
                os.close(fd)
            log.error("reconcile.output_lost", cell=exe.info.cell_name, exe=exe.info.name, reason=str(exc))
            return
        exe.capture = Capture(exe.writer, pipes, f"{exe.info.cell_name}/{exe.info.name}")

    # -- detach ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Supervisor exit: capture what the pipes hold now (and a pending partial line); the rest
        waits in them, and in the store's copies, for our successor."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for exe in self._exes():
            if exe.capture is not None:
                with contextlib.suppress(Exception):
                    exe.capture.close()
            if exe.writer is not None:
                with contextlib.suppress(Exception):
                    exe.writer.close()
        self.fdstore.close()
