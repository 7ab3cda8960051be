"""Seed 000's services in cellard, plus cellar's inventory and dispatcher listings.

- ``pb.ServerDispatcher`` / ``pb.FunctionDispatcher``: adapters over :class:`agent.pb.dispatch.Dispatcher`
  (``app.dispatcher``, shared with the node-local endpoint);
- ``pb.WorkerSaver`` / ``cellar.v1.Machines``: the saver (agent.pb.saver), when ``[saver] enabled``;
- ``cellar.v1.Inventory/Get``: this node's report as the reporter sends it, with delivery state;
- ``cellar.v1.Dispatch/List``: the registered servers.
Every ``Check`` answers from real state: NOT_SERVING while cellard drains, the saver's database
unreachable, or (FunctionDispatcher) no healthy server to hand out; grpc.health.v1 follows the saver's
database too (:func:`agent.core.health.saver_probe`). Which registered server is healthy: agent.pb.dispatch.
"""

from __future__ import annotations

import asyncio
import os

import grpc

from agent.auth.authz import current_peer, current_peer_cred
from agent.auth.identity import caller_identity, caller_scope
from agent.auth.unixpeer import cgroup_of
from agent.config import ConfigError
from agent.core.app import App
from agent.core.health import saver_probe
from agent.core.services import Service
from agent.core.status import status_for
from agent.pb import node_report
from agent.pb.dispatch import BadRegistration, Dispatcher, HealthGate, peer_ip
from agent.pb.reporter import NodeInventory
from agent.pb.saver.servicers import metadata_text
from agent.pb.saver.store import MachineStore
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import (
    common_pb2,
    dispatcherFunction_pb2,
    dispatcherFunction_pb2_grpc,
    dispatcherServer_pb2,
    dispatcherServer_pb2_grpc,
    workerServer_pb2_grpc,
)

SERVING = common_pb2.HealthCheckRes.SERVING
NOT_SERVING = common_pb2.HealthCheckRes.NOT_SERVING


def _health(ok: bool) -> common_pb2.HealthCheckRes:
    return common_pb2.HealthCheckRes(status=SERVING if ok else NOT_SERVING)


def dispatcher_of(app: App) -> Dispatcher:
    """The one Dispatcher of this cellard (created on first use; the local endpoint shares it)."""
    if app.dispatcher is None:
        app.dispatcher = Dispatcher(health_gate=HealthGate(app.runtime.list, app.config.cells.cgroup_root))
    return app.dispatcher


