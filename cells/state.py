"""What the runtime reports back: cell and executable state, exit status, resource stats.

These dataclasses are also what the supervisor persists (as JSON) and sends to cellard, so they
stay plain: ints, strings, bools, lists. ``to_dict``/``from_dict`` are the only (de)serialisers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any


class ExecutableState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    LOST = "lost"  # the supervisor restarted and could not learn the exit status
    BACKOFF = "backoff"  # ended; its restart policy starts it again at ``restart_at_ns``
    FAILED = "failed"  # ended; its restart policy gave up (start limit): ``reason`` says why


class CellState(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    FREEING = "freeing"


@dataclass
class ExitStatus:
    """How a run ended: ``code`` when it exited, ``signal`` when a signal killed it."""

    code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    started_at_ns: int = 0
    ended_at_ns: int = 0

    @classmethod
    def from_wait_status(cls, status: int, *, started_at_ns: int = 0, ended_at_ns: int = 0) -> ExitStatus:
        import os

        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status), started_at_ns=started_at_ns, ended_at_ns=ended_at_ns)
        code = os.waitstatus_to_exitcode(status)
        return cls(code=code, started_at_ns=started_at_ns, ended_at_ns=ended_at_ns)

    def describe(self) -> str:
        what = f"signal {self.signal}" if self.signal is not None else f"code {self.code}"
        return what + (" (OOM-killed)" if self.oom_killed else "")


@dataclass
class ExecutableInfo:
    cell_name: str
    name: str
    state: ExecutableState
    argv: list[str] = field(default_factory=list)
    command: str = ""
    description: str = ""
    host_pid: int = 0
    cell_pid: int = 0
    run: int = 0  # how many times this name was started in this cell, 1-based
    started_at_ns: int = 0
    exit: ExitStatus | None = None
    privileged: bool = False  # started without containment (its own spec's or its cell's privileged)
    restarts: int = 0  # runs its restart policy started since the Start that began this series
    restart_at_ns: int = 0  # wall clock of the pending restart (BACKOFF), else 0
    restart: dict[str, Any] = field(default_factory=dict)  # its RestartPolicy (to_dict form); {}: never
    reason: str = ""  # why it is FAILED
    health_check: dict[str, Any] = field(default_factory=dict)  # its HealthCheck (to_dict form); {}: none
    health: str = ""  # "" (no check), "starting", "healthy" or "unhealthy" (:mod:`cells.health`)
    health_failures: int = 0  # consecutive failed probes
    health_failed_probes: int = 0  # failed probes of this run in all
    health_result: str = ""  # the last probe's result, short ("ok", "HTTP 404", "timeout after 2s", ...)


@dataclass
class PressureStats:
    """``some avg10`` / ``full avg10`` in percent and total stall microseconds, per resource."""

    cpu_some_avg10: float = 0.0
    memory_some_avg10: float = 0.0
    memory_full_avg10: float = 0.0
    io_some_avg10: float = 0.0
    cpu_some_total_us: int = 0
    memory_some_total_us: int = 0
    io_some_total_us: int = 0


@dataclass
class CellStats:
    memory_current: int = 0
    memory_peak: int = 0
    cpu_usage_us: int = 0
    cpu_user_us: int = 0
    cpu_system_us: int = 0
    pids_current: int = 0
    oom_kills: int = 0
    pressure: PressureStats | None = None


@dataclass
class CellInfo:
    name: str
    state: CellState
    cgroup_path: str  # in the unified hierarchy, absolute
    cgroup_v2_limits: bool  # limits live in v2 files (False: v1 controllers on a hybrid host)
    isolate_process: bool = False
    isolate_network: bool = False
    netns: str = ""  # name under /run/netns, empty when not network-isolated
    holder_pid: int = 0  # pid 1 of the cell's pid namespace, 0 when not process-isolated
    created_at_ns: int = 0
    spec: dict[str, Any] = field(default_factory=dict)  # the CellSpec as given (to_dict form)
    executables: list[ExecutableInfo] = field(default_factory=list)
    stats: CellStats | None = None


def to_dict(obj: Any) -> Any:
    """A JSON-ready dict of any of the dataclasses here (enums become their values)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def exit_from_dict(d: dict[str, Any] | None) -> ExitStatus | None:
    return None if d is None else ExitStatus(**d)


def executable_from_dict(d: dict[str, Any]) -> ExecutableInfo:
    d = dict(d)
    d["state"] = ExecutableState(d["state"])
    d["exit"] = exit_from_dict(d.get("exit"))
    return ExecutableInfo(**d)


def stats_from_dict(d: dict[str, Any] | None) -> CellStats | None:
    if d is None:
        return None
    d = dict(d)
    if d.get("pressure") is not None:
        d["pressure"] = PressureStats(**d["pressure"])
    return CellStats(**d)


def cell_from_dict(d: dict[str, Any]) -> CellInfo:
    d = dict(d)
    d["state"] = CellState(d["state"])
    d["executables"] = [executable_from_dict(e) for e in d.get("executables", [])]
    d["stats"] = stats_from_dict(d.get("stats"))
    return CellInfo(**d)
