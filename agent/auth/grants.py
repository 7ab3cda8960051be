"""Workloads on the main socket: refused unless their cell was granted a role; and the cell facts
cellard's authorization needs (grants, admin-only cells), cached.

The rule (DESIGN.md, security model): a caller on the main Unix socket whose process lives in
cellar's cell tree is a workload. Its cell is read from the kernel, never from the request: the
connecting pid (SO_PEERCRED, recorded by :mod:`agent.auth.unixpeer` at accept) -> ``/proc/<pid>/cgroup``
-> the cell, exactly as the node-local endpoint does (:class:`agent.auth.identity.CgroupResolver`).
A workload gets PERMISSION_DENIED for every method, whatever its uid, unless its cell or the nearest
ancestor cell with a grant was allocated with ``grant_role`` (admin only, :mod:`agent.auth.privilege`):
then its role is that role, at most admin. The socket's own gate (root or ``server.socket_group``)
still applies first.

Binding (issue 13): the cell is decided once per connection, when it is accepted, while the connecting
process is known to be the one the kernel named: with SO_PEERPIDFD (Linux >= 6.5) the pidfd is the
connecting process itself; on older kernels a pidfd is opened from the pid. After reading the cgroup,
a pidfd that shows the process gone means the pid may name another process by now: the connection
counts as a workload of an unknown cell (refused). The pidfd is then held for the connection's life
(closed by :meth:`MainSocketGate.forget`), and each call first checks, as the node-local endpoint does,
that the process is still alive and still in the cgroup read at accept (a pidfd poll and a read of
``/proc/<pid>/cgroup``, about 10 us; a cell caller's grant then comes from the cache as before). A
connection whose opener exited (its fd inherited or passed on: whoever holds it now is unknown) or
whose opener moved since (a host root moved into a cell, a workload moved elsewhere) is refused as a
workload would be, the verdict naming why; never upgraded, and never re-placed where it is now.

Where grants come from: :class:`CellPolicies`, cellard's cache of every cell's ``grant_role`` and
admin-only attributes, loaded from the supervisor (``runtime.list``), reloaded when older than
``ttl_s`` or when a caller's cell is not in it, and edited at once by cellard's own Allocate and Free.
It fails closed: a cell not in the supervisor's list is denied; a granted cell whose cgroup directory
is not the one seen when the grant was learned (freed and allocated again under the same name) is
looked up again and denied if it still differs; an Allocate of an admin-only cell is marked pending
before the supervisor creates it, so a concurrent Start by an operator cannot slip in first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from agent.auth.identity import CgroupResolver, ProcessGone, bind_process, identity_from_cgroup, pidfd_exited
from agent.auth.privilege import cell_admin_only
from agent.auth.unixpeer import PeerCred

if TYPE_CHECKING:
    from cells.client import RuntimeClient

log = structlog.get_logger("agent.auth.grants")

#: Roles a grant may name, lowest first (the same three as agent.auth.authz; never more than admin).
GRANT_ROLES = ("observer", "operator", "admin")
#: Reload the cell list at most this often when lookups miss (a workload hammering the socket from
#: an unknown cgroup must not turn into a supervisor List per call).
MISS_RELOAD_S = 0.25


@dataclass(frozen=True)
class CellPolicy:
    """What authorization needs to know about one allocated cell."""

    name: str
    grant_role: str = ""
    admin_only: tuple[str, ...] = ()  # why only an admin may start in it (agent.auth.privilege)
    cgroup_path: str = ""  # absolute, unified hierarchy
    cgroup_ino: int = 0  # inode of that directory when the policy was learned (0: unknown)


def _ancestry(cell: str) -> Iterator[str]:
    """``a/b/c``, ``a/b``, ``a``."""
    parts = cell.split("/")
    for n in range(len(parts), 0, -1):
        yield "/".join(parts[:n])


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino if path else 0
    except OSError:
        return 0


class CellPolicies:
    """Cache of every cell's grant and admin-only attributes (see the module docstring)."""

    def __init__(self, runtime: RuntimeClient, volumes_dir: str, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.volumes_dir = volumes_dir
        self.ttl_s = ttl_s
        self.clock = clock
        self._cells: dict[str, CellPolicy] = {}
        self._pending: dict[str, int] = {}  # admin-only allocations in flight, by name
        self._loaded_at = -math.inf
        self._lock = asyncio.Lock()
        self._journal: list[Callable[[dict[str, CellPolicy]], None]] | None = None  # edits during a reload

    def policy_of(self, info: Any) -> CellPolicy:
        """The policy of a ``cells.state.CellInfo``."""
        spec = info.spec or {}
        return CellPolicy(
            name=info.name,
            grant_role=str(spec.get("grant_role") or ""),
            admin_only=tuple(cell_admin_only(spec, self.volumes_dir)),
            cgroup_path=info.cgroup_path,
            cgroup_ino=_inode(info.cgroup_path),
        )

    # -- edits -------------------------------------------------------------------------------------
    def _edit(self, change: Callable[[dict[str, CellPolicy]], None]) -> None:
        change(self._cells)
        if self._journal is not None:  # a reload is in flight: apply it to its result too
            self._journal.append(change)

    def allocated(self, info: Any) -> None:
        """cellard allocated a cell (``CellInfo``)."""
        policy = self.policy_of(info)
        self._edit(lambda cells: cells.__setitem__(policy.name, policy))

    def freed(self, name: str) -> None:
        """cellard freed a cell (and with it its descendants)."""

        def drop(cells: dict[str, CellPolicy]) -> None:
            for other in [n for n in cells if n == name or n.startswith(name + "/")]:
                del cells[other]

        self._edit(drop)

    @contextlib.contextmanager
    def allocating(self, name: str, admin_only: bool) -> Iterator[None]:
        """Around an Allocate: an admin-only cell counts as such from before it exists."""
        if not admin_only:
            yield
            return
        self._pending[name] = self._pending.get(name, 0) + 1
        try:
            yield
        finally:
            self._pending[name] -= 1
            if not self._pending[name]:
                del self._pending[name]

    # -- loading -----------------------------------------------------------------------------------
    async def reload(self) -> None:
        """Replace the cache with the supervisor's list (edits made meanwhile are kept)."""
        asked = self.clock()
        async with self._lock:
            if self._loaded_at >= asked:
                return  # another caller reloaded while we waited
            self._journal = []
            try:
                infos = await self.runtime.list()
                cells = {}
                for info in infos:
                    cells[info.name] = self.policy_of(info)
                for change in self._journal:
                    change(cells)
            finally:
                self._journal = None
            self._cells = cells
            self._loaded_at = self.clock()
            log.debug("grants.reloaded", cells=len(cells), granted=sum(bool(p.grant_role) for p in cells.values()))

    async def _fresh(self) -> None:
        if self.clock() - self._loaded_at > self.ttl_s:
            await self.reload()

    async def _known(self, name: str) -> CellPolicy | None:
        """The policy of ``name``, reloading once (rate-limited) when it is missing."""
        await self._fresh()
        policy = self._cells.get(name)
        if policy is None and self.clock() - self._loaded_at > MISS_RELOAD_S:
            await self.reload()
            policy = self._cells.get(name)
        return policy

    # -- questions ---------------------------------------------------------------------------------
    async def admin_only(self, cell: str) -> tuple[str, str] | None:
        """(cell, reason) when ``cell`` or an ancestor is an admin's alone (or is being allocated as
        one); None otherwise, also for a cell that does not exist (the runtime answers NOT_FOUND)."""
        await self._fresh()
        for name in _ancestry(cell):
            if name in self._pending:
                return name, "being allocated with admin-only settings"
            policy = self._cells.get(name)
            if policy is not None and policy.admin_only:
                return name, ", ".join(policy.admin_only)
        return None

    async def grant(self, cell: str) -> tuple[str, str] | None:
        """(granting cell, role) for a workload of ``cell``: the nearest of it and its ancestors that
        was granted a role. None when none was, when ``cell`` is unknown, or the grant is stale."""
        if await self._known(cell) is None:
            return None
        for attempt in range(2):
            found = next((self._cells[n] for n in _ancestry(cell) if n in self._cells and self._cells[n].grant_role), None)
            if found is None:
                return None
            if found.grant_role in GRANT_ROLES and found.cgroup_ino and _inode(found.cgroup_path) == found.cgroup_ino:
                return found.name, found.grant_role
            if attempt == 0:
                await self.reload()  # freed and allocated again since? ask the supervisor once more
        return None


# -- the main socket's gate ------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a connecting process lived when its connection was accepted."""

    cell: str | None  # None: outside cellar's cells (the host)
    known: bool = True  # False: could not be established (refused as a workload of an unknown cell)


UNKNOWN = Placement(cell="<unknown>", known=False)
EXITED = "the process that opened this connection has exited"


@dataclass(frozen=True)
class Verdict:
    cell: str | None  # the caller's cell; None for the host
    role: str | None  # the granted role; None (for a cell): refused
    granted_by: str = ""  # the cell whose grant_role applies (itself or an ancestor)
    reason: str = ""  # why a connection bound elsewhere is refused now (its process exited or moved)


@dataclass
class _Held:
    """A connection's caller as bound at accept: its placement, and the process held by a pidfd."""

    placement: Placement
    pid: int = 0
    pidfd: int = -1  # -1: nothing held (an unknown placement, or released)
    rel: str | None = None  # its cgroup below cellar's root at accept (None: outside the tree)


def _where(rel: str | None) -> str:
    return "host" if rel is None else (rel or "cellar's cgroup root")


class MainSocketGate:
    """Binds each main-socket connection to its caller's cell at accept, holding the caller by a pidfd;
    decides per call (re-checking that the caller is still that process in that cgroup)."""

    def __init__(self, resolver: CgroupResolver, policies: CellPolicies) -> None:
        self.resolver = resolver
        self.policies = policies
        self._held: dict[str, _Held] = {}
        #: called with a connection's key when it closes (the file store releases its handles)
        self.closed: list[Callable[[str], None]] = []

    def hold(self, pid: int, sock: socket.socket | None = None) -> _Held:
        """Bind the process that connected ``sock`` (pid ``pid``): its placement by the kernel's word,
        and a pidfd of it that the caller must release (:meth:`_release`)."""
        try:
            pidfd, rel = bind_process(self.resolver, pid, sock)
        except ProcessGone:
            return _Held(UNKNOWN)  # the pid may be another process's by now
        return _Held(Placement(identity_from_cgroup(rel).cell), pid, pidfd, rel)

    def place(self, pid: int, sock: socket.socket | None = None) -> Placement:
        """The cell of the process that connected ``sock`` (pid ``pid``), by the kernel's word."""
        held = self.hold(pid, sock)
        self._release(held)
        return held.placement

    @staticmethod
    def _release(held: _Held) -> None:
        pidfd, held.pidfd = held.pidfd, -1
        if pidfd >= 0:
            os.close(pidfd)

    def _keep(self, key: str, held: _Held) -> None:
        old = self._held.pop(key, None)
        if old is not None:
            self._release(old)
        self._held[key] = held

    def bind(self, key: str, sock: socket.socket, cred: PeerCred) -> None:
        """agent.auth.unixpeer's accept hook: record where the caller of connection ``key`` lives."""
        self._keep(key, self.hold(cred.pid, sock))

    def forget(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._release(held)
        for hook in self.closed:
            hook(key)

    def _bound(self, peer: str, cred: PeerCred) -> _Held:
        found = self._held.get(peer)
        if found is None:  # the accept hook did not run: bind now (fail closed when it cannot be)
            found = self.hold(cred.pid)
            self._keep(peer, found)
        return found

    def placement(self, peer: str, cred: PeerCred) -> Placement:
        """The placement bound to ``peer``; established now if the accept hook did not run (fail closed
        when it cannot be)."""
        return self._bound(peer, cred).placement

    def changed(self, held: _Held) -> str:
        """Why the bound caller no longer stands (its process exited, or moved to another cgroup); ""
        while it is still the process bound at accept, in the same cgroup."""
        if held.pidfd < 0 or pidfd_exited(held.pidfd):
            return EXITED
        try:
            rel = self.resolver.read_rel_of_pid(held.pid)
        except OSError:
            return EXITED
        if rel == held.rel:
            return ""
        if pidfd_exited(held.pidfd):  # the read may have been the pid's next owner's
            return EXITED
        return f"the process that opened this connection moved from {_where(held.rel)} to {_where(rel)}"

    async def decide(self, peer: str, cred: PeerCred) -> Verdict:
        held = self._bound(peer, cred)
        place = held.placement
        if not place.known:
            return Verdict(place.cell, None)
        why = self.changed(held)
        if why:
            log.warning("grants.caller_changed", pid=held.pid, uid=cred.uid, bound=_where(held.rel), reason=why)
            return Verdict(f"<{why}>", None, reason=why)
        if place.cell is None:
            return Verdict(None, None)
        try:
            granted = await self.policies.grant(place.cell)
        except Exception as exc:  # the supervisor does not answer: no grant can be confirmed
            log.warning("grants.lookup_failed", cell=place.cell, error=str(exc))
            granted = None
        if granted is None:
            return Verdict(place.cell, None)
        return Verdict(place.cell, granted[1], granted[0])
