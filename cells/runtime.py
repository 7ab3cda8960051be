"""The public operations on cells and executables, run inside the supervisor's event loop.

This module reads as the table of contents: each operation checks its input and the state, then
hands the work to the part that owns it. Everything that must not interleave (checking a name,
registering a pid for the reaper) happens without an ``await`` in between, so the event loop itself
is the lock. The one exception is the wait for a new child's exec (:mod:`cells.launch`): the name
stays reserved meanwhile (``Cell.starting``), and the reaper keeps the exit of a child whose Start is
not back yet. The kernel is the source of truth for membership and kill (cgroups), this process for
exit statuses (it is the parent of every workload and reaps them), the store for surviving a crash.

The parts, one job each:

- :mod:`cells.model`: the in-memory cells and executables; :mod:`cells.events`: their watchers
- :mod:`cells.launch`: leaf, log run, pipes, spawn and the wait for exec (:mod:`cells.spawn`)
- :mod:`cells.output`: a run's pipes in the fd store and its log writer
- :mod:`cells.reaper`: SIGCHLD and pidfds; :mod:`cells.exits`: Stop, and recording an exit
- :mod:`cells.holder`: the namespace holder of a process-isolated cell; :mod:`cells.netns`: a cell's netns
- :mod:`cells.restart`: restart policies (backoff, start limit) and their timers
- :mod:`cells.health`: health checks (probes, healthy/unhealthy, liveness restarts)
- :mod:`cells.reconcile`: adopting what survived a supervisor restart
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import time
from pathlib import Path
from typing import Any

import structlog

from cells import devices, profile
from cells.cgroup import CgroupBackend, detect, kill_and_remove
from cells.config import RuntimeConfig
from cells.errors import (
    AlreadyExists,
    CellError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RuntimeFailure,
)
from cells.events import Events, Watcher
from cells.exits import Exits
from cells.health import Health
from cells.holder import Holders, start_holder
from cells.launch import Launcher
from cells.model import LIVE_STATES, Cell, Executable, depth_key, matches, saved_json
from cells.mountview import Views, build_isolated_root, check_mount_target, release_views_dir
from cells.netns import create_netns, delete_netns
from cells.output import Outputs
from cells.reaper import Reaper
from cells.reconcile import reconcile
from cells.restart import Restarts
from cells.spawn import open_devnull
from cells.spec import (
    HOLDER_CGROUP,
    CellLimits,
    CellSpec,
    ExecutableSpec,
    validate_cell_name,
    validate_executable_name,
)
from cells.state import CellInfo, CellState, ExecutableInfo, ExecutableState, ExitStatus, to_dict
from cells.store import Store
from cells.version import VERSION
from observe.logstore import cell_dir, executable_dir, log_usage, purge
from observe.names import list_netns, netns_name

log = structlog.get_logger("cells.runtime")

MAX_GRACE_S = 3600.0


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
        self._devnull = open_devnull()
        self.started_at_ns = time.time_ns()
        self._loop: asyncio.AbstractEventLoop | None = None
        # What contained workloads see of the filesystem (pinned views of non-isolated cells).
        self.views = Views(config, lambda cell: [os.path.dirname(p) for p in self.backend.procs_files(cell)])
        self.events = Events()
        self.reaper = Reaper()
        self.outputs = Outputs(config, self.cells)
        self.holders = Holders(self.reaper, self.cells, self.persist)
        self.restarts = Restarts(self.cells, self.events, self.persist)
        self.exits = Exits(self.backend, self.reaper, self.outputs, self.events, self.cells, self.persist, self.restarts)
        self.restarts.install(self._relaunch)
        self.launcher = Launcher(config, self.backend, self.views, self.reaper, self.cells, self._devnull)
        self.health = Health(config, self.backend, self.reaper, self.events, self.launcher, self.exits, self._devnull)

    # -- process plumbing --------------------------------------------------------------------------
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become the reaper of every child (SIGCHLD) and start the log flush timer."""
        self._loop = loop
        self.reaper.install(loop)
        self.outputs.start_flushing(loop)

    async def settle_starts(self) -> None:
        """Wait for the Starts in flight (bounded by exec_timeout_s): their processes get registered
        and persisted, or cleaned up, before the supervisor exits."""
        pending = [done for cell in self.cells.values() for done in cell.starting.values()]
        await asyncio.gather(*(asyncio.shield(done) for done in pending))

    def close(self) -> None:
        """Detach (supervisor exit): workloads keep running; state is already on disk."""
        if self._loop is not None:
            self.reaper.uninstall(self._loop)
        self.health.close()
        self.launcher.close()
        self.outputs.close()
        self.store.close()

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

    def persist(self, cell: Cell) -> None:
        """Save ``cell``'s record before the caller answers (so a supervisor crash never forgets a
        workload it reported started). Ended executables never change again, so their dicts are
        built once: a save costs the live ones plus one ``json.dumps``, not a walk of the history."""
        info = to_dict(dataclasses.replace(self._snapshot(cell, stats=False), executables=[]))
        del info["executables"]
        self.store.save_cell(cell.info.name, info, [saved_json(e) for _, e in sorted(cell.exes.items())],
                             self.restarts.pending(cell))

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

    def watch(self, prefix: str) -> Watcher:
        return self.events.watch(prefix)

    def unwatch(self, watcher: Watcher) -> None:
        self.events.unwatch(watcher)

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
        names = sorted((n for n in self.cells if matches(prefix, n)), key=depth_key)
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
            found = self.exits.ended(host_pid)  # its cell was freed since
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
            live = [e.info.name for e in cell.exes.values() if e.info.state in (*LIVE_STATES, ExecutableState.BACKOFF)]
            live += list(cell.starting)
            for exe_name in live:
                if not executable or (name, exe_name) == (cell_name, executable):
                    raise FailedPrecondition(f"{name}/{exe_name} is running: stop it before purging its logs")
        target = executable_dir(self.log_root, cell_name, executable) if executable else cell_dir(self.log_root, cell_name)
        runs, size = log_usage(target)
        if not runs:
            raise NotFound(f"no logs of {cell_name}{'/' + executable if executable else ''}")
        self.outputs.drop_unflushed_under(target)
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
                self.holders.watch(cell, holder_pid, adopted=False)
            self.cells[name] = cell
            try:
                self.persist(cell)
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
                await self.holders.kill_unregistered(name, holder_pid)
        with contextlib.suppress(Exception):
            if made_cgroup:
                await kill_and_remove(self.backend, name)
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
        if previous is not None and previous.info.state is ExecutableState.BACKOFF:
            raise AlreadyExists(f"executable {spec.name!r} is in backoff in cell {spec.cell_name!r} (stop it first)")
        self.restarts.begin(cell, spec)
        try:
            return await self._registered_start(cell, spec, previous, restarted=False)
        except BaseException:
            self.restarts.failed_to_start(cell, spec)
            raise

    async def _relaunch(self, cell: Cell, spec: ExecutableSpec, previous: Executable) -> ExecutableInfo:
        """A restart (:mod:`cells.restart`): a new run of ``previous``'s name, in backoff until now."""
        return await self._registered_start(cell, spec, previous, restarted=True)

    async def _registered_start(
        self, cell: Cell, spec: ExecutableSpec, previous: Executable | None, restarted: bool
    ) -> ExecutableInfo:
        """The name is reserved (``cell.starting``) while the process is launched."""
        done = asyncio.get_running_loop().create_future()
        cell.starting[spec.name] = done
        try:
            return await self._launch_and_register(cell, spec, previous, restarted)
        finally:
            del cell.starting[spec.name]
            done.set_result(None)

    async def _launch_and_register(
        self, cell: Cell, spec: ExecutableSpec, previous: Executable | None, restarted: bool
    ) -> ExecutableInfo:
        """The process; then the executable is known to the cell, the fd store and the reaper."""
        exe, early_exit = await self.launcher.launch(cell, spec, previous)
        info = exe.info
        self.restarts.started(cell, spec, info, restarted)
        self.health.watch(cell, exe, spec)
        cell.exes[spec.name] = exe
        self.outputs.keep(exe)
        self.reaper.expect(info.host_pid, lambda status: self.exits.on_exit(cell, exe, status))
        if early_exit is not None:  # reaped while we waited for the exec report
            self.reaper.reap_status(info.host_pid, early_exit)
        try:
            self.persist(cell)
        except OSError as exc:  # the workload runs; only crash recovery of this run is at risk
            log.error("store.save_failed", cell=spec.cell_name, error=str(exc))
        log.info("exe.started", cell=spec.cell_name, exe=spec.name, pid=info.host_pid, cell_pid=info.cell_pid,
                 run=info.run)
        self.events.emit("started", info)
        return info

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
        if exe.info.state is ExecutableState.BACKOFF or name in cell.restarts:
            # A Stop ends the restart series (saved before the signal: a successor must not restart a
            # run that ends of this Stop) and cancels a pending restart.
            self.restarts.cancel(cell, exe)
        if exe.info.state not in LIVE_STATES:
            assert exe.info.exit is not None
            return exe.info.exit
        if cell.info.state is CellState.FROZEN:
            raise FailedPrecondition(f"cell {cell_name!r} is frozen")
        return await self.exits.stop(exe, grace)

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
        self.restarts.forget(cell)  # no restart of it happens from now on
        # The cell is going away: its processes stop (and die) at full speed, not under its cpu.max.
        self.backend.release_cpu(name)
        # Starts already past their checks finish first (bounded by exec_timeout_s): a process
        # spawned behind our back would be killed by the cgroup removal but never reported.
        await asyncio.gather(*(asyncio.shield(done) for done in cell.starting.values()))
        live = [e for e in cell.exes.values() if e.info.state in LIVE_STATES]
        results = await asyncio.gather(*(self.exits.stop(e, grace) for e in live), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("cell.free_stop_failed", cell=name, error=str(result))
        await self.holders.kill(cell)
        await kill_and_remove(self.backend, name)
        self._drop_view(cell.spec)
        if cell.info.netns:
            await delete_netns(cell.info.netns)
        self.store.delete(name)
        if self.cells.get(name) is cell:
            del self.cells[name]
        log.info("cell.freed", cell=name)

    # -- limits in place ------------------------------------------------------------------------------
    def update_limits(self, name: str, limits: CellLimits) -> CellInfo:
        """Write a live cell's new limits (``cellar apply``); its processes keep running. A limit can be
        changed or added, not removed: the kernel's "unset" differs per file and per hierarchy, so a
        removal is a recreate for the caller to plan."""
        limits.validate()
        cell = self._cell(name)
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {name!r} is being freed")
        old = dataclasses.asdict(cell.spec.limits)
        removed = sorted(k for k, v in dataclasses.asdict(limits).items() if v is None and old[k] is not None)
        if removed:
            raise FailedPrecondition(f"cell {name!r}: limits cannot be removed in place ({', '.join(removed)})")
        self.backend.set_limits(name, limits)
        cell.spec = dataclasses.replace(cell.spec, limits=limits)
        cell.info.spec = to_dict(cell.spec)
        self.persist(cell)
        log.info("cell.limits_updated", cell=name, limits={k: v for k, v in dataclasses.asdict(limits).items() if v})
        return self.inspect(name)

    # -- freeze --------------------------------------------------------------------------------------
    def freeze(self, name: str) -> None:
        cell = self._cell(name)
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {name!r} is being freed")
        if cell.starting:  # a child frozen before its exec would time out and be killed
            raise FailedPrecondition(f"cell {name!r}: {', '.join(sorted(cell.starting))} is starting; freeze it after")
        self.backend.freeze(name)
        cell.info.state = CellState.FROZEN
        self.persist(cell)

    def thaw(self, name: str) -> None:
        cell = self._cell(name)
        if cell.info.state is CellState.FREEING:
            raise FailedPrecondition(f"cell {name!r} is being freed")
        self.backend.thaw(name)
        cell.info.state = CellState.ACTIVE
        self.persist(cell)

    # -- shutdown ------------------------------------------------------------------------------------
    async def free_all(self, grace_s: float = 0.0) -> None:
        """Free every cell, children first (uninstall, tests); then remove the cgroup root."""
        for name in sorted(self.cells, key=depth_key, reverse=True):
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
        """Rebuild state after a (re)start (see :mod:`cells.reconcile`)."""
        await reconcile(self)
        for cell in self.cells.values():  # health state is not persisted, the check is: probe afresh
            for exe in cell.exes.values():
                if exe.info.state is ExecutableState.RUNNING and exe.info.health_check:
                    self.health.watch(cell, exe, self._adopted_spec(cell, exe))

    @staticmethod
    def _adopted_spec(cell: Cell, exe: Executable) -> ExecutableSpec:
        """An adopted run's spec for its health check: its restart series' when it has one, else what
        its record says (argv, command, the check; an exec probe of a run with neither then runs with
        the cell's defaults of uid and capabilities)."""
        from cells.protocol import health_check_from_dict

        series = cell.restarts.get(exe.info.name)
        if series is not None:
            return series.spec
        return ExecutableSpec(cell.info.name, exe.info.name, argv=tuple(exe.info.argv), command=exe.info.command,
                              privileged=exe.info.privileged, health=health_check_from_dict(exe.info.health_check))
