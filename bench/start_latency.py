"""Start latency of /bin/true in an isolated cell, side by side with an `unshare` baseline.

    .venv/bin/python bench/start_latency.py [--runs 200] [--pause-ms 20] [--cells 500]

cellar: the client-observed Start RPC (request -> reply with the pid, the process already exec'd in
its leaf cgroup and the cell's pid/net/uts/ipc/mount namespaces), and Start -> "exited" event.
Baseline: ``sh`` joins a cgroup (every hierarchy cellar joins, one ``echo $$ > cgroup.procs`` each)
then execs ``unshare --fork --pid --mount-proc --net --uts --ipc /bin/true`` (fresh namespaces per
run, as a one-shot container would), spawn + wait.

Side by side: one cellar run and one baseline run alternate (who goes first alternates too), with
the same pause after each, so both see the same load and the same kernel state. The pause matters:
a cgroup.procs write costs an RCU grace period (5-16 ms on these 2-vCPU machines) unless another
write happened within the last grace period, so runs back to back flatter whoever writes
cgroup.procs (the baseline; cellar's spawner writes none, see cells/_spawn.c). Both modes are printed.
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


def baseline_script(procs_files: list[str]) -> list[str]:
    joins = "; ".join(f"echo $$ > {p}" for p in procs_files)
    return ["/bin/sh", "-c", f"{joins}; exec unshare --fork --pid --mount-proc --net --uts --ipc /bin/true"]


def baseline_once(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    return (time.perf_counter() - t) * 1000


class Cellar:
    """Start /bin/true in one isolated cell and wait for its "exited" event."""

    def __init__(self, client: RuntimeClient) -> None:
        self.client = client
        self.count = 0

    async def __aenter__(self) -> Cellar:
        await self.client.allocate(CellSpec("bench", isolate_process=True, isolate_network=True))
        self.events = self.client.events("bench").__aiter__()
        self.ready = asyncio.ensure_future(self.events.__anext__())
        await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ready.cancel()
        await self.client.free("bench", grace_s=0)

    async def once(self) -> tuple[float, float]:
        """(Start reply ms, Start -> exited event ms)."""
        name = f"t{self.count}"
        self.count += 1
        t = time.perf_counter()
        await self.client.start(ExecutableSpec("bench", name, argv=("/bin/true",)))
        start_ms = (time.perf_counter() - t) * 1000
        while True:
            kind, info = await self.ready
            self.ready = asyncio.ensure_future(self.events.__anext__())
            if kind == "exited" and info.name == name:
                return start_ms, (time.perf_counter() - t) * 1000


async def side_by_side(
    cellar: Cellar, base_argv: list[str], runs: int, pause_s: float
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start": [], "exit": [], "base": []}

    async def one_cellar() -> None:
        start_ms, exit_ms = await cellar.once()
        out["start"].append(start_ms)
        out["exit"].append(exit_ms)

    async def one_base() -> None:
        out["base"].append(baseline_once(base_argv))

    for i in range(runs):
        for step in (one_cellar, one_base) if i % 2 == 0 else (one_base, one_cellar):
            await step()
            if pause_s:
                await asyncio.sleep(pause_s)
    return out


async def back_to_back(cellar: Cellar, base_argv: list[str], runs: int) -> dict[str, list[float]]:
    """Each side alone, no pause (the baseline's cgroup.procs writes keep the RCU sync warm)."""
    out: dict[str, list[float]] = {"start": [], "exit": [], "base": []}
    for _ in range(runs):
        start_ms, exit_ms = await cellar.once()
        out["start"].append(start_ms)
        out["exit"].append(exit_ms)
    for _ in range(runs):
        out["base"].append(baseline_once(base_argv))
    return out


def spawner(pid: int) -> str:
    """Which spawner the supervisor loaded: the C extension or the fork fallback."""
    with open(f"/proc/{pid}/maps") as f:
        return "C clone3 (cells._spawn)" if "_spawn." in f.read() else "Python fork (fallback)"


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


def report(label: str, m: dict[str, list[float]]) -> tuple[float, float]:
    print(f"{label}:")
    print(f"  cellar Start (reply)                {pct(m['start'], 50):7.2f}  {pct(m['start'], 99):7.2f}")
    print(f"  cellar Start -> exited event        {pct(m['exit'], 50):7.2f}  {pct(m['exit'], 99):7.2f}")
    print(f"  unshare -fpmui --net + cgroup join  {pct(m['base'], 50):7.2f}  {pct(m['base'], 99):7.2f}")
    ratio = pct(m["start"], 50) / pct(m["base"], 50)
    print(
        f"  ratio p50 cellar/unshare: Start {ratio:.2f}x, Start->exited {pct(m['exit'], 50) / pct(m['base'], 50):.2f}x"
        f" (means {statistics.mean(m['exit']):.2f} vs {statistics.mean(m['base']):.2f})"
    )
    return ratio, pct(m["start"], 99)


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
        load = os.getloadavg()
        backend = detect(config.cgroup_root_name)
        backend.create("baseline")
        try:
            base_argv = baseline_script(backend.procs_files("baseline"))
            async with Cellar(client) as cellar:
                sbs = await side_by_side(cellar, base_argv, args.runs, args.pause_ms / 1000)
                b2b = await back_to_back(cellar, base_argv, args.runs)
        finally:
            backend.remove("baseline")
        pid = (await client.info())["supervisor_pid"]
        print(f"/bin/true, {args.runs} runs per row, ms          p50      p99")
        ratio, p99 = report(f"side by side (alternating, {args.pause_ms:g} ms pause after each run)", sbs)
        ratio_b2b, p99_b2b = report("back to back (each side alone, no pause)", b2b)
        print(
            f"targets (p50 ratio <= 1.5, p99 < 20 ms): side by side {ratio:.2f}x / {p99:.1f} ms,"
            f" back to back {ratio_b2b:.2f}x / {p99_b2b:.1f} ms"
        )
        print(
            f"spawner: {spawner(pid)}; cgroups: {backend.mode}; load average before: {load[0]:.2f} {load[1]:.2f}"
        )
        plain = await cycles(client, args.cycles, isolated=False)
        iso = await cycles(client, args.cycles, isolated=True)
        print(f"allocate+free cycles/s: plain {plain:.0f}, isolated (pid+mnt+uts+ipc+net) {iso:.0f}")
        before, after = await idle_rss(client, args.cells)
        print(
            f"supervisor RSS: {before} KB empty, {after} KB with {args.cells} idle cells "
            f"-> {(after - before) / args.cells:.1f} KB per cell"
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        await client.shutdown_supervisor(kill_workloads=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=20.0, help="side by side: pause after each run")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--cells", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
