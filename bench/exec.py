"""``cellar exec`` latency and throughput, beside nsenter + a cgroup join and a local ``cat`` pipe.

    .venv/bin/python bench/exec.py [--runs 100] [--mib 256] [--quick]

Starts its own cellard (bench/_cellard.py) with one process- and network-isolated cell running a
sleeper, and measures as a client does, in the same run, runs interleaved:

- exec over gRPC (cellar.v1.Sessions/Exec on the Unix socket, one channel): ``/bin/true``: time to the
  first frame (``started``: the process exec'd in its leaf and namespaces) and to the ``exit`` frame;
  ``/bin/echo x``: time to the first stdout byte;
- the ``cellar exec CELL -- /bin/true`` CLI, wall time (a Python start included);
- baseline: ``sh`` joins a cgroup leaf of the cell (``echo $$ > cgroup.procs`` in every hierarchy),
  then ``nsenter -t <sleeper> -p -n -m`` (the same namespaces), ``/bin/true`` (total) or ``/bin/echo x``
  (first byte), spawned and waited from here;
- throughput: ``--mib`` MiB from /dev/zero through ``cellar exec -i CELL -- cat`` to a counter,
  beside ``head | cat | wc -c`` locally.

Prints p50/p99 and the ratios against the baseline. Run as root; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from bench._cellard import REPO, Cellard, interrupt_on_sigterm  # noqa: E402
from cells.cgroup import detect  # noqa: E402
from proto.aurae import runtime_pb2, runtime_pb2_grpc  # noqa: E402
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, exec_pb2, exec_pb2_grpc  # noqa: E402

CELL = "bench"
CLI = [str(REPO / ".venv" / "bin" / "cellar")] if (REPO / ".venv" / "bin" / "cellar").exists() else \
    [sys.executable, "-m", "agent.cli"]


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def grpc_exec(stub: exec_pb2_grpc.SessionsStub, argv: list[str]) -> tuple[float, float, float]:
    """(ms to the first frame, ms to the first stdout byte (0: none), ms to the exit frame)."""
    pending: queue.Queue[exec_pb2.ExecRequest | None] = queue.Queue()
    pending.put(exec_pb2.ExecRequest(start=exec_pb2.ExecStart(cell_name=CELL, argv=argv)))

    def requests() -> Iterator[exec_pb2.ExecRequest]:
        while (item := pending.get()) is not None:
            yield item

    t0 = time.perf_counter()
    first = byte = 0.0
    call = stub.Exec(requests(), timeout=60)
    try:
        for response in call:
            now = (time.perf_counter() - t0) * 1000
            first = first or now
            if response.stdout and not byte:
                byte = now
            if response.HasField("exit"):
                assert response.exit.exit_code == 0, response
                return first, byte, now
    finally:
        pending.put(None)
        call.cancel()
    raise SystemExit("the exec stream ended without an exit frame")


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(ms to the first stdout byte (0: none), ms to the exit) of a process spawned and waited from here."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    data = proc.stdout.read(1)
    byte = (time.perf_counter() - t0) * 1000 if data else 0.0
    proc.stdout.read()
    assert proc.wait() == 0, argv
    return byte, (time.perf_counter() - t0) * 1000


def baseline(procs_files: list[str], target: int, argv: list[str]) -> list[str]:
    joins = "; ".join(f"echo $$ > {p}" for p in procs_files)
    return ["/bin/sh", "-c", f"{joins}; exec nsenter -t {target} -p -n -m -- {' '.join(argv)}"]


def row(label: str, values: list[float]) -> None:
    print(f"  {label:52s} p50 {pct(values, 50):8.2f}  p99 {pct(values, 99):8.2f}  ms")


def throughput(label: str, command: str, mib: int, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, env=env,
                         check=True).stdout
    elapsed = time.perf_counter() - t0
    assert int(out.split()[0]) == mib << 20, out
    rate = mib / elapsed
    print(f"  {label:52s} {rate:8.1f} MiB/s  ({mib} MiB in {elapsed:.2f} s)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="20 runs, 64 MiB")
    args = parser.parse_args()
    runs, mib = (20, 64) if args.quick else (args.runs, args.mib)
    interrupt_on_sigterm()
    daemon = Cellard()
    try:
        daemon.start()
        channel = grpc.insecure_channel("unix:" + daemon.socket)
        runtime_pb2_grpc.CellServiceStub(channel).Allocate(runtime_pb2.AllocateCellRequest(
            cell=runtime_pb2.Cell(name=CELL, isolate_process=True, isolate_network=True)), timeout=60)
        runtime_pb2_grpc.CellServiceStub(channel).Start(runtime_pb2.StartCellRequest(
            executable=runtime_pb2.Executable(cell_name=CELL, name="sleeper", argv=["sleep", "3600"])), timeout=60)
        info = cells_pb2_grpc.CellsStub(channel).Inspect(cells_pb2.InspectCellRequest(cell_name=CELL), timeout=60)
        sleeper = info.executables[0].host_pid
        backend = detect(daemon.token)
        backend.create(f"{CELL}/_bench")
        procs = backend.procs_files(f"{CELL}/_bench")
        stub = exec_pb2_grpc.SessionsStub(channel)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CELLAR_CONFIG", None)
        cli = [*CLI, "--addr", daemon.socket, "exec", CELL, "--"]
        series: dict[str, list[float]] = {k: [] for k in (
            "first", "exit", "echo_byte", "cli", "cli_start", "base_true", "base_byte")}
        grpc_exec(stub, ["/bin/true"])  # warm: channel, profiles
        steps: list[Callable[[], None]] = [
            lambda: _add(series, ("first", "_", "exit"), grpc_exec(stub, ["/bin/true"])),
            lambda: series["echo_byte"].append(grpc_exec(stub, ["/bin/echo", "x"])[1]),
            lambda: series["cli"].append(timed_process([*cli, "/bin/true"], env)[1]),
            lambda: series["cli_start"].append(timed_process([*CLI, "--help"], env)[1]),
            lambda: series["base_true"].append(timed_process(baseline(procs, sleeper, ["/bin/true"]))[1]),
            lambda: series["base_byte"].append(timed_process(baseline(procs, sleeper, ["/bin/echo", "x"]))[0]),
        ]
        for i in range(runs):
            for step in steps[i % len(steps):] + steps[:i % len(steps)]:  # rotating order: the same load
                step()
        print(f"cellar exec into an isolated cell, {runs} runs each, interleaved (cgroups: {backend.mode})")
        row("gRPC Exec /bin/true: first frame (started)", series["first"])
        row("gRPC Exec /bin/true: exit frame (total)", series["exit"])
        row("gRPC Exec /bin/echo x: first stdout byte", series["echo_byte"])
        row("`cellar exec CELL -- /bin/true` CLI wall time", series["cli"])
        row("(`cellar --help`: the CLI's own start)", series["cli_start"])
        row("baseline sh+cgroup join+nsenter -pnm /bin/true", series["base_true"])
        row("baseline ... /bin/echo x: first stdout byte", series["base_byte"])
        ratio = pct(series["exit"], 50) / pct(series["base_true"], 50)
        ratio_byte = pct(series["echo_byte"], 50) / pct(series["base_byte"], 50)
        print(f"  ratio p50 vs baseline: Exec total {ratio:.2f}x, first byte {ratio_byte:.2f}x, "
              f"CLI {pct(series['cli'], 50) / pct(series['base_true'], 50):.2f}x")
        print("throughput, stdin -> cat -> stdout")
        quoted = " ".join(shlex.quote(a) for a in [*CLI, "--addr", daemon.socket, "exec", "-i", CELL, "--", "cat"])
        local = throughput("local: head | cat | wc -c", f"head -c {mib << 20} /dev/zero | cat | wc -c", mib, env)
        remote = throughput("cellar exec -i CELL -- cat", f"head -c {mib << 20} /dev/zero | {quoted} | wc -c", mib, env)
        print(f"  ratio: exec {remote / local:.3f}x of the local pipe")
        backend.remove(f"{CELL}/_bench")
        channel.close()
    finally:
        daemon.close()
    return 0


def _add(series: dict[str, list[float]], keys: tuple[str, str, str], values: tuple[float, float, float]) -> None:
    for key, value in zip(keys, values, strict=True):
        if key != "_":
            series[key].append(value)


if __name__ == "__main__":
    sys.exit(main())
