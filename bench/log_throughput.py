"""Log path throughput and latency through a real cellard over loopback TCP + mTLS.

    python bench/log_throughput.py [--lines N] [--seed-lines M] [--latency-samples K] [--profile DIR]

Starts its own cellard (certificates from agent.pki, a temp TOML config, a unique cgroup root),
runs workloads with runtime.CellService/Start and prints:

(a) lines/s received by a Logs/Read follower of a workload writing N lines of 100 bytes;
(b) the same workload writing to /dev/null, run directly, side by side;
(c) the ratio follower-done-time / workload-alone-time;
(d) lines/s of the seed per-line GetSubProcessStream (M lines);
(e) p50 latency from write to receipt at a low rate (one line every 20 ms).

``--profile DIR`` runs cellard under cProfile and writes DIR/cellard.prof on exit.
Everything (daemon, supervisor, cgroups, temp files) is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from agent import pki  # noqa: E402
from observe.records import Stream, iter_packed  # noqa: E402
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


def toml(cfg: dict) -> str:
    out = []
    for table, values in cfg.items():
        out.append(f"[{table}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                out.append(f"[{table}.{k}]")
                out += [f"{json.dumps(kk)} = {json.dumps(vv)}" for kk, vv in v.items()]
    return "\n".join(out) + "\n"


class Bench:
    def __init__(self, profile: str | None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="cellar-bench-", dir="/tmp"))
        self.token = f"cellar-bench-{secrets.token_hex(4)}"
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    # -- setup / teardown
    def start(self) -> None:
        certs = self.base / "pki"
        pki.init_ca(str(certs))
        pki.issue(str(certs), "server", "cellard-bench", sans=("127.0.0.1", "localhost"))
        pki.issue(str(certs), "client", CLIENT, role="admin")
        cfg = {
            "server": {"socket": str(self.base / "cellar.sock"), "tcp_listen": "127.0.0.1:0"},
            "tls": {"ca": str(certs / "ca.pem"), "cert": str(certs / "cellard-bench.pem"),
                    "key": str(certs / "cellard-bench-key.pem")},
            "auth": {"identities": {CLIENT: "admin"}},
            "paths": {"run_dir": str(self.base / "run"), "state_dir": str(self.base / "state"),
                      "log_dir": str(self.base / "log")},
            # 1M lines of 100 B are ~124 MB of records: keep them all (default 10 MiB x 5 would rotate
            # away what a follower has not read yet, and it would get LOST records instead).
            "cells": {"cgroup_root": self.token, "netns_prefix": self.token + "-", "log_max_segments": 30},
            "log": {"level": "info", "format": "json"},
        }
        self.config_path = self.base / "cellard.toml"
        self.config_path.write_text(toml(cfg))
        self.state_dir = cfg["paths"]["state_dir"]
        self.log_path = self.base / "cellard.log"
        argv = [sys.executable]
        if self.profile:
            os.makedirs(self.profile, exist_ok=True)
            argv += ["-m", "cProfile", "-o", os.path.join(self.profile, "cellard.prof")]
        argv += ["-m", "agent.daemon", "--config", str(self.config_path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CELLAR_CONFIG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        tcp = self._wait_listening()
        creds = grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(), (certs / f"{CLIENT}-key.pem").read_bytes(),
            (certs / f"{CLIENT}.pem").read_bytes())
        self.channel = grpc.secure_channel(tcp, creds, options=[("grpc.max_receive_message_length", 64 << 20)])
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"cellard exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "server.listening" and ev.get("tcp"):
                    return str(ev["tcp"])
            time.sleep(0.05)
        raise SystemExit("cellard did not listen on TCP within 30 s")

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            from cells.config import RuntimeConfig
            from tests.cleanup import destroy_runtime

            destroy_runtime(RuntimeConfig(state_dir=self.state_dir, run_dir=str(self.base / "run"),
                                          log_dir=str(self.base / "log"), cgroup_root_name=self.token,
                                          netns_prefix=self.token + "-"))
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

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

    def follow(self, cell: str, exe: str, packed: bool = False) -> tuple[int, int, int, ExitStatus | None]:
        """Follow to the EXIT record: (lines, bytes, lines reported lost, exit status).

        ``packed``: ask for LogBatch.packed (what `cellar logs` uses) and decode it with iter_packed.
        """
        n = size = lost = 0
        exit_status = None
        stub = logs_pb2_grpc.LogsStub(self.channel)
        request = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=exe, follow=True, packed=packed)
        for batch in stub.Read(request, timeout=600):
            if batch.packed:
                for r in iter_packed(batch.packed):
                    if r.stream is Stream.STDOUT or r.stream is Stream.STDERR:
                        n += 1
                        size += len(r.data) + 1
                    elif r.stream is Stream.LOST:
                        lost += r.lost
                    else:
                        info = r.exit_info()
                        exit_status = ExitStatus(code=info["code"], started_at_ns=info["started_at_ns"],
                                                 ended_at_ns=info["ended_at_ns"])
                continue
            for rec in batch.records:
                if rec.channel == logs_pb2.LOG_CHANNEL_EXIT:
                    exit_status = rec.exit
                elif rec.channel == logs_pb2.LOG_CHANNEL_LOST:
                    lost += rec.lost_count
                elif rec.channel in (logs_pb2.LOG_CHANNEL_STDOUT, logs_pb2.LOG_CHANNEL_STDERR):
                    n += 1
                    size += len(rec.data) + 1
        return n, size, lost, exit_status


def cpu_seconds(pid: int) -> float:
    """user + system CPU of ``pid`` so far (0 if gone): what a follow costs each process, whatever the load."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pids(pid: int) -> dict[str, int]:
    """cellard and its direct children (the supervisor), by command name."""
    out = {"cellard": pid}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        out["supervisor" if "supervisor" in Path(f"/proc/{child}/cmdline").read_text() else f"child {child}"] = int(child)
    return out


