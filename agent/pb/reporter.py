"""The worker-saver reporter: sends this node's ``pb.Machine`` to each configured saver.

When: at start; within seconds of a change (rtnetlink link/address events wake the change check at
once; listeners have no events, so the report is re-collected every ``poll_s``, ~2 s, and compared);
and every ``interval_s`` even when nothing changed, so a saver that lost its data is refilled.
Each saver has its own sender: one saver down never delays another. While a saver is unreachable
the sender retries with exponential backoff (0.5 s doubling up to ``backoff_max_s``, full jitter)
and always sends the *latest* report, never a queue of stale ones. NOT_ACCEPTED is logged with the
saver's reason and not retried until the report changes (resending the same report cannot help).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import structlog
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from agent.auth import tls
from agent.config import ReporterConfig
from agent.core import counters
from agent.pb import node_report
from observe import inventory
from proto.cellar.v1 import report_pb2
from proto.pb import workerServer_pb2 as pb
from proto.pb import workerServer_pb2_grpc

if TYPE_CHECKING:
    from agent.core.app import App
    from cells.client import RuntimeClient

log = structlog.get_logger("agent.pb.reporter")

BACKOFF_BASE_S = 0.5
REASON_KEY = "reason"


def machine_to_pb(machine: inventory.Machine) -> pb.Machine:
    """The domain report as the seed's wire message (plus cellar's extension fields)."""
    return pb.Machine(
        uuid=machine.uuid,
        error=machine.error,
        ifaces=[
            pb.Iface(
                name=i.name, state=i.state, netns=i.netns, error=i.error,
                address=[
                    pb.Address(ip=a.ip, ports=[
                        pb.Port(port=p.port, service=p.service, protocol=p.proto, cell=p.cell,
                                executable=p.executable, process=p.process, pid=p.pid)
                        for p in a.ports
                    ])
                    for a in i.addresses
                ],
            )
            for i in machine.interfaces
        ],
    )


class NodeInventory:
    """This node's machine as reported: the host netns plus every cell's netns, attributed to cells,
    with the host facts and a summary of every cell (:mod:`agent.pb.node_report`)."""

    def __init__(self, state_dir: str, runtime: RuntimeClient, api_address: str = "", hostname: str = "",
                 machine_id: str = "") -> None:
        self.state_dir = state_dir
        self.runtime = runtime
        self.machine_id = machine_id
        self.api_address = api_address
        self.hostname = hostname
        self.cgroup_mode = ""
        self.collector: inventory.Collector | None = None
        self._last: tuple[inventory.Machine, list[bytes], pb.Machine] | None = None

    async def machine(self) -> pb.Machine:
        """The report now, without usage. Converting to protobuf costs about as much as collecting
        (~1.5 us a port), so an unchanged machine (a cheap comparison: unchanged ports are the same
        objects) gets the last message back; treat it as read-only."""
        if self.collector is None:
            info = await self.runtime.info()
            uuid = self.machine_id or await asyncio.to_thread(inventory.machine_uuid, self.state_dir)
            self.collector = inventory.Collector(uuid, str(info.get("cgroup_root") or ""))
            self.cgroup_mode = str(info.get("mode") or "")
        errors = []
        cells: list[report_pb2.ReportCell] = []
        try:
            listed = await self.runtime.list()
            netns = [c.netns for c in listed if c.netns]
            cells = [node_report.cell_to_pb(c) for c in listed]
        except Exception as exc:  # the supervisor is away: report the host alone, and say so
            errors.append(f"cells: {exc}")
            netns = []
        machine = await self.collector.collect(netns)
        if errors:
            machine.error = "; ".join([*errors, machine.error] if machine.error else errors)
        cell_bytes = [c.SerializeToString(deterministic=True) for c in cells]
        if self._last is None or self._last[0] != machine or self._last[1] != cell_bytes:
            message = machine_to_pb(machine)
            await asyncio.to_thread(node_report.set_facts, message, cgroup_mode=self.cgroup_mode,
                                    api_address=self.api_address, hostname=self.hostname)
            message.cells.extend(cells)
            self._last = (machine, cell_bytes, message)
        return self._last[2]

    async def usage(self) -> report_pb2.ReportUsage:
        """Host and cell usage now, attached to each report as it is sent."""
        try:
            cells = await self.runtime.list(stats=True)
        except Exception:  # the supervisor is away: the host's usage alone
            cells = []
        return await asyncio.to_thread(node_report.usage, cells, time.time_ns())


@dataclass
class SaverState:
    address: str
    delivered_at_ns: int = 0
    last_error: str = ""
    attempts: int = 0


def backoff_delay(failures: int, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**failures)], at least 50 ms."""
    return max(0.05, random.uniform(0, min(cap, BACKOFF_BASE_S * 2 ** min(failures, 30))))


