"""The node-local Scaleout Edge combiner and model service (seed 004), and its operator API.

- :mod:`agent.scaleout.models`: the model store (content-addressed, durable, size-capped, LRU).
- :mod:`agent.scaleout.combiner`: clients, per-client FIFO task queues, records (SQLite).
- :mod:`agent.scaleout.servicers`: ``scaleout.CombinerClient``, ``scaleout.ModelService``,
  ``cellar.v1.Federation``.
- :func:`services`: their :class:`agent.core.services.Service` entries, registered on the main server and
  the node-local endpoint (where ``[front."scaleout.*"]`` may replace them by a relay upstream).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.core.app import App

# Imported eagerly: agent.forward finds a fronted service's methods in the descriptor pool, which only
# holds modules already imported when cellard checks the [front] tables.
from proto.cellar.v1 import fl_pb2 as _fl_pb2  # noqa: F401,E402
from proto.scaleout import scaleout_pb2 as _scaleout_pb2  # noqa: F401,E402

if TYPE_CHECKING:
    from agent.core.services import Service


def services(app: App, *, clients: bool = True, operator: bool = True) -> list[Service]:
    """Service entries: the clients' ``scaleout.*`` (fronted: local endpoint + main listeners, built by
    agent.core.services.build_local_services) and/or the operator's ``cellar.v1.Federation`` (main only)."""
    from agent.core.services import Service
    from agent.scaleout.backend import scaleout_for
    from agent.scaleout.servicers import CombinerClientService, FederationService, ModelService
    from proto.cellar.v1 import fl_pb2_grpc
    from proto.scaleout import scaleout_pb2_grpc

    scaleout_for(app)  # open now: start-up recovery (half-stored uploads) must not wait for a first call
    out = []
    if clients:
        combiner, models = CombinerClientService(app), ModelService(app)
        out += [
            Service("scaleout.CombinerClient",
                    lambda s: scaleout_pb2_grpc.add_CombinerClientServicer_to_server(combiner, s)),
            Service("scaleout.ModelService", lambda s: scaleout_pb2_grpc.add_ModelServiceServicer_to_server(models, s)),
        ]
    if operator:
        federation = FederationService(app)
        out.append(Service("cellar.v1.Federation", lambda s: fl_pb2_grpc.add_FederationServicer_to_server(federation, s)))
    return out
