"""Executable events (started, stopping, exited, lost) fanned out to watchers by cell prefix.

A watcher's queue is bounded and the runtime never waits on it: a full queue drops the event and
the next one delivered carries the count, so a slow watcher costs itself events, never the runtime.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cells.errors import InvalidArgument
from cells.model import matches
from cells.state import ExecutableInfo

WATCH_QUEUE = 1024


@dataclass(eq=False)
class Watcher:
    prefix: str
    queue: asyncio.Queue[tuple[str, ExecutableInfo, int]]
    dropped: int = 0

    def offer(self, kind: str, info: ExecutableInfo) -> None:
        """Never blocks the runtime: a full queue drops the event and counts it."""
        try:
            self.queue.put_nowait((kind, info, self.dropped))
            self.dropped = 0
        except asyncio.QueueFull:
            self.dropped += 1


class Events:
    """The watchers of one runtime."""

    def __init__(self) -> None:
        self.watchers: set[Watcher] = set()

    def emit(self, kind: str, info: ExecutableInfo) -> None:
        for watcher in list(self.watchers):
            if matches(watcher.prefix, info.cell_name):
                watcher.offer(kind, info)

    def watch(self, prefix: str) -> Watcher:
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix", "must be a string")
        watcher = Watcher(prefix, asyncio.Queue(WATCH_QUEUE))
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
