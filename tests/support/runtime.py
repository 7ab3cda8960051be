"""A supervisor configuration private to one test or module (tmp dirs, unique cgroup root and netns prefix)."""

from __future__ import annotations

import os
import uuid

from cells.config import RuntimeConfig
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
