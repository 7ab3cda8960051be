"""Crash -> restarted and running, under a restart policy, side by side with a shell respawn loop.

    .venv/bin/python bench/restart.py [--crashes 200] [--rounds 2]

cellar: one executable started through cellard (runtime.CellService/Start, ``restart`` = always,
delay 0, start limit off) in a non-isolated cell; every run writes a CLOCK_MONOTONIC stamp when it
starts and another just before it exits 1, so the supervisor records the exit, saves the state,
emits the events and spawns the next run (a new log run, a new leaf cgroup, contained as any
workload). Baseline: ``sh -c 'while :; do prog; done'`` (bounded to the same number of runs), the same
program timed the same way: fork + exec by a shell, no cgroup, no containment, no log.

The figure: next run's start stamp minus this run's exit stamp, per crash; p50 and p99 over
``--crashes`` crashes of each, ``--rounds`` rounds alternating cellar and the baseline, and their
ratio. ``prog`` is a few lines of C compiled here (a shell or Python would add its own start-up to
both sides and blur the ratio). Run as root; cellard, its supervisor and its cgroups are removed at
the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402
from proto.aurae import runtime_pb2, runtime_pb2_grpc  # noqa: E402
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, types_pb2  # noqa: E402

PROG_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static void stamp(int fd, char what) {
    struct timespec ts; char line[48];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(line, sizeof line, "%c %lld\n", what, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    if (write(fd, line, n) != n) _exit(3);
}
int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    stamp(fd, 'S');
    stamp(fd, 'E');
    return 1;
}
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def gaps_ms(path: Path) -> list[float]:
    """Exit stamp of each run -> start stamp of the next, in ms."""
    stamps = [line.split() for line in path.read_text().splitlines() if line.strip()]
    gaps = []
    for (kind, t), (next_kind, next_t) in zip(stamps, stamps[1:], strict=False):
        if kind == "E" and next_kind == "S":
            gaps.append((int(next_t) - int(t)) / 1e6)
    return gaps


def baseline(prog: str, out: Path, crashes: int) -> list[float]:
    script = f'i=0; while [ $i -le {crashes} ]; do "$0" "$1"; i=$((i+1)); done'
    subprocess.run(["/bin/sh", "-c", script, prog, str(out)], check=True)
    return gaps_ms(out)


def cellar(runtime: runtime_pb2_grpc.CellServiceStub, cells: cells_pb2_grpc.CellsStub, cell: str, name: str,
           prog: str, out: Path, crashes: int) -> list[float]:
    policy = types_pb2.RestartPolicy(mode=types_pb2.RESTART_MODE_ALWAYS, delay_s=0, limit_interval_s=0)
    exe = runtime_pb2.Executable(cell_name=cell, name=name, argv=[prog, str(out)], restart=policy)
    runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=60)
    deadline = time.monotonic() + 60 + crashes * 0.5
    while True:
        text = out.read_text() if out.exists() else ""
        if text.count("S ") > crashes:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {text.count('S ')} runs of {crashes + 1} within the deadline")
        time.sleep(0.05)
    runtime.Stop(runtime_pb2.StopCellRequest(cell_name=cell, executable_name=name, grace_period_ms=0), timeout=60)
    (info,) = [e for e in cells.Inspect(cells_pb2.InspectCellRequest(cell_name=cell), timeout=60).executables
               if e.name == name]
    if info.restarts < crashes:
        raise SystemExit(f"{info.restarts} restarts recorded, expected at least {crashes}")
    return gaps_ms(out)[:crashes]


def show(label: str, gaps: list[float]) -> None:
    print(f"  {label:<9} n={len(gaps):<4} p50 {pct(gaps, 50):7.2f} ms   p99 {pct(gaps, 99):7.2f} ms   "
          f"mean {statistics.fmean(gaps):7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    interrupt_on_sigterm()
    daemon = Cellard()
    work = Path(tempfile.mkdtemp(prefix="cellar-bench-restart-", dir="/tmp"))
    try:
        (work / "prog.c").write_text(PROG_C)
        prog = str(work / "prog")
        subprocess.run(["cc", "-O2", "-o", prog, str(work / "prog.c")], check=True)
        os.chmod(work, 0o755)
        daemon.start()
        channel = grpc.insecure_channel("unix:" + daemon.socket)
        runtime = runtime_pb2_grpc.CellServiceStub(channel)
        cells = cells_pb2_grpc.CellsStub(channel)
        runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="bench")), timeout=60)
        ours: list[float] = []
        base: list[float] = []
        for r in range(args.rounds):
            base += baseline(prog, work / f"base{r}.txt", args.crashes)
            ours += cellar(runtime, cells, "bench", f"crash{r}", prog, work / f"cellar{r}.txt", args.crashes)
        print(f"crash -> restarted process running, {args.crashes} crashes x {args.rounds} rounds "
              f"(restart always, delay 0, no start limit):")
        show("cellar", ours)
        show("sh loop", base)
        print(f"  ratio cellar/baseline: p50 {pct(ours, 50) / pct(base, 50):.1f}x   "
              f"p99 {pct(ours, 99) / pct(base, 99):.1f}x")
        runtime.Free(runtime_pb2.FreeCellRequest(cell_name="bench", grace_period_ms=0), timeout=60)
        channel.close()
    finally:
        daemon.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
