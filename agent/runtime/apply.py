"""``cellar apply``: make the node's cells match a manifest (cells/manifest.py), and what it takes to get there.

:func:`plan` compares each cell of the file with the runtime (the cell's spec, its executables'
states) and with the desired store (the executables as last applied, agent/runtime/desired.py):

- a cell that does not exist is **created** and all its executables **started**;
- a cell whose isolation, mounts, rootfs, security profile or grant differs, or that lost a limit
  (the kernel's "unset" is not one value), is **recreated**: freed and allocated again, its
  executables started (their processes end: the plan says so);
- a cell whose limits changed otherwise is **updated** in place (cgroup files written; no restart);
- an executable that is not running is **started**, one whose spec differs from what was applied is
  **restarted** (stop, then a new run); the same spec is left alone in any state (a finished one-shot
  stays finished: applying twice changes nothing); an executable applied before and no longer in the
  file is **stopped**;
- with ``prune``, applied cells the file no longer names are **freed**. Imperatively made cells and
  executables are never pruned.

:class:`Applier` executes a plan cell by cell, parents first. Everything is checked before anything
changes (the manifest, then the caller's rights, in the servicer). Should a step still fail, that cell
is put back as far as the kernel allows, and the error names it: a cell created by this apply is
freed again, changed limits are written back, a restarted executable is started again with its old
spec; the cells before it stay applied. :func:`restore` is cellard's start after a reboot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import tomli_w

from agent.runtime.desired import DesiredCell, DesiredStore
from cells.client import RuntimeClient
from cells.errors import CellError
from cells.manifest import CellManifest, Manifest, cell_table
from cells.protocol import cell_spec_from_dict, restart_policy_from_dict
from cells.spec import CellLimits, CellSpec, ExecutableSpec, RestartPolicy
from cells.state import CellInfo, ExecutableInfo, ExecutableState

log = structlog.get_logger("agent.apply")

#: States in which an executable holds its name (a restart must stop it first).
_HOLDING = frozenset({ExecutableState.STARTING, ExecutableState.RUNNING, ExecutableState.STOPPING,
                      ExecutableState.BACKOFF})


@dataclass(frozen=True)
class Change:
    """One step of a plan. ``action``: create, recreate, update, start, restart, stop or free."""

    action: str
    cell: str
    executable: str = ""
    detail: str = ""
    spec: CellSpec | ExecutableSpec | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclass
class CellPlan:
    """The changes of one cell, and what it needs to run them."""

    wanted: CellManifest | None  # None: the cell is pruned
    current: CellInfo | None
    changes: list[Change]


def _limits_diff(old: CellLimits, new: CellLimits) -> tuple[list[str], list[str]]:
    """(changed or added, removed) limit descriptions."""
    changed, removed = [], []
    for f in dataclasses.fields(CellLimits):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if after is None:
            removed.append(f"limits.{f.name} removed")
        else:
            changed.append(f"limits.{f.name}: {'unset' if before is None else before} -> {after}")
    return changed, removed


def _exe_diff(old: ExecutableSpec, new: ExecutableSpec) -> str:
    return ", ".join(f.name for f in dataclasses.fields(ExecutableSpec) if getattr(old, f.name) != getattr(new, f.name))


def _plan_cell(wanted: CellManifest, current: CellInfo | None, applied: DesiredCell | None) -> CellPlan:
    name = wanted.spec.name
    changes: list[Change] = []
    fresh = current is None
    if current is None:
        changes.append(Change("create", name, spec=wanted.spec))
    else:
        have = cell_spec_from_dict(current.spec).validate()
        fixed = [f.name for f in dataclasses.fields(CellSpec)
                 if f.name != "limits" and getattr(have, f.name) != getattr(wanted.spec, f.name)]
        changed, removed = _limits_diff(have.limits, wanted.spec.limits)
        if fixed or removed:
            changes.append(Change("recreate", name, detail=", ".join(fixed + removed), spec=wanted.spec))
            fresh = True
        elif changed:
            changes.append(Change("update", name, detail=", ".join(changed), spec=wanted.spec))
    live: dict[str, ExecutableInfo] = {} if fresh or current is None else {e.name: e for e in current.executables}
    before = applied.executables if applied is not None else {}
    for exe in wanted.executables:
        info = live.get(exe.name)
        if info is None:
            changes.append(Change("start", name, exe.name, spec=exe))
        elif before.get(exe.name) == exe:
            continue
        elif exe.name not in before:
            changes.append(Change("restart", name, exe.name, "not applied before", spec=exe))
        else:
            changes.append(Change("restart", name, exe.name, f"changed: {_exe_diff(before[exe.name], exe)}", spec=exe))
    for gone in sorted(set(before) - {e.name for e in wanted.executables}):
        info = live.get(gone)
        if info is not None and info.state in _HOLDING:
            changes.append(Change("stop", name, gone, "no longer in the file"))
    return CellPlan(wanted, current, changes)


async def plan(runtime: RuntimeClient, store: DesiredStore, manifest: Manifest, prune: bool) -> list[CellPlan]:
    """What applying ``manifest`` would change, cell by cell (parents first; pruned cells last, children
    first). A cell with nothing to change has an empty plan."""
    current = {c.name: c for c in await runtime.list()}
    plans = [_plan_cell(c, current.get(c.spec.name), store.get(c.spec.name)) for c in manifest.cells]
    if prune:
        named = set(manifest.names())
        for desired in reversed(store.all()):
            name = desired.spec.name
            if desired.applied and name not in named and name in current:
                plans.append(CellPlan(None, current[name], [Change("free", name, detail="not in the file (--prune)")]))
    return plans


Allocate = Callable[[CellSpec], Awaitable[CellInfo]]
Free = Callable[[str], Awaitable[None]]


class Applier:
    """Runs plans against the runtime. ``allocate`` and ``free`` are the servicer's (they keep the
    grants cache in step), everything else goes to the runtime client directly."""

    def __init__(self, runtime: RuntimeClient, store: DesiredStore, allocate: Allocate, free: Free) -> None:
        self.runtime, self.store, self._allocate, self._free = runtime, store, allocate, free

    async def apply(self, plans: list[CellPlan]) -> list[Change]:
        done: list[Change] = []
        for cell_plan in plans:
            name = (cell_plan.wanted.spec.name if cell_plan.wanted else cell_plan.changes[0].cell)
            try:
                await self._apply_cell(cell_plan)
            except CellError as exc:
                exc.args = (f"cell {name!r}: {exc}" + (f" ({len(done)} changes made before it)" if done else ""),)
                raise
            done.extend(cell_plan.changes)
        return done

    async def _apply_cell(self, cell_plan: CellPlan) -> None:
        wanted = cell_plan.wanted
        if wanted is None:  # pruned
            name = cell_plan.changes[0].cell
            await self._free(name)
            self.store.delete(name)
            log.info("apply.freed", cell=name)
            return
        name = wanted.spec.name
        previous = self.store.get(name)
        undo: list[Callable[[], Awaitable[object]]] = []
        try:
            for change in cell_plan.changes:
                await self._run(change, cell_plan, previous, undo)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except CellError as exc:
                    log.warning("apply.undo_failed", cell=name, error=str(exc))
            raise
        self.store.put(DesiredCell(wanted.spec, {e.name: e for e in wanted.executables}, applied=True))
        if cell_plan.changes:
            log.info("apply.applied", cell=name, changes=[f"{c.action} {c.executable}".strip() for c in cell_plan.changes])

    async def _run(self, change: Change, cell_plan: CellPlan, previous: DesiredCell | None,
                   undo: list[Callable[[], Awaitable[object]]]) -> None:
        name = change.cell
        if change.action == "create":
            assert isinstance(change.spec, CellSpec)
            await self._allocate(change.spec)
            undo.append(lambda: self._free(name))
        elif change.action == "recreate":
            assert isinstance(change.spec, CellSpec)
            await self._free(name)
            await self._allocate(change.spec)
        elif change.action == "update":
            assert isinstance(change.spec, CellSpec) and cell_plan.current is not None
            old = cell_spec_from_dict(cell_plan.current.spec).limits
            await self.runtime.update_limits(name, change.spec.limits)
            undo.append(lambda: self.runtime.update_limits(name, old))
        elif change.action == "start":
            assert isinstance(change.spec, ExecutableSpec)
            await self.runtime.start(change.spec)
        elif change.action == "restart":
            assert isinstance(change.spec, ExecutableSpec)
            await self.runtime.stop(name, change.executable)
            old_exe = previous.executables.get(change.executable) if previous else None
            if old_exe is not None:
                undo.append(lambda: self.runtime.start(old_exe))
            await self.runtime.start(change.spec)
        elif change.action == "stop":
            await self.runtime.stop(name, change.executable)


async def restore(runtime: RuntimeClient, store: DesiredStore, allocate: Allocate) -> int:
    """cellard's start: recreate every desired cell the runtime does not have (a reboot took it) and
    start its executables that have a restart policy. Returns how many cells were recreated. An
    executable without one was a one-off: it is not run again. Failures are logged, never fatal."""
    have = {c.name for c in await runtime.list()}
    restored = 0
    for desired in store.all():
        name = desired.spec.name
        if name in have:
            continue
        try:
            await allocate(desired.spec)
            for exe in desired.executables.values():
                if exe.restart.mode != "never":
                    await runtime.start(exe)
        except CellError as exc:
            log.error("desired.restore_failed", cell=name, error=str(exc))
            continue
        restored += 1
        have.add(name)
        log.info("desired.restored", cell=name,
                 started=[e.name for e in desired.executables.values() if e.restart.mode != "never"])
    return restored


def manifest_text(info: CellInfo, desired: DesiredCell | None) -> str:
    """``cellar get CELL -o toml``: the cell as applied; for a cell never applied, its spec and the
    argv/command and restart policy of its executables (the rest of their specs is not kept)."""
    spec = cell_spec_from_dict(info.spec).validate()
    if desired is not None:
        exes = list(desired.executables.values())
    else:
        exes = [ExecutableSpec(info.name, e.name, argv=tuple(e.argv), command=e.command,
                               restart=restart_policy_from_dict(e.restart) if e.restart else RestartPolicy())
                for e in info.executables]
    return tomli_w.dumps({"cells": {info.name: cell_table(spec, exes)}})
