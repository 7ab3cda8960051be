"""The supervisor's warnings and errors in cellard's own log, and so in the daemon log stream.

The supervisor logs to ``<state_dir>/supervisor.log``, where conditions an operator must see (the log
disk full, an exit record held back) would stay out of ``cellar daemon-logs``. cellard keeps one
``log_events`` subscription (:meth:`cells.client.RuntimeClient.log_events`) and logs each event again as
its own: same name, level and fields, plus ``source="supervisor"``, with the supervisor's own time as
``supervisor_time``. When the supervisor goes away it re-subscribes with capped exponential backoff.
What is logged while no subscription is open stays in supervisor.log only: the supervisor keeps no
history to replay, since a replay would log events twice after a cellard restart.

Bounded: the supervisor queues a few hundred events per subscriber and drops (and counts) the rest;
here a token bucket lets ``burst`` events through at once and ``rate`` per second after that. What
either left out is counted and logged as one ``supervisor_log.missed`` event per second at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

import structlog

log = structlog.get_logger("agent.core.supervisor_log")

RATE_PER_S = 20.0
BURST = 100
MISSED_REPORT_S = 1.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
SUBSCRIBE_TIMEOUT_S = 5.0
SOURCE = "supervisor"
_LEVELS = ("warning", "error", "critical")

Stream = AsyncGenerator[dict[str, Any], None]


class SupervisorLogRelay:
    """One background subscription to ``runtime`` (a :class:`cells.client.RuntimeClient`)."""

    def __init__(self, runtime: Any, *, rate: float = RATE_PER_S, burst: int = BURST) -> None:
        self._runtime = runtime
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._missed = 0
        self._report: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._error = ""  # why the last subscription attempt failed

    async def start(self) -> None:
        """Subscribe before returning (so what the first requests cause is seen), then stay subscribed."""
        stream = await self._subscribe()
        self._task = asyncio.get_running_loop().create_task(self._run(stream))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._report_missed()

    async def _subscribe(self) -> Stream | None:
        try:
            stream: Stream = await asyncio.wait_for(self._runtime.log_events(), SUBSCRIBE_TIMEOUT_S)
        except Exception as exc:  # gone, hung, or too old to know the request: retried with backoff
            self._error = str(exc) or repr(exc)
            return None
        log.info("supervisor_log.subscribed")
        return stream

    async def _run(self, stream: Stream | None) -> None:
        delay = BACKOFF_MIN_S
        while True:
            if stream is None:
                log.info("supervisor_log.unavailable", error=self._error, retry_max_s=BACKOFF_MAX_S)
                while (stream := await self._subscribe()) is None:  # quiet until it is back
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, BACKOFF_MAX_S)
            since = time.monotonic()
            try:
                async for event in stream:
                    self.relay(event)
                error = "the supervisor closed the stream"
            except Exception as exc:  # a broken connection or line: subscribe again
                error = str(exc) or repr(exc)
            finally:
                await stream.aclose()
            stream = None
            self._report_missed()
            log.info("supervisor_log.disconnected", error=error)
            if time.monotonic() - since >= BACKOFF_MAX_S:  # it had been up: retry soon
                delay = BACKOFF_MIN_S
            await asyncio.sleep(delay)  # never a tight loop, even if every stream ends at once
            delay = min(2 * delay, BACKOFF_MAX_S)
            stream = await self._subscribe()

    def relay(self, event: dict[str, Any]) -> None:
        """Log one supervisor event as ours, or count it once past the rate limit."""
        fields = dict(event)
        name = str(fields.pop("event", "") or "supervisor.event")
        if name == "daemonlog.dropped":  # the supervisor's marker for events it dropped for us
            count = fields.get("count")
            self._miss(count if isinstance(count, int) and count > 0 else 1)
            return
        if not self._take():
            self._miss(1)
            return
        level = fields.pop("level", "warning")
        if "timestamp" in fields:  # ours is added when we log it
            fields["supervisor_time"] = fields.pop("timestamp")
        fields.pop("source", None)
        getattr(log, level if level in _LEVELS else "warning")(name, source=SOURCE, **fields)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _miss(self, count: int) -> None:
        self._missed += count
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(MISSED_REPORT_S, self._report_missed)

    def _report_missed(self) -> None:
        if self._report is not None:
            self._report.cancel()
            self._report = None
        if self._missed:
            log.warning("supervisor_log.missed", count=self._missed, log=self._runtime.config.supervisor_log)
            self._missed = 0
