"""The daemon's own log: structlog setup, plus an in-memory bus the daemon-log RPC streams from.

Every event is rendered (JSON when stdout is not a terminal, console otherwise) and also
published, as a plain dict, to a :class:`DaemonLogBus`: a bounded history for late joiners and a
bounded queue per subscriber. Publishing never waits: a subscriber that falls behind loses events
and later receives one ``{"event": "daemonlog.dropped", "count": N}`` in their place.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import structlog

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """Values that survive JSON and protobuf Struct unchanged; anything else becomes its repr."""
    return value if isinstance(value, _PLAIN) else repr(value)


class _Subscriber:
    __slots__ = ("queue", "limit", "dropped", "loop", "wake")

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.dropped = 0
        self.loop = loop
        self.wake = asyncio.Event()


class DaemonLogBus:
    """Fan-out of daemon log events; thread-safe, publishers never block."""

    def __init__(self, history: int = 1000, queue: int = 1000) -> None:
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._queue_limit = queue
        self._subs: set[_Subscriber] = set()
        self._lock = threading.Lock()

    def publish(self, event: MutableMapping[str, Any]) -> None:
        item = {k: _plain(v) for k, v in event.items()}
        with self._lock:
            self._history.append(item)
            subs = list(self._subs)
            for sub in subs:
                if len(sub.queue) >= sub.limit:
                    sub.dropped += 1
                    continue
                if sub.dropped:
                    sub.queue.append(_dropped(sub.dropped))
                    sub.dropped = 0
                sub.queue.append(item)
        for sub in subs:
            self._wake(sub)

    @staticmethod
    def _wake(sub: _Subscriber) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is sub.loop:
            sub.wake.set()
        elif not sub.loop.is_closed():
            sub.loop.call_soon_threadsafe(sub.wake.set)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)

    async def subscribe(self, *, queue: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The recent history, then live events, without a gap or a duplicate between them."""
        sub = _Subscriber(queue or self._queue_limit, asyncio.get_running_loop())
        with self._lock:
            backlog = list(self._history)
            self._subs.add(sub)
        try:
            for old in backlog:
                yield old
            while True:
                with self._lock:
                    item = sub.queue.popleft() if sub.queue else None
                    if item is None and sub.dropped:
                        item, sub.dropped = _dropped(sub.dropped), 0
                    if item is None:
                        sub.wake.clear()
                if item is not None:
                    yield item
                else:
                    await sub.wake.wait()
        finally:
            with self._lock:
                self._subs.discard(sub)


def _dropped(count: int) -> dict[str, Any]:
    return {"event": "daemonlog.dropped", "count": count, "level": "warning"}


_bus: DaemonLogBus | None = None


def current_bus() -> DaemonLogBus:
    """The bus of the last :func:`configure` call (a fresh one if never configured)."""
    global _bus
    if _bus is None:
        _bus = DaemonLogBus()
    return _bus


def configure(*, json: bool | None = None, level: str = "info", stream: Any = None) -> DaemonLogBus:
    """Set up structlog for cellard (or cellar-saver) and return the bus every event is published to."""
    global _bus
    bus = DaemonLogBus()
    _bus = bus
    setup(stream if stream is not None else sys.stdout, json=json, level=level, tap=bus.publish)
    return bus


def setup(
    out: Any,
    *,
    json: bool | None = None,
    level: str = "info",
    tap: Callable[[MutableMapping[str, Any]], object] | None = None,
    cache: bool = False,
) -> None:
    """The one structlog setup of every cellar process (cellard, cellar-saver, the supervisor).

    Key-value events to ``out``: JSON, or console lines when ``json`` is None and ``out`` is a
    terminal; each event is handed to ``tap`` (a log bus) before it is rendered. ``cache`` keeps
    bound loggers once used: for a process that never reconfigures (the supervisor).
    """
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if tap is not None:
        publish = tap

        def to_tap(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
            publish(event_dict)
            return event_dict

        processors.append(to_tap)
    processors.append(structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
