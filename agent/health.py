"""grpc.health.v1 for cellard: one status per registered service plus "" for the whole server.

Our own small servicer rather than grpc_health's, for two behaviours the reference lacks:
Watch streams *finish* (after sending NOT_SERVING) when shutdown begins, so a graceful stop drains
them instead of cancelling them at the deadline; and Check replies carry the server version in
initial metadata (``cellar-version``) for ``cellar version``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.version import VERSION_METADATA_KEY

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


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
