"""Restart policies: whether an ended run starts again, when, and the timers that start it.

The policy (:class:`cells.spec.RestartPolicy`) is the kubelet's CrashLoopBackOff with systemd's start
limit: after a run ends, wait ``delay_s``, doubling after each restart up to ``max_delay_s`` (a run
that lasted ``reset_after_s`` starts the doubling over); more than ``limit_burst`` starts within
``limit_interval_s`` and the executable is ``failed`` instead. The arithmetic is pure functions
(:func:`wants_restart`, :func:`next_delay`, :func:`limit_hit`). Each restart is a new run of the
same name with the spec of the Start that began the *series* (restarts, backoff step, recent starts).

The supervisor owns it, so restarts go on while cellard is down. :class:`Restarts` is asked at four
moments: a Start (a new series; :meth:`Restarts.begin`), a run registered (:meth:`Restarts.started`),
a run's exit (:meth:`Restarts.on_exit`: ``backoff``, ``failed`` or nothing; a Stop never restarts),
and a Stop or Free in backoff (:meth:`Restarts.cancel`, :meth:`Restarts.forget`).

Across a supervisor crash: a series is saved in its cell's record (``restarts`` beside ``cell``), so
a successor re-arms the timer for ``restart_at_ns`` (at once if it passed; :meth:`Restarts.resume`).
Exactly once: ``spawning`` is saved *before* a restart's spawn and cleared with the new run's record,
so a successor that finds it set knows a process may exist that no record names; reconcile then
adopts the live process of the executable's leaf as the new run rather than start another
(:func:`cells.reconcile.resume_restarts`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from cells.errors import CellError
from cells.events import Events
from cells.model import Cell, Executable
from cells.spec import ExecutableSpec, RestartPolicy
from cells.state import CellState, ExecutableInfo, ExecutableState, ExitStatus, to_dict

log = structlog.get_logger("cells.restart")

S = 1_000_000_000
#: The doubling stops counting here (2**64 x any delay is past every cap).
MAX_STEP = 64
#: While its cell is frozen a due restart is retried this often (Start refuses a frozen cell).
FROZEN_RETRY_S = 1.0


# -- the arithmetic ----------------------------------------------------------------------------------


def wants_restart(policy: RestartPolicy, exit: ExitStatus, lost: bool) -> bool:
    """``always``: any end; ``on-failure``: a nonzero code, a signal (OOM kills included), or an
    end whose status is unknown (``lost``: not known to be clean); ``never``: none."""
    if policy.mode == "always":
        return True
    if policy.mode == "on-failure":
        return lost or exit.signal is not None or exit.oom_killed or (exit.code is not None and exit.code != 0)
    return False


def next_delay(policy: RestartPolicy, step: int) -> float:
    """Seconds before the restart after ``step`` earlier restarts of the series: ``delay_s`` doubled
    ``step`` times, at most ``max_delay_s`` (a delay of 0 stays 0)."""
    return min(policy.max_delay_s, policy.delay_s * 2.0 ** min(step, MAX_STEP))


def limit_hit(policy: RestartPolicy, starts: list[int], at_ns: int) -> bool:
    """Would a start at ``at_ns`` make more than ``limit_burst`` within ``limit_interval_s``?"""
    if policy.limit_interval_s <= 0:
        return False
    return len(recent(policy, starts, at_ns)) >= policy.limit_burst


def recent(policy: RestartPolicy, starts: list[int], at_ns: int) -> list[int]:
    """The starts inside the window that ends at ``at_ns``."""
    since = at_ns - int(policy.limit_interval_s * S)
    return [t for t in starts if t > since]


# -- a series ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Series:
    """What the policy remembers of one executable name from its Start on (saved in the cell's record)."""

    spec: ExecutableSpec
    restarts: int = 0
    step: int = 0  # restarts since the backoff last started over
    starts: list[int] = field(default_factory=list)  # wall clock of the recent starts (the limit's window)
    restart_at_ns: int = 0  # the pending restart, 0 when none
    spawning: bool = False  # a restart's process is being spawned (see the module docstring)
    timer: asyncio.TimerHandle | None = None
    _spec_dict: dict[str, Any] | None = None  # the spec as saved (it never changes): built once

    @property
    def policy(self) -> RestartPolicy:
        return self.spec.restart

    def to_dict(self) -> dict[str, Any]:
        if self._spec_dict is None:
            self._spec_dict = to_dict(self.spec)
        return {"spec": self._spec_dict, "restarts": self.restarts, "step": self.step, "starts": self.starts,
                "restart_at_ns": self.restart_at_ns, "spawning": self.spawning}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Series:
        from cells.protocol import executable_spec_from_dict

        ints = [data.get(k, 0) for k in ("restarts", "step", "restart_at_ns")]
        starts = data.get("starts") or []
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*ints, *starts]):
            raise ValueError("a restart series' counters must be integers")
        return cls(executable_spec_from_dict(data.get("spec")).validate(), restarts=ints[0], step=ints[1],
                   starts=list(starts), restart_at_ns=ints[2], spawning=bool(data.get("spawning")))

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


