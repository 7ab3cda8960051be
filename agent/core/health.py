"""grpc.health.v1 for cellard: one status per registered service plus "" for the whole server.

Our own small servicer rather than grpc_health's, for two behaviours the reference lacks:
Watch streams *finish* (after sending NOT_SERVING) when shutdown begins, so a graceful stop drains
them instead of cancelling them at the deadline; and Check replies carry the server version in
initial metadata (``cellar-version``) for ``cellar version``.

Statuses follow real state: a :class:`Probe` names something services depend on (the supervisor,
the saver's database) and how to check it; :class:`DependencyMonitor` checks each every few seconds
and turns its services NOT_SERVING while the check fails (or does not answer), SERVING once it passes.
A supervisor that died is replaced: the probe starts a successor (:meth:`RuntimeClient.respawn`),
which re-adopts the running workloads, and the next round finds it. The server itself ("") stays SERVING: it still answers, and the services that do not depend on the
failed part still work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.metadata import VERSION_METADATA_KEY
from cells.errors import SupervisorUnavailable

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Services that need the supervisor (it owns every cell and workload; jobs run in cells). observe.Observe
# and cellar.v1.Logs read the log store on disk and stay up (only Observe's per-pid lookup needs it).
SUPERVISOR_SERVICES = ("runtime.CellService", "cellar.v1.Cells", "Agent", "cellar.v1.Jobs")
SAVER_SERVICES = ("pb.WorkerSaver", "cellar.v1.Machines")
PROBE_INTERVAL_S = 2.0  # between two checks of one dependency: cheap (one small request), no busy loop
PROBE_TIMEOUT_S = 5.0  # a check that has not answered by then counts as failed (a hung dependency)

log = structlog.get_logger("agent.core.health")


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, services: Iterable[str], version: str) -> None:
        self._status: dict[str, int] = {"": SERVING, **{name: SERVING for name in services}}
        self._changed = asyncio.Condition()
        self._stopping = False
        self._version = version

    @property
    def statuses(self) -> dict[str, int]:
        return dict(self._status)

    async def set(self, service: str, status: int) -> None:
        """Change one status (ignored once shutting down: NOT_SERVING is final)."""
        if self._stopping:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def shutdown(self) -> None:
        """Everything NOT_SERVING for good; open Watch streams send it and finish."""
        async with self._changed:
            self._stopping = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:  # noqa: N802
        await context.send_initial_metadata(((VERSION_METADATA_KEY, self._version),))
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)  # type: ignore[arg-type]

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]  # noqa: N802
        service = request.service
        last: int | None = None

        def changed() -> bool:
            return self._stopping or self._status.get(service, SERVICE_UNKNOWN) != last

        while True:
            async with self._changed:
                await self._changed.wait_for(changed)
                status = self._status.get(service, SERVICE_UNKNOWN)
            if status != last:  # written outside the lock: a slow watcher must not block set()
                await context.write(health_pb2.HealthCheckResponse(status=status))  # type: ignore[arg-type]
                last = status
            if self._stopping:
                return


@dataclass(frozen=True)
class Probe:
    """A dependency of ``services``: ``check`` raises (or hangs) while it is unavailable."""

    name: str
    services: tuple[str, ...]
    check: Callable[[], Awaitable[object]]


def supervisor_probe(runtime: object, skip: Iterable[str] = ()) -> Probe:
    """The supervisor answers a (cheap) ``info`` request; ``skip``: services served from elsewhere
    (a ``[front]`` upstream), which do not need our supervisor."""
    services = tuple(s for s in SUPERVISOR_SERVICES if s not in set(skip))

    async def check() -> object:
        process = getattr(runtime, "process", None)  # the supervisor this cellard started, if it did
        if process is not None:
            process.poll()  # reaps it once it has died: no zombie left behind (a no-op while it runs)
        try:
            return await runtime.info()  # type: ignore[attr-defined]
        except SupervisorUnavailable:
            # Nobody listens (it died): NOT_SERVING now, and a successor starts in the background;
            # a hung supervisor (a timeout) is not replaced: its lock would refuse a second one anyway.
            respawn = getattr(runtime, "respawn", None)
            if respawn is not None:
                respawn()
            raise

    return Probe("supervisor", services, check)


def saver_probe(store: object) -> Probe:
    """A worker saver needs its database: ``ping`` the store (agent.pb.saver.store; in a thread: it blocks)."""
    return Probe("saver database", SAVER_SERVICES, lambda: asyncio.to_thread(store.ping))  # type: ignore[attr-defined]


class DependencyMonitor:
    """Checks every probe each ``interval_s`` and sets its services' status in every HealthServicer.

    One task per probe; a check that overruns ``timeout_s`` marks the services NOT_SERVING and is
    awaited again next round rather than started twice, so a hung database never piles up threads.
    A service with several probes is SERVING only while all of them pass.
    """

    def __init__(self, probes: Iterable[Probe], healths: Iterable[HealthServicer | None],
                 interval_s: float = PROBE_INTERVAL_S, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.probes = [p for p in probes if p.services]
        self.healths = [h for h in healths if h is not None]
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._failing: dict[str, set[str]] = {}  # service -> names of its failing probes
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(p), name=f"health:{p.name}") for p in self.probes]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _watch(self, probe: Probe) -> None:
        pending: asyncio.Future[object] | None = None
        up: bool | None = None  # unknown until the first check
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(probe.check())
                done, _ = await asyncio.wait({pending}, timeout=self.timeout_s)
                error: BaseException | str | None = f"no answer within {self.timeout_s:g}s"
                if done:
                    error = "cancelled" if pending.cancelled() else pending.exception()
                    pending = None
                ok = error is None
                if ok != up:
                    if up is not None or not ok:
                        (log.info if ok else log.warning)(
                            "health.dependency", dependency=probe.name, serving=ok, services=list(probe.services),
                            error=None if ok else str(error))
                    up = ok
                    await self._apply(probe, ok)
                await asyncio.sleep(self.interval_s)
        finally:
            if pending is not None:
                pending.cancel()

    async def _apply(self, probe: Probe, ok: bool) -> None:
        for service in probe.services:
            failing = self._failing.setdefault(service, set())
            (failing.discard if ok else failing.add)(probe.name)
            status = NOT_SERVING if failing else SERVING
            for health in self.healths:
                if service in health.statuses:
                    await health.set(service, status)
