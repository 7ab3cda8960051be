"""Reconcile: rebuild the runtime's state after a supervisor (re)start, from the store and the kernel.

Recorded cells whose cgroup still exists are kept, their holders and live executables adopted
(watched by pidfd: they are not our children any more) and their output resumed from the fd store.
An adopted executable's end, or one that ended while no supervisor ran, is recorded with the wait
status its keeper (:mod:`cells.keeper`, their parent since the old supervisor died) recorded, matched
by pid and start time; ``lost`` only without such a record (no keeper saw it end). Every cgroup and
netns of ours that no record claims is killed and removed. It rebuilds all of the runtime's parts, so
it works on the runtime itself rather than on one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from typing import TYPE_CHECKING, Any

import structlog

from cells.cgroup import kill_and_remove
from cells.errors import CellError
from cells.keeper import KeeperLink, link, proc_start
from cells.model import LIVE_STATES, Cell, Executable, depth_key, leaf_of
from cells.namespaces import nspid
from cells.netns import delete_netns
from cells.profile import is_privileged
from cells.protocol import cell_spec_from_dict
from cells.reaper import watch_pidfd
from cells.restart import Series
from cells.spec import EXECUTABLE_CGROUP_PREFIX, HOLDER_CGROUP
from cells.state import (
    CellState,
    ExecutableInfo,
    ExecutableState,
    ExitStatus,
    cell_from_dict,
    executable_from_dict,
)
from observe.logstore import latest_run
from observe.names import list_netns

if TYPE_CHECKING:
    from cells.runtime import Runtime

log = structlog.get_logger("cells.reconcile")


async def reconcile(rt: Runtime) -> None:
    """Rebuild state after a (re)start: keep recorded cells whose cgroup exists, re-adopt their
    surviving processes, and kill/remove every cgroup and netns of ours that no record claims."""
    for record in sorted(
        rt.store.load_all(), key=lambda r: depth_key(str(r.get("cell", {}).get("name")))
    ):
        try:
            info = cell_from_dict(record["cell"])
            spec = cell_spec_from_dict(info.spec).validate()
        except (KeyError, TypeError, ValueError, CellError) as exc:
            log.error("reconcile.bad_record", error=str(exc))
            continue
        name = info.name
        parent = name.rpartition("/")[0]
        if not rt.backend.exists(name) or (parent and parent not in rt.cells):
            log.warning("reconcile.cell_gone", cell=name)
            rt.store.delete(name)
            continue
        cell = Cell(spec, info)
        cell.info.executables = []
        rt.cells[name] = cell
        if info.holder_pid:
            if _pid_in(rt, info.holder_pid, f"{name}/{HOLDER_CGROUP}"):
                rt.holders.watch(cell, info.holder_pid, adopted=True)
            else:
                log.error("reconcile.holder_gone", cell=name, pid=info.holder_pid)
                info.holder_pid = 0
        for exe_info in record["cell"].get("executables", []):
            _adopt(rt, cell, exe_info)
        resume_restarts(rt, cell, record.get("restarts"))
        if info.state is CellState.FREEING:
            info.state = CellState.ACTIVE
        if rt.backend.frozen(name):
            info.state = CellState.FROZEN
        rt.persist(cell)
        log.info("reconcile.kept", cell=name, executables=len(cell.exes))
    await _remove_unclaimed(rt)
    rt.outputs.forget_unclaimed()
    rt.views.prune(n for n, c in rt.cells.items() if not c.info.isolate_process)


def _pid_in(rt: Runtime, pid: int, rel: str) -> bool:
    try:
        return pid in rt.backend.pids(rel)
    except (OSError, CellError):
        return False


def _adopt(rt: Runtime, cell: Cell, data: dict[str, Any]) -> None:
    info = executable_from_dict(data)
    leaf = leaf_of(info.cell_name, info.name)
    exe = Executable(info, leaf, asyncio.get_running_loop().create_future())
    cell.exes[info.name] = exe
    if info.state not in LIVE_STATES:
        exe.done.set_result(info.exit or ExitStatus())
        return
    keeper = link(rt.config.run_dir)
    pid = info.host_pid
    if pid and _pid_in(rt, pid, leaf):
        try:
            start: int | None = None

            def ended() -> None:
                exe.adopted_pidfd = -1
                _take_exit(rt, cell, exe, keeper, start, prune=True)

            exe.adopted_pidfd = watch_pidfd(pid, ended)
            # Read after the pidfd is open: if the process has ended since (the pidfd fires), the
            # tick may be another's whose pid it reused, and the lookup falls back to the time window.
            start = proc_start(pid)
            if select.select([exe.adopted_pidfd], [], [], 0)[0]:
                start = None
            info.state = ExecutableState.RUNNING
            rt.outputs.resume(exe)
            log.info("reconcile.adopted", cell=info.cell_name, exe=info.name, pid=pid)
            return
        except OSError:
            pass
    if exe.capture is None:  # ended while no supervisor ran: what it wrote last is in its pipes
        rt.outputs.resume(exe)
    _take_exit(rt, cell, exe, keeper, None, prune=False)  # pruned once every cell is adopted


#: How long an ended executable's exit waits for the keeper's record while the keeper holds it as a
#: zombie (the record is written before the reap, so this is a context switch or two).
KEEPER_RECORD_WAIT_S = 2.0
#: Host pids whose keeper record is being waited for (not pruned meanwhile).
_awaiting: set[int] = set()


def _take_exit(
    rt: Runtime, cell: Cell, exe: Executable, keeper: KeeperLink | None, start: int | None, prune: bool
) -> None:
    """Record the end of an adopted (or found gone) executable with the status the keeper recorded
    for it (:mod:`cells.keeper`); ``lost`` only without a record (no keeper saw it end)."""
    pid = exe.info.host_pid
    found = _keeper_status(rt, exe, keeper, start)
    if found is not None or keeper is None or not keeper.pending(pid):
        rt.exits.on_exit(cell, exe, found)
        if prune:
            _prune(rt, keeper)
        return
    _awaiting.add(pid)

    async def wait() -> None:
        status = None
        try:
            deadline = time.monotonic() + KEEPER_RECORD_WAIT_S
            while status is None and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
                status = _keeper_status(rt, exe, keeper, start)
                if status is None and not keeper.pending(pid):
                    status = _keeper_status(rt, exe, keeper, start)  # reaped just now: the record is in
                    break
            if status is None:
                log.warning("reconcile.no_keeper_record", cell=exe.info.cell_name, exe=exe.info.name, pid=pid)
        finally:
            _awaiting.discard(pid)
            rt.exits.on_exit(cell, exe, status)
            _prune(rt, keeper)

    task = asyncio.get_running_loop().create_task(wait())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


def _keeper_status(rt: Runtime, exe: Executable, keeper: KeeperLink | None, start: int | None) -> int | None:
    if keeper is None:
        return None
    pid = exe.info.host_pid
    try:
        if start is not None:
            return keeper.status_of(pid, start)
        # Found gone: its start tick was never read. Its process was forked before ``started_at_ns``
        # was taken (after the exec), by at most the exec wait, and reaped by the keeper after it (it
        # was in the store, so a supervisor ran then); an earlier holder of its pid ended before its fork.
        started = exe.info.started_at_ns
        lo = started - int((rt.config.exec_timeout_s + 1) * 1e9)
        near = keeper.status_near(pid, lo, started + 50_000_000, started - 1_000_000_000)
        return None if near is None else near[1]
    except OSError as exc:
        log.error("reconcile.keeper_records_unreadable", error=str(exc))
        return None


def _prune(rt: Runtime, keeper: KeeperLink | None) -> None:
    """Drop the keeper's records that no adopted executable still waits for (consumed, or of
    processes that were no executable's main process: holders, the fd store)."""
    if keeper is None:
        return
    keep = set(_awaiting)
    for cell in rt.cells.values():
        keep.update(e.info.host_pid for e in cell.exes.values() if e.adopted_pidfd >= 0)
    keeper.prune(keep)


