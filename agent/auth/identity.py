"""Who is calling the node-local endpoint: the caller's cell, found from kernel facts only.

A workload never says who it is; cellard works it out from the connection:

- Unix socket: SO_PEERCRED's pid (recorded by :mod:`agent.auth.unixpeer` at connect time) ->
  ``/proc/<pid>/cgroup``'s unified line -> the path below cellar's cgroup root.
- loopback TCP: the client socket's ``INET_DIAG_CGROUP_ID`` (sock_diag; the inode of the unified cgroup
  directory the socket was created in) -> the directory below cellar's cgroup root with that inode.

A cgroup path ``<root>/<cell...>/exe.<name>`` gives cell ``<cell...>`` and executable ``<name>``; the
namespace holder's leaf ``_init`` gives the cell only. A process outside cellar's tree gets scope
``"host"`` when its uid is 0, and ``"user:<uid>"`` otherwise: local.sock is 0666, so any local user
reaches it, and none may act as root's host scope.

On the Unix socket the identity is bound when the connection is accepted (:func:`bind_process`): the
connecting process is held by a pidfd, and each call checks it still lives in the same cgroup
(agent.local.endpoint); the main socket's gate (agent.auth.grants) binds its callers the same way.

Servicers read the result with :func:`caller_identity` / :func:`caller_cell` / :func:`caller_scope`;
the local endpoint's interceptor sets it in a contextvar for the duration of each call. On cellard's
main listeners nothing sets it, so callers there are the host (see :func:`caller_scope` for how an
admin names another scope).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import select
import socket
import struct
from dataclasses import dataclass

import grpc

from agent.metadata import SCOPE_METADATA_KEY

HOST_SCOPE = "host"
#: getsockopt SO_PEERPIDFD (Linux >= 6.5; not in Python 3.11's socket module).
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
_USER_SCOPE = re.compile(r"^user:(0|[1-9][0-9]{0,9})$")
_CELL_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class CallerIdentity:
    """A caller as the fronted services see it. ``cell`` is None for the host."""

    cell: str | None = None
    executable: str | None = None
    pid: int | None = None
    uid: int | None = None
    transport: str = "main"  # "unix" | "tcp" (local endpoint) | "main" (cellard's own listeners)
    conn: str = ""  # the local endpoint's connection key (file handles are released when it closes)

    @property
    def scope(self) -> str:
        """The storage scope: ``cell:<name>`` for a cell; ``host`` for uid 0 (and cellard's main
        listeners, which authorize by role); ``user:<uid>`` for any other caller outside the cells."""
        if self.cell is not None:
            return f"cell:{self.cell}"
        if self.transport == "main" or self.uid == 0:
            return HOST_SCOPE
        return f"user:{self.uid if self.uid is not None else 'unknown'}"


HOST = CallerIdentity()
_current: contextvars.ContextVar[CallerIdentity | None] = contextvars.ContextVar("cellar_local_caller", default=None)


def set_current(identity: CallerIdentity) -> contextvars.Token[CallerIdentity | None]:
    return _current.set(identity)


def reset_current(token: contextvars.Token[CallerIdentity | None]) -> None:
    _current.reset(token)


def caller_identity(context: grpc.aio.ServicerContext | None = None) -> CallerIdentity:
    """The identity of the current call (HOST on the main listeners)."""
    return _current.get() or HOST


def caller_cell(context: grpc.aio.ServicerContext | None = None) -> str | None:
    """The calling cell's name, or None when the caller is not inside a cell."""
    return caller_identity(context).cell


def caller_scope(context: grpc.aio.ServicerContext | None = None) -> str:
    """The storage scope of this call.

    Local endpoint: always the caller's own (``cell:<name>``, ``user:<uid>``, or ``host`` for root
    outside the cells): no request can name another.
    Main listeners: ``host``, unless an **admin** sends metadata ``cellar-scope: cell:<name>``,
    ``user:<uid>`` or ``host``. Raises ValueError for a malformed scope, PermissionError when a non-admin names a cell.
    """
    ident = _current.get()
    if ident is not None:
        return ident.scope
    if context is None:
        return HOST_SCOPE
    wanted = ""
    for key, value in context.invocation_metadata() or ():
        if key == SCOPE_METADATA_KEY:
            wanted = value if isinstance(value, str) else value.decode()
    if not wanted:
        return HOST_SCOPE
    from agent.auth.authz import current_role  # late: authz imports config, keep this module light

    scope = validate_scope(wanted)
    if scope != HOST_SCOPE and current_role() != "admin":
        raise PermissionError(f"{SCOPE_METADATA_KEY}: only an admin may act on another scope ({scope})")
    return scope


