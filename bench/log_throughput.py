"""Log path throughput and latency through a real cellard over loopback TCP + mTLS.

    python bench/log_throughput.py [--lines N] [--seed-lines M] [--latency-samples K] [--repeat K] [--quick]
                                   [--profile DIR]

Starts its own cellard (certificates from agent.auth.pki, a temp TOML config, a unique cgroup root),
runs workloads with runtime.CellService/Start and prints:

(a) lines/s received by a Logs/Read follower of a workload writing N lines of 100 bytes;
(b) the same workload writing to /dev/null, run directly, side by side;
(c) the ratio follower-done-time / workload-alone-time (medians: the packed follow runs --repeat
    times, default 3, each followed by a run alone);
(d) lines/s of the seed per-line GetSubProcessStream (M lines), and the same stream from a bare grpc.aio
    server (bench/grpc_floor.py): one message per line is bound by grpc-python itself;
(e) p50 latency from write to receipt at a low rate (one line every 20 ms).

The follower checks what it receives: every seq once and in order, every line byte for byte the
one the workload wrote (see Received). It also prints the CPU seconds and page faults of cellard,
the supervisor and itself during each follow: on 2 cores the four processes share, CPU is time.
``--profile DIR`` runs cellard under cProfile and writes DIR/cellard.prof on exit.
Everything (daemon, supervisor, cgroups, temp files) is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import statistics
import struct
import subprocess
import sys
import time
from array import array
from itertools import repeat
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from agent.auth import pki  # noqa: E402
from bench import grpc_floor  # noqa: E402
from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402
from observe.records import HEADER_LEN, RECORD_HEADER, RECORD_MAGIC, PackedBatch, Stream  # noqa: E402
from proto.aurae import observe_pb2, observe_pb2_grpc, runtime_pb2, runtime_pb2_grpc  # noqa: E402
from proto.cellar.v1 import logs_pb2, logs_pb2_grpc  # noqa: E402
from proto.cellar.v1.types_pb2 import ExitStatus  # noqa: E402

CLIENT = "bench-admin"
# N lines of 100 bytes (99 + newline), each starting with its number: as fast as Python writes them.
GENERATOR = (
    "import sys\n"
    "n = int(sys.argv[1]); w = sys.stdout.buffer.write; pad = b'x' * 99\n"
    "for start in range(0, n, 1000):\n"
    "    w(b''.join(b'%d ' % i + pad[: 98 - len(b'%d' % i)] + b'\\n' for i in range(start, min(n, start + 1000))))\n"
)
TICKER = "import sys, time\nfor _ in range(int(sys.argv[1])):\n    print(time.time_ns(), flush=True)\n    time.sleep(0.02)\n"


class Bench:
    def __init__(self, profile: str | None) -> None:
        self.daemon = Cellard(profile)
        self.channel: grpc.Channel | None = None

    # -- setup / teardown
    def start(self) -> None:
        certs = self.daemon.base / "pki"
        pki.init_ca(str(certs))
        pki.issue(str(certs), "server", "cellard-bench", sans=("127.0.0.1", "localhost"))
        pki.issue(str(certs), "client", CLIENT, role="admin")
        self.daemon.start({
            "server": {"tcp_listen": "127.0.0.1:0"},
            "tls": {"ca": str(certs / "ca.pem"), "cert": str(certs / "cellard-bench.pem"),
                    "key": str(certs / "cellard-bench-key.pem")},
            "auth": {"identities": {CLIENT: "admin"}},
            # 1M lines of 100 B are ~124 MB of records: keep them all (default 10 MiB x 5 would rotate
            # away what a follower has not read yet, and it would get LOST records instead).
            "cells": {"log_max_segments": 30},
        })
        tcp = str(self.daemon.event("server.listening", "tcp")["tcp"])
        creds = grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(), (certs / f"{CLIENT}-key.pem").read_bytes(),
            (certs / f"{CLIENT}.pem").read_bytes())
        self.channel = grpc.secure_channel(tcp, creds, options=[("grpc.max_receive_message_length", 64 << 20)])
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply

    def close(self) -> None:
        try:
            if self.channel is not None:
                self.channel.close()
        finally:
            self.daemon.close()

    # -- workloads
    def start_exe(self, cell: str, name: str, argv: list[str]) -> runtime_pb2.StartCellResponse:
        stub = runtime_pb2_grpc.CellServiceStub(self.channel)
        exe = runtime_pb2.Executable(name=name, cell_name=cell, argv=argv)
        return stub.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)

    def allocate(self) -> str:
        name = f"bench-{secrets.token_hex(3)}"
        runtime_pb2_grpc.CellServiceStub(self.channel).Allocate(
            runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name=name)), timeout=30)
        return name

    def follow(self, cell: str, exe: str, packed: bool = False) -> Received:
        """Follow to the EXIT record, checking every line (see :class:`Received`).

        ``packed``: ask for LogBatch.packed (what `cellar logs` uses) and split it with PackedBatch.
        """
        got = Received()
        stub = logs_pb2_grpc.LogsStub(self.channel)
        request = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=exe, follow=True, packed=packed)
        for batch in stub.Read(request, timeout=600):
            packed_bytes = batch.packed  # each access copies the field
            if packed_bytes:
                flood = flood_lines(packed_bytes)
                if flood is not None:
                    got.lines(*flood)
                else:
                    got.packed(PackedBatch(packed_bytes))
                continue
            lines: list[bytes] = []
            first = 0
            for rec in batch.records:
                if rec.channel == logs_pb2.LOG_CHANNEL_STDOUT and not rec.partial:
                    if not lines:
                        first = rec.seq
                    elif rec.seq != first + len(lines):
                        raise AssertionError(f"seq {rec.seq} after {first + len(lines) - 1}")
                    lines.append(rec.data)
                    continue
                if lines:
                    got.lines(first, lines)
                    lines = []
                if rec.channel == logs_pb2.LOG_CHANNEL_EXIT:
                    got.exited(rec.seq, rec.exit)
                elif rec.channel == logs_pb2.LOG_CHANNEL_LOST:
                    got.gap(rec.seq, rec.lost_count)
                else:
                    raise AssertionError(f"unexpected record {rec}")
            if lines:
                got.lines(first, lines)
        return got


def expected_lines(first: int, end: int) -> bytes:
    """GENERATOR's lines ``first`` .. ``end - 1``, each with its newline, built in bulk.

    The lines of one hundred (100a .. 100a+99) differ only in "a": a 100-line template with a
    placeholder gives them all in one bytes.replace, so the check costs a fraction of what the
    workload spends writing them.
    """
    out = []
    while first < end:
        digits = len(str(first))
        upto = min(end, 10**digits)
        tail = " " + "x" * (98 - digits) + "\n"
        lo, hi = (-(-first // 100) * 100, upto // 100 * 100) if digits > 2 else (upto, upto)
        if lo >= hi:
            lo = hi = upto
        if first < lo:
            out.append((tail.join(map(str, range(first, lo))) + tail).encode())
        if lo < hi:
            out += map(_hundred(digits).replace, repeat(b"@"), map(b"%d".__mod__, range(lo // 100, hi // 100)))
        if hi < upto:
            out.append((tail.join(map(str, range(hi, upto))) + tail).encode())
        first = upto
    return b"".join(out)


@functools.lru_cache(maxsize=8)
def _hundred(digits: int) -> bytes:
    """Lines 100a .. 100a+99 of GENERATOR's (numbers of ``digits`` digits), with "@" standing for a."""
    return "".join(f"@{j:02d} " + "x" * (98 - digits) + "\n" for j in range(100)).encode()