def alone(lines: int) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([sys.executable, "-c", GENERATOR, str(lines)], stdout=null, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed-lines", type=int, default=100_000)
    ap.add_argument("--latency-samples", type=int, default=250)
    ap.add_argument("--profile", metavar="DIR", help="run cellard under cProfile, stats to DIR/cellard.prof")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (cgroups)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bench = Bench(args.profile)
    try:
        bench.start()
        cell = bench.allocate()
        print(f"cellard {bench.proc.pid if bench.proc else '?'} over TCP+mTLS, {os.cpu_count()} CPUs, load average "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()))

        # (b) the workload alone, before and after (a): median of 3 against page cache/CPU noise
        alone_runs = [alone(args.lines)]

        # (a) follow the workload through Logs/Read, packed batches (what `cellar logs` asks for) and
        # per-line LogRecord messages
        results = {}
        cpu: dict[str, dict[str, float]] = {}
        for mode, packed in (("packed", True), ("records", False)):
            pids = daemon_pids(bench.proc.pid) if bench.proc else {}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            client_before = time.process_time()
            t0 = time.perf_counter()
            bench.start_exe(cell, f"flood-{mode}", [sys.executable, "-c", GENERATOR, str(args.lines)])
            n, size, lost, exit_status = bench.follow(cell, f"flood-{mode}", packed=packed)
            followed = time.perf_counter() - t0
            cpu[mode] = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            cpu[mode]["client"] = time.process_time() - client_before
            assert n + lost == args.lines, f"received {n} + lost {lost} of {args.lines} lines"
            assert exit_status is not None and exit_status.code == 0
            in_cell = (exit_status.ended_at_ns - exit_status.started_at_ns) / 1e9
            results[mode] = (n, size, lost, followed, in_cell)
            alone_runs.append(alone(args.lines))
        alone_s = statistics.median(alone_runs)
        n, size, lost, followed, in_cell = results["packed"]

        # (d) the seed per-line stream
        t1 = time.perf_counter()
        started = bench.start_exe(cell, "seed", [sys.executable, "-c", GENERATOR, str(args.seed_lines)])
        req = observe_pb2.GetSubProcessStreamRequest(channel_type=observe_pb2.CHANNEL_STDOUT,
                                                     process_id=started.host_pid)
        seed_n = sum(1 for _ in observe_pb2_grpc.ObserveStub(bench.channel).GetSubProcessStream(req, timeout=600))
        seed_s = time.perf_counter() - t1
        assert seed_n == args.seed_lines, f"seed stream gave {seed_n} of {args.seed_lines}"

        # (e) latency at a low rate
        bench.start_exe(cell, "tick", [sys.executable, "-c", TICKER, str(args.latency_samples)])
        lat_ms: list[float] = []
        stub = logs_pb2_grpc.LogsStub(bench.channel)
        for batch in stub.Read(logs_pb2.ReadLogsRequest(cell_name=cell, executable_name="tick", follow=True),
                               timeout=600):
            now = time.time_ns()
            lat_ms += [(now - int(r.data)) / 1e6 for r in batch.records if r.channel == logs_pb2.LOG_CHANNEL_STDOUT]
        q = statistics.quantiles(lat_ms, n=100)

        rate = n / followed
        print(f"(a) Logs/Read follower, packed batches: {n:,} lines ({size / 1e6:.0f} MB) in {followed:.2f} s = "
              f"{rate:,.0f} lines/s   target >= 300,000  {'OK' if rate >= 300_000 else 'MISSED'}; lost to rotation: {lost}")
        rn, _rsize, rlost, rfollowed, _ = results["records"]
        print(f"    the same, one LogRecord message per line: {rn / rfollowed:,.0f} lines/s; lost to rotation: {rlost}")
        for mode, used in cpu.items():
            print(f"    CPU s during the {mode} follow: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()))
        print(f"(b) workload alone > /dev/null: {alone_s:.2f} s (median of {', '.join(f'{a:.2f}' for a in alone_runs)})"
              f"; the same workload in the cell, followed: {in_cell:.2f} s")
        ratio = followed / alone_s
        print(f"(c) follower-done / workload-alone: {ratio:.2f}x   target <= 3x  {'OK' if ratio <= 3 else 'MISSED'}")
        seed_rate = seed_n / seed_s
        print(f"(d) seed GetSubProcessStream: {seed_n:,} lines in {seed_s:.2f} s = {seed_rate:,.0f} lines/s"
              f"   target >= 10,000  {'OK' if seed_rate >= 10_000 else 'MISSED'}")
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