#: Starts a new run of ``spec`` in place of the ended ``previous`` (Runtime._relaunch).
Relaunch = Callable[[Cell, ExecutableSpec, Executable], Awaitable[ExecutableInfo]]


class Restarts:
    """The restart policies of one runtime's executables (``cells``, shared with it)."""

    def __init__(self, cells: dict[str, Cell], events: Events, persist: Callable[[Cell], None]) -> None:
        self._cells = cells
        self._events = events
        self._persist = persist
        self._relaunch: Relaunch | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self, relaunch: Relaunch) -> None:
        self._relaunch = relaunch

    # -- the runtime's moments -----------------------------------------------------------------------
    def begin(self, cell: Cell, spec: ExecutableSpec) -> None:
        """A Start of ``spec`` passed its checks: a new series (none under ``never``)."""
        old = cell.restarts.pop(spec.name, None)
        if old is not None:
            old.cancel_timer()
        if spec.restart.mode != "never":
            cell.restarts[spec.name] = Series(spec)

    def started(self, cell: Cell, spec: ExecutableSpec, info: ExecutableInfo, restarted: bool) -> None:
        """A run of ``spec`` is registered (before its record is saved): stamp it with its series."""
        info.restart = to_dict(spec.restart)
        series = cell.restarts.get(spec.name)
        if series is None:
            return
        if restarted:
            series.restarts += 1
        series.spawning = False
        series.restart_at_ns = 0
        series.starts = [*series.starts, info.started_at_ns][-(series.policy.limit_burst + 1):]
        info.restarts = series.restarts

    def failed_to_start(self, cell: Cell, spec: ExecutableSpec) -> None:
        """A Start that began a series failed: nothing runs, nothing restarts."""
        cell.restarts.pop(spec.name, None)

    def on_exit(self, cell: Cell, exe: Executable, lost: bool, stopped: bool) -> str | None:
        """``exe``'s run ended (its exit recorded, its record not saved yet): schedule its restart
        (``"backoff"``), give up (``"failed"``) or not (None). Called by :mod:`cells.exits`."""
        info = exe.info
        series = cell.restarts.get(info.name)
        if series is None or cell.exes.get(info.name) is not exe:
            return None
        if (stopped or info.exit is None or self._cells.get(cell.info.name) is not cell
                or cell.info.state is CellState.FREEING
                or not (exe.unhealthy or wants_restart(series.policy, info.exit, lost))):  # cells.health
            cell.restarts.pop(info.name, None)
            return None
        ran_ns = info.exit.ended_at_ns - info.started_at_ns if info.started_at_ns else 0
        if ran_ns >= series.policy.reset_after_s * S:
            series.step = 0
        why = f"run {info.run} ended: {info.exit.describe()}" + (" (unhealthy)" if exe.unhealthy else "")
        return self._schedule(cell, exe, series, why)

    def cancel(self, cell: Cell, exe: Executable) -> None:
        """A Stop: the series ends (no restart after this run, nor after a supervisor crash: saved
        now), and a pending restart is cancelled: the last run's exit stands (``exited``)."""
        series = cell.restarts.pop(exe.info.name, None)
        if series is not None:
            series.cancel_timer()
        if exe.info.state is ExecutableState.BACKOFF:
            exe.info.state = ExecutableState.EXITED
            exe.info.restart_at_ns = 0
        self._save(cell)
        log.info("exe.restart_cancelled", cell=cell.info.name, exe=exe.info.name)

    def forget(self, cell: Cell) -> None:
        """The cell is being freed: no pending restart of it happens (nor after a supervisor crash)."""
        if not cell.restarts:
            return
        for name in list(cell.restarts):
            exe = cell.exes.get(name)
            if exe is not None and exe.info.state is ExecutableState.BACKOFF:
                exe.info.state = ExecutableState.EXITED
                exe.info.restart_at_ns = 0
            cell.restarts.pop(name).cancel_timer()
        self._save(cell)

    def _save(self, cell: Cell) -> None:
        try:
            self._persist(cell)
        except OSError as exc:
            log.error("store.save_failed", cell=cell.info.name, error=str(exc))

    def resume(self, cell: Cell, series: Series) -> None:
        """After a supervisor restart: keep the series and re-arm a pending restart."""
        cell.restarts[series.spec.name] = series
        if series.restart_at_ns:
            self._arm(cell, series)

    def pending(self, cell: Cell) -> dict[str, dict[str, Any]]:
        """The series of ``cell``, as its record keeps them."""
        return {name: s.to_dict() for name, s in sorted(cell.restarts.items())}

    # -- backoff and the timer -----------------------------------------------------------------------
    def _schedule(self, cell: Cell, exe: Executable, series: Series, why: str) -> str:
        info = exe.info
        policy = series.policy
        now = time.time_ns()
        at = now + int(next_delay(policy, series.step) * S)
        if limit_hit(policy, series.starts, at):
            count = len(recent(policy, series.starts, at))
            info.state = ExecutableState.FAILED
            info.restart_at_ns = 0
            info.reason = (f"start limit hit: {count} starts within {policy.limit_interval_s:g}s "
                           f"(limit_burst {policy.limit_burst}); {why}")
            cell.restarts.pop(info.name, None)
            log.warning("exe.restart_failed", cell=cell.info.name, exe=info.name, reason=info.reason)
            return "failed"
        series.step = min(series.step + 1, MAX_STEP)
        series.restart_at_ns = at
        info.state = ExecutableState.BACKOFF
        info.restart_at_ns = at
        self._arm(cell, series)
        log.info("exe.backoff", cell=cell.info.name, exe=info.name, delay_s=(at - now) / S, run=info.run)
        return "backoff"

    def _arm(self, cell: Cell, series: Series, delay_s: float | None = None) -> None:
        series.cancel_timer()
        if delay_s is None:
            delay_s = max(0.0, (series.restart_at_ns - time.time_ns()) / S)
        loop = asyncio.get_running_loop()
        series.timer = loop.call_later(delay_s, self._due, cell, series)

    def _due(self, cell: Cell, series: Series) -> None:
        series.timer = None
        task = asyncio.get_running_loop().create_task(self._restart(cell, series))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("restart.task_failed", error=repr(task.exception()))

    async def _restart(self, cell: Cell, series: Series) -> None:
        name = series.spec.name
        exe = cell.exes.get(name)
        if (cell.restarts.get(name) is not series or exe is None or exe.info.state is not ExecutableState.BACKOFF
                or self._cells.get(cell.info.name) is not cell):
            return
        if cell.info.state is CellState.FROZEN or name in cell.starting:  # not now: Start would refuse
            self._arm(cell, series, FROZEN_RETRY_S)
            return
        if cell.info.state is not CellState.ACTIVE:
            return
        assert self._relaunch is not None, "Restarts.install was not called"
        series.spawning = True
        self._save(cell)  # before the spawn: a successor must not start it a second time
        log.info("exe.restarting", cell=cell.info.name, exe=name, run=exe.info.run, restarts=series.restarts)
        self._events.emit("restarting", exe.info)
        try:
            await self._relaunch(cell, series.spec, exe)
        except (CellError, OSError) as exc:  # counts as a start that failed at once
            series.spawning = False
            series.starts = [*series.starts, time.time_ns()][-(series.policy.limit_burst + 1):]
            log.warning("exe.restart_spawn_failed", cell=cell.info.name, exe=name, error=str(exc))
            if cell.restarts.get(name) is not series or cell.exes.get(name) is not exe:
                return
            kind = self._schedule(cell, exe, series, f"restart failed: {exc}")
            if kind == "backoff":
                exe.info.reason = f"restart failed: {exc}"
            self._save(cell)
            self._events.emit(kind, exe.info)
