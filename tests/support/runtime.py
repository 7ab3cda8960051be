"""A supervisor configuration private to one test or module (tmp dirs, unique cgroup root and netns
prefix), and the runtime's events as a test waits for them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.state import ExecutableInfo
from tests.support.timeouts import scaled


def make_runtime_config(directory: str, **overrides: object) -> RuntimeConfig:
    """A RuntimeConfig private to one test (or module): tmp dirs, unique cgroup root and netns prefix."""
    tag = uuid.uuid4().hex
    fields: dict[str, object] = {
        "state_dir": os.path.join(directory, "state"),
        "log_dir": os.path.join(directory, "logs"),
        "run_dir": os.path.join(directory, "run"),
        "cgroup_root_name": f"cellar-test-{tag[:8]}",
        "netns_prefix": f"ct{tag[8:14]}-",
        "default_grace_s": 2.0,
        "log_segment_bytes": 1 << 20,
        "supervisor_start_timeout_s": scaled(10.0),
    }
    fields.update(overrides)
    return RuntimeConfig(**fields)  # type: ignore[arg-type]


Events = list[tuple[str, ExecutableInfo]]


async def collect_events(c: RuntimeClient, cell: str, until: Callable[[Events], bool], timeout: float) -> Events:
    """Events of ``cell`` until ``until(events)`` holds (AssertionError after ``timeout``, scaled)."""
    got: Events = []

    async def follow() -> None:
        async for kind, info in c.events(cell):
            got.append((kind, info))
            if until(got):
                return

    try:
        await asyncio.wait_for(follow(), scaled(timeout))
    except TimeoutError:
        seen = [(k, i.run, i.state.value, i.health) for k, i in got]
        raise AssertionError(f"events so far (kind, run, state, health): {seen}") from None
    return got
