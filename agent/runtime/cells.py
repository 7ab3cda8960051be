"""runtime.CellService (the seed API) and cellar.v1.Cells (listing, inspect, freeze, events, info).

Thin adapters: proto -> domain (agent.runtime.convert), one call to the supervisor's runtime client, domain
-> proto. Domain errors become gRPC statuses in agent.core.status, nowhere else.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import grpc
import structlog

from agent.auth import privilege
from agent.auth.authz import current_role
from agent.auth.grants import CellPolicies
from agent.core.app import App
from agent.core.status import status_for
from agent.runtime import apply, convert
from agent.runtime.desired import DesiredCell, DesiredStore
from cells.manifest import parse as parse_manifest
from cells.spec import CellSpec
from cells.state import CellInfo
from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc

log = structlog.get_logger("agent.cells")


class CellService(runtime_pb2_grpc.CellServiceServicer):
    """The seed's four RPCs, with cellar's extension fields filled in. What only an admin may ask for
    is decided on the request's content by agent.auth.privilege; the cell cache (agent.auth.grants) follows."""

    def __init__(self, app: App) -> None:
        self._app = app
        if app.policies is None:
            app.policies = CellPolicies(app.runtime, app.config.paths.volumes_dir)
        self._policies: CellPolicies = app.policies
        self._desired = DesiredStore(app.config.paths.state_dir)

    async def Allocate(  # noqa: N802 - gRPC method names
        self, request: runtime_pb2.AllocateCellRequest,
        context: grpc.aio.ServicerContext[runtime_pb2.AllocateCellRequest, runtime_pb2.AllocateCellResponse],
    ) -> runtime_pb2.AllocateCellResponse:
        async with status_for(context):
            spec = convert.cell_spec(request.cell).validate()
            admin_only = await privilege.authorize_allocate(
                spec, current_role(), self._app.config.paths.volumes_dir, self._policies)
            info = await allocate_cell(self._app, self._policies, spec, admin_only)
            if request.cell.persist:
                self._desired.put(DesiredCell(spec, applied=False))
        return runtime_pb2.AllocateCellResponse(cell_name=info.name, cgroup_v2=info.cgroup_v2_limits)

    async def Free(  # noqa: N802
        self, request: runtime_pb2.FreeCellRequest,
        context: grpc.aio.ServicerContext[runtime_pb2.FreeCellRequest, runtime_pb2.FreeCellResponse],
    ) -> runtime_pb2.FreeCellResponse:
        async with status_for(context):
            _check_grace(request)
            await free_cell(self._app, self._policies, request.cell_name, convert.grace_seconds(request))
        return runtime_pb2.FreeCellResponse()

    async def Start(  # noqa: N802
        self, request: runtime_pb2.StartCellRequest,
        context: grpc.aio.ServicerContext[runtime_pb2.StartCellRequest, runtime_pb2.StartCellResponse],
    ) -> runtime_pb2.StartCellResponse:
        async with status_for(context):
            spec = convert.executable_spec(request.executable).validate()
            await privilege.authorize_start(spec, current_role(), self._policies)
            info = await self._app.runtime.start(spec)
            persistent = self._desired.get(spec.cell_name)
            if persistent is not None and not persistent.applied and spec.restart.mode != "never":
                persistent.executables[spec.name] = spec  # comes back after a reboot, as it would after a crash
                self._desired.put(persistent)
        log.info("exe.started", cell=info.cell_name, exe=info.name, pid=info.host_pid, run=info.run,
                 privileged=info.privileged or None)
        return runtime_pb2.StartCellResponse(host_pid=info.host_pid, cell_pid=info.cell_pid, run=info.run)

    async def Stop(  # noqa: N802
        self, request: runtime_pb2.StopCellRequest,
        context: grpc.aio.ServicerContext[runtime_pb2.StopCellRequest, runtime_pb2.StopCellResponse],
    ) -> runtime_pb2.StopCellResponse:
        async with status_for(context):
            _check_grace(request)
            status = await self._app.runtime.stop(
                request.cell_name, request.executable_name, convert.grace_seconds(request)
            )
            persistent = self._desired.get(request.cell_name)
            if persistent is not None and not persistent.applied and persistent.executables.pop(
                    request.executable_name, None) is not None:
                self._desired.put(persistent)  # stopped by hand: not wanted after a reboot either
        log.info("exe.stopped", cell=request.cell_name, exe=request.executable_name, exit=status.describe())
        return runtime_pb2.StopCellResponse(exit=convert.exit_message(status))


