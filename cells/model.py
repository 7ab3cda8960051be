"""The supervisor's in-memory model of cells and executables, and the orderings over their names.

:class:`Cell` and :class:`Executable` wrap the wire/store records of :mod:`cells.state` with what only
a live supervisor has: exit futures, pipes, log writers, pidfds of adopted processes. The runtime's
dict of them is the one source of truth while it runs; :mod:`cells.store` is its copy on disk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cells.capture import Capture
from cells.spec import EXECUTABLE_CGROUP_PREFIX, CellSpec
from cells.state import CellInfo, ExecutableInfo, ExecutableState, ExitStatus, to_dict
from cells.store import encode as store_encode

if TYPE_CHECKING:
    from cells.restart import Series

LIVE_STATES = (ExecutableState.STARTING, ExecutableState.RUNNING, ExecutableState.STOPPING)
#: States an executable never leaves (BACKOFF is ended too, but leaves for a restart or EXITED).
FINAL_STATES = (ExecutableState.EXITED, ExecutableState.LOST, ExecutableState.FAILED)


@dataclass(eq=False)
class Executable:
    info: ExecutableInfo
    leaf: str
    done: asyncio.Future[ExitStatus]
    capture: Capture | None = None
    writer: Any = None
    adopted_pidfd: int = -1  # a survivor of an earlier supervisor: not our child, watched via pidfd
    saved: bytes | None = None  # its encoded record, once ended (ended executables never change)
    unhealthy: bool = False  # killed by its health check: its restart policy restarts it whatever the exit
    stdin_fd: int = -1  # the write end of its stdin pipe (spec.stdin), for attach (cells.exec); closed when it ends


@dataclass(eq=False)
class Cell:
    spec: CellSpec
    info: CellInfo
    exes: dict[str, Executable] = field(default_factory=dict)
    holder_pidfd: int = -1  # adopted holder (not our child)
    #: executables whose process is being spawned (off the event loop), done when registered or failed
    starting: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    #: restart policies' series by executable name (:mod:`cells.restart`), saved with the cell
    restarts: dict[str, Series] = field(default_factory=dict)


def leaf_of(cell_name: str, exe_name: str) -> str:
    """The cgroup (relative to the root) an executable's processes run in."""
    return f"{cell_name}/{EXECUTABLE_CGROUP_PREFIX}{exe_name}"


def saved_json(exe: Executable) -> bytes:
    """``exe``'s part of the cell record; encoded once when it has ended."""
    if exe.saved is not None:
        return exe.saved
    record = store_encode(to_dict(exe.info))
    if exe.info.state in FINAL_STATES:
        exe.saved = record
    return record


def depth_key(name: str) -> tuple[str, ...]:
    """Sort key putting parents before children."""
    return tuple(name.split("/"))


def matches(prefix: str, name: str) -> bool:
    """Path-aware prefix: ``a`` matches ``a`` and ``a/b``, not ``ab``; ``""`` matches everything."""
    prefix = prefix.rstrip("/")
    return not prefix or name == prefix or name.startswith(prefix + "/")
