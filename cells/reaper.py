"""Reaping: the supervisor is the parent (and subreaper) of every workload and collects their exits.

``waitpid(-1)`` runs in the SIGCHLD handler and hands each wait status to whoever registered the pid
(:meth:`Reaper.expect`); orphans re-parented to us are reaped and dropped. One race needs care: a
child waited for in an exec-wait thread (:mod:`cells.launch`) can exit and be reaped before its Start
is back on the event loop to register it. While such waits are in flight, exits of unknown pids are
kept, stamped with how many waits had begun, so a wait takes only exits reaped after it began (an
orphan's pid may have been reused by its newer child). Processes that are not our children (adopted
after a supervisor restart) are watched through a pidfd instead (:func:`watch_pidfd`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import structlog

log = structlog.get_logger("cells.reaper")

#: Takes the wait status of ``pid`` if the reaper saw it exit during this exec wait, else None.
EarlyExit = Callable[[int], "int | None"]


class Reaper:
    def __init__(self) -> None:
        self._children: dict[int, Callable[[int], None]] = {}
        self._waits_in_flight = 0
        self._waits_begun = 0
        # pid -> (wait status, waits begun when it was reaped)
        self._early_exits: dict[int, tuple[int, int]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become the reaper of every child (SIGCHLD)."""
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    @staticmethod
    def uninstall(loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGCHLD)

    def expect(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """``on_exit(wait status)`` once our child ``pid`` is reaped."""
        self._children[pid] = on_exit

    def exit_status(self, pid: int, early: int | None) -> asyncio.Future[int]:
        """A future of ``pid``'s wait status: ``early`` when the spawn already reaped it, else when reaped."""
        ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if early is not None:
            ended.set_result(early)
        else:
            def reaped(status: int) -> None:
                if not ended.done():
                    ended.set_result(status)

            self.expect(pid, reaped)
        return ended

    def is_child(self, pid: int) -> bool:
        """Whether ``pid`` is a registered child not reaped yet: only then is signalling it safe."""
        return pid in self._children

    def reap(self) -> None:
        """waitpid(-1) until nothing is left; dispatch to known pids, drop orphans (we are subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self._children and self._waits_in_flight:
                self._early_exits[pid] = (status, self._waits_begun)
            else:
                self.reap_status(pid, status)

    def reap_status(self, pid: int, status: int) -> None:
        """Hand one reaped child's wait status to whoever registered it (orphans: nobody)."""
        callback = self._children.pop(pid, None)
        if callback is not None:
            try:
                callback(status)
            except Exception:
                log.exception("reap.callback_failed", pid=pid)

    @contextlib.contextmanager
    def exec_wait(self) -> Iterator[EarlyExit]:
        """Around a wait for a child's exec off the event loop: exits of pids unknown yet are kept."""
        self._waits_in_flight += 1
        self._waits_begun += 1
        begun = self._waits_begun

        def early_exit(pid: int) -> int | None:
            stashed = self._early_exits.pop(pid, None)
            return stashed[0] if stashed is not None and stashed[1] >= begun else None

        try:
            yield early_exit
        finally:
            self._waits_in_flight -= 1
            if not self._waits_in_flight:
                self._early_exits.clear()  # orphans (we are subreaper) nobody will claim


def watch_pidfd(pid: int, on_exit: Callable[[], None]) -> int:
    """Exit notification for a process that is not our child (adopted after a restart)."""
    fd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()

    def fired() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        on_exit()

    loop.add_reader(fd, fired)
    return fd