def prune_keeper_records(rt: Runtime) -> None:
    """After reconcile: what no adopted executable claims is dropped."""
    _prune(rt, link(rt.config.run_dir))


def resume_restarts(rt: Runtime, cell: Cell, saved: Any) -> None:
    """The restart policies' series of ``cell`` (:mod:`cells.restart`): a pending restart is re-armed
    for its time (at once if it passed). A series saved while a restart was spawning may have a
    process no record names: the live process of its leaf is adopted as the new run (exactly once);
    without one, the restart happens now."""
    for name, data in sorted((saved or {}).items()) if isinstance(saved, dict) else []:
        try:
            series = Series.from_dict(data)
        except (KeyError, TypeError, ValueError, CellError) as exc:
            log.error("reconcile.bad_restart_series", cell=cell.info.name, exe=name, error=str(exc))
            continue
        exe = cell.exes.get(name)
        if exe is None or series.spec.name != name:
            continue
        if series.spawning and exe.info.state is ExecutableState.BACKOFF:
            series.spawning = False
            if _adopt_restarted(rt, cell, exe, series):
                continue
            series.restart_at_ns = min(series.restart_at_ns, time.time_ns()) or time.time_ns()
        if exe.info.state is ExecutableState.BACKOFF:
            exe.info.restart_at_ns = series.restart_at_ns
            rt.restarts.resume(cell, series)
            log.info("reconcile.restart_pending", cell=cell.info.name, exe=name, restart_at_ns=series.restart_at_ns)
        elif exe.info.state in LIVE_STATES:
            series.restart_at_ns = 0
            rt.restarts.resume(cell, series)


