"""Launching an executable: its leaf cgroup, a new log run, output pipes, the spawn, the wait for exec.

The child's exec is waited for in an exec-wait thread (the C spawner releases the GIL), so a child
slow to exec (a starving cell limit, a frozen cgroup, a hung mount) holds up its own Start only. A
child that does not exec within ``exec_timeout_s`` is killed; when its cell's configuration explains
why (frozen behind cellar's back, a CPU or memory limit starving it) the error says so
(:meth:`Launcher._why_no_exec`) instead of blaming the host. Registering the new executable with its
cell, the reaper and the store is the runtime's (``Runtime.start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from cells import namespaces as ns
from cells import profile, timing
from cells.capture import Capture
from cells.cgroup import CgroupBackend
from cells.config import RuntimeConfig
from cells.errors import CellError, ExecTimeout, FailedPrecondition, ResourceExhausted, RuntimeFailure
from cells.exec import keep_stdin, open_pty, take_terminal
from cells.holder import namespace_fds
from cells.model import Cell, Executable, leaf_of
from cells.mountview import Views
from cells.reaper import Reaper
from cells.spawn import (
    ExecRequest,
    NoClone3,
    can_clone,
    clone_start,
    default_env,
    disable_clone,
    output_pipe,
    spawn,
)
from cells.spec import ExecutableSpec
from cells.state import ExecutableInfo, ExecutableState
from observe.logstore import LogWriter, RunSizes, new_run
from observe.records import Stream

log = structlog.get_logger("cells.launch")

#: Starts whose child may be waited for at once (more queue for a free thread)
EXEC_WAIT_THREADS = 8
#: The window of a tty executable (``ExecutableSpec.tty``) until an attacher sends its own.
TTY_ROWS, TTY_COLS = 24, 80


def warm_profiles() -> None:
    """Build the default seccomp filter now (~35 ms with the library's import), not in the first
    Start; a host without libseccomp is reported here, and each contained Start then fails."""
    try:
        profile.for_holder()
    except CellError as exc:
        log.error("profile.unavailable", error=str(exc))


class Launcher:
    """Starts executables' processes for one runtime (``cells``, shared with it)."""

    def __init__(
        self,
        config: RuntimeConfig,
        backend: CgroupBackend,
        views: Views,
        reaper: Reaper,
        cells: dict[str, Cell],
        devnull: int,
    ) -> None:
        self.config = config
        self.log_root = Path(config.log_dir)
        self.backend = backend
        self.views = views
        self._reaper = reaper
        self._cells = cells
        self._devnull = devnull
        self._run_sizes = RunSizes()  # of finished runs, for the bound every start enforces
        self._exec_waiters = ThreadPoolExecutor(max_workers=EXEC_WAIT_THREADS, thread_name_prefix="cellar-exec-wait")

    def close(self) -> None:
        self._exec_waiters.shutdown(wait=True)  # bounded by exec_timeout_s

    async def launch(self, cell: Cell, spec: ExecutableSpec, previous: Executable | None) -> tuple[Executable, int | None]:
        """Leaf, log run and pipes, then the spawn: the new executable (its output captured) and, if
        the reaper saw it exit already, its wait status. Nothing is left behind when this raises."""
        # After every run on disk too: a freed cell's logs (and those a lost state forgot) remain.
        last = previous.info.run if previous is not None else 0
        leaf = leaf_of(spec.cell_name, spec.name)
        try:
            try:
                self.backend.create(leaf)  # the usual case first: no leaf left by a previous run
            except FailedPrecondition:
                if not self.backend.exists(leaf):
                    raise
                if self.backend.populated(leaf):
                    raise FailedPrecondition(f"the previous run of {spec.name!r} is still being cleaned up") from None
                self.backend.remove(leaf)
                self.backend.create(leaf)
        except RuntimeFailure as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOMEM:
                raise ResourceExhausted(
                    f"cell {spec.cell_name!r}: its memory limit leaves no room for the executable's cgroup"
                ) from None
            raise
        timing.mark("leaf_cgroup")
        # Finished runs share one run's bound (segment bytes x segments): restarts cannot fill the disk.
        keep = self.config.log_segment_bytes * self.config.log_max_segments
        fds: list[int] = []
        ns_fds: list[tuple[int, int]] = []
        writer = None
        made_dir = False
        directory = None
        try:
            # Never an existing directory: a new run must not append to an old one.
            directory, run, pruned = new_run(self.log_root, spec.cell_name, spec.name, last, keep, sizes=self._run_sizes)
            made_dir = True
            for old_run in pruned:
                log.info("logs.run_pruned", cell=spec.cell_name, exe=spec.name, run=old_run, keep_bytes=keep)
            timing.mark("log_run_dir")
            writer = LogWriter(
                directory,
                segment_bytes=self.config.log_segment_bytes,
                max_segments=self.config.log_max_segments,
                fresh=True,
            )
            timing.mark("log_run")
            if spec.tty:  # one pseudo-terminal for all three; the master is its output and (a dup) its stdin
                out_r, slave = open_pty(TTY_ROWS, TTY_COLS)
                os.set_blocking(out_r, False)
                fds += [out_r, slave]
                in_w = os.dup(out_r)
                fds.append(in_w)
                in_r = out_w = err_w = slave
                err_r = -1
            else:
                out_r, out_w = output_pipe()
                fds += [out_r, out_w]
                err_r, err_w = output_pipe()
                fds += [err_r, err_w]
                in_r, in_w = os.pipe2(os.O_CLOEXEC) if spec.stdin else (self._devnull, -1)  # attach: cells.exec
                fds += [in_r, in_w] if spec.stdin else []
            child_ends = [slave] if spec.tty else [out_w, err_w, *([in_r] if spec.stdin else [])]
            timing.mark("pipes")
            pidns_fd = None
            if cell.info.holder_pid:
                try:
                    ns_fds = namespace_fds(cell.info.holder_pid)
                    pidns_fd = ns.open_ns(cell.info.holder_pid, "pid")
                except (FileNotFoundError, ProcessLookupError):
                    # The holder died and its exit is not reaped yet (an OOM kill, a stray SIGKILL).
                    raise FailedPrecondition(
                        f"cell {spec.cell_name!r} lost its namespace holder (pid {cell.info.holder_pid}); free it"
                    ) from None
                ns_fds.append((pidns_fd, 0))  # closed with the rest; not entered by the child
            elif cell.info.netns:
                ns_fds = [
                    (os.open(f"/run/netns/{cell.info.netns}", os.O_RDONLY | os.O_CLOEXEC), ns.CLONE_NEWNET)
                ]
            exe_profile = profile.for_executable(cell.spec, spec)
            if not cell.info.isolate_process and not exe_profile.privileged:
                ns_fds.append((await self._view_fd(cell), ns.CLONE_NEWNS))  # entered last
            timing.mark("namespaces_profile")
            req = ExecRequest(
                argv=spec.program,
                env=default_env(spec.cell_name, spec.name, [*self.config.local_endpoint_env.items(),
                                                            *([("TERM", "xterm")] if spec.tty else []), *spec.env]),
                setup=functools.partial(take_terminal, slave) if spec.tty else None,
                cgroup_procs=self.backend.procs_files(leaf),
                namespaces=[(fd, kind) for fd, kind in ns_fds if kind],
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                cwd=spec.cwd,
                uid=spec.uid if spec.uid is not None else self.config.default_uid,
                gid=spec.gid if spec.uid is not None or spec.gid is not None else self.config.default_gid,
                pidns_fd=pidns_fd,
                close_in_parent=list(child_ends),
                exec_timeout_s=self.config.exec_timeout_s,
                profile=exe_profile,
                share_memory=not self._memory_limited(spec.cell_name),
            )
            for fd in child_ends:
                fds.remove(fd)
            timing.mark("exec_request")
            # Stamped before the spawn: the run's recorded length is never shorter than the process's
            # life (after the exec wait, a busy host had already run 10-20 ms of it).
            started = time.time_ns()
            try:
                pid, cell_pid, early_exit = await self._exec(req)
                timing.mark("spawn_to_exec")
            except ExecTimeout as exc:
                raise self._why_no_exec(spec.cell_name, req.exec_timeout_s) or exc from None
        except BaseException:
            for fd in fds:
                os.close(fd)
            if writer is not None:
                writer.close()
            if made_dir and directory is not None:  # only ours: another run's directory is never removed here
                shutil.rmtree(directory, ignore_errors=True)
                with contextlib.suppress(OSError):
                    directory.parent.rmdir()  # the executable's log dir, when this was its first run
            with contextlib.suppress(Exception):
                self.backend.remove(leaf)
            raise
        finally:
            for fd, _ in ns_fds:
                os.close(fd)
        info = ExecutableInfo(
            cell_name=spec.cell_name,
            name=spec.name,
            state=ExecutableState.RUNNING,
            argv=list(spec.argv),
            command=spec.command,
            description=spec.description,
            host_pid=pid,
            cell_pid=cell_pid,
            run=run,
            started_at_ns=started,
            privileged=exe_profile.privileged,
        )
        exe = Executable(info, leaf, asyncio.get_running_loop().create_future(), writer=writer)
        pipes = {Stream.STDOUT: out_r} if spec.tty else {Stream.STDOUT: out_r, Stream.STDERR: err_r}
        exe.capture = Capture(writer, pipes, f"{spec.cell_name}/{spec.name}")
        if spec.stdin:
            keep_stdin(exe, in_w)
        timing.mark("capture")
        return exe, early_exit

    async def _view_fd(self, cell: Cell) -> int:
        """The pinned view of a non-isolated cell; pinned now if it has none (a privileged cell
        starting a contained executable, a cell from before views existed)."""
        fd = self.views.open(cell.info.name)
        if fd is None:
            await self.views.pin(cell.info.name, granted=bool(cell.spec.grant_role))
            fd = self.views.open(cell.info.name)
        if fd is None:
            raise RuntimeFailure(f"cell {cell.info.name!r}: its mount view could not be pinned")
        return fd

    async def _exec(self, req: ExecRequest) -> tuple[int, int, int | None]:
        """``(pid, pid in its pid namespace, wait status if it exited already)``. The clone path
        waits for the exec in a worker thread; the fork path (no extension or no clone3) inline.
        A failed child is reaped here. (:func:`cells.spawn.spawn` is the blocking form of both.)"""
        if not can_clone(req):
            return self._fork_exec(req)
        with self._reaper.exec_wait() as early_exit_of:
            try:
                cloned = await asyncio.get_running_loop().run_in_executor(self._exec_waiters, clone_start, req)
            except NoClone3:
                disable_clone()
                return self._fork_exec(req)
            early_exit = early_exit_of(cloned.pid)
            if cloned.stage:
                if early_exit is None:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(cloned.pid, 0)
                raise cloned.failure(req)
            return cloned.pid, cloned.ns_pid, early_exit

    @staticmethod
    def _fork_exec(req: ExecRequest) -> tuple[int, int, int | None]:
        """The fork path, inline: its child cannot be reaped before we read its namespace pid."""
        pid = spawn(req)
        try:
            return pid, ns.nspid(pid), None
        except OSError:
            return pid, 0, None

    def _memory_limited(self, cell_name: str) -> bool:
        """Does a memory_max of the cell or an enclosing cell bind a child born in it?"""
        parts = cell_name.split("/")
        for depth in range(len(parts), 0, -1):
            cell = self._cells.get("/".join(parts[:depth]))
            if cell is not None and (cell.info.spec.get("limits") or {}).get("memory_max") is not None:
                return True
        return False

    def _why_no_exec(self, cell_name: str, timeout_s: float) -> CellError | None:
        """Why a child did not exec in time, when its cell (or an enclosing cell) explains it: frozen
        behind cellar's back, or a CPU or memory limit starving it. The caller's configuration, not a
        broken host (a 0.1% cpu.max cannot run the exec path within seconds on an emulated machine)."""
        with contextlib.suppress(OSError):
            if self.backend.frozen(cell_name):
                return FailedPrecondition(
                    f"cell {cell_name!r} is frozen (its cgroup.freeze was set outside cellar): "
                    f"the executable did not exec within {timeout_s:g}s and was killed"
                )
        limits: list[str] = []
        parts = cell_name.split("/")
        for depth in range(len(parts), 0, -1):
            name = "/".join(parts[:depth])
            cell = self._cells.get(name)
            if cell is None:
                continue
            spec = cell.info.spec.get("limits") or {}
            if spec.get("cpu_max_quota_us"):
                period = spec.get("cpu_max_period_us") or 100_000
                count = self.backend.cpu_throttled(name)
                throttled = "" if count is None else f", throttled {count} times"
                limits.append(f"cpu.max of {name!r} is {spec['cpu_max_quota_us']}/{period} us{throttled}")
            for key in ("memory_high", "memory_max"):
                if spec.get(key):
                    limits.append(f"{key} of {name!r} is {spec[key]} bytes")
        if not limits:
            return None
        return ResourceExhausted(
            f"the executable did not exec within {timeout_s:g}s and was killed: "
            f"{'; '.join(limits)} (raise the limit, or cells.exec_timeout_s)"
        )

