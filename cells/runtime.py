"""The domain logic of cells and executables, run inside the supervisor's event loop.

Everything that must not interleave (checking a name, registering a pid for the reaper) happens
without an ``await`` in between, so the event loop itself is the lock. The one exception is the wait
for a new child's exec: it runs in a spawn thread (the C spawner releases the GIL) so that a child
slow to exec (a starving cell limit, a frozen cgroup, a hung mount) holds up its own Start only; the
name stays reserved meanwhile (``Cell.starting``), and the reaper keeps the exit of a child whose
Start is not back yet (``_early_exits``). The kernel is the
source of truth for membership and kill (cgroups), this process for exit statuses (it is the parent
of every workload and reaps them in its SIGCHLD handler), the store for surviving a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from cells import devices, profile
from cells import namespaces as ns
from cells.capture import Capture
from cells.cgroup import CgroupBackend, detect, wait_empty
from cells.config import RuntimeConfig
from cells.errors import (
    AlreadyExists,
    CellError,
    ExecTimeout,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RuntimeFailure,
)
from cells.fdstore import FdStore, StoreUnavailable
from cells.holder import namespace_fds, start_holder
from cells.mountview import Views, build_isolated_root, check_mount_target, release_views_dir
from cells.protocol import cell_spec_from_dict
from cells.spawn import (
    ExecRequest,
    NoClone3,
    can_clone,
    clone_start,
    default_env,
    disable_clone,
    open_devnull,
    output_pipe,
    spawn,
)
from cells.spec import (
    EXECUTABLE_CGROUP_PREFIX,
    HOLDER_CGROUP,
    CellLimits,
    CellSpec,
    ExecutableSpec,
    validate_cell_name,
    validate_executable_name,
)
from cells.state import (
    CellInfo,
    CellState,
    ExecutableInfo,
    ExecutableState,
    ExitStatus,
    cell_from_dict,
    to_dict,
)
from cells.store import Store
from cells.store import encode as store_encode
from observe.logstore import (
    LogWriter,
    cell_dir,
    executable_dir,
    log_usage,
    next_run,
    prune_runs,
    purge,
    run_dir,
)
from observe.records import Stream, exit_payload

log = structlog.get_logger("cells.runtime")

#: After the main process exited: how long the rest of its leaf may take to die after cgroup.kill,
#: and how long a pipe may stay open after that (held by a process that left the leaf).
LEAF_EMPTY_TIMEOUT_S = 10.0
PIPE_EOF_TIMEOUT_S = 2.0
MAX_GRACE_S = 3600.0
WATCH_QUEUE = 1024
#: Ended executables the pid lookup still finds after their cell was freed (about 1 KB each).
ENDED_PIDS_KEPT = 4096
#: Starts whose child may be waited for at once (more queue for a free thread)
SPAWN_THREADS = 8
NETNS_DIR = "/run/netns"
LIVE_STATES = (ExecutableState.STARTING, ExecutableState.RUNNING, ExecutableState.STOPPING)


def netns_name(prefix: str, cell: str) -> str:
    """``<prefix><cell with '/' -> '.'>``, shortened with a hash when above the 63-char netns limit."""
    name = prefix + cell.replace("/", ".")
    if len(name) > 63:
        name = name[:52] + "-" + hashlib.sha1(cell.encode()).hexdigest()[:10]
    return name


def list_netns(prefix: str) -> list[str]:
    """Named netns starting with ``prefix``; reads /run/netns without importing pyroute2."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


async def create_netns(name: str, veth: Any) -> None:
    # pyroute2 costs ~13 MB of RSS (and fork time): loaded on the first network-isolated cell only.
    from cells import netns

    await netns.create_netns(name, veth)


async def delete_netns(name: str) -> None:
    from cells import netns

    await netns.delete_netns(name)


def _depth_key(name: str) -> tuple[str, ...]:
    """Sort key putting parents before children."""
    return tuple(name.split("/"))


def _matches(prefix: str, name: str) -> bool:
    """Path-aware prefix: ``a`` matches ``a`` and ``a/b``, not ``ab``; ``""`` matches everything."""
    prefix = prefix.rstrip("/")
    return not prefix or name == prefix or name.startswith(prefix + "/")


@dataclass(eq=False)
class Executable:
    info: ExecutableInfo
    leaf: str
    done: asyncio.Future[ExitStatus]
    capture: Capture | None = None
    writer: Any = None
    adopted_pidfd: int = -1  # a survivor of an earlier supervisor: not our child, watched via pidfd
    saved: bytes | None = None  # its encoded record, once ended (ended executables never change)


def _saved_json(exe: Executable) -> bytes:
    """``exe``'s part of the cell record; encoded once when it has ended."""
    if exe.saved is not None:
        return exe.saved
    record = store_encode(to_dict(exe.info))
    if exe.info.state not in LIVE_STATES:
        exe.saved = record
    return record


@dataclass(eq=False)
class Cell:
    spec: CellSpec
    info: CellInfo
    exes: dict[str, Executable] = field(default_factory=dict)
    holder_pidfd: int = -1  # adopted holder (not our child)
    #: executables whose process is being spawned (off the event loop), done when registered or failed
    starting: dict[str, asyncio.Future[None]] = field(default_factory=dict)


@dataclass(eq=False)
class Watcher:
    prefix: str
    queue: asyncio.Queue[tuple[str, ExecutableInfo, int]]
    dropped: int = 0

    def offer(self, kind: str, info: ExecutableInfo) -> None:
        """Never blocks the runtime: a full queue drops the event and counts it."""
        try:
            self.queue.put_nowait((kind, info, self.dropped))
            self.dropped = 0
        except asyncio.QueueFull:
            self.dropped += 1


def _pipes_key(info: ExecutableInfo) -> str:
    """The fd store's key of one run's pipes (executable names hold no '/')."""
    return f"{info.cell_name}/{info.name}/{info.run}"