_FLOOD_RECORD = HEADER_LEN + 99  # a record of GENERATOR's: a 99-byte line
# The first 8 header bytes of each: magic, stream, flags 0, 0, payload length (then seq and timestamp).
_FLOOD_HEAD = RECORD_HEADER.pack(RECORD_MAGIC, Stream.STDOUT, 0, 0, 99, 0, 0)[:8]


@functools.lru_cache(maxsize=4)
def _payloads(n: int) -> struct.Struct:
    """n records' payloads in one unpack: one bytes object per line and no tuple per record."""
    return struct.Struct(f"{HEADER_LEN}x99s" * n)


def flood_lines(packed: bytes) -> tuple[int, list[bytes]] | None:
    """``(first seq, lines)`` when ``packed`` holds only whole 99-byte stdout lines in seq order, else None.

    GENERATOR writes nothing else, so in this bench that is every batch but the last (the EXIT
    record). Its records are then 123 bytes apart, and every header byte but the timestamp's is
    checked in bulk, one byte position across all records at a time (``packed[j::123]``): magic,
    stream, flags, length, and the seqs against consecutive numbers. What fails the check goes
    through the general PackedBatch path; the lines themselves are checked by Received.lines.
    """
    k, rest = divmod(len(packed), _FLOOD_RECORD)
    if rest or not k:
        return None
    for j in range(8):
        if packed[j::_FLOOD_RECORD] != _FLOOD_HEAD[j : j + 1] * k:
            return None
    first = int.from_bytes(packed[8:16], "little")
    seqs = array("Q", range(first, first + k))
    if sys.byteorder != "little":
        seqs.byteswap()
    expected = seqs.tobytes()
    for j in range(8):
        if packed[8 + j :: _FLOOD_RECORD] != expected[j::8]:
            return None
    lines: list[bytes] = []
    for i in range(0, k, 1000):
        lines += _payloads(min(1000, k - i)).unpack_from(packed, i * _FLOOD_RECORD)
    return first, lines


