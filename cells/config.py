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
    # More of cellar's trees to hide from contained workloads (TLS keys kept elsewhere, say); the
    # run, state and log directories and /etc/cellar always are (see hidden_paths).
    extra_hidden_paths: list[str] = field(default_factory=list)
    # cellard's main socket: shown in the mount view of a cell granted a role on it ("" = none).
    main_socket: str = ""
    # Who an executable runs as when its Start names no uid (None: root, contained).
    default_uid: int | None = None
    default_gid: int | None = None

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
    def views_dir(self) -> str:
        """Pinned mount namespaces of non-isolated cells (see :mod:`cells.mountview`)."""
        return os.path.join(self.run_dir, "views")

    @property
    def data_dir(self) -> str:
        """Per-cell data directories of process-isolated cells (``/data`` inside)."""
        return os.path.join(self.state_dir, "data")

    @property
    def hidden_paths(self) -> tuple[str, ...]:
        """cellar's own trees, which no contained workload sees (keys, records, logs, sockets)."""
        return (self.run_dir, self.state_dir, self.log_dir, "/etc/cellar", *self.extra_hidden_paths)

    @property
    def local_socket(self) -> str:
        """The node-local endpoint's socket path, from the address workloads are given ("" = none)."""
        address = self.local_endpoint_env.get("CELLAR_LOCAL_ENDPOINT", "")
        return address.removeprefix("unix:") if address.startswith("unix:/") else ""

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
