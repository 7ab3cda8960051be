"""Every gRPC service cellard serves: the one place that knows all API families.

A new servicer is one line here; :mod:`agent.core.server` gives each a health status and a reflection
entry (health and reflection themselves are added by the server and are not listed). The families
import :class:`agent.core.services.Service` only, never this module, so they stay independent of each
other (import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from agent.core.app import App
from agent.core.services import Service
from agent.forward import apply_fronts
from agent.pb.servicers import dispatcher_services, pb_services
from agent.runtime.cells import CellService, CellsService
from agent.runtime.exec import SessionsService
from agent.runtime.observe import LogsService, ObserveService
from agent.scaleout import services as scaleout_services
from proto.aurae import observe_pb2_grpc, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2_grpc, exec_pb2_grpc, logs_pb2_grpc


def build_local_services(app: App) -> list[Service]:
    """The fronted services of the node-local endpoint (agent.local.endpoint); also served on the main
    listeners. Build ONCE per cellard: their backends (app.files, app.queue) hold open state; pass the
    list to :func:`build_services` too. Add a fronted service here (one line) to put it on both."""
    from agent.local.jobs.servicer import agent_service
    from agent.local.registry import file_service, queue_service
    from agent.local.testrunner.servicer import test_service

    return apply_fronts([file_service(app), queue_service(app), *scaleout_services(app, operator=False),
                         agent_service(app), test_service(app), *dispatcher_services(app, Service)],
                        app.config.front)


def build_services(app: App, local_services: list[Service] | None = None) -> list[Service]:
    """Every servicer of this cellard, built from ``app`` (``local_services``: the fronted ones, built
    once by :func:`build_local_services`; None builds them here)."""
    from agent.local.jobs.servicer import jobs_service
    from agent.local.registry import queues_list_service

    if local_services is None:
        local_services = build_local_services(app)
    cell_service = CellService(app)
    cells = CellsService(app)
    observe = ObserveService(app)
    logs = LogsService(app)
    sessions = SessionsService(app)
    # [front."<service>"] tables replace an embedded servicer by a relay to its upstream (agent.forward).
    return apply_fronts([
        Service("runtime.CellService", lambda s: runtime_pb2_grpc.add_CellServiceServicer_to_server(cell_service, s)),
        Service("cellar.v1.Cells", lambda s: cells_pb2_grpc.add_CellsServicer_to_server(cells, s)),
        Service("observe.Observe", lambda s: observe_pb2_grpc.add_ObserveServicer_to_server(observe, s)),
        Service("cellar.v1.Logs", lambda s: logs_pb2_grpc.add_LogsServicer_to_server(logs, s)),
        Service("cellar.v1.Sessions", lambda s: exec_pb2_grpc.add_SessionsServicer_to_server(sessions, s)),
        *pb_services(app, Service),  # dispatch table, inventory, and the worker saver when [saver] enabled
        *scaleout_services(app, clients=False),  # cellar.v1.Federation: the operator's side, never local
        queues_list_service(app), jobs_service(app),  # views of the local queues/jobs (agent.forward.VIEWS)
    ], app.config.front) + local_services