class Received:
    """What a follower got, checked: every seq exactly once and in order (or reported lost), every
    line exactly the one GENERATOR wrote for it (line i has seq i + 1), then one EXIT record.

    The checks run per batch in bulk (one comparison against the expected bytes per 1000 lines), so
    the follower looks at every byte of every line without a LogRecord or a Python loop per line.
    """

    def __init__(self) -> None:
        self.next_seq = 1
        self.n = 0
        self.size = 0
        self.lost = 0
        self.exit: ExitStatus | None = None

    def lines(self, first_seq: int, data: list[bytes]) -> None:
        if self.exit is not None or first_seq != self.next_seq:
            raise AssertionError(f"lines from seq {first_seq}, expected {self.next_seq}")
        # 1000 lines at a time: ~100 KB strings stay below malloc's mmap threshold (fresh pages fault)
        for i in range(0, len(data), 1000):
            got = b"\n".join(data[i : i + 1000]) + b"\n"
            first, end = first_seq - 1 + i, min(first_seq - 1 + i + 1000, first_seq - 1 + len(data))
            if got != expected_lines(first, end):
                raise AssertionError(f"seqs {first + 1}..{end} differ from the lines the workload wrote")
            self.size += len(got)
        self.next_seq += len(data)
        self.n += len(data)

    def gap(self, seq: int, lost: int) -> None:
        if self.exit is not None or seq - lost + 1 != self.next_seq:
            raise AssertionError(f"LOST record for {lost} seqs ending at {seq}, expected from {self.next_seq}")
        self.next_seq = seq + 1
        self.lost += lost

    def exited(self, seq: int, status: ExitStatus) -> None:
        if self.exit is not None or seq != self.next_seq:
            raise AssertionError(f"EXIT record at seq {seq}, expected {self.next_seq}")
        self.next_seq += 1
        self.exit = status

    def packed(self, batch: PackedBatch) -> None:
        """A packed batch: its leading run of whole stdout lines in bulk, the rest (EXIT, LOST) one by one."""
        if batch.only(Stream.STDOUT):
            k = len(batch)
        else:  # the last batch: its EXIT record, or a gap
            streams, flags = batch.streams, batch.flags
            k = len(streams) - len(streams.lstrip(bytes([Stream.STDOUT])))
            if flags[:k].count(0) != k:
                raise AssertionError("a stdout line came in pieces")
        if k:
            seqs = batch.seqs
            if seqs[:k] != list(range(seqs[0], seqs[0] + k)):
                raise AssertionError(f"stdout records from seq {seqs[0]} are not contiguous")
            self.lines(seqs[0], batch.data[:k] if k < len(batch) else batch.data)
        for rec in batch.records(k):
            if rec.stream is Stream.EXIT:
                info = rec.exit_info()
                self.exited(rec.seq, ExitStatus(code=info["code"], started_at_ns=info["started_at_ns"],
                                                ended_at_ns=info["ended_at_ns"]))
            elif rec.stream is Stream.LOST:
                self.gap(rec.seq, rec.lost)
            else:
                raise AssertionError(f"unexpected record {rec}")