async def allocate_cell(app: App, policies: CellPolicies, spec: CellSpec, admin_only: bool) -> CellInfo:
    """Allocate (authorized already), keeping the grants cache in step: Allocate and apply."""
    with policies.allocating(spec.name, admin_only):
        info = await app.runtime.allocate(spec)
    policies.allocated(info)
    log.info("cell.allocated", cell=info.name, cgroup=info.cgroup_path, netns=info.netns or None,
             isolate_process=info.isolate_process, privileged=spec.privileged or None,
             grant_role=spec.grant_role or None)
    return info


async def free_cell(app: App, policies: CellPolicies, name: str, grace_s: float | None = None) -> None:
    """Free, keeping the grants cache and the desired state in step (a freed cell is not wanted any
    more, applied or not): Free and apply's prune and recreate."""
    await app.runtime.free(name, grace_s)
    policies.freed(name)
    DesiredStore(app.config.paths.state_dir).delete(name)
    log.info("cell.freed", cell=name)


class CellsService(cells_pb2_grpc.CellsServicer):
    """What the seed API cannot say: the cell tree, stats, freeze/thaw, state events, node info."""

    def __init__(self, app: App) -> None:
        self._app = app
        if app.policies is None:
            app.policies = CellPolicies(app.runtime, app.config.paths.volumes_dir)
        self._policies: CellPolicies = app.policies
        self._desired = DesiredStore(app.config.paths.state_dir)

    async def Apply(  # noqa: N802
        self, request: cells_pb2.ApplyRequest,
        context: grpc.aio.ServicerContext[cells_pb2.ApplyRequest, cells_pb2.ApplyResponse],
    ) -> cells_pb2.ApplyResponse:
        async with status_for(context):
            source = request.manifest.encode()
            manifest = parse_manifest(source, request.file_name or "<manifest>", request.format)
            admin_only = set(await privilege.authorize_apply(
                manifest, current_role(), self._app.config.paths.volumes_dir, self._policies))
            plans = await apply.plan(self._app.runtime, self._desired, manifest, request.prune)
            changes = [c for p in plans for c in p.changes]
            if not request.dry_run:
                applier = apply.Applier(
                    self._app.runtime, self._desired,
                    lambda spec: allocate_cell(self._app, self._policies, spec, spec.name in admin_only),
                    lambda name: free_cell(self._app, self._policies, name))
                changes = await applier.apply(plans)
        if not request.dry_run:
            log.info("cells.applied", file=request.file_name or None, changes=len(changes), prune=request.prune)
        return cells_pb2.ApplyResponse(changes=[
            cells_pb2.ManifestChange(action=c.action, cell_name=c.cell, executable_name=c.executable, detail=c.detail)
            for c in changes])

    async def GetManifest(  # noqa: N802
        self, request: cells_pb2.GetManifestRequest,
        context: grpc.aio.ServicerContext[cells_pb2.GetManifestRequest, cells_pb2.GetManifestResponse],
    ) -> cells_pb2.GetManifestResponse:
        async with status_for(context):
            info = await self._app.runtime.inspect(request.cell_name)
            desired = self._desired.get(info.name)
            text = apply.manifest_text(info, desired)
        return cells_pb2.GetManifestResponse(manifest=text, applied=desired is not None and desired.applied)

    async def List(  # noqa: N802
        self, request: cells_pb2.ListCellsRequest,
        context: grpc.aio.ServicerContext[cells_pb2.ListCellsRequest, cells_pb2.ListCellsResponse],
    ) -> cells_pb2.ListCellsResponse:
        async with status_for(context):
            cells = await self._app.runtime.list(request.prefix, stats=request.include_stats)
        return cells_pb2.ListCellsResponse(cells=[convert.cell_info_message(c) for c in cells])

    async def Inspect(  # noqa: N802
        self, request: cells_pb2.InspectCellRequest,
        context: grpc.aio.ServicerContext[cells_pb2.InspectCellRequest, cells_pb2.CellInfo],
    ) -> cells_pb2.CellInfo:
        async with status_for(context):
            info = await self._app.runtime.inspect(request.cell_name)
        return convert.cell_info_message(info)

    async def Freeze(  # noqa: N802
        self, request: cells_pb2.FreezeCellRequest,
        context: grpc.aio.ServicerContext[cells_pb2.FreezeCellRequest, cells_pb2.FreezeCellResponse],
    ) -> cells_pb2.FreezeCellResponse:
        async with status_for(context):
            await self._app.runtime.freeze(request.cell_name)
        return cells_pb2.FreezeCellResponse()

    async def Thaw(  # noqa: N802
        self, request: cells_pb2.ThawCellRequest,
        context: grpc.aio.ServicerContext[cells_pb2.ThawCellRequest, cells_pb2.ThawCellResponse],
    ) -> cells_pb2.ThawCellResponse:
        async with status_for(context):
            await self._app.runtime.thaw(request.cell_name)
        return cells_pb2.ThawCellResponse()

    async def WatchEvents(  # noqa: N802
        self, request: cells_pb2.WatchEventsRequest,
        context: grpc.aio.ServicerContext[cells_pb2.WatchEventsRequest, cells_pb2.ExecutableEvent],
    ) -> AsyncIterator[cells_pb2.ExecutableEvent]:
        async with status_for(context):
            async for kind, info in self._app.runtime.events(request.cell_prefix):
                yield cells_pb2.ExecutableEvent(
                    timestamp_ns=time.time_ns(), kind=kind, executable=convert.executable_message(info)
                )

    async def Info(  # noqa: N802
        self, request: cells_pb2.InfoRequest,
        context: grpc.aio.ServicerContext[cells_pb2.InfoRequest, cells_pb2.NodeInfo],
    ) -> cells_pb2.NodeInfo:
        async with status_for(context):
            info = await self._app.runtime.info()
        return cells_pb2.NodeInfo(
            version=self._app.version,
            hostname=socket.gethostname(),
            cgroup_v2=True,
            cgroup_v2_limits=bool(info["limits_v2"]),
            cgroup_mode=str(info["mode"]),
            cgroup_root=str(info["cgroup_root"]),
            started_at_ns=self._app.started_at_ns,
        )


def _check_grace(request: runtime_pb2.StopCellRequest | runtime_pb2.FreeCellRequest) -> None:
    """``grace_period_ms`` within the runtime's bound, INVALID_ARGUMENT naming the request's field."""
    from agent.runtime.observe import check_range
    from cells.runtime import MAX_GRACE_S

    if request.HasField("grace_period_ms"):
        check_range("grace_period_ms", request.grace_period_ms, 0, int(MAX_GRACE_S * 1000))


async def restore_desired(app: App) -> int:
    """cellard's start: recreate the desired cells a reboot took away (agent.runtime.apply.restore)."""
    assert app.policies is not None
    policies, volumes_dir = app.policies, app.config.paths.volumes_dir

    async def allocate(spec: CellSpec) -> CellInfo:
        return await allocate_cell(app, policies, spec, bool(privilege.cell_request_reasons(spec, volumes_dir)))

    return await apply.restore(app.runtime, DesiredStore(app.config.paths.state_dir), allocate)
