"""Worker-saver load: simulated machines reporting to one ``cellar-saver`` on PostgreSQL.

    sudo .venv/bin/python bench/saver_load.py [--machines 10000] [--rate 167] [--seconds 15] [--workers N]

Loopback and bounded (about a minute): a throwaway PostgreSQL cluster (the test suite's, fsync off),
one saver process (``--history 10``), and a realistic report: 50 interfaces, 500 listening ports,
50 cells with 2 executables each, usage for every cell (~31 KiB serialized). The target is 10,000
machines every 60 s, i.e. 167 reports/s with p99 < 100 ms. Measured in one run:

1. open loop at ``--rate`` reports/s over ``--machines`` uuids (each a real machine row): achieved
   rate, p50/p99 latency of SaveMachine;
2. closed loop, 32 reports in flight: the saver's sustained maximum reports/s and its p99;
3. the baseline: the same rows written straight into PostgreSQL by the store's SQL through psycopg
   in-process (no gRPC, no validation), in batches of the size the saver's group commit reached in
   phase 2 (reports per committed transaction, from pg_stat_database): rows/s, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import psycopg  # noqa: E402

from agent.pb.saver.postgres_store import PostgresStore  # noqa: E402
from agent.pb.saver.servicers import new_report  # noqa: E402
from proto.cellar.v1 import report_pb2  # noqa: E402
from proto.pb import workerServer_pb2 as pb  # noqa: E402
from tests.agent.pb.conftest import Saver, free_port, postgres_cluster  # noqa: E402

METHOD = "/pb.WorkerSaver/SaveMachine"
IN_FLIGHT = 32
CONNECTIONS = 8  # machines connect on their own: spread over connections (and --workers processes)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Pool:
    """``CONNECTIONS`` channels, each its own TCP connection, used in turn."""

    def __init__(self, address: str) -> None:
        self.channels = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(CONNECTIONS)]
        self.calls = [ch.unary_unary(METHOD) for ch in self.channels]
        self.n = 0

    def call(self, request: bytes) -> Any:
        self.n += 1
        return self.calls[self.n % CONNECTIONS](request, timeout=10)

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


def realistic_machine() -> pb.Machine:
    """50 interfaces, 500 ports, 50 cells x 2 executables, as a busy node reports them (no uuid)."""
    m = pb.Machine(hostname="node-0000.example", os="Debian GNU/Linux 12 (bookworm)", kernel="6.1.0-28-amd64",
                   cellar_version="0.1.0", cgroup_mode="v2", api_address="node-0000.example:7443", cpus=32,
                   memory_bytes=128 << 30)
    for i in range(50):
        iface = m.ifaces.add(name=f"cellar-c{i}/eth0" if i else "eth0", state="UP", netns=f"cellar-c{i}" if i else "")
        address = iface.address.add(ip=f"10.{i // 250}.{i % 250}.2")
        for j in range(10):
            address.ports.add(port=8000 + j, service=f"c{i}/exe.srv{j % 2}", protocol="tcp", cell=f"c{i}",
                              executable=f"srv{j % 2}", process="python3", pid=10000 + i * 10 + j)
    usage = report_pb2.ReportUsage(at_ns=time.time_ns(), cpu_usage_us=10**12, memory_used_bytes=40 << 30)
    for i in range(50):
        m.cells.add(name=f"c{i}", state="active", cpu_max_millicores=2000, memory_max_bytes=2 << 30, executables=[
            report_pb2.ReportExecutable(name=f"srv{k}", state="running", pid=10000 + i * 10 + k, restarts=0,
                                        health="healthy", started_at_ns=time.time_ns()) for k in range(2)])
        usage.cells.add(cell=f"c{i}", cpu_usage_us=10**9 + i, memory_bytes=300 << 20)
    m.usage.CopyFrom(usage)
    return m


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request_bytes(rest: bytes, uuid: str) -> bytes:
    """SaveMachineReq for ``uuid``: field 1 of Machine prepended to the shared rest (protobuf
    concatenation), so 10,000 machines cost no 10,000 serialisations in the load generator."""
    raw = uuid.encode()
    machine = b"\x0a" + _varint(len(raw)) + raw + rest
    return b"\x0a" + _varint(len(machine)) + machine


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def open_loop(address: str, rest: bytes, machines: int, rate: float,
                    seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failed: list[str] = []
    pool = Pool(address)
    pending: set[asyncio.Task[None]] = set()

    async def one(uuid: str) -> None:
        t0 = time.perf_counter()
        try:
            await pool.call(request_bytes(rest, uuid))
        except grpc.aio.AioRpcError:  # the saver fell behind the offered rate: counted, at 10 s
            failed.append(uuid)
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(f"m-{i % machines:05d}"))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    await pool.close()
    return (n - len(failed)) / elapsed, latencies, len(failed)


async def closed_loop(address: str, rest: bytes, machines: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    pool = Pool(address)
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await pool.call(request_bytes(rest, f"m-{next(counter) % machines:05d}"))
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - start
    await pool.close()
    return len(latencies) / elapsed, latencies


def commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        assert row is not None
        return int(row[0])


def baseline(dsn: str, machine: pb.Machine, machines: int, batch: int, count: int) -> float:
    store = PostgresStore(dsn, history=10, max_machines=10**6)
    try:
        reports = []
        for i in range(count):
            machine.uuid = f"b-{i % machines:05d}"
            reports.append(new_report(machine, time.time_ns(), "ipv4:127.0.0.1:1"))
        start = time.perf_counter()
        for i in range(0, count, batch):
            store.save_many(reports[i:i + batch])
        return count / (time.perf_counter() - start)
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=167.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=1, help="cellar-saver --workers (processes on one port)")
    args = ap.parse_args()
    machine = realistic_machine()
    rest = machine.SerializeToString()
    print(f"report: {len(rest) / 1024:.0f} KiB serialized, {len(machine.ifaces)} interfaces, "
          f"{sum(len(a.ports) for i in machine.ifaces for a in i.address)} ports, {len(machine.cells)} cells")
    with postgres_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = pg.dsn("bench")
        saver = Saver(dsn, free_port(), Path(tmp) / "saver.log", extra=("--history", "10", "--workers", str(args.workers)))
        saver.start()
        deadline = time.monotonic() + 30
        while len(saver.events("saver.listening")) < args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"saver: {args.workers} worker process(es) on {saver.address}")
        try:
            rate, lat, failed = asyncio.run(open_loop(saver.address, rest, args.machines, args.rate, args.seconds))
            print(f"open loop:   offered {args.rate:.0f}/s over {args.machines} machines -> {rate:.0f} reports/s, "
                  f"p50 {p(lat, 50) * 1e3:.1f} ms, p99 {p(lat, 99) * 1e3:.1f} ms, {failed} timed out "
                  f"(target p99 < 100 ms: {'met' if p(lat, 99) < 0.1 and rate >= 0.95 * args.rate else 'NOT met'})")
            before = commits(dsn)
            top, lat2 = asyncio.run(closed_loop(saver.address, rest, args.machines, args.seconds))
            per_commit = len(lat2) / max(1, commits(dsn) - before - 2)
            print(f"closed loop: {IN_FLIGHT} in flight -> {top:.0f} reports/s sustained, p99 {p(lat2, 99) * 1e3:.1f} ms, "
                  f"{per_commit:.1f} reports per transaction (group commit)")
        finally:
            saver.stop()
        batch = max(1, round(per_commit))
        direct = baseline(dsn, machine, args.machines, batch, min(len(lat2), 3000))
        print(f"baseline:    the same rows straight into PostgreSQL (psycopg, batches of {batch}): {direct:.0f} rows/s")
        print(f"ratio:       saver / direct PostgreSQL = {top / direct:.2f}; "
              f"headroom over the 10,000-machine target = {top / 167:.1f}x")


if __name__ == "__main__":
    main()
