"""A gRPC service cellard serves, as data: its full name and a function adding its servicer.

:mod:`agent.core.server` registers them and gives each name a health status and a reflection entry.
Which services there are is :mod:`agent.core.catalog`'s (the one module that knows every API family);
the families import only this type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Service:
    name: str  # full name, e.g. "runtime.CellService" (what health and reflection report)
    add_to_server: Callable[[grpc.aio.Server], None]
