"""Start latency of /bin/true in an isolated cell, side by side with an `unshare` baseline.

    .venv/bin/python bench/start_latency.py [--runs 200] [--cells 500]

cellar: the client-observed Start RPC (request -> reply with the pid, the process already exec'd in
its leaf cgroup and the cell's pid/net/uts/ipc/mount namespaces), and Start -> "exited" event.
Baseline: ``sh`` joins a cgroup then execs ``unshare --fork --pid --mount-proc --net --uts --ipc
/bin/true`` (fresh namespaces per run, as a one-shot container would), spawn + wait.
Also: allocate+free cycles/s, and the supervisor's RSS per idle non-isolated cell.
Run as root. Everything lives under a unique cgroup root and netns prefix and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cells.cgroup import detect  # noqa: E402
from cells.client import RuntimeClient  # noqa: E402
from cells.config import RuntimeConfig  # noqa: E402
from cells.spec import CellSpec, ExecutableSpec  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def baseline(runs: int, procs_files: list[str], pause_s: float = 0.0) -> list[float]:
    """``pause_s``: a cgroup.procs write costs an RCU grace period (~7-16 ms on a 2-vCPU VM) unless
    another write happened within the last grace period, so back-to-back runs are flattered."""
    joins = "; ".join(f"echo $$ > {p}" for p in procs_files)
    script = f"{joins}; exec unshare --fork --pid --mount-proc --net --uts --ipc /bin/true"
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", script], check=True)
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(pause_s)
    return out


async def cellar(client: RuntimeClient, runs: int) -> tuple[list[float], list[float]]:
    await client.allocate(CellSpec("bench", isolate_process=True, isolate_network=True))
    start_ms: list[float] = []
    exit_ms: list[float] = []
    events = client.events("bench")
    it = events.__aiter__()
    ready = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.1)
    for i in range(runs):
        name = f"t{i}"
        t = time.perf_counter()
        await client.start(ExecutableSpec("bench", name, argv=("/bin/true",)))
        start_ms.append((time.perf_counter() - t) * 1000)
        while True:
            kind, info = await ready
            ready = asyncio.ensure_future(it.__anext__())
            if kind == "exited" and info.name == name:
                break
        exit_ms.append((time.perf_counter() - t) * 1000)
    ready.cancel()
    await client.free("bench", grace_s=0)
    return start_ms, exit_ms


async def cycles(client: RuntimeClient, n: int, isolated: bool) -> float:
    t = time.perf_counter()
    for i in range(n):
        name = f"cyc{i}"
        await client.allocate(CellSpec(name, isolate_process=isolated, isolate_network=isolated))
        await client.free(name)
    return n / (time.perf_counter() - t)


async def idle_rss(client: RuntimeClient, cells: int) -> tuple[int, int]:
    pid = (await client.info())["supervisor_pid"]
    before = rss_kb(pid)
    for i in range(cells):
        await client.allocate(CellSpec(f"idle{i}"))
    after = rss_kb(pid)
    for i in range(cells):
        await client.free(f"idle{i}")
    return before, after


async def main(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex
    tmp = tempfile.mkdtemp(prefix="cellar-bench-")
    config = RuntimeConfig(
        state_dir=f"{tmp}/state",
        log_dir=f"{tmp}/logs",
        run_dir=f"{tmp}/run",
        cgroup_root_name=f"cellar-bench-{tag[:8]}",
        netns_prefix=f"cellar-b{tag[8:14]}-",
    )
    client = await RuntimeClient.connect(config)
    try:
        backend = detect(config.cgroup_root_name)
        backend.create("baseline")
        try:
            base = baseline(args.runs, backend.procs_files("baseline"))
            paced = baseline(args.runs, backend.procs_files("baseline"), pause_s=0.02)
        finally:
            backend.remove("baseline")
        start_ms, exit_ms = await cellar(client, args.runs)
        print(f"/bin/true, {args.runs} runs, ms        p50      p99")
        print(f"cellar Start (reply)              {pct(start_ms, 50):7.2f}  {pct(start_ms, 99):7.2f}")
        print(f"cellar Start -> exited event      {pct(exit_ms, 50):7.2f}  {pct(exit_ms, 99):7.2f}")
        print(
            f"unshare -fpmui --net + cgroup     {pct(base, 50):7.2f}  {pct(base, 99):7.2f}   (back to back)"
        )
        print(f"  same, 20 ms apart               {pct(paced, 50):7.2f}  {pct(paced, 99):7.2f}")
        for label, ref in (("back to back", base), ("20 ms apart", paced)):
            print(
                f"ratio cellar/baseline p50 ({label}): start {pct(start_ms, 50) / pct(ref, 50):.2f}x,"
                f" start->exit {pct(exit_ms, 50) / pct(ref, 50):.2f}x"
                f" (means {statistics.mean(exit_ms):.2f} vs {statistics.mean(ref):.2f})"
            )
        plain = await cycles(client, args.cycles, isolated=False)
        iso = await cycles(client, args.cycles, isolated=True)
        print(f"allocate+free cycles/s: plain {plain:.0f}, isolated (pid+mnt+uts+ipc+net) {iso:.0f}")
        before, after = await idle_rss(client, args.cells)
        print(
            f"supervisor RSS: {before} KB empty, {after} KB with {args.cells} idle cells "
            f"-> {(after - before) / args.cells:.1f} KB per cell"
        )
    finally:
        await client.shutdown_supervisor(kill_workloads=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--cells", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
