"""Where one supervisor request's time goes: ``perf_counter_ns`` checkpoints along its path.

The supervisor opens a timeline for each Start (:func:`begin`); the launcher, the runtime and the
store :func:`mark` the end of each stage they run (leaf cgroup, log run, spawn to exec, persistence,
...); after the reply is sent the supervisor logs them as one ``start.timing`` event, microseconds
per stage (:func:`stages`), which ``bench/start_latency.py`` reads back to print its breakdown.
The timeline lives in a context variable: tasks the request creates (the Start task) see it, other
requests and background work (exits, restarts) do not, and a mark outside any timeline costs one
lookup.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

_timeline: ContextVar[list[tuple[str, int]] | None] = ContextVar("cellar_timeline", default=None)


def begin(stage: str = "begin") -> list[tuple[str, int]]:
    """A new timeline for the current context (and tasks created from it), first marked ``stage``."""
    marks = [(stage, time.perf_counter_ns())]
    _timeline.set(marks)
    return marks


def mark(stage: str) -> None:
    """Record the end of ``stage`` on the current timeline, if any."""
    marks = _timeline.get()
    if marks is not None:
        marks.append((stage, time.perf_counter_ns()))


def stages(marks: list[tuple[str, int]]) -> dict[str, float]:
    """Microseconds of each stage (from the previous mark to its own), in order; a stage marked
    twice (a store save per cell touched) adds up."""
    out: dict[str, float] = {}
    for (_, before), (stage, at) in zip(marks, marks[1:], strict=False):
        out[stage] = out.get(stage, 0.0) + (at - before) / 1000
    return out
