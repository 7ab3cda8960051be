"""gRPC adapters of the worker saver: ``pb.WorkerSaver`` (write) and ``cellar.v1.Machines`` (read).

SaveMachine answers in the body as the seed does: ACCEPTED, or NOT_ACCEPTED with the broken rule in
trailing metadata ``reason``. Store failures are gRPC statuses (UNAVAILABLE, RESOURCE_EXHAUSTED) so a
reporter retries them, while a NOT_ACCEPTED report is not worth resending unchanged.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import structlog
from google.protobuf.message import DecodeError

from agent.auth.authz import current_peer
from agent.core import counters
from agent.core.status import status_for
from agent.pb.saver.batcher import Batcher
from agent.pb.saver.store import (
    MachineStore,
    NewReport,
    StoredReport,
    StoredSummary,
    StoreError,
    UnknownMachine,
)
from agent.pb.saver.validation import MAX_UUID, InvalidReport, validate_machine
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import common_pb2, workerServer_pb2, workerServer_pb2_grpc

log = structlog.get_logger("agent.pb.saver")

REASON_KEY = "reason"
MAX_HISTORY = 1000


def metadata_text(text: str) -> str:
    """Printable ASCII only: gRPC rejects other bytes in a metadata value (the call would fail)."""
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)[:1024]


def new_report(machine: workerServer_pb2.Machine, received_at_ns: int, peer: str) -> NewReport:
    """The row to store for ``machine`` (validated): the report plus the columns queried alone."""
    usage = machine.usage
    light = workerServer_pb2.Machine()
    light.CopyFrom(machine)
    light.ClearField("ifaces")
    addresses = [a for i in machine.ifaces for a in i.address]
    return NewReport(machine.uuid, machine.SerializeToString(), received_at_ns, peer, hostname=machine.hostname,
                     api_address=machine.api_address, usage_at_ns=usage.at_ns, cpu_usage_us=usage.cpu_usage_us,
                     memory_used_bytes=usage.memory_used_bytes, summary=light.SerializeToString(),
                     ifaces=len(machine.ifaces), addresses=len(addresses), ports=sum(len(a.ports) for a in addresses))


class WorkerSaverServicer(workerServer_pb2_grpc.WorkerSaverServicer):
    def __init__(self, store: MachineStore) -> None:
        self.store = store
        self.batcher = Batcher(store)

    async def Check(  # noqa: N802
        self, request: common_pb2.HealthCheckReq,
        context: grpc.aio.ServicerContext[common_pb2.HealthCheckReq, common_pb2.HealthCheckRes],
    ) -> common_pb2.HealthCheckRes:
        """SERVING only while the database answers."""
        try:
            await asyncio.to_thread(self.store.ping)
        except StoreError as exc:
            log.warning("saver.unhealthy", error=str(exc))
            return common_pb2.HealthCheckRes(status=common_pb2.HealthCheckRes.NOT_SERVING)
        return common_pb2.HealthCheckRes(status=common_pb2.HealthCheckRes.SERVING)

    async def SaveMachine(  # noqa: N802
        self, request: workerServer_pb2.SaveMachineReq,
        context: grpc.aio.ServicerContext[workerServer_pb2.SaveMachineReq, workerServer_pb2.SaveMachineRes],
    ) -> workerServer_pb2.SaveMachineRes:
        peer = current_peer(context)
        counters.SAVER_RECEIVED.inc()
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # overloaded: its caller has given up already
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the report waited past its deadline")
        try:
            if not request.HasField("machine"):
                raise InvalidReport("machine: missing")
            validate_machine(request.machine)
        except InvalidReport as exc:
            log.info("saver.not_accepted", peer=peer, reason=str(exc))
            counters.SAVER_REJECTED.inc()
            context.set_trailing_metadata(((REASON_KEY, metadata_text(str(exc))),))
            return workerServer_pb2.SaveMachineRes(status=workerServer_pb2.SaveMachineRes.NOT_ACCEPTED)
        machine = request.machine
        try:
            async with status_for(context):
                await self.batcher.save(new_report(machine, time.time_ns(), peer))
        except BaseException:
            counters.SAVER_ERRORS.inc()
            raise
        counters.SAVER_STORED.inc()
        log.debug("saver.accepted", peer=peer, uuid=machine.uuid, ifaces=len(machine.ifaces))
        return workerServer_pb2.SaveMachineRes(status=workerServer_pb2.SaveMachineRes.ACCEPTED)


def _machine(stored: StoredReport) -> workerServer_pb2.Machine:
    machine = workerServer_pb2.Machine()
    try:
        machine.ParseFromString(stored.report)
    except DecodeError:  # a row written by something else: show what we can
        machine.uuid, machine.error = stored.uuid, "stored report is unreadable"
    return machine


def summary(stored: StoredSummary, full: bool = False) -> inventory_pb2.MachineSummary:
    """``full``: with the report minus its interfaces (a fleet's cells fit in a reply; its ports would not)."""
    machine = _machine(StoredReport(stored.uuid, stored.received_at_ns, stored.peer, stored.summary))
    counts = (stored.ifaces, stored.addresses, stored.ports)
    if machine.ifaces:  # a row of an earlier saver: the whole report was read
        addresses = [a for i in machine.ifaces for a in i.address]
        counts = (len(machine.ifaces), len(addresses), sum(len(a.ports) for a in addresses))
        machine.ClearField("ifaces")
    result = inventory_pb2.MachineSummary(
        uuid=stored.uuid, received_at_ns=stored.received_at_ns, peer=stored.peer, ifaces=counts[0],
        addresses=counts[1], ports=counts[2], error=machine.error, reports=stored.reports, hostname=machine.hostname,
        api_address=machine.api_address, cells=len(machine.cells),
        executables=sum(len(c.executables) for c in machine.cells),
    )
    if full:
        result.machine.CopyFrom(machine)
    return result


def _report(stored: StoredReport) -> inventory_pb2.MachineReport:
    return inventory_pb2.MachineReport(machine=_machine(stored), received_at_ns=stored.received_at_ns,
                                       peer=stored.peer)


class MachinesServicer(inventory_pb2_grpc.MachinesServicer):
    def __init__(self, store: MachineStore) -> None:
        self.store = store

    async def List(  # noqa: N802
        self, request: inventory_pb2.ListMachinesRequest,
        context: grpc.aio.ServicerContext[inventory_pb2.ListMachinesRequest, inventory_pb2.ListMachinesResponse],
    ) -> inventory_pb2.ListMachinesResponse:
        async with status_for(context):
            rows = await asyncio.to_thread(self.store.summaries)
        return inventory_pb2.ListMachinesResponse(machines=[summary(r, request.full) for r in rows])

    async def Show(  # noqa: N802
        self, request: inventory_pb2.ShowMachineRequest,
        context: grpc.aio.ServicerContext[inventory_pb2.ShowMachineRequest, inventory_pb2.ShowMachineResponse],
    ) -> inventory_pb2.ShowMachineResponse:
        async with status_for(context):
            if not request.uuid or len(request.uuid) > MAX_UUID:
                raise InvalidReport(f"uuid: must be 1-{MAX_UUID} characters")
            limit = min(request.history, MAX_HISTORY) + 1
            rows = await asyncio.to_thread(self.store.history, request.uuid, limit)
            if not rows:
                raise UnknownMachine(f"no report from machine {request.uuid!r}")
        return inventory_pb2.ShowMachineResponse(latest=_report(rows[0]), history=[_report(r) for r in rows[1:]])
