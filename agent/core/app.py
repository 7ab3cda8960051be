"""The objects one cellard process shares with its servicers.

Servicers receive the App instead of reaching for globals, so tests can build one in-process.
Colleagues add fields here (e.g. the runtime client) rather than new constructor arguments everywhere.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config
from agent.version import VERSION


@dataclass
class App:
    config: Config
    # observe.daemonlog.DaemonLogBus (history(), subscribe()); None only if that module is absent.
    bus: Any = None
    # cells.client.RuntimeClient: the supervisor that owns cells and workloads (see DESIGN.md).
    runtime: Any = None
    # agent.local.files.store.FileStore / agent.local.queue.store.QueueStore: the node-local file and queue backends
    # (built by agent.core.services.build_local_services; the job agent stages files by id from ``files``).
    files: Any = None
    queue: Any = None
    # agent.scaleout.backend.Scaleout: model store + combiner state, shared by the main server and the
    # node-local endpoint (built once by agent.scaleout.backend.scaleout_for).
    scaleout: Any = None
    # agent.pb.dispatch.Dispatcher (pb.ServerDispatcher/FunctionDispatcher state, shared with the local endpoint)
    # and agent.pb.reporter.Reporter (None when no [reporter] savers are configured).
    dispatcher: Any = None
    reporter: Any = None
    # agent.auth.grants.CellPolicies: every cell's grant_role and admin-only settings (None: not built, e.g.
    # without a runtime); the CellService keeps it current, the main socket's gate reads it.
    policies: Any = None
    # agent.core.health.Probe: dependencies (e.g. the saver's database) whose failure turns services NOT_SERVING;
    # servicer builders append, agent.daemon monitors them.
    health_probes: list[Any] = field(default_factory=list)
    started_at_ns: int = field(default_factory=time.time_ns)
    version: str = VERSION
    # Set when graceful shutdown begins: long-lived streams (follow, watch) should finish cleanly
    # instead of being cancelled at the drain deadline.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
