"""``cellar inventory``, ``cellar machines ls|show``, ``cellar dispatch ls``.

``inventory`` asks cellard for this node's report (what its reporter sends to the savers);
``machines`` reads a worker saver (``--addr`` of a cellard with ``[saver] enabled`` or of a
``cellar-saver``); ``dispatch`` lists the servers registered with the node-local dispatchers.
Tables show one row per listening port; ``-o json`` gives the full messages.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from google.protobuf.json_format import MessageToDict

from agent.cli.connection import Target
from agent.cli.output import emit_object, emit_rows, structured, to_data
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import workerServer_pb2


def _when(ns: int) -> str | None:
    if not ns:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def port_rows(machine: workerServer_pb2.Machine) -> list[dict[str, Any]]:
    """One row per (interface, address, port); interfaces without listeners get one row too."""
    rows: list[dict[str, Any]] = []
    for iface in machine.ifaces:
        base = {"iface": iface.name, "state": iface.state or None}
        if not iface.address:
            rows.append({**base, "address": None, "proto": None, "port": None, "service": None})
        for addr in iface.address:
            if not addr.ports:
                rows.append({**base, "address": addr.ip, "proto": None, "port": None, "service": None})
            for p in addr.ports:
                rows.append({**base, "address": addr.ip, "proto": p.protocol or None, "port": p.port,
                             "service": p.service or None, "pid": p.pid or None})
    return rows


def _machine_out(target: Target, machine: workerServer_pb2.Machine, extra: dict[str, Any] | None = None) -> None:
    if structured(target.output):
        data = {**(extra or {}), "machine": MessageToDict(machine, preserving_proto_field_name=True)}
        click.echo(to_data(target.output, data))
        return
    head = {"uuid": machine.uuid, **(extra or {})}
    if machine.error:
        head["error"] = machine.error
    emit_object("table", head)
    click.echo()
    emit_rows("table", port_rows(machine), ["iface", "state", "address", "proto", "port", "service", "pid"])
    for iface in machine.ifaces:
        if iface.error:
            click.echo(f"{iface.name}: error: {iface.error}")


@click.command()
@click.pass_obj
def inventory(target: Target) -> None:
    """This node's interfaces and listening ports, as reported to the worker savers."""
    with target.channel() as channel:
        reply = inventory_pb2_grpc.InventoryStub(channel).Get(inventory_pb2.GetInventoryRequest(),
                                                              timeout=target.timeout)
    savers = [{"saver": s.address, "delivered": _when(s.delivered_at_ns), "attempts": s.attempts,
               "last_error": s.last_error or None} for s in reply.savers]
    if structured(target.output):
        click.echo(to_data(target.output, {"machine": MessageToDict(reply.machine, preserving_proto_field_name=True),
                                           "savers": savers}))
        return
    _machine_out(target, reply.machine)
    if savers:
        click.echo()
        emit_rows("table", savers, ["saver", "delivered", "attempts", "last_error"])


@click.group()
def machines() -> None:
    """Machines stored by a worker saver (--addr: the saver)."""


@machines.command("ls")
@click.pass_obj
def machines_ls(target: Target) -> None:
    """Every machine with its latest report."""
    with target.channel() as channel:
        reply = inventory_pb2_grpc.MachinesStub(channel).List(inventory_pb2.ListMachinesRequest(),
                                                              timeout=target.timeout)
    rows = [{"uuid": m.uuid, "received": _when(m.received_at_ns), "peer": m.peer, "ifaces": m.ifaces,
             "addresses": m.addresses, "ports": m.ports, "reports": m.reports, "error": m.error or None}
            for m in reply.machines]
    emit_rows(target.output, rows, ["uuid", "received", "peer", "ifaces", "addresses", "ports", "reports", "error"])


@machines.command("show")
@click.argument("uuid")
@click.option("--history", type=click.IntRange(0, 1000), default=0, help="also list N earlier reports")
@click.pass_obj
def machines_show(target: Target, uuid: str, history: int) -> None:
    """The latest report of one machine."""
    with target.channel() as channel:
        reply = inventory_pb2_grpc.MachinesStub(channel).Show(
            inventory_pb2.ShowMachineRequest(uuid=uuid, history=history), timeout=target.timeout)
    extra = {"received": _when(reply.latest.received_at_ns), "peer": reply.latest.peer}
    if structured(target.output):
        click.echo(to_data(target.output, {
            **extra, "machine": MessageToDict(reply.latest.machine, preserving_proto_field_name=True),
            "history": [{"received": _when(r.received_at_ns), "peer": r.peer,
                         "machine": MessageToDict(r.machine, preserving_proto_field_name=True)}
                        for r in reply.history]}))
        return
    _machine_out(target, reply.latest.machine, extra)
    if reply.history:
        click.echo()
        emit_rows("table", [{"received": _when(r.received_at_ns), "peer": r.peer,
                             "ports": sum(len(a.ports) for i in r.machine.ifaces for a in i.address)}
                            for r in reply.history], ["received", "peer", "ports"])


@click.group()
def dispatch() -> None:
    """The node-local dispatchers (pb.ServerDispatcher / pb.FunctionDispatcher)."""


@dispatch.command("ls")
@click.pass_obj
def dispatch_ls(target: Target) -> None:
    """Servers registered with the ServerDispatcher."""
    with target.channel() as channel:
        reply = inventory_pb2_grpc.DispatchStub(channel).List(inventory_pb2.ListDispatchRequest(),
                                                              timeout=target.timeout)
    rows = [{"ip": s.ip, "healthy": s.healthy, "registered": _when(s.registered_at_ns), "subject": s.subject,
             "functions": s.functions, "pid": s.pid or None} for s in reply.servers]
    emit_rows(target.output, rows, ["ip", "healthy", "registered", "subject", "functions", "pid"])