def _adopt_restarted(rt: Runtime, cell: Cell, previous: Executable, series: Series) -> bool:
    """The process a restart spawned just before the supervisor died, if its leaf holds one: its
    main process is the one whose parent is outside the leaf (the oldest, if several are)."""
    leaf = leaf_of(cell.info.name, previous.info.name)
    try:
        pids = set(rt.backend.pids(leaf)) if rt.backend.exists(leaf) else set()
    except (OSError, CellError):
        pids = set()
    tops = []
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
            if int(fields[1]) not in pids:
                tops.append((int(fields[19]), pid))  # (start time, pid)
    if not tops:
        return False
    main = min(tops)[1]
    spec = series.spec
    run = latest_run(rt.log_root, cell.info.name, spec.name) or previous.info.run + 1
    info = ExecutableInfo(
        cell_name=cell.info.name, name=spec.name, state=ExecutableState.RUNNING, argv=list(spec.argv),
        command=spec.command, description=spec.description, host_pid=main, run=run,
        started_at_ns=time.time_ns(), privileged=is_privileged(cell.spec, spec),
    )
    with contextlib.suppress(OSError):
        info.cell_pid = nspid(main)
    exe = Executable(info, leaf, asyncio.get_running_loop().create_future())
    try:

        def ended() -> None:
            exe.adopted_pidfd = -1
            rt.exits.on_exit(cell, exe, None)

        exe.adopted_pidfd = watch_pidfd(main, ended)
    except OSError:
        return False
    cell.exes[spec.name] = exe
    cell.restarts[spec.name] = series
    rt.restarts.started(cell, spec, info, restarted=True)
    rt.outputs.resume(exe)
    log.warning("reconcile.restart_adopted", cell=cell.info.name, exe=spec.name, pid=main, run=run)
    return True


def _claimed(cells: dict[str, Cell], rel: str) -> bool:
    if rel in cells:
        return True
    parent, _, leaf = rel.rpartition("/")
    cell = cells.get(parent)
    if cell is None:
        return False
    if leaf == HOLDER_CGROUP:
        return bool(cell.info.holder_pid)
    if leaf.startswith(EXECUTABLE_CGROUP_PREFIX):
        exe = cell.exes.get(leaf[len(EXECUTABLE_CGROUP_PREFIX) :])
        return exe is not None and exe.info.state in LIVE_STATES
    return False


async def _remove_unclaimed(rt: Runtime) -> None:
    tree = rt.backend.list_tree()
    present = set(tree)
    for rel in sorted(tree, key=depth_key):
        parent = rel.rpartition("/")[0]
        if _claimed(rt.cells, rel) or (parent and parent not in rt.cells):
            continue  # claimed, or inside an unclaimed subtree removed as a whole
        if rel not in present:
            continue
        log.warning("reconcile.unclaimed_cgroup", cgroup=rel)
        try:
            await kill_and_remove(rt.backend, rel)
        except (OSError, CellError) as exc:
            log.error("reconcile.remove_failed", cgroup=rel, error=str(exc))
    claimed_netns = {c.info.netns for c in rt.cells.values() if c.info.netns}
    for nsname in list_netns(rt.config.netns_prefix):
        if nsname not in claimed_netns:
            log.warning("reconcile.unclaimed_netns", netns=nsname)
            with contextlib.suppress(Exception):
                await delete_netns(nsname)