class ServerDispatcherServicer(dispatcherServer_pb2_grpc.ServerDispatcherServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.dispatcher = dispatcher_of(app)

    async def Check(  # noqa: N802
        self, request: common_pb2.HealthCheckReq,
        context: grpc.aio.ServicerContext[common_pb2.HealthCheckReq, common_pb2.HealthCheckRes],
    ) -> common_pb2.HealthCheckRes:
        return _health(not self.app.stopping.is_set())

    async def Register(  # noqa: N802
        self, request: dispatcherServer_pb2.RegisterReq,
        context: grpc.aio.ServicerContext[dispatcherServer_pb2.RegisterReq, dispatcherServer_pb2.RegisterRes],
    ) -> dispatcherServer_pb2.RegisterRes:
        try:
            # A Unix peer (main socket, or the node-local one): its process decides the server's health.
            cred = current_peer_cred()
            pid = cred.pid if cred else caller_identity().pid or 0
            self.dispatcher.register(peer_ip(current_peer(context)), request.certificate, pid, request.port,
                                     caller_scope(context), cgroup_of(pid) if pid > 0 else "")
        except (BadRegistration, ValueError, PermissionError) as exc:  # a malformed or foreign cellar-scope too
            context.set_trailing_metadata((("reason", metadata_text(str(exc))),))
            return dispatcherServer_pb2.RegisterRes(status=dispatcherServer_pb2.RegisterRes.NOT_REGISTERED)
        return dispatcherServer_pb2.RegisterRes(status=dispatcherServer_pb2.RegisterRes.REGISTERED)

    async def GetNextServer(  # noqa: N802
        self, request: dispatcherServer_pb2.GetNextServerReq,
        context: grpc.aio.ServicerContext[dispatcherServer_pb2.GetNextServerReq, dispatcherServer_pb2.GetNextServerRes],
    ) -> dispatcherServer_pb2.GetNextServerRes:
        res = dispatcherServer_pb2.GetNextServerRes
        await self.dispatcher.refresh_health()
        ok = self.dispatcher.accepts(request.ip, request.certificate)
        return res(status=res.ACCEPTED if ok else res.NOT_ACCEPTED)


class FunctionDispatcherServicer(dispatcherFunction_pb2_grpc.FunctionDispatcherServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.dispatcher = dispatcher_of(app)

    async def Check(  # noqa: N802
        self, request: common_pb2.HealthCheckReq,
        context: grpc.aio.ServicerContext[common_pb2.HealthCheckReq, common_pb2.HealthCheckRes],
    ) -> common_pb2.HealthCheckRes:
        await self.dispatcher.refresh_health()
        return _health(not self.app.stopping.is_set() and self.dispatcher.any_healthy())

    async def GetTarget(  # noqa: N802
        self, request: dispatcherFunction_pb2.GetTargetReq,
        context: grpc.aio.ServicerContext[dispatcherFunction_pb2.GetTargetReq, dispatcherFunction_pb2.GetTargetRes],
    ) -> dispatcherFunction_pb2.GetTargetRes:
        await self.dispatcher.refresh_health()
        async with status_for(context):
            server = self.dispatcher.target(request.uuid)
        return dispatcherFunction_pb2.GetTargetRes(ip=server.ip, certificate=server.certificate)


class DispatchServicer(inventory_pb2_grpc.DispatchServicer):
    def __init__(self, app: App) -> None:
        self.dispatcher = dispatcher_of(app)

    async def List(  # noqa: N802
        self, request: inventory_pb2.ListDispatchRequest,
        context: grpc.aio.ServicerContext[inventory_pb2.ListDispatchRequest, inventory_pb2.ListDispatchResponse],
    ) -> inventory_pb2.ListDispatchResponse:
        await self.dispatcher.refresh_health()
        return inventory_pb2.ListDispatchResponse(servers=[
            inventory_pb2.RegisteredServer(ip=s.ip, registered_at_ns=s.registered_at_ns, healthy=self.dispatcher.serves(s),
                                           subject=s.subject, functions=n, pid=max(s.pid, 0))
            for s, n in self.dispatcher.servers()
        ])


class InventoryServicer(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.inventory = NodeInventory(app.config.paths.state_dir, app.runtime,
                                       node_report.advertised_address(app.config), app.config.reporter.hostname,
                                       app.config.reporter.machine_id)
        self._lock = asyncio.Lock()  # one collection at a time shares the owner cache safely

    async def Get(  # noqa: N802
        self, request: inventory_pb2.GetInventoryRequest,
        context: grpc.aio.ServicerContext[inventory_pb2.GetInventoryRequest, inventory_pb2.GetInventoryResponse],
    ) -> inventory_pb2.GetInventoryResponse:
        async with status_for(context), self._lock:
            machine = await self.inventory.machine()
        reporter = self.app.reporter
        savers = [] if reporter is None else [
            inventory_pb2.SaverState(address=s.address, delivered_at_ns=s.delivered_at_ns, last_error=s.last_error,
                                     attempts=s.attempts)
            for s in reporter.savers
        ]
        return inventory_pb2.GetInventoryResponse(machine=machine, savers=savers)


def saver_store(app: App) -> MachineStore:
    """Open the ``[saver]`` store (SQLite at <state_dir>/saver.sqlite unless a database is given)."""
    from agent.pb.saver.store import StoreError, open_store

    cfg = app.config.saver
    database = cfg.database or os.path.join(app.config.paths.state_dir, "saver.sqlite")
    try:
        return open_store(database, history=cfg.history, max_machines=cfg.max_machines)
    except StoreError as exc:
        raise ConfigError(f"saver.database: cannot open: {exc}") from None


def dispatcher_services(app: App, service: type[Service]) -> list[Service]:
    """The fronted dispatchers, for agent.core.services.build_local_services: servers on this node (in
    cells too) register on the node-local endpoint, and clients there ask for targets."""
    server_dispatcher = ServerDispatcherServicer(app)
    function_dispatcher = FunctionDispatcherServicer(app)
    return [
        service("pb.ServerDispatcher",
                lambda s: dispatcherServer_pb2_grpc.add_ServerDispatcherServicer_to_server(server_dispatcher, s)),
        service("pb.FunctionDispatcher",
                lambda s: dispatcherFunction_pb2_grpc.add_FunctionDispatcherServicer_to_server(function_dispatcher, s)),
    ]


def pb_services(app: App, service: type[Service]) -> list[Service]:
    """The operator's views (dispatch table, inventory) and the worker saver, main listeners only."""
    dispatch = DispatchServicer(app)
    inventory = InventoryServicer(app)
    out = [
        service("cellar.v1.Dispatch", lambda s: inventory_pb2_grpc.add_DispatchServicer_to_server(dispatch, s)),
        service("cellar.v1.Inventory", lambda s: inventory_pb2_grpc.add_InventoryServicer_to_server(inventory, s)),
    ]
    if app.config.saver.enabled:
        from agent.pb.saver.servicers import MachinesServicer, WorkerSaverServicer

        store = saver_store(app)
        saver, machines = WorkerSaverServicer(store), MachinesServicer(store)
        app.health_probes.append(saver_probe(store))
        out += [
            service("pb.WorkerSaver", lambda s: workerServer_pb2_grpc.add_WorkerSaverServicer_to_server(saver, s)),
            service("cellar.v1.Machines", lambda s: inventory_pb2_grpc.add_MachinesServicer_to_server(machines, s)),
        ]
    return out
