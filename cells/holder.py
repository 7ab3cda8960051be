"""The namespace holder of a process-isolated cell: pid 1 of the cell's pid namespace.

It owns the cell's pid/mount/uts/ipc namespaces so that executables can come and go (each joins
them with setns) like containers of one pod. Being pid 1 it inherits the cell's orphans and must
reap them. It is set up in Python (unshare, private /, fresh /proc, hostname, netns, cgroup) and
then execs ``/bin/sh`` running a wait loop: a forked copy of the supervisor would keep megabytes
of copy-on-write pages alive per cell, the shell needs a few hundred KB of its own. A pid 1 ignores
signals it has no handler for, so only SIGKILL from the supervisor ends it — and with it, the
kernel kills everything else in the pid namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence

import structlog

from cells import namespaces as ns
from cells.model import Cell
from cells.profile import SecurityProfile
from cells.reaper import Reaper, watch_pidfd
from cells.spawn import ExecRequest, fork_exec, join_cgroup, self_pidns_fd, stage
from cells.state import CellState

log = structlog.get_logger("cells.holder")

#: dash reaps every child (known or not) in ``wait``: orphans never stay zombies.
HOLDER_SCRIPT = "while :; do sleep 2147483647 & wait; done"
HOLDER_ARGV = ("/bin/sh", "-c", HOLDER_SCRIPT)


def _setup(
    procs_files: Sequence[str], hostname: str, netns_fd: int | None, build_root: Callable[[], None] | None
) -> None:
    stage("cgroup", lambda: join_cgroup(procs_files))
    stage("unshare", lambda: ns.unshare(ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC))
    if build_root is not None:  # the contained view (cells.mountview), its own /proc included
        stage("mount-view", build_root)
    else:  # privileged: the host's view, writable, with this pid namespace's /proc
        stage("mount-private", lambda: ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE))
        stage(
            "mount-proc",
            lambda: ns.mount("proc", "/proc", "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC),
        )
    stage("sethostname", lambda: ns.sethostname(hostname))
    if netns_fd is not None:
        stage("setns-net", lambda: ns.setns(netns_fd, ns.CLONE_NEWNET))


def start_holder(
    procs_files: Sequence[str],
    hostname: str,
    netns_path: str | None,
    devnull: int,
    build_root: Callable[[], None] | None = None,
    profile: SecurityProfile | None = None,
) -> int:
    """Start the holder; returns its host pid once it exec'd. The caller reaps it (SIGCHLD).

    ``build_root`` builds the cell's mount view in the holder's new mount namespace (None: the
    host's); ``profile`` contains the holder itself like a workload (it needs no privilege)."""
    netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC) if netns_path else None
    try:
        ns.unshare(ns.CLONE_NEWPID)  # pid_for_children := a new pid namespace
        try:
            req = ExecRequest(
                argv=HOLDER_ARGV,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                setup=lambda: _setup(procs_files, hostname, netns_fd, build_root),
                stdin=devnull,
                stdout=devnull,
                stderr=devnull,
                cwd="/",
                profile=profile,
            )
            return fork_exec(req)
        finally:
            ns.setns(self_pidns_fd(), ns.CLONE_NEWPID)
    finally:
        if netns_fd is not None:
            os.close(netns_fd)


def namespace_fds(holder_pid: int) -> list[tuple[int, int]]:
    """Open (fd, type) of the holder's namespaces in the order an executable enters them.

    mnt goes last: after it, paths resolve inside the cell. The caller closes the fds.
    """
    fds: list[tuple[int, int]] = []
    try:
        for flag in (ns.CLONE_NEWNET, ns.CLONE_NEWUTS, ns.CLONE_NEWIPC, ns.CLONE_NEWNS):
            fds.append((ns.open_ns(holder_pid, ns.NS_NAMES[flag]), flag))
    except BaseException:
        for fd, _ in fds:
            os.close(fd)
        raise
    return fds


class Holders:
    """The supervisor's side of every cell's holder: its exit noticed (our child, or adopted after a
    restart and watched by pidfd), and the SIGKILL that ends it with its cell."""

    def __init__(self, reaper: Reaper, cells: dict[str, Cell], persist: Callable[[Cell], None]) -> None:
        self._reaper = reaper
        self._cells = cells
        self._persist = persist
        self._exits: dict[str, asyncio.Future[None]] = {}

    def watch(self, cell: Cell, pid: int, adopted: bool) -> None:
        name = cell.info.name
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._exits[name] = fut

        def gone(_status: int = 0) -> None:
            cell.holder_pidfd = -1
            if not fut.done():
                fut.set_result(None)
            if self._exits.get(name) is fut:
                del self._exits[name]
            current = self._cells.get(name)
            if current is cell and cell.info.holder_pid == pid:
                cell.info.holder_pid = 0
                if cell.info.state is not CellState.FREEING:
                    log.error("cell.holder_died", cell=name, pid=pid)
                    with contextlib.suppress(Exception):
                        self._persist(cell)

        if adopted:
            cell.holder_pidfd = watch_pidfd(pid, gone)
        else:
            self._reaper.expect(pid, gone)

    async def kill(self, cell: Cell) -> None:
        """SIGKILL ``cell``'s holder and wait (5 s at most) until it is gone."""
        pid = cell.info.holder_pid
        if not pid:
            return
        fut = self._exits.get(cell.info.name)
        with contextlib.suppress(ProcessLookupError):
            if cell.holder_pidfd >= 0:
                signal.pidfd_send_signal(cell.holder_pidfd, signal.SIGKILL)
            elif self._reaper.is_child(pid):
                os.kill(pid, signal.SIGKILL)
        if fut is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), 5)

    async def kill_unregistered(self, name: str, pid: int) -> None:
        """The holder of a cell whose allocation failed: it is not in ``cells``."""
        os.kill(pid, signal.SIGKILL)
        fut = self._exits.get(name)
        if fut is not None:
            await asyncio.wait_for(asyncio.shield(fut), 5)