class Reporter:
    """Keeps the latest report and one sender task per saver; :meth:`run` until cancelled."""

    def __init__(self, cfg: ReporterConfig, source: Callable[[], Awaitable[pb.Machine]],
                 usage: Callable[[], Awaitable[report_pb2.ReportUsage]] | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.usage = usage
        self.latest: pb.Machine | None = None
        self._latest_bytes = b""
        self.version = 0
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self.savers = [SaverState(a) for a in cfg.savers]
        for address in cfg.savers:  # every saver's series from the start (0, not absent)
            counters.REPORTER_SENT.labels(address)
            counters.REPORTER_FAILURES.labels(address)

    def _channel(self, address: str) -> grpc.aio.Channel:
        # gRPC's own reconnect backoff (1 s x 1.6 up to 120 s) would otherwise keep the channel in
        # TRANSIENT_FAILURE long after the saver is back, failing our retries fast: cap it at ours.
        cap_ms = max(1000, int(self.cfg.backoff_max_s * 1000))
        options: list[tuple[str, str | int]] = [
            ("grpc.initial_reconnect_backoff_ms", min(500, cap_ms)),
            ("grpc.min_reconnect_backoff_ms", min(500, cap_ms)),
            ("grpc.max_reconnect_backoff_ms", cap_ms),
        ]
        if self.cfg.insecure and not self.cfg.ca:
            return grpc.aio.insecure_channel(address, options=options)
        creds = tls.client_credentials(self.cfg.ca, self.cfg.cert, self.cfg.key, prefix="reporter.")
        if self.cfg.server_name:
            options.append(("grpc.ssl_target_name_override", self.cfg.server_name))
        return grpc.aio.secure_channel(address, creds, options=options)

    async def refresh(self) -> bool:
        """Collect now; True (and wake the senders) when the report differs from the last one."""
        machine = await self.source()
        data = machine.SerializeToString(deterministic=True)
        if data == self._latest_bytes:
            return False
        async with self._changed:
            self.latest, self._latest_bytes = machine, data
            self.version += 1
            self._changed.notify_all()
        log.debug("reporter.changed", version=self.version, ifaces=len(machine.ifaces))
        return True

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._poll(), name="reporter-poll"),
                 asyncio.create_task(self._watch_netlink(), name="reporter-netlink")]
        tasks += [asyncio.create_task(self._send_loop(s), name=f"reporter-{s.address}") for s in self.savers]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # never let one bad collection end reporting
                log.warning("reporter.collect_failed", error=str(exc))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_s)

    async def _watch_netlink(self) -> None:
        """Wake the poller on link/address changes in the host netns (cells' are polled)."""
        while True:
            try:
                async with AsyncIPRoute() as ipr:
                    await ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
                    while True:
                        async for _msg in ipr.get():
                            self._wake.set()
            except OSError as exc:
                log.warning("reporter.netlink_failed", error=str(exc))
                await asyncio.sleep(self.cfg.poll_s)

    async def _send_loop(self, state: SaverState) -> None:
        sent_version = 0
        last_sent = 0.0
        failures = 0
        channel = self._channel(state.address)
        stub = workerServer_pb2_grpc.WorkerSaverStub(channel)
        try:
            while True:
                async with self._changed:
                    if self.latest is None:
                        await self._changed.wait_for(lambda: self.latest is not None)
                    due = last_sent + self.cfg.interval_s - time.monotonic()
                    if due > 0 and self.version <= sent_version:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                self._changed.wait_for(lambda v=sent_version: self.version > v), due  # type: ignore[misc]
                            )
                    machine, version = self.latest, self.version
                assert machine is not None
                state.attempts += 1
                request = pb.SaveMachineReq(machine=machine)
                if self.usage is not None:
                    try:
                        request.machine.usage.CopyFrom(await self.usage())
                    except Exception as exc:  # usage is a bonus: the report goes out without it
                        log.warning("reporter.usage_failed", error=str(exc))
                try:
                    call = stub.SaveMachine(request, timeout=self.cfg.timeout_s)
                    reply = await call
                    trailing = await call.trailing_metadata()
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    counters.REPORTER_FAILURES.labels(state.address).inc()
                    state.last_error = f"{exc.code().name}: {exc.details()}"
                    delay = backoff_delay(failures, self.cfg.backoff_max_s)
                    log.warning("reporter.send_failed", saver=state.address, error=state.last_error,
                                retry_in_s=round(delay, 2), failures=failures)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                sent_version, last_sent = version, time.monotonic()
                if reply.status == pb.SaveMachineRes.ACCEPTED:
                    state.delivered_at_ns, state.last_error = time.time_ns(), ""
                    counters.REPORTER_SENT.labels(state.address).inc()
                    counters.REPORTER_LAST_SUCCESS.labels(state.address).set(state.delivered_at_ns / 1e9)
                    log.info("reporter.delivered", saver=state.address, version=version)
                else:
                    reason = dict(trailing or ()).get(REASON_KEY, "")
                    state.last_error = f"NOT_ACCEPTED: {reason}"
                    counters.REPORTER_FAILURES.labels(state.address).inc()
                    log.warning("reporter.not_accepted", saver=state.address, reason=reason,
                                status=pb.SaveMachineRes.RequestStatus.Name(reply.status))
        finally:
            await channel.close(None)


def start_reporting(app: App) -> asyncio.Task[None] | None:
    """Start reporting to ``[reporter] savers`` (sets ``app.reporter``); None when none is configured."""
    cfg = app.config.reporter
    if not cfg.savers:
        return None
    source = NodeInventory(app.config.paths.state_dir, app.runtime, node_report.advertised_address(app.config),
                           cfg.hostname, cfg.machine_id)
    app.reporter = Reporter(cfg, source.machine, source.usage)
    log.info("reporter.started", savers=cfg.savers, interval_s=cfg.interval_s)
    return asyncio.create_task(app.reporter.run(), name="reporter")


async def stop_reporting(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
