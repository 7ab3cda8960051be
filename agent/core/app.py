"""The objects one cellard process shares with its servicers.

Servicers receive the App instead of reaching for globals, so tests can build one in-process.
Colleagues add fields here rather than new constructor arguments everywhere; each field has its real
type (imported for annotations only), so a call from a servicer can be followed into its collaborator.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.config import Config
from agent.version import VERSION

if TYPE_CHECKING:
    # Annotations only: the core must not import the API families at run time (they import the App;
    # import-linter's independence contract lists these as the core's type-only imports).
    from agent.auth.grants import CellPolicies
    from agent.core.health import Probe
    from agent.local.files.store import FileStore
    from agent.local.jobs.runner import JobRunner
    from agent.local.queue.store import QueueStore
    from agent.local.testrunner.runner import SuiteRunner
    from agent.pb.dispatch import Dispatcher
    from agent.pb.reporter import Reporter
    from agent.scaleout.backend import Scaleout
    from cells.client import RuntimeClient
    from observe.daemonlog import DaemonLogBus


@dataclass
class App:
    config: Config
    # Every cellard publishes its own log events here (history(), subscribe()); built by
    # observe.daemonlog.configure before the App.
    bus: DaemonLogBus
    # The supervisor that owns cells and workloads (cellard does not start without one).
    runtime: RuntimeClient
    # The node-local file and queue backends (opened on first use by agent.local.registry; the job
    # agent stages files by id from ``files``).
    files: FileStore | None = None
    queue: QueueStore | None = None
    # The job agent's and the test runner's state, shared by the main server and the local endpoint
    # (built on first use by agent.local.jobs.servicer.runner_for / agent.local.testrunner.servicer.runner_for).
    job_runner: JobRunner | None = None
    suite_runner: SuiteRunner | None = None
    # Model store + combiner state, shared by the main server and the node-local endpoint (built once
    # by agent.scaleout.backend.scaleout_for).
    scaleout: Scaleout | None = None
    # pb.ServerDispatcher/FunctionDispatcher state, shared with the local endpoint; and the inventory
    # reporter (None when no [reporter] savers are configured).
    dispatcher: Dispatcher | None = None
    reporter: Reporter | None = None
    # Every cell's grant_role and admin-only settings; the CellService keeps it current, the main
    # socket's gate reads it.
    policies: CellPolicies | None = None
    # Dependencies (e.g. the saver's database) whose failure turns services NOT_SERVING; servicer
    # builders append, agent.daemon monitors them.
    health_probes: list[Probe] = field(default_factory=list)
    started_at_ns: int = field(default_factory=time.time_ns)
    version: str = VERSION
    # Set when graceful shutdown begins: long-lived streams (follow, watch) should finish cleanly
    # instead of being cancelled at the drain deadline.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
