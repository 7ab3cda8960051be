"""``cellar fleet ls|ps``: the fleet as its worker saver sees it (the latest report of each node).

Reads ``--saver`` (or the context's ``saver``; without one, ``--addr``: a cellard with ``[saver]
enabled``). ``ls``: one row per machine, ``ps``: one row per executable (cells without any get
one row), filterable by machine, cell and state like ``kubectl get pods -A``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import click

from agent.cli.connection import Target
from agent.cli.output import emit_rows, structured
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc

STALE_AFTER_S = 180.0


def _list(target: Target, full: bool) -> list[inventory_pb2.MachineSummary]:
    with target.saver_channel() as channel:
        reply = inventory_pb2_grpc.MachinesStub(channel).List(inventory_pb2.ListMachinesRequest(full=full),
                                                              timeout=target.timeout)
    return list(reply.machines)


def _state(m: inventory_pb2.MachineSummary, now_ns: int, stale_after_s: float) -> str:
    return "online" if now_ns - m.received_at_ns <= stale_after_s * 1e9 else "stale"


def _age(ns: int, now_ns: int) -> str:
    s = max(0, (now_ns - ns) // 1_000_000_000)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


@click.group()
def fleet() -> None:
    """Machines and cells of the fleet, from its worker saver."""


@fleet.command("ls")
@click.option("--stale-after", type=float, default=STALE_AFTER_S, show_default=True,
              help="seconds without a report before a machine counts as stale")
@click.pass_obj
def ls(target: Target, stale_after: float) -> None:
    """Machines: hostname, API address, last report, online/stale, cells."""
    now = time.time_ns()
    rows: list[dict[str, Any]] = []
    for m in sorted(_list(target, False), key=lambda m: (m.hostname, m.uuid)):
        seen = dt.datetime.fromtimestamp(m.received_at_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        row: dict[str, Any] = {"hostname": m.hostname or None, "uuid": m.uuid, "address": m.api_address or None,
                               "last_seen": seen if structured(target.output) else _age(m.received_at_ns, now),
                               "state": _state(m, now, stale_after), "cells": m.cells, "executables": m.executables}
        if m.error:
            row["error"] = m.error
        rows.append(row)
    emit_rows(target.output, rows, ["hostname", "uuid", "address", "last_seen", "state", "cells", "executables"])


@fleet.command("ps")
@click.option("--machine", "machine_filter", help="only this machine (hostname or uuid)")
@click.option("--cell", "cell_filter", help="only this cell")
@click.option("--state", "state_filter", help="only executables in this state (running, exited, failed, ...)")
@click.pass_obj
def ps(target: Target, machine_filter: str | None, cell_filter: str | None, state_filter: str | None) -> None:
    """Every cell and executable across the fleet, from each machine's latest report."""
    rows: list[dict[str, Any]] = []
    for m in sorted(_list(target, True), key=lambda m: (m.hostname, m.uuid)):
        if machine_filter and machine_filter not in (m.hostname, m.uuid):
            continue
        for cell in m.machine.cells:
            if cell_filter and cell.name != cell_filter:
                continue
            base = {"machine": m.hostname or m.uuid, "cell": cell.name}
            if not cell.executables and not state_filter:
                rows.append({**base, "executable": None, "state": None, "pid": None, "restarts": None,
                             "health": None, "exit": None})
            for e in cell.executables:
                if state_filter and e.state != state_filter:
                    continue
                rows.append({**base, "executable": e.name, "state": e.state, "pid": e.pid or None,
                             "restarts": e.restarts, "health": e.health or None, "exit": e.exit or None})
    emit_rows(target.output, rows, ["machine", "cell", "executable", "state", "pid", "restarts", "health", "exit"])
