"""Reconcile: rebuild the runtime's state after a supervisor (re)start, from the store and the kernel.

Recorded cells whose cgroup still exists are kept, their holders and live executables adopted
(watched by pidfd: they are not our children any more) and their output resumed from the fd store;
executables that ended while no supervisor ran are recorded as lost. Every cgroup and netns of ours
that no record claims is killed and removed. It rebuilds all of the runtime's parts, so it works on
the runtime itself rather than on one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from cells.cgroup import kill_and_remove
from cells.errors import CellError
from cells.model import LIVE_STATES, Cell, Executable, depth_key, leaf_of
from cells.netns import delete_netns
from cells.protocol import cell_spec_from_dict
from cells.reaper import watch_pidfd
from cells.spec import EXECUTABLE_CGROUP_PREFIX, HOLDER_CGROUP
from cells.state import CellState, ExecutableState, ExitStatus, cell_from_dict, executable_from_dict
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
    if info.host_pid and _pid_in(rt, info.host_pid, leaf):
        try:

            def ended() -> None:
                exe.adopted_pidfd = -1
                rt.exits.on_exit(cell, exe, None)

            exe.adopted_pidfd = watch_pidfd(info.host_pid, ended)
            info.state = ExecutableState.RUNNING
            rt.outputs.resume(exe)
            log.info("reconcile.adopted", cell=info.cell_name, exe=info.name, pid=info.host_pid)
            return
        except OSError:
            pass
    if exe.capture is None:  # ended while no supervisor ran: what it wrote last is in its pipes
        rt.outputs.resume(exe)
    rt.exits.on_exit(cell, exe, None)


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