def _grace(value: float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_GRACE_S:
        raise InvalidArgument("grace_s", f"must be a number of seconds in [0, {MAX_GRACE_S:g}]")
    return float(value)


class Runtime:
    """Cells (cgroup + namespaces + holder) and their executables; see the module docstring."""

    def __init__(self, config: RuntimeConfig, backend: CgroupBackend | None = None) -> None:
        self.config = config
        self.backend = backend or detect(config.cgroup_root_name)
        self.store = Store(config.cells_dir)
        self.log_root = Path(config.log_dir)
        self.cells: dict[str, Cell] = {}
        self._reserved: set[str] = set()  # names being allocated (an await is in the way)
        self._children: dict[int, Callable[[int], None]] = {}
        self._holder_exits: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watchers: set[Watcher] = set()
        self._devnull = open_devnull()
        self.started_at_ns = time.time_ns()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        # Writers of ended runs whose LOST/EXIT records a full disk held back (retried by _flush_logs).
        self._unflushed: set[LogWriter] = set()
        # Ended executables by host pid, newest last, kept past a Free (a job's cell is freed as it
        # ends) so the seed's pid-addressed log stream still finds them; bounded, not persisted.
        self._ended: OrderedDict[int, ExecutableInfo] = OrderedDict()
        # Spawns wait for their child's exec in these threads, so a child that is slow to exec (a
        # starving cell limit, a hung mount) holds up its own Start only, not every other request.
        self._spawn_pool = ThreadPoolExecutor(max_workers=SPAWN_THREADS, thread_name_prefix="cellar-spawn")
        self._spawns_in_flight = 0
        self._spawns_submitted = 0  # stamps _early_exits: a spawn takes only exits reaped after it began
        # Exits the reaper saw while spawns were in flight, for pids not registered yet: a child can
        # exit (and be reaped) before the Start that spawned it is back on the event loop. pid ->
        # (wait status, spawns submitted when it was reaped): an orphan's pid, reused by a newer child.
        self._early_exits: dict[int, tuple[int, int]] = {}
        # Copies of every run's pipe read ends, held by a process that outlives this one (see
        # cells.fdstore): a workload that writes after our death neither dies of SIGPIPE nor loses it.
        self.fdstore = FdStore(
            os.path.join(config.run_dir, "fdstore.sock"),
            start_timeout_s=config.supervisor_start_timeout_s,
            stderr_path=os.path.join(config.state_dir, "fdstore.stderr"),
            on_restart=self._keep_all_pipes,
        )
        self._fdstore_down = False  # an outage was logged (once)
        # What contained workloads see of the filesystem (pinned views of non-isolated cells).
        self.views = Views(config, lambda cell: [os.path.dirname(p) for p in self.backend.procs_files(cell)])

    # -- process plumbing --------------------------------------------------------------------------
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become the reaper of every child (SIGCHLD) and start the log flush timer."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self._flush_handle = loop.call_later(5.0, self._flush_logs)

    async def settle_starts(self) -> None:
        """Wait for the Starts in flight (bounded by exec_timeout_s): their processes get registered
        and persisted, or cleaned up, before the supervisor exits."""
        pending = [done for cell in self.cells.values() for done in cell.starting.values()]
        await asyncio.gather(*(asyncio.shield(done) for done in pending))

    def close(self) -> None:
        """Detach (supervisor exit): workloads keep running; state is already on disk."""
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signal.SIGCHLD)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._spawn_pool.shutdown(wait=True)  # bounded by exec_timeout_s
        for cell in self.cells.values():
            for exe in cell.exes.values():
                if exe.capture is not None:  # what the pipes hold now, and a pending partial line;
                    with contextlib.suppress(Exception):  # the rest waits in them for our successor
                        exe.capture.close()
                if exe.writer is not None:
                    with contextlib.suppress(Exception):
                        exe.writer.close()
        self.fdstore.close()
        self.store.close()

    def reap(self) -> None:
        """waitpid(-1) until nothing is left; dispatch to known pids, drop orphans (we are subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self._children and self._spawns_in_flight:
                self._early_exits[pid] = (status, self._spawns_submitted)
            else:
                self.reap_status(pid, status)

    def reap_status(self, pid: int, status: int) -> None:
        """Hand one reaped child's wait status to whoever registered it (orphans: nobody)."""
        callback = self._children.pop(pid, None)
        if callback is not None:
            try:
                callback(status)
            except Exception:
                log.exception("reap.callback_failed", pid=pid)

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runtime.task_failed", error=repr(task.exception()))

    def _flush_logs(self) -> None:
        """Retry LOST/EXIT records a full disk held back, so quiet workloads get their markers too."""
        for cell in self.cells.values():
            for exe in cell.exes.values():
                if exe.writer is not None and exe.writer.dropped:
                    with contextlib.suppress(Exception):
                        exe.writer.flush_pending()
        for writer in list(self._unflushed):
            with contextlib.suppress(Exception):
                if writer.flush_pending():
                    self._unflushed.discard(writer)
                    writer.close()
        if self._loop is not None:
            self._flush_handle = self._loop.call_later(5.0, self._flush_logs)

    def _watch_pidfd(self, pid: int, on_exit: Callable[[], None]) -> int:
        """Exit notification for a process that is not our child (adopted after a restart)."""
        fd = os.pidfd_open(pid)
        loop = asyncio.get_running_loop()

        def fired() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            on_exit()

        loop.add_reader(fd, fired)
        return fd

    # -- lookups ---------------------------------------------------------------------------------
    def _cell(self, name: Any) -> Cell:
        if not isinstance(name, str):
            raise InvalidArgument("cell.name", "must be a string")
        validate_cell_name(name)
        cell = self.cells.get(name)
        if cell is None:
            raise NotFound(f"cell {name!r} not found")
        return cell

    def _children_of(self, name: str) -> list[str]:
        return [n for n in self.cells if n.startswith(name + "/")]

    def _persist(self, cell: Cell) -> None:
        """Save ``cell``'s record before the caller answers (so a supervisor crash never forgets a
        workload it reported started). Ended executables never change again, so their dicts are
        built once: a save costs the live ones plus one ``json.dumps``, not a walk of the history."""
        info = to_dict(dataclasses.replace(self._snapshot(cell, stats=False), executables=[]))
        del info["executables"]
        self.store.save_cell(cell.info.name, info, [_saved_json(e) for _, e in sorted(cell.exes.items())])

    def _snapshot(self, cell: Cell, stats: bool) -> CellInfo:
        info = cell.info
        out = CellInfo(
            name=info.name,
            state=info.state,
            cgroup_path=info.cgroup_path,
            cgroup_v2_limits=info.cgroup_v2_limits,
            isolate_process=info.isolate_process,
            isolate_network=info.isolate_network,
            netns=info.netns,
            holder_pid=info.holder_pid,
            created_at_ns=info.created_at_ns,
            spec=info.spec,
            executables=[e.info for _, e in sorted(cell.exes.items())],
        )
        if stats:
            try:
                out.stats = self.backend.stats(info.name)
            except (OSError, CellError) as exc:
                log.warning("cell.stats_failed", cell=info.name, error=str(exc))
        return out

    def _emit(self, kind: str, info: ExecutableInfo) -> None:
        for watcher in list(self.watchers):
            if _matches(watcher.prefix, info.cell_name):
                watcher.offer(kind, info)

    def watch(self, prefix: str) -> Watcher:
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix", "must be a string")
        watcher = Watcher(prefix, asyncio.Queue(WATCH_QUEUE))
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    # -- info / list -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "mode": self.backend.mode,
            "limits_v2": self.backend.limits_v2,
            "cgroup_root": self.backend.root,
            "supervisor_pid": os.getpid(),
            "started_at_ns": self.started_at_ns,
            "version": VERSION,
            "cells": len(self.cells),
        }

    def list(self, prefix: str = "", stats: bool = False) -> list[CellInfo]:
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix", "must be a string")
        names = sorted((n for n in self.cells if _matches(prefix, n)), key=_depth_key)
        return [self._snapshot(self.cells[n], bool(stats)) for n in names]

    def inspect(self, name: str) -> CellInfo:
        return self._snapshot(self._cell(name), True)

    def find_pid(self, host_pid: int) -> ExecutableInfo:
        if isinstance(host_pid, bool) or not isinstance(host_pid, int) or host_pid <= 0:
            raise InvalidArgument("host_pid", "must be a positive integer")
        found: ExecutableInfo | None = None
        for cell in self.cells.values():
            for exe in cell.exes.values():
                if exe.info.host_pid == host_pid and (found is None or exe.info.state in LIVE_STATES):
                    found = exe.info
        if found is None:
            found = self._ended.get(host_pid)  # its cell was freed since
        if found is None:
            raise NotFound(f"no executable with host pid {host_pid}")
        return found

    def purge_logs(self, cell_name: Any, executable: Any = "") -> tuple[int, int]:
        """Delete the logs of ``executable`` (every run) or of ``cell_name`` and its child cells:
        ``(runs, bytes)``. Here, not in cellard, so no Start can slip between the check and the delete."""
        if not isinstance(cell_name, str) or not isinstance(executable, str):
            raise InvalidArgument("cell_name" if not isinstance(cell_name, str) else "executable_name",
                                  "must be a string")
        validate_cell_name(cell_name, "cell_name")
        if executable:
            validate_executable_name(executable, "executable_name")
        for name, cell in self.cells.items():
            if name != cell_name and not name.startswith(cell_name + "/"):
                continue
            live = [e.info.name for e in cell.exes.values() if e.info.state in LIVE_STATES] + list(cell.starting)
            for exe_name in live:
                if not executable or (name, exe_name) == (cell_name, executable):
                    raise FailedPrecondition(f"{name}/{exe_name} is running: stop it before purging its logs")
        target = executable_dir(self.log_root, cell_name, executable) if executable else cell_dir(self.log_root, cell_name)
        runs, size = log_usage(target)
        if not runs:
            raise NotFound(f"no logs of {cell_name}{'/' + executable if executable else ''}")
        for writer in [w for w in self._unflushed if target in w.directory.parents]:
            self._unflushed.discard(writer)  # its EXIT record was waiting for disk space: nothing to add it to now
            with contextlib.suppress(Exception):
                writer.close()
        purge(self.log_root, cell_name, executable or None)
        log.info("logs.purged", cell=cell_name, exe=executable, runs=runs, bytes=size)
        return runs, size

    # -- allocate ----------------------------------------------------------------------------------
    async def allocate(self, spec: CellSpec) -> CellInfo:
        spec.validate()
        name = spec.name
        if name in self.cells or name in self._reserved:
            raise AlreadyExists(f"cell {name!r} exists already")
        parent = name.rpartition("/")[0]
        if parent:
            if parent not in self.cells:
                raise NotFound(f"parent cell {parent!r} not found")
            if self.cells[parent].info.state is not CellState.ACTIVE:
                raise FailedPrecondition(f"parent cell {parent!r} is {self.cells[parent].info.state.value}")
        if len(self.cells) + len(self._reserved) >= self.config.max_cells:
            raise ResourceExhausted(f"at most {self.config.max_cells} cells (max_cells)")
        self._check_mount_sources(spec)
        self._reserved.add(name)
        holder_pid = 0
        nsname = netns_name(self.config.netns_prefix, name) if spec.isolate_network else ""
        made_cgroup = made_netns = made_view = False
        # The namespace holder builds the cell's mount view in Python before its exec: under a
        # cpu.max of 1 ms/s that outlasted exec_timeout_s. CPU bandwidth binds the workloads, so it
        # is written once the holder runs (tests/cells/test_runtime.py).
        bandwidth = CellLimits(cpu_max_quota_us=spec.limits.cpu_max_quota_us, cpu_max_period_us=spec.limits.cpu_max_period_us)
        first = dataclasses.replace(spec.limits, cpu_max_quota_us=None, cpu_max_period_us=None)
        try:
            self.backend.create(name, first if spec.isolate_process else spec.limits)
            made_cgroup = True
            if not spec.privileged:  # the cell's, for every executable in it (see README)
                devices.restrict(self.backend.unified_path(name))
            if nsname:
                await create_netns(nsname, spec.veth)
                made_netns = True
            if not spec.privileged and not spec.isolate_process:
                made_view = True
                await self.views.pin(name, granted=bool(spec.grant_role))
            if spec.isolate_process:
                try:
                    self.backend.create(f"{name}/{HOLDER_CGROUP}")
                except RuntimeFailure as exc:  # pure v2: the cell's memory.max charges the child's mkdir
                    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOMEM:
                        raise ResourceExhausted(
                            f"cell {name!r}: its memory limit leaves no room for the namespace holder's cgroup"
                        ) from None
                    raise
                build_root = None
                if not spec.privileged:
                    view = self.views.view(name, granted=bool(spec.grant_role))
                    data = self.views.make_data_dir(name)
                    staging = self.views.staging
                    made_view = True

                    def build_root() -> None:
                        build_isolated_root(view, data, staging, spec.mounts, spec.rootfs)

                holder_pid = start_holder(
                    self.backend.procs_files(f"{name}/{HOLDER_CGROUP}"),
                    spec.hostname,
                    f"/run/netns/{nsname}" if nsname else None,
                    self._devnull,
                    build_root,
                    None if spec.privileged else profile.for_holder(),
                )
                if bandwidth.cpu_max_quota_us is not None:
                    self.backend.set_limits(name, bandwidth)
            info = CellInfo(
                name=name,
                state=CellState.ACTIVE,
                cgroup_path=self.backend.unified_path(name),
                cgroup_v2_limits=self.backend.limits_v2,
                isolate_process=spec.isolate_process,
                isolate_network=spec.isolate_network,
                netns=nsname,
                holder_pid=holder_pid,
                created_at_ns=time.time_ns(),
                spec=to_dict(spec),
            )
            cell = Cell(spec, info)
            if holder_pid:
                self._watch_holder(cell, holder_pid, adopted=False)
            self.cells[name] = cell
            try:
                self._persist(cell)
            except BaseException:
                del self.cells[name]
                raise
        except BaseException as exc:
            log.warning("cell.allocate_failed", cell=name, error=str(exc))
            await self._rollback(name, holder_pid, nsname if made_netns else "", made_cgroup)
            if made_view:
                self._drop_view(spec)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"allocating cell {name!r}: {exc}") from exc
            raise
        finally:
            self._reserved.discard(name)
        log.info("cell.allocated", cell=name, cgroup=info.cgroup_path, netns=nsname, holder=holder_pid)
        return self._snapshot(cell, stats=False)

    async def _rollback(self, name: str, holder_pid: int, nsname: str, made_cgroup: bool) -> None:
        with contextlib.suppress(Exception):
            if holder_pid:
                os.kill(holder_pid, signal.SIGKILL)
                fut = self._holder_exits.get(name)
                if fut is not None:
                    await asyncio.wait_for(asyncio.shield(fut), 5)
        with contextlib.suppress(Exception):
            if made_cgroup:
                await self._kill_and_remove(name)
        with contextlib.suppress(Exception):
            if nsname:
                await delete_netns(nsname)

    @staticmethod
    def _check_mount_sources(spec: CellSpec) -> None:
        """What the runtime alone can tell about bind mounts: that their sources exist. Who may
        mount what is the agent's decision (an operator only under cellar's volumes)."""
        for i, mount in enumerate(spec.mounts):
            if not os.path.exists(mount.source):
                raise InvalidArgument(f"cell.mounts[{i}].source", f"{mount.source} does not exist")
            why = None if spec.rootfs else check_mount_target(mount.target)
            if why:
                raise InvalidArgument(f"cell.mounts[{i}].target", why)
        if spec.rootfs and not os.path.isfile(os.path.join(spec.rootfs, "bin/sh")):
            raise InvalidArgument("cell.rootfs", f"{spec.rootfs} must be a directory tree with /bin/sh")

    def _drop_view(self, spec: CellSpec) -> None:
        """Unpin a non-isolated cell's view; remove an isolated cell's data unless it is kept."""
        self.views.unpin(spec.name)
        if spec.isolate_process and not spec.keep_data:
            self.views.remove_data_dir(spec.name)

    def _watch_holder(self, cell: Cell, pid: int, adopted: bool) -> None:
        name = cell.info.name
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._holder_exits[name] = fut

        def gone(_status: int = 0) -> None:
            cell.holder_pidfd = -1
            if not fut.done():
                fut.set_result(None)
            if self._holder_exits.get(name) is fut:
                del self._holder_exits[name]
            current = self.cells.get(name)
            if current is cell and cell.info.holder_pid == pid:
                cell.info.holder_pid = 0
                if cell.info.state is not CellState.FREEING:
                    log.error("cell.holder_died", cell=name, pid=pid)
                    with contextlib.suppress(Exception):
                        self._persist(cell)

        if adopted:
            cell.holder_pidfd = self._watch_pidfd(pid, gone)
        else:
            self._children[pid] = gone

    async def _kill_and_remove(self, rel: str) -> None:
        """cgroup.kill the subtree, wait until it is empty, remove it."""
        if not self.backend.exists(rel):
            return
        if self.backend.populated(rel):
            self.backend.release_cpu(rel)  # dying takes CPU
            self.backend.kill(rel)
            if not await wait_empty(self.backend, rel, LEAF_EMPTY_TIMEOUT_S):
                raise RuntimeFailure(f"cgroup {rel!r} still has processes after cgroup.kill")
        self.backend.remove(rel)

    # -- start -------------------------------------------------------------------------------------
    async def start(self, spec: ExecutableSpec) -> ExecutableInfo:
        """Spawn ``spec``; the child's exec is awaited off the event loop. A cancelled caller does
        not cancel the start: its process is registered (or its failure cleaned up) regardless."""
        task = asyncio.get_running_loop().create_task(self._start(spec))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved if nobody awaits
        return await asyncio.shield(task)

    async def _start(self, spec: ExecutableSpec) -> ExecutableInfo:
        spec.validate()
        cell = self._cell(spec.cell_name)
        if cell.info.state is CellState.FROZEN:
            raise FailedPrecondition(f"cell {spec.cell_name!r} is frozen")
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {spec.cell_name!r} is being freed")
        if cell.info.isolate_process and not cell.info.holder_pid:
            raise FailedPrecondition(f"cell {spec.cell_name!r} lost its namespace holder; free it")
        previous = cell.exes.get(spec.name)
        if (previous is not None and previous.info.state in LIVE_STATES) or spec.name in cell.starting:
            raise AlreadyExists(f"executable {spec.name!r} is running in cell {spec.cell_name!r}")
        done = asyncio.get_running_loop().create_future()
        cell.starting[spec.name] = done
        try:
            return await self._spawn_registered(cell, spec, previous)
        finally:
            del cell.starting[spec.name]
            done.set_result(None)

    async def _spawn_registered(self, cell: Cell, spec: ExecutableSpec, previous: Executable | None) -> ExecutableInfo:
        """Leaf, log run and pipes; the spawn; then the executable is known to the cell and the reaper."""
        # After every run on disk too: a freed cell's logs (and those a lost state forgot) remain.
        last = previous.info.run if previous is not None else 0
        run = next_run(self.log_root, spec.cell_name, spec.name, last)
        leaf = f"{spec.cell_name}/{EXECUTABLE_CGROUP_PREFIX}{spec.name}"
        if self.backend.exists(leaf):
            if self.backend.populated(leaf):
                raise FailedPrecondition(f"the previous run of {spec.name!r} is still being cleaned up")
            self.backend.remove(leaf)
        try:
            self.backend.create(leaf)
        except RuntimeFailure as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOMEM:
                raise ResourceExhausted(
                    f"cell {spec.cell_name!r}: its memory limit leaves no room for the executable's cgroup"
                ) from None
            raise
        directory = run_dir(self.log_root, spec.cell_name, spec.name, run)
        # Finished runs share one run's bound (segment bytes x segments): restarts cannot fill the disk.
        keep = self.config.log_segment_bytes * self.config.log_max_segments
        for pruned in prune_runs(self.log_root, spec.cell_name, spec.name, keep):
            log.info("logs.run_pruned", cell=spec.cell_name, exe=spec.name, run=pruned, keep_bytes=keep)
        fds: list[int] = []
        ns_fds: list[tuple[int, int]] = []
        writer = None
        made_dir = False
        try:
            directory.mkdir(parents=True)  # never exist_ok: a new run must not append to an old one
            made_dir = True
            writer = LogWriter(
                directory,
                segment_bytes=self.config.log_segment_bytes,
                max_segments=self.config.log_max_segments,
            )
            out_r, out_w = output_pipe()
            fds += [out_r, out_w]
            err_r, err_w = output_pipe()
            fds += [err_r, err_w]
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
            req = ExecRequest(
                argv=spec.program,
                env=default_env(spec.cell_name, spec.name, [*self.config.local_endpoint_env.items(), *spec.env]),
                setup=None,
                cgroup_procs=self.backend.procs_files(leaf),
                namespaces=[(fd, kind) for fd, kind in ns_fds if kind],
                stdin=self._devnull,
                stdout=out_w,
                stderr=err_w,
                cwd=spec.cwd,
                uid=spec.uid if spec.uid is not None else self.config.default_uid,
                gid=spec.gid if spec.uid is not None or spec.gid is not None else self.config.default_gid,
                pidns_fd=pidns_fd,
                close_in_parent=[out_w, err_w],
                exec_timeout_s=self.config.exec_timeout_s,
                profile=exe_profile,
            )
            fds.remove(out_w)
            fds.remove(err_w)
            try:
                pid, cell_pid, early_exit = await self._spawn(req)
            except ExecTimeout as exc:
                raise self._why_no_exec(spec.cell_name, req.exec_timeout_s) or exc from None
        except BaseException:
            for fd in fds:
                os.close(fd)
            if writer is not None:
                writer.close()
            if made_dir:  # only ours: the directory of another run is never removed here
                shutil.rmtree(directory, ignore_errors=True)
                with contextlib.suppress(OSError):
                    directory.parent.rmdir()  # the executable's log dir, when this was its first run
            with contextlib.suppress(Exception):
                self.backend.remove(leaf)
            raise
        finally:
            for fd, _ in ns_fds:
                os.close(fd)
        started = time.time_ns()
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
        exe.capture = Capture(writer, {Stream.STDOUT: out_r, Stream.STDERR: err_r}, f"{spec.cell_name}/{spec.name}")
        cell.exes[spec.name] = exe
        self._keep_pipes(exe)
        self._children[pid] = lambda status: self._on_exit(cell, exe, status)
        if early_exit is not None:  # reaped while we waited for the exec report
            self.reap_status(pid, early_exit)
        try:
            self._persist(cell)
        except OSError as exc:  # the workload runs; only crash recovery of this run is at risk
            log.error("store.save_failed", cell=spec.cell_name, error=str(exc))
        log.info("exe.started", cell=spec.cell_name, exe=spec.name, pid=pid, cell_pid=cell_pid, run=run)
        self._emit("started", info)
        return info

    @staticmethod
    def warm_profiles() -> None:
        """Build the default seccomp filter now (~35 ms with the library's import), not in the first
        Start; a host without libseccomp is reported here, and each contained Start then fails."""
        try:
            profile.for_holder()
        except CellError as exc:
            log.error("profile.unavailable", error=str(exc))

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

    async def _spawn(self, req: ExecRequest) -> tuple[int, int, int | None]:
        """``(pid, pid in its pid namespace, wait status if it exited already)``. The clone path
        waits for the exec in a worker thread; the fork path (no extension or no clone3) inline.
        A failed child is reaped here."""
        if not can_clone(req):
            return self._fork_spawn(req)
        self._spawns_in_flight += 1
        self._spawns_submitted += 1
        submitted = self._spawns_submitted
        try:
            try:
                cloned = await asyncio.get_running_loop().run_in_executor(self._spawn_pool, clone_start, req)
            except NoClone3:
                disable_clone()
                return self._fork_spawn(req)
            stashed = self._early_exits.pop(cloned.pid, None)
            early_exit = stashed[0] if stashed is not None and stashed[1] >= submitted else None
            if cloned.stage:
                if early_exit is None:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(cloned.pid, 0)
                raise cloned.failure(req)
            return cloned.pid, cloned.ns_pid, early_exit
        finally:
            self._spawns_in_flight -= 1
            if not self._spawns_in_flight:
                self._early_exits.clear()  # orphans (we are subreaper) nobody will claim

    @staticmethod
    def _fork_spawn(req: ExecRequest) -> tuple[int, int, int | None]:
        """The fork path, inline: its child cannot be reaped before we read its namespace pid."""
        pid = spawn(req)
        try:
            return pid, ns.nspid(pid), None
        except OSError:
            return pid, 0, None

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
            cell = self.cells.get(name)
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

    # -- pipes in the fd store ---------------------------------------------------------------------
    def _keep_pipes(self, exe: Executable) -> None:
        """Copies of ``exe``'s pipe read ends to the fd store. Best effort: without them only the
        survival of its output across a supervisor restart is lost, never the workload."""
        if exe.capture is None:
            return
        try:
            self.fdstore.put(_pipes_key(exe.info), {stream.name: fd for stream, fd in exe.capture.pipes.items()})
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("put", exc)
        else:
            self._fdstore_down = False

    def _keep_all_pipes(self) -> None:
        """A new store (the old one died): give it every live run's pipes again."""
        for cell in self.cells.values():
            for exe in cell.exes.values():
                self._keep_pipes(exe)

    def _release_pipes(self, exe: Executable) -> None:
        """The run is over: the store's copies must not keep a stray writer's pipe open for ever."""
        try:
            self.fdstore.drop(_pipes_key(exe.info))
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("drop", exc)

    def _fdstore_failed(self, what: str, exc: Exception) -> None:
        """Logged once per outage (every Start and exit would repeat it)."""
        if not self._fdstore_down:
            log.error("fdstore.unavailable", op=what, error=str(exc),
                      consequence="output written while no supervisor runs is lost, and the writer killed by SIGPIPE")
        self._fdstore_down = True

    def _forget_unclaimed_pipes(self) -> None:
        """After reconcile: the store's copies of runs that are over (or never adopted) are closed.
        Also what starts the store on a fresh host, before the first Start needs it."""
        live = {_pipes_key(e.info) for c in self.cells.values() for e in c.exes.values() if e.info.state in LIVE_STATES}
        try:
            for key in self.fdstore.held_keys():
                if key not in live:
                    self.fdstore.drop(key)
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("keys", exc)

    def _resume_capture(self, exe: Executable) -> None:
        """An adopted run (alive, or ended while no supervisor ran): take its pipes back from the
        store and append to its log where it ends. If that fails the store keeps its copies (a
        writer blocks on a full pipe rather than dying of SIGPIPE) until the run is over."""
        try:
            held = self.fdstore.get(_pipes_key(exe.info))
        except (StoreUnavailable, OSError) as exc:
            self._fdstore_failed("get", exc)
            return
        pipes = {Stream[name]: fd for name, fd in held.items() if name in ("STDOUT", "STDERR")}
        unknown = [fd for name, fd in held.items() if name not in ("STDOUT", "STDERR")]
        for fd in unknown:
            os.close(fd)
        if not pipes:
            log.error("reconcile.output_lost", cell=exe.info.cell_name, exe=exe.info.name,
                      reason="its pipes are not in the fd store")
            return
        try:
            exe.writer = LogWriter(
                run_dir(self.log_root, exe.info.cell_name, exe.info.name, exe.info.run),
                segment_bytes=self.config.log_segment_bytes,
                max_segments=self.config.log_max_segments,
            )
        except Exception as exc:
            for fd in pipes.values():
                os.close(fd)
            log.error("reconcile.output_lost", cell=exe.info.cell_name, exe=exe.info.name, reason=str(exc))
            return
        exe.capture = Capture(exe.writer, pipes, f"{exe.info.cell_name}/{exe.info.name}")

    # -- exit --------------------------------------------------------------------------------------
    def _on_exit(self, cell: Cell, exe: Executable, status: int | None) -> None:
        ended = time.time_ns()
        if status is None:
            exit = ExitStatus(started_at_ns=exe.info.started_at_ns, ended_at_ns=ended)
        else:
            exit = ExitStatus.from_wait_status(
                status, started_at_ns=exe.info.started_at_ns, ended_at_ns=ended
            )
            if exit.signal == signal.SIGKILL:
                with contextlib.suppress(Exception):
                    exit.oom_killed = self.backend.stats(exe.leaf).oom_kills > 0
        self._spawn_task(self._finish(cell, exe, exit, lost=status is None))

    async def _finish(self, cell: Cell, exe: Executable, exit: ExitStatus, lost: bool) -> None:
        """The main process is gone: kill the rest of its leaf, drain the pipes, record the exit."""
        try:
            await self._kill_and_remove(exe.leaf)
        except (OSError, CellError) as exc:
            log.error("exe.leaf_cleanup_failed", leaf=exe.leaf, error=str(exc))
        if exe.capture is not None:
            await exe.capture.wait_closed(PIPE_EOF_TIMEOUT_S)
        self._release_pipes(exe)
        if exe.writer is None and lost:
            with contextlib.suppress(Exception):
                exe.writer = LogWriter(
                    run_dir(self.log_root, exe.info.cell_name, exe.info.name, exe.info.run),
                    segment_bytes=self.config.log_segment_bytes,
                    max_segments=self.config.log_max_segments,
                )
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
                    self._unflushed.add(exe.writer)
            except Exception as exc:
                log.error("exe.exit_record_failed", exe=exe.info.name, error=str(exc))
            exe.writer = None
        exe.capture = None
        exe.info.state = ExecutableState.LOST if lost else ExecutableState.EXITED
        exe.info.exit = exit
        if self.cells.get(cell.info.name) is cell:
            try:
                self._persist(cell)
            except OSError as exc:
                log.error("store.save_failed", cell=cell.info.name, error=str(exc))
        log.info("exe.exited", cell=exe.info.cell_name, exe=exe.info.name, status=exit.describe(), lost=lost)
        self._emit("lost" if lost else "exited", exe.info)
        if exe.info.host_pid:
            self._ended.pop(exe.info.host_pid, None)
            self._ended[exe.info.host_pid] = exe.info
            while len(self._ended) > ENDED_PIDS_KEPT:
                self._ended.popitem(last=False)
        if not exe.done.done():
            exe.done.set_result(exit)

    # -- stop --------------------------------------------------------------------------------------
    async def stop(self, cell_name: str, name: str, grace_s: float | None = None) -> ExitStatus:
        """SIGTERM, then cgroup.kill of the leaf after ``grace_s``; an exited run returns its status.

        A frozen cell is refused (FailedPrecondition) rather than thawed behind the caller's back:
        the caller froze it on purpose and decides when it runs again.
        """
        grace = _grace(grace_s, self.config.default_grace_s)
        cell = self._cell(cell_name)
        if not isinstance(name, str):
            raise InvalidArgument("executable.name", "must be a string")
        validate_executable_name(name)
        if name in cell.starting:  # stop what this Start is about to run, not the run before it
            await asyncio.shield(cell.starting[name])
        exe = cell.exes.get(name)
        if exe is None:
            raise NotFound(f"executable {name!r} not found in cell {cell_name!r}")
        if exe.info.state not in LIVE_STATES:
            assert exe.info.exit is not None
            return exe.info.exit
        if cell.info.state is CellState.FROZEN:
            raise FailedPrecondition(f"cell {cell_name!r} is frozen")
        return await self._stop(exe, grace)

    async def _stop(self, exe: Executable, grace: float) -> ExitStatus:
        if exe.done.done():
            return exe.done.result()
        if exe.info.state is ExecutableState.RUNNING:
            exe.info.state = ExecutableState.STOPPING
            self._emit("stopping", exe.info)
            self._signal(exe, signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(exe.done), grace)
        except TimeoutError:
            pass
        if self.backend.exists(exe.leaf):
            with contextlib.suppress(OSError, CellError):
                self.backend.kill(exe.leaf)
        try:
            return await asyncio.wait_for(
                asyncio.shield(exe.done), LEAF_EMPTY_TIMEOUT_S + PIPE_EOF_TIMEOUT_S + 5
            )
        except TimeoutError:
            raise RuntimeFailure(f"executable {exe.info.name!r} did not exit after cgroup.kill") from None

    def _signal(self, exe: Executable, sig: int) -> None:
        """Signal the main process; safe against pid reuse since only our reaper frees the pid."""
        if exe.done.done():
            return
        with contextlib.suppress(ProcessLookupError):
            if exe.adopted_pidfd >= 0:
                signal.pidfd_send_signal(exe.adopted_pidfd, sig)
            elif exe.info.host_pid in self._children:
                os.kill(exe.info.host_pid, sig)

    # -- free --------------------------------------------------------------------------------------
    async def free(self, name: str, grace_s: float | None = None) -> None:
        grace = _grace(grace_s, self.config.default_grace_s)
        cell = self._cell(name)
        children = self._children_of(name)
        if children:
            raise FailedPrecondition(f"cell {name!r} has child cells: {', '.join(sorted(children)[:5])}")
        if cell.info.state is CellState.FROZEN:
            with contextlib.suppress(OSError, CellError):
                self.backend.thaw(name)
        cell.info.state = CellState.FREEING
        # The cell is going away: its processes stop (and die) at full speed, not under its cpu.max.
        self.backend.release_cpu(name)
        # Starts already past their checks finish first (bounded by exec_timeout_s): a process
        # spawned behind our back would be killed by the cgroup removal but never reported.
        await asyncio.gather(*(asyncio.shield(done) for done in cell.starting.values()))
        live = [e for e in cell.exes.values() if e.info.state in LIVE_STATES]
        results = await asyncio.gather(*(self._stop(e, grace) for e in live), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("cell.free_stop_failed", cell=name, error=str(result))
        await self._kill_holder(cell)
        await self._kill_and_remove(name)
        self._drop_view(cell.spec)
        if cell.info.netns:
            await delete_netns(cell.info.netns)
        self.store.delete(name)
        if self.cells.get(name) is cell:
            del self.cells[name]
        log.info("cell.freed", cell=name)

    async def _kill_holder(self, cell: Cell) -> None:
        pid = cell.info.holder_pid
        if not pid:
            return
        fut = self._holder_exits.get(cell.info.name)
        with contextlib.suppress(ProcessLookupError):
            if cell.holder_pidfd >= 0:
                signal.pidfd_send_signal(cell.holder_pidfd, signal.SIGKILL)
            elif pid in self._children:
                os.kill(pid, signal.SIGKILL)
        if fut is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), 5)

    # -- freeze --------------------------------------------------------------------------------------
    def freeze(self, name: str) -> None:
        cell = self._cell(name)
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {name!r} is being freed")
        if cell.starting:  # a child frozen before its exec would time out and be killed
            raise FailedPrecondition(f"cell {name!r}: {', '.join(sorted(cell.starting))} is starting; freeze it after")
        self.backend.freeze(name)
        cell.info.state = CellState.FROZEN
        self._persist(cell)

    def thaw(self, name: str) -> None:
        cell = self._cell(name)
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {name!r} is being freed")
        self.backend.thaw(name)
        cell.info.state = CellState.ACTIVE
        self._persist(cell)

    # -- shutdown ------------------------------------------------------------------------------------
    async def free_all(self, grace_s: float = 0.0) -> None:
        """Free every cell, children first (uninstall, tests); then remove the cgroup root."""
        for name in sorted(self.cells, key=_depth_key, reverse=True):
            try:
                await self.free(name, grace_s)
            except Exception as exc:
                log.error("cell.free_failed", cell=name, error=str(exc))
        with contextlib.suppress(Exception):
            self.backend.remove_root()
        release_views_dir(self.config.views_dir)
        for nsname in list_netns(self.config.netns_prefix):
            with contextlib.suppress(Exception):
                await delete_netns(nsname)

    # -- reconcile -----------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Rebuild state after a (re)start: keep recorded cells whose cgroup exists, re-adopt their
        surviving processes, and kill/remove every cgroup and netns of ours that no record claims."""
        for record in sorted(
            self.store.load_all(), key=lambda r: _depth_key(str(r.get("cell", {}).get("name")))
        ):
            try:
                info = cell_from_dict(record["cell"])
                spec = cell_spec_from_dict(info.spec).validate()
            except (KeyError, TypeError, ValueError, CellError) as exc:
                log.error("reconcile.bad_record", error=str(exc))
                continue
            name = info.name
            parent = name.rpartition("/")[0]
            if not self.backend.exists(name) or (parent and parent not in self.cells):
                log.warning("reconcile.cell_gone", cell=name)
                self.store.delete(name)
                continue
            cell = Cell(spec, info)
            cell.info.executables = []
            self.cells[name] = cell
            if info.holder_pid:
                if self._pid_in(info.holder_pid, f"{name}/{HOLDER_CGROUP}"):
                    self._watch_holder(cell, info.holder_pid, adopted=True)
                else:
                    log.error("reconcile.holder_gone", cell=name, pid=info.holder_pid)
                    info.holder_pid = 0
            for exe_info in record["cell"].get("executables", []):
                self._adopt(cell, exe_info)
            if info.state is CellState.FREEING:
                info.state = CellState.ACTIVE
            if self.backend.frozen(name):
                info.state = CellState.FROZEN
            self._persist(cell)
            log.info("reconcile.kept", cell=name, executables=len(cell.exes))
        await self._remove_unclaimed()
        self._forget_unclaimed_pipes()
        self.views.prune(n for n, c in self.cells.items() if not c.info.isolate_process)

    def _pid_in(self, pid: int, rel: str) -> bool:
        try:
            return pid in self.backend.pids(rel)
        except (OSError, CellError):
            return False

    def _adopt(self, cell: Cell, data: dict[str, Any]) -> None:
        from cells.state import executable_from_dict

        info = executable_from_dict(data)
        leaf = f"{info.cell_name}/{EXECUTABLE_CGROUP_PREFIX}{info.name}"
        exe = Executable(info, leaf, asyncio.get_running_loop().create_future())
        cell.exes[info.name] = exe
        if info.state not in LIVE_STATES:
            exe.done.set_result(info.exit or ExitStatus())
            return
        if info.host_pid and self._pid_in(info.host_pid, leaf):
            try:

                def ended() -> None:
                    exe.adopted_pidfd = -1
                    self._on_exit(cell, exe, None)

                exe.adopted_pidfd = self._watch_pidfd(info.host_pid, ended)
                info.state = ExecutableState.RUNNING
                self._resume_capture(exe)
                log.info("reconcile.adopted", cell=info.cell_name, exe=info.name, pid=info.host_pid)
                return
            except OSError:
                pass
        if exe.capture is None:  # ended while no supervisor ran: what it wrote last is in its pipes
            self._resume_capture(exe)
        self._on_exit(cell, exe, None)

    def _claimed(self, rel: str) -> bool:
        if rel in self.cells:
            return True
        parent, _, leaf = rel.rpartition("/")
        cell = self.cells.get(parent)
        if cell is None:
            return False
        if leaf == HOLDER_CGROUP:
            return bool(cell.info.holder_pid)
        if leaf.startswith(EXECUTABLE_CGROUP_PREFIX):
            exe = cell.exes.get(leaf[len(EXECUTABLE_CGROUP_PREFIX) :])
            return exe is not None and exe.info.state in LIVE_STATES
        return False

    async def _remove_unclaimed(self) -> None:
        tree = self.backend.list_tree()
        present = set(tree)
        for rel in sorted(tree, key=_depth_key):
            parent = rel.rpartition("/")[0]
            if self._claimed(rel) or (parent and parent not in self.cells):
                continue  # claimed, or inside an unclaimed subtree removed as a whole
            if rel not in present:
                continue
            log.warning("reconcile.unclaimed_cgroup", cgroup=rel)
            try:
                await self._kill_and_remove(rel)
            except (OSError, CellError) as exc:
                log.error("reconcile.remove_failed", cgroup=rel, error=str(exc))
        claimed_netns = {c.info.netns for c in self.cells.values() if c.info.netns}
        for nsname in list_netns(self.config.netns_prefix):
            if nsname not in claimed_netns:
                log.warning("reconcile.unclaimed_netns", netns=nsname)
                with contextlib.suppress(Exception):
                    await delete_netns(nsname)


VERSION = "0.1.0"
