"""Settings of the cells runtime, shared by cellard (which starts the supervisor) and the supervisor.

The supervisor gets its config as one JSON argument, so the two processes can never disagree about
where state, logs, the socket and the cgroup root are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: str = "/var/lib/cellar"
    log_dir: str = "/var/lib/cellar/logs"
    run_dir: str = "/run/cellar"
    cgroup_root_name: str = "cellar"
    netns_prefix: str = "cellar-"
    default_grace_s: float = 10.0
    max_cells: int = 10000
    log_segment_bytes: int = 10 * MIB
    log_max_segments: int = 5
    # How long cellard waits for a supervisor it started to answer (Python imports alone take many
    # seconds on slow or emulated hosts).
    supervisor_start_timeout_s: float = 10.0
    # How long Start waits for a new process to exec before killing it (see cells.spawn).
    exec_timeout_s: float = 10.0
    # Added to every executable's environment (before its own env): the node-local endpoint's address.
    local_endpoint_env: dict[str, str] = field(default_factory=dict)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "supervisor.sock")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.run_dir, "supervisor.pid")

    @property
    def cells_dir(self) -> str:
        """One JSON record per cell (see :mod:`cells.store`)."""
        return os.path.join(self.state_dir, "cells")

    @property
    def supervisor_log(self) -> str:
        return os.path.join(self.state_dir, "supervisor.log")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        """Unknown keys are ignored so an older supervisor accepts a newer cellard's config."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> RuntimeConfig:
        return cls.from_dict(json.loads(text))