def usage(pid: int) -> tuple[float, float, int]:
    """(user s, system s, minor page faults) of ``pid`` so far (zeros if gone): what a follow costs each
    process, whatever the load. Page faults matter here: a fresh 1 MiB buffer is 256 of them."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0, 0
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck, int(fields[7])


def daemon_pids(pid: int) -> dict[str, int]:
    """cellard and its descendants (keeper, supervisor, fdstore), by module name: the supervisor
    drains the pipes and writes the store, so its CPU is part of what a follow costs."""
    out = {"cellard": pid}
    todo = [pid]
    while todo:
        try:
            children = Path(f"/proc/{todo.pop()}/task").glob("*/children")
            kids = [int(c) for path in children for c in path.read_text().split()]
        except OSError:
            kids = []
        for child in kids:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            module = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv else f"child {child}"
            if module.startswith("cells."):
                out[module.removeprefix("cells.")] = child
                todo.append(child)
    return out


def alone(lines: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys) of the workload writing to /dev/null."""
    before = os.times()
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([sys.executable, "-c", GENERATOR, str(lines)], stdout=null, check=True)
    wall = time.perf_counter() - t0
    after = os.times()
    return wall, after.children_user - before.children_user + after.children_system - before.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed-lines", type=int, default=100_000)
    ap.add_argument("--latency-samples", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3, metavar="K",
                    help="follow the packed flood K times (each followed by a run alone); (c) uses the medians")
    ap.add_argument("--quick", action="store_true", help="only (a)-(c): skip the per-line modes, (d) and (e)")
    ap.add_argument("--profile", metavar="DIR", help="run cellard under cProfile, stats to DIR/cellard.prof")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (cgroups)", file=sys.stderr)
        return 2
    interrupt_on_sigterm()
    bench = Bench(args.profile)
    try:
        bench.start()
        cell = bench.allocate()
        print(f"cellard {bench.daemon.pid} over TCP+mTLS, {os.cpu_count()} CPUs, load average "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)

        # (b) the workload alone, before and after each follow: median against page cache/CPU noise
        alone_runs = [alone(args.lines)]

        # (a) follow the workload through Logs/Read, packed batches (what `cellar logs` asks for) and
        # per-line LogRecord messages
        runs: dict[str, list[tuple[int, int, int, float, float]]] = {}
        cpu: dict[str, list[dict[str, tuple[float, ...]]]] = {}
        timeline: dict[str, list[str]] = {"packed": [], "records": []}
        modes = [("packed", True)] * args.repeat + ([] if args.quick else [("records", False)])
        for i, (mode, packed) in enumerate(modes):
            pids = daemon_pids(bench.daemon.pid)
            pids["client"] = os.getpid()
            before = {name: usage(pid) for name, pid in pids.items()}
            t0, t0_ns = time.perf_counter(), time.time_ns()
            bench.start_exe(cell, f"flood-{mode}-{i}", [sys.executable, "-c", GENERATOR, str(args.lines)])
            started = time.perf_counter() - t0
            got = bench.follow(cell, f"flood-{mode}-{i}", packed=packed)
            followed = time.perf_counter() - t0
            n, size, lost, exit_status = got.n, got.size, got.lost, got.exit
            cpu.setdefault(mode, []).append({name: tuple(a - b for a, b in zip(usage(pid), before[name], strict=True))
                                             for name, pid in pids.items()})
            assert n + lost == args.lines, f"received {n} + lost {lost} of {args.lines} lines"
            assert exit_status is not None and exit_status.code == 0
            in_cell = (exit_status.ended_at_ns - exit_status.started_at_ns) / 1e9
            timeline[mode].append(f"Start answered {started:.2f}, workload ran {(exit_status.started_at_ns - t0_ns) / 1e9:.2f}"
                                  f"..{(exit_status.ended_at_ns - t0_ns) / 1e9:.2f}, follower done {followed:.2f}")
            runs.setdefault(mode, []).append((n, size, lost, followed, in_cell))
            alone_runs.append(alone(args.lines))
        alone_s = statistics.median(a for a, _ in alone_runs)
        packed_runs = runs["packed"]
        n, size, lost, _, in_cell = packed_runs[0]
        followed = statistics.median(r[3] for r in packed_runs)
        lost = max(r[2] for r in packed_runs)

        rate = n / followed
        times = f" (median of {', '.join(f'{r[3]:.2f}' for r in packed_runs)})" if len(packed_runs) > 1 else ""
        print(f"(a) Logs/Read follower, packed batches: {n:,} lines ({size / 1e6:.0f} MB) in {followed:.2f} s{times} = "
              f"{rate:,.0f} lines/s   target >= 300,000  {'OK' if rate >= 300_000 else 'MISSED'}; lost to rotation: {lost}")
        if "records" in runs:
            rn, _rsize, rlost, rfollowed, _ = runs["records"][0]
            print(f"    the same, one LogRecord message per line: {rn / rfollowed:,.0f} lines/s; lost to rotation: {rlost}")
        for mode, used_runs in cpu.items():
            for used, when in zip(used_runs, timeline[mode], strict=True):
                print(f"    {mode} follow: s after the Start call: {when}")
                print("        CPU s (user+sys, minor faults): " + ", ".join(
                    f"{k} {u + y:.2f} ({u:.2f}+{y:.2f}, {f / 1000:.0f}k)" for k, (u, y, f) in used.items()))
        print(f"(b) workload alone > /dev/null: {alone_s:.2f} s (median of {', '.join(f'{a:.2f}' for a, _ in alone_runs)};"
              f" CPU {statistics.median(c for _, c in alone_runs):.2f} s); the same workload in the cell, followed: "
              f"{in_cell:.2f} s")
        ratio = followed / alone_s
        print(f"(c) follower-done / workload-alone: {ratio:.2f}x   target <= 3x  {'OK' if ratio <= 3 else 'MISSED'}",
              flush=True)
        if args.quick:
            return 0

        # (d) the seed per-line stream
        t1 = time.perf_counter()
        started = bench.start_exe(cell, "seed", [sys.executable, "-c", GENERATOR, str(args.seed_lines)])
        req = observe_pb2.GetSubProcessStreamRequest(channel_type=observe_pb2.CHANNEL_STDOUT,
                                                     process_id=started.host_pid)
        seed_n = sum(1 for _ in observe_pb2_grpc.ObserveStub(bench.channel).GetSubProcessStream(req, timeout=600))
        seed_s = time.perf_counter() - t1
        assert seed_n == args.seed_lines, f"seed stream gave {seed_n} of {args.seed_lines}"
        seed_rate = seed_n / seed_s
        print(f"(d) seed GetSubProcessStream: {seed_n:,} lines in {seed_s:.2f} s = {seed_rate:,.0f} lines/s"
              f"   target >= 10,000  {'OK' if seed_rate >= 10_000 else 'MISSED'}", flush=True)
        # One message per line is bound by grpc-python itself: the same stream from a bare server.
        bare = grpc_floor.floor(args.seed_lines)
        print(f"    bare grpc.aio stream of the same messages (no TLS, no log store): {bare:,.0f} messages/s;"
              f" cellard / bare = {seed_rate / bare:.2f}", flush=True)

        # (e) latency at a low rate
        bench.start_exe(cell, "tick", [sys.executable, "-c", TICKER, str(args.latency_samples)])
        lat_ms: list[float] = []
        stub = logs_pb2_grpc.LogsStub(bench.channel)
        for batch in stub.Read(logs_pb2.ReadLogsRequest(cell_name=cell, executable_name="tick", follow=True),
                               timeout=600):
            now = time.time_ns()
            lat_ms += [(now - int(r.data)) / 1e6 for r in batch.records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
        q = statistics.quantiles(lat_ms, n=100)
        print(f"(e) write->receipt latency at 50 lines/s: p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, "
              f"p99 {q[98]:.1f} ms, max {max(lat_ms):.1f} ms ({len(lat_ms)} samples)"
              f"   target p50 < 50 ms  {'OK' if q[49] < 50 else 'MISSED'}")
        return 0
    except KeyboardInterrupt:
        print("interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