def validate_scope(scope: str) -> str:
    """``host``, ``user:<uid>`` or ``cell:<a/b/c>`` with cgroup-safe parts; ValueError otherwise."""
    if scope == HOST_SCOPE or _USER_SCOPE.match(scope):
        return scope
    kind, _, name = scope.partition(":")
    if kind != "cell" or not name or len(name) > 1024 or not all(_CELL_PART.match(p) for p in name.split("/")):
        raise ValueError(f"scope: expected 'host', 'user:<uid>' or 'cell:<name>', got {scope!r}")
    return scope


class ProcessGone(OSError):
    """The connecting process exited (or cannot be read): its pid may name another process by now."""


def peer_pidfd(sock: socket.socket) -> int | None:
    """SO_PEERPIDFD of a connected Unix socket: a pidfd of the very process that connected (None on
    kernels older than 6.5)."""
    try:
        return int(struct.unpack("i", sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4))[0])
    except OSError:
        return None


def pidfd_exited(pidfd: int) -> bool:
    """True once the process of ``pidfd`` has exited (a pidfd polls readable then)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def bind_process(resolver: CgroupResolver, pid: int, sock: socket.socket | None = None) -> tuple[int, str | None]:
    """(pidfd, cgroup path below cellar's root) of the process that connected ``sock`` (pid ``pid``).

    The pidfd comes from SO_PEERPIDFD when the kernel has it, else pidfd_open(pid); the cgroup is read
    after it is held, and a pidfd that shows the process gone afterwards means the cgroup read may
    have been another process's: ProcessGone. The caller owns (closes) the pidfd."""
    pidfd = peer_pidfd(sock) if sock is not None else None
    try:
        if pidfd is None:
            pidfd = os.pidfd_open(pid)
        rel = resolver.read_rel_of_pid(pid)
        if pidfd_exited(pidfd):
            raise ProcessGone(f"pid {pid} exited")
    except OSError as exc:
        if pidfd is not None:
            os.close(pidfd)
        raise exc if isinstance(exc, ProcessGone) else ProcessGone(str(exc)) from None
    return pidfd, rel


def identity_from_cgroup(rel: str | None, **extra: object) -> CallerIdentity:
    """Identity for a unified cgroup path relative to cellar's root (None / "" = outside the tree)."""
    if not rel:
        return CallerIdentity(**extra)  # type: ignore[arg-type]
    parts = rel.strip("/").split("/")
    exe = None
    if parts[-1].startswith("exe."):
        exe = parts.pop()[4:]
    elif parts[-1] == "_init":
        parts.pop()
    if not parts:
        return CallerIdentity(**extra)  # type: ignore[arg-type]
    return CallerIdentity(cell="/".join(parts), executable=exe, **extra)  # type: ignore[arg-type]


class CgroupResolver:
    """Maps pids and cgroup ids to paths below cellar's cgroup root (absolute unified path ``root``)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.mount = _unified_mount(self.root)
        self._by_inode: dict[int, str] = {}

    def _relative(self, absolute: str) -> str | None:
        if absolute == self.root:
            return ""
        if absolute.startswith(self.root + "/"):
            return absolute[len(self.root) + 1 :]
        return None

    def rel_of_pid(self, pid: int) -> str | None:
        """Path of ``pid``'s unified cgroup below the root; None if outside it or the pid is gone."""
        try:
            return self.read_rel_of_pid(pid)
        except OSError:
            return None

    def read_rel_of_pid(self, pid: int) -> str | None:
        """Like :meth:`rel_of_pid`, but a pid whose cgroup cannot be read raises OSError (fail closed)."""
        # os.open/os.read, not open(): a text file object costs ~25 us more, and both the node-local
        # endpoint and the main socket's gate read this on every call (the caller is re-checked).
        fd = os.open(f"/proc/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        text = b"".join(chunks).decode("utf-8", "surrogateescape")
        for line in text.splitlines():
            if line.startswith("0::"):
                return self._relative(os.path.normpath(self.mount + "/" + line[3:].strip()))
        return None

    def rel_of_cgroup_id(self, cgroup_id: int) -> str | None:
        """Path of the cgroup directory whose inode is ``cgroup_id``, searched below the root."""
        cached = self._by_inode.get(cgroup_id)
        if cached is not None:
            with contextlib.suppress(OSError):
                if os.stat(os.path.join(self.root, cached)).st_ino == cgroup_id:
                    return cached
            del self._by_inode[cgroup_id]
        for dirpath, dirnames, _files in os.walk(self.root):
            for name in dirnames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == cgroup_id:
                        rel = os.path.relpath(path, self.root)
                        self._by_inode[cgroup_id] = rel
                        return rel
        return None


def _unified_mount(root: str) -> str:
    """The mount point of the cgroup2 hierarchy that contains ``root``."""
    from cells.cgroup import parse_mountinfo, read_text

    best = ""
    for mount in parse_mountinfo(read_text("/proc/self/mountinfo")):
        point = mount.mountpoint.rstrip("/") or "/"
        if mount.fstype == "cgroup2" and (root == point or root.startswith(point + "/")) and len(point) > len(best):
            best = point
    return best or "/sys/fs/cgroup"
