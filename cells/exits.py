"""How an executable ends: Stop (SIGTERM, then cgroup.kill of its leaf), and its exit, recorded.

An exit is noticed by the reaper (our child) or a pidfd (adopted after a supervisor restart), or
found at reconcile (ended while no supervisor ran: ``lost``, its status unknown). Then the rest of
its leaf is killed, its pipes drained into its log, the EXIT record written (held back and retried
if the disk is full), the state saved and the event emitted, in that order: a caller told "exited"
finds the whole output in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from cells.cgroup import KILL_EMPTY_TIMEOUT_S, CgroupBackend, kill_and_remove
from cells.errors import CellError, RuntimeFailure
from cells.events import Events
from cells.model import Cell, Executable
from cells.output import Outputs
from cells.reaper import Reaper
from cells.restart import Restarts
from cells.state import ExecutableInfo, ExecutableState, ExitStatus
from observe.records import exit_payload

log = structlog.get_logger("cells.exits")

#: How long a pipe may stay open after the leaf is empty (held by a process that left the leaf).
PIPE_EOF_TIMEOUT_S = 2.0
#: Ended executables the pid lookup still finds after their cell was freed (about 1 KB each).
ENDED_PIDS_KEPT = 4096


class Exits:
    def __init__(
        self,
        backend: CgroupBackend,
        reaper: Reaper,
        outputs: Outputs,
        events: Events,
        cells: dict[str, Cell],
        persist: Callable[[Cell], None],
        restarts: Restarts | None = None,
    ) -> None:
        self._backend = backend
        self._reaper = reaper
        self._outputs = outputs
        self._events = events
        self._cells = cells
        self._persist = persist
        self._restarts = restarts
        self._tasks: set[asyncio.Task[None]] = set()
        # Ended executables by host pid, newest last, kept past a Free (a job's cell is freed as it
        # ends) so the seed's pid-addressed log stream still finds them; bounded, not persisted.
        self._ended: OrderedDict[int, ExecutableInfo] = OrderedDict()

    def ended(self, host_pid: int) -> ExecutableInfo | None:
        """An ended executable by host pid, also after its cell was freed."""
        return self._ended.get(host_pid)

    # -- stop --------------------------------------------------------------------------------------
    async def stop(self, exe: Executable, grace: float) -> ExitStatus:
        if exe.done.done():
            return exe.done.result()
        if exe.info.state is ExecutableState.RUNNING:
            exe.info.state = ExecutableState.STOPPING
            self._events.emit("stopping", exe.info)
            self.signal(exe, signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(exe.done), grace)
        except TimeoutError:
            pass
        if self._backend.exists(exe.leaf):
            with contextlib.suppress(OSError, CellError):
                self._backend.kill(exe.leaf)
        try:
            return await asyncio.wait_for(
                asyncio.shield(exe.done), KILL_EMPTY_TIMEOUT_S + PIPE_EOF_TIMEOUT_S + 5
            )
        except TimeoutError:
            raise RuntimeFailure(f"executable {exe.info.name!r} did not exit after cgroup.kill") from None

    def signal(self, exe: Executable, sig: int) -> None:
        """Signal the main process; safe against pid reuse since only our reaper frees the pid."""
        if exe.done.done():
            return
        with contextlib.suppress(ProcessLookupError):
            if exe.adopted_pidfd >= 0:
                signal.pidfd_send_signal(exe.adopted_pidfd, sig)
            elif self._reaper.is_child(exe.info.host_pid):
                os.kill(exe.info.host_pid, sig)

    # -- exit --------------------------------------------------------------------------------------
    def on_exit(self, cell: Cell, exe: Executable, status: int | None) -> None:
        """``exe``'s main process is gone (``status`` None: how is unknown, it ended while no
        supervisor ran or was not our child)."""
        ended = time.time_ns()
        if status is None:
            exit = ExitStatus(started_at_ns=exe.info.started_at_ns, ended_at_ns=ended)
        else:
            exit = ExitStatus.from_wait_status(
                status, started_at_ns=exe.info.started_at_ns, ended_at_ns=ended
            )
            if exit.signal == signal.SIGKILL:
                with contextlib.suppress(Exception):
                    exit.oom_killed = self._backend.stats(exe.leaf).oom_kills > 0
        self._background(self._finish(cell, exe, exit, lost=status is None))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runtime.task_failed", error=repr(task.exception()))

    async def _finish(self, cell: Cell, exe: Executable, exit: ExitStatus, lost: bool) -> None:
        """The main process is gone: kill the rest of its leaf, drain the pipes, record the exit."""
        try:
            await kill_and_remove(self._backend, exe.leaf)
        except (OSError, CellError) as exc:
            log.error("exe.leaf_cleanup_failed", leaf=exe.leaf, error=str(exc))
        if exe.capture is not None:
            await exe.capture.wait_closed(PIPE_EOF_TIMEOUT_S)
        self._outputs.release(exe)
        if exe.writer is None and lost:
            with contextlib.suppress(Exception):
                exe.writer = self._outputs.open_log(exe.info)
        if exe.writer is not None:
            try:
                if not exe.writer.finished:
                    payload = exit_payload(
                        code=exit.code,
                        signal=exit.signal,
                        oom_killed=exit.oom_killed,
                        started_at_ns=exit.started_at_ns,
                        ended_at_ns=exit.ended_at_ns,
                    )
                    if lost:
                        payload["lost"] = True
                    exe.writer.append_exit(payload)
                if exe.writer.flush_pending():
                    exe.writer.close()
                else:  # disk full: keep it, so the EXIT (and LOST) record is written once space returns
                    log.error("exe.exit_record_pending", cell=exe.info.cell_name, exe=exe.info.name,
                              run=exe.info.run, error=str(exe.writer.last_error))
                    self._outputs.hold_unflushed(exe.writer)
            except Exception as exc:
                log.error("exe.exit_record_failed", exe=exe.info.name, error=str(exc))
            exe.writer = None
        exe.capture = None
        stopped = exe.info.state is ExecutableState.STOPPING
        ended = ExecutableState.LOST if lost else ExecutableState.EXITED
        exe.info.state = ended
        exe.info.exit = exit
        # The restart policy decides now, so the record saved below already says backoff or failed.
        then = None if self._restarts is None else self._restarts.on_exit(cell, exe, lost, stopped)
        if self._cells.get(cell.info.name) is cell:
            try:
                self._persist(cell)
            except OSError as exc:
                log.error("store.save_failed", cell=cell.info.name, error=str(exc))
        log.info("exe.exited", cell=exe.info.cell_name, exe=exe.info.name, status=exit.describe(), lost=lost)
        # The run's own end first, as it was (the info object goes on to say backoff or failed).
        self._events.emit("lost" if lost else "exited",
                          dataclasses.replace(exe.info, state=ended, restart_at_ns=0) if then else exe.info)
        if then:
            self._events.emit(then, exe.info)
        if exe.info.host_pid:
            self._ended.pop(exe.info.host_pid, None)
            self._ended[exe.info.host_pid] = exe.info
            while len(self._ended) > ENDED_PIDS_KEPT:
                self._ended.popitem(last=False)
        if not exe.done.done():
            exe.done.set_result(exit)
