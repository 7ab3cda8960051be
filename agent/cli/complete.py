"""Shell completion of the names cellard knows: cells, ``CELL/EXE``, a cell's executables.

A completer asks the daemon at the ``--addr`` (and TLS flags, environment, config file) already typed
on the command line, with a short deadline, and answers nothing on any failure: a <TAB> never prints
an error into the shell or hangs it. ``click`` calls these through ``shell_complete=`` on an argument.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem

from agent.cli.connection import Target

#: Seconds a <TAB> may wait for cellard.
COMPLETION_TIMEOUT = 1.0


def _target(ctx: click.Context) -> Target:
    params = {k: v for k, v in ctx.find_root().params.items() if k in Target.__dataclass_fields__}
    return Target(**{**params, "timeout": COMPLETION_TIMEOUT, "output": "table"})


def _cells(ctx: click.Context) -> list[Any]:
    from proto.cellar.v1 import cells_pb2, cells_pb2_grpc

    target = _target(ctx)
    with target.channel() as channel:
        return list(cells_pb2_grpc.CellsStub(channel).List(cells_pb2.ListCellsRequest(),
                                                           timeout=COMPLETION_TIMEOUT).cells)


def _quietly(names: Any) -> Any:
    """Wrap a completer so that every failure (no daemon, a denied call, a bad flag) completes nothing."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return [CompletionItem(n) for n in sorted(set(names(ctx, incomplete))) if n.startswith(incomplete)]
        except Exception:  # noqa: BLE001 - a completion must never fail loudly
            return []

    return complete


@_quietly
def cell_names(ctx: click.Context, incomplete: str) -> list[str]:
    return [c.name for c in _cells(ctx)]


@_quietly
def cell_or_executable(ctx: click.Context, incomplete: str) -> list[str]:
    """``CELL`` and ``CELL/EXE`` (``cellar logs``)."""
    cells = _cells(ctx)
    return [c.name for c in cells] + [f"{c.name}/{e.name}" for c in cells for e in c.executables]


@_quietly
def executable_names(ctx: click.Context, incomplete: str) -> list[str]:
    """The executables of the cell typed before (``cellar stop CELL <TAB>``)."""
    cell = ctx.params.get("cell_name")
    return [e.name for c in _cells(ctx) if c.name == cell for e in c.executables]


@_quietly
def queue_names(ctx: click.Context, incomplete: str) -> list[str]:
    from proto.cellar.v1 import queues_pb2, queues_pb2_grpc

    with _target(ctx).channel() as channel:
        reply = queues_pb2_grpc.QueuesStub(channel).List(queues_pb2.ListQueuesRequest(), timeout=COMPLETION_TIMEOUT)
    return [q.name for q in reply.queues]


@_quietly
def fl_client_ids(ctx: click.Context, incomplete: str) -> list[str]:
    from proto.cellar.v1 import fl_pb2, fl_pb2_grpc

    with _target(ctx).channel() as channel:
        reply = fl_pb2_grpc.FederationStub(channel).ListClients(fl_pb2.ListFlClientsRequest(),
                                                                timeout=COMPLETION_TIMEOUT)
    return [c.client_id for c in reply.clients]


#: Completers for the arguments of command groups whose modules do not name one themselves:
#: group -> argument name -> completer (set by agent.cli.with_habits on every subcommand).
BY_GROUP: dict[str, dict[str, Any]] = {"queue": {"name": queue_names}, "fl": {"client_id": fl_client_ids}}


def add_completers(group: click.Group) -> None:
    """Give the arguments named in :data:`BY_GROUP` of ``group``'s subcommands their completer."""
    for argument, completer in BY_GROUP.get(group.name or "", {}).items():
        for sub in group.commands.values():
            for param in sub.params:
                if isinstance(param, click.Argument) and param.name == argument and \
                        param._custom_shell_complete is None:
                    param._custom_shell_complete = completer
