"""Start latency of /bin/true in an isolated cell through cellard, side by side with an `unshare` baseline.

    .venv/bin/python bench/start_latency.py [--runs 200] [--pause-ms 20] [--cycles 100] [--cells 500] [--quick]

Starts its own cellard (bench/_cellard.py: temp dir, unique cgroup root and netns prefix) and talks
to it as a client does: gRPC over cellard's Unix socket, through authorization and the servicers.

cellar: the client-observed runtime.CellService/Start (request -> reply with the pid, the process
already exec'd in its leaf cgroup and the cell's pid/net/uts/ipc/mount namespaces), and Start ->
"exited" event (cellar.v1.Cells/WatchEvents). For diagnosis, the same Start sent straight to the
supervisor's socket (no gRPC, no cellard) in a second cell: the difference is what cellard adds.
Baseline: ``sh`` joins a cgroup (every hierarchy cellar joins, one ``echo $$ > cgroup.procs`` each)
then execs ``unshare --fork --pid --mount-proc --net --uts --ipc /bin/true`` (fresh namespaces per
run, as a one-shot container would), spawn + wait.

Side by side: one run of each (gRPC, direct, baseline) in turn, the order rotating, with the same
pause after each, so all see the same load and the same kernel state. The pause matters: a
cgroup.procs write costs an RCU grace period (5-16 ms on these 2-vCPU machines) unless another
write happened within the last grace period, so runs back to back flatter whoever writes
cgroup.procs (the baseline; cellar's spawner writes none, see cells/_spawn.c). Both modes are printed.

Also: allocate+free cycles/s over gRPC (and direct), and with ``--cells`` idle non-isolated cells
the RSS of cellard and of the supervisor (KB per cell each) and the number of processes in those
cells' cgroups. A non-isolated cell must have no process of its own: any found makes the bench exit 1.
Run as root. cellard, the supervisor, every cell, cgroup and netns are removed at the end, also on
Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402
from cells.cgroup import detect  # noqa: E402
from cells.client import RuntimeClient  # noqa: E402
from cells.spec import CellSpec, ExecutableSpec  # noqa: E402
from proto.aurae import runtime_pb2, runtime_pb2_grpc  # noqa: E402
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc  # noqa: E402

RPC_TIMEOUT_S = 60.0
TRUE = ("/bin/true",)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> int:
    """Direct children of ``pid`` (forked by any of its threads)."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            count += len(Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return count


def cgroup_procs(path: str) -> int:
    """Processes in the unified cgroup ``path`` and every cgroup below it."""
    count = 0
    for dirpath, _dirs, _files in os.walk(path):
        with open(os.path.join(dirpath, "cgroup.procs")) as f:
            count += len(f.read().split())
    return count


def baseline_script(procs_files: list[str]) -> list[str]:
    joins = "; ".join(f"echo $$ > {p}" for p in procs_files)
    return ["/bin/sh", "-c", f"{joins}; exec unshare --fork --pid --mount-proc --net --uts --ipc /bin/true"]


def baseline_once(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    return (time.perf_counter() - t) * 1000


class Grpc:
    """cellard as a client sees it: runtime.CellService and cellar.v1.Cells over its Unix socket."""

    def __init__(self, socket: str) -> None:
        self.channel = grpc.aio.insecure_channel("unix:" + socket)
        self.runtime = runtime_pb2_grpc.CellServiceStub(self.channel)
        self.cells = cells_pb2_grpc.CellsStub(self.channel)

    async def allocate(self, name: str, isolated: bool) -> None:
        cell = runtime_pb2.Cell(name=name, isolate_process=isolated, isolate_network=isolated)
        await self.runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=cell), timeout=RPC_TIMEOUT_S)

    async def free(self, name: str, grace_ms: int | None = None) -> None:
        await self.runtime.Free(runtime_pb2.FreeCellRequest(cell_name=name, grace_period_ms=grace_ms),
                                timeout=RPC_TIMEOUT_S)

    async def start(self, cell: str, name: str, privileged: bool = False) -> None:
        exe = runtime_pb2.Executable(name=name, cell_name=cell, argv=TRUE, privileged=privileged)
        await self.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=RPC_TIMEOUT_S)

    async def events(self, prefix: str) -> AsyncIterator[tuple[str, str]]:
        call = self.cells.WatchEvents(cells_pb2.WatchEventsRequest(cell_prefix=prefix))
        try:
            async for ev in call:
                yield ev.kind, ev.executable.name
        finally:
            call.cancel()


class Direct:
    """The supervisor's own socket, bypassing gRPC, cellard and authorization (diagnosis only)."""

    def __init__(self, client: RuntimeClient) -> None:
        self.client = client

    async def allocate(self, name: str, isolated: bool) -> None:
        await self.client.allocate(CellSpec(name, isolate_process=isolated, isolate_network=isolated))

    async def free(self, name: str, grace_ms: int | None = None) -> None:
        await self.client.free(name, grace_s=None if grace_ms is None else grace_ms / 1000)

    async def start(self, cell: str, name: str, privileged: bool = False) -> None:
        await self.client.start(ExecutableSpec(cell, name, argv=TRUE, privileged=privileged))

    async def events(self, prefix: str) -> AsyncIterator[tuple[str, str]]:
        async for kind, info in self.client.events(prefix):
            yield kind, info.name


Api = Grpc | Direct


class Starter:
    """Start /bin/true in one cell (isolated by default) and wait for its "exited" event."""

    def __init__(self, api: Api, cell: str, isolated: bool = True, privileged: bool = False) -> None:
        self.api = api
        self.cell = cell
        self.isolated = isolated
        self.privileged = privileged
        self.count = 0

    async def __aenter__(self) -> Starter:
        await self.api.allocate(self.cell, isolated=self.isolated)
        self.events = self.api.events(self.cell).__aiter__()
        self.ready = asyncio.ensure_future(self.events.__anext__())
        # The watch has no first message: start until an "exited" event shows it is on (also warms up).
        for i in range(20):
            await self.api.start(self.cell, f"warm{i}")
            try:
                await self._exited(f"warm{i}", timeout=1.0)
                return self
            except TimeoutError:
                continue
        raise SystemExit(f"no 'exited' event for cell {self.cell} after 20 starts")

    async def __aexit__(self, *exc: object) -> None:
        self.ready.cancel()
        await self.api.free(self.cell, grace_ms=0)

    async def _exited(self, name: str, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait({self.ready}, timeout=left)
            if not done:
                raise TimeoutError
            kind, exe = self.ready.result()
            self.ready = asyncio.ensure_future(self.events.__anext__())
            if kind == "exited" and exe == name:
                return

    async def once(self) -> tuple[float, float]:
        """(Start reply ms, Start -> exited event ms)."""
        name = f"t{self.count}"
        self.count += 1
        t = time.perf_counter()
        await self.api.start(self.cell, name, self.privileged)
        start_ms = (time.perf_counter() - t) * 1000
        await self._exited(name)
        return start_ms, (time.perf_counter() - t) * 1000


Measured = dict[str, list[float]]


def empty() -> Measured:
    return {"grpc": [], "grpc_exit": [], "direct": [], "direct_exit": [], "base": []}


def steps(out: Measured, via_grpc: Starter, direct: Starter, base_argv: list[str]) -> list[Callable[[], Awaitable[None]]]:
    async def one_grpc() -> None:
        start_ms, exit_ms = await via_grpc.once()
        out["grpc"].append(start_ms)
        out["grpc_exit"].append(exit_ms)

    async def one_direct() -> None:
        start_ms, exit_ms = await direct.once()
        out["direct"].append(start_ms)
        out["direct_exit"].append(exit_ms)

    async def one_base() -> None:
        out["base"].append(baseline_once(base_argv))

    return [one_grpc, one_direct, one_base]


async def side_by_side(via_grpc: Starter, direct: Starter, base_argv: list[str], runs: int, pause_s: float) -> Measured:
    out = empty()
    order = steps(out, via_grpc, direct, base_argv)
    for i in range(runs):
        k = i % len(order)
        for step in order[k:] + order[:k]:
            await step()
            if pause_s:
                await asyncio.sleep(pause_s)
    return out


async def back_to_back(via_grpc: Starter, direct: Starter, base_argv: list[str], runs: int) -> Measured:
    """Each side alone, no pause (the baseline's cgroup.procs writes keep the RCU sync warm)."""
    out = empty()
    for step in steps(out, via_grpc, direct, base_argv):
        for _ in range(runs):
            await step()
    return out


def spawner(pid: int) -> str:
    """Which spawner the supervisor loaded: the C extension or the fork fallback."""
    with open(f"/proc/{pid}/maps") as f:
        return "C clone3 (cells._spawn)" if "_spawn." in f.read() else "Python fork (fallback)"


async def cycles(api: Api, n: int, isolated: bool) -> float:
    t = time.perf_counter()
    for i in range(n):
        name = f"cyc{i}"
        await api.allocate(name, isolated)
        await api.free(name)
    return n / (time.perf_counter() - t)


def start_timings(log_path: str, cell: str, names: range) -> list[dict[str, float]]:
    """The supervisor's ``start.timing`` events (cells/timing.py: microseconds per stage, measured
    with perf_counter_ns in the supervisor) of the successful Starts ``t<i>``, i in ``names``, of ``cell``."""
    wanted = {f"t{i}" for i in names}
    out = []
    with open(log_path, "rb") as f:
        for line in f:
            if b'"start.timing"' not in line:
                continue
            event = json.loads(line)
            if event.get("cell") == cell and event.get("exe") in wanted and event.get("ok"):
                out.append(event["us"])
    return out


def breakdown(label: str, m: Measured, grpc: list[dict[str, float]], direct: list[dict[str, float]]) -> None:
    """Where a client-observed Start's time goes, ms at p50 of each part (parts measured separately,
    so their sum is close to, not exactly, the p50 of the whole)."""
    if not grpc or not direct:
        print(f"  {label}: no start.timing events in the supervisor's log")
        return
    stages = list(grpc[0])
    inside = {k: statistics.median(t.get(k, 0.0) for t in grpc) / 1000 for k in stages}
    in_sup = statistics.median(sum(t.values()) for t in grpc) / 1000
    in_sup_direct = statistics.median(sum(t.values()) for t in direct) / 1000
    hop = pct(m["direct"], 50) - in_sup_direct
    rpc = pct(m["grpc"], 50) - pct(m["direct"], 50)
    print(f"  where a Start goes, {label} (ms, p50 of each part; supervisor stages from its perf_counter_ns marks):")
    print(f"    {'gRPC + auth + cellard (gRPC Start - direct Start)':56s}{rpc:7.2f}")
    print(f"    {'supervisor hop (direct Start - time inside supervisor)':56s}{hop:7.2f}")
    print(f"    {'inside the supervisor, request read -> reply sent':56s}{in_sup:7.2f}")
    for k in stages:
        print(f"      {k:54s}{inside[k]:7.2f}")
    print("    (a stage that wakes another process (the event to watchers in log_event_return, the reply in send)\n"
          "     also holds the time the supervisor then waits for a CPU: on a loaded host the client may be served first)")


def report(label: str, m: Measured) -> tuple[float, float]:
    def row(name: str, key: str) -> None:
        print(f"  {name:42s}{pct(m[key], 50):7.2f}  {pct(m[key], 99):7.2f}")

    def ratio(key: str) -> float:
        return pct(m[key], 50) / pct(m["base"], 50)

    print(f"{label}:")
    row("cellar Start over gRPC (reply)", "grpc")
    row("cellar Start over gRPC -> exited event", "grpc_exit")
    row("supervisor Start direct, no gRPC (reply)", "direct")
    row("supervisor Start direct -> exited event", "direct_exit")
    row("unshare -fpmui --net + cgroup join", "base")
    print(
        f"  ratio p50 vs unshare: gRPC Start {ratio('grpc'):.2f}x (-> exited {ratio('grpc_exit'):.2f}x),"
        f" direct Start {ratio('direct'):.2f}x (-> exited {ratio('direct_exit'):.2f}x);"
        f" means gRPC->exited {statistics.mean(m['grpc_exit']):.2f} vs unshare {statistics.mean(m['base']):.2f}"
    )
    return ratio("grpc"), pct(m["grpc"], 99)


async def containment(api: Api, runs: int, pause_s: float) -> bool:
    """Start of a contained executable (default profile: capabilities, no_new_privs, seccomp, cgroup
    namespace, the cell's mount view) vs a privileged one in the same cell, rotating, per cell kind.
    Target: the profile costs at most 0.5 ms at p50."""
    ok = True
    print(f"containment: /bin/true, {runs} runs per row, ms     p50      p99")
    for isolated in (False, True):
        kind = "isolated" if isolated else "plain"
        times: dict[bool, list[float]] = {False: [], True: []}
        # Two cells of one kind: each Starter waits for its own cell's events.
        async with Starter(api, f"prof-{kind}", isolated) as contained, Starter(
            api, f"priv-{kind}", isolated, privileged=True
        ) as privileged:
            for i in range(runs):
                for priv in ((False, True) if i % 2 else (True, False)):
                    times[priv].append((await (privileged if priv else contained).once())[0])
                    if pause_s:
                        await asyncio.sleep(pause_s)
        for priv, label in ((False, "default profile"), (True, "--privileged")):
            print(f"  {kind} cell, {label:34s}{pct(times[priv], 50):7.2f}  {pct(times[priv], 99):7.2f}")
        cost = pct(times[False], 50) - pct(times[True], 50)
        verdict = "OK" if cost <= 0.5 else "MISSED"
        ok = ok and cost <= 0.5
        print(f"  {kind} cell: the profile costs {cost:+.2f} ms at p50   target <= 0.5 ms  {verdict}")
    return ok


async def idle_cells(api: Grpc, cellard_pid: int, supervisor_pid: int, cells: int) -> int:
    """RSS of cellard and the supervisor with ``cells`` idle non-isolated cells, and the processes those
    cells have (must be none). Returns the number of processes found."""
    names = [f"idle{i}" for i in range(cells)]
    before = {"cellard": rss_kb(cellard_pid), "supervisor": rss_kb(supervisor_pid)}
    kids_before = children(cellard_pid) + children(supervisor_pid)
    try:
        for name in names:
            await api.allocate(name, isolated=False)
        after = {"cellard": rss_kb(cellard_pid), "supervisor": rss_kb(supervisor_pid)}
        kids = children(cellard_pid) + children(supervisor_pid) - kids_before
        listed = (await api.cells.List(cells_pb2.ListCellsRequest(), timeout=RPC_TIMEOUT_S)).cells
        wanted = set(names)
        idle = [c for c in listed if c.name in wanted]
        assert len(idle) == cells and not any(c.isolate_process or c.isolate_network for c in idle), idle[:3]
        procs = sum(cgroup_procs(c.cgroup_path) for c in idle)
        holders = sum(1 for c in idle if c.holder_pid)
    finally:
        for name in names:
            try:
                await api.free(name)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
    for proc, kb in before.items():
        print(f"{proc} RSS: {kb} KB empty, {after[proc]} KB with {cells} idle cells "
              f"-> {(after[proc] - kb) / cells:.1f} KB per cell")
    per_cell = (sum(after.values()) - sum(before.values())) / cells
    print(f"cellard + supervisor: {per_cell:.1f} KB per idle cell   target <= 100 KB  {'OK' if per_cell <= 100 else 'MISSED'}")
    found = procs + holders + max(kids, 0)
    print(f"processes of {cells} idle non-isolated cells: {procs} in their cgroups, {holders} namespace holders, "
          f"{kids:+d} children of cellard/supervisor   target 0  {'OK' if not found else 'FAILED'}")
    return found


async def run(args: argparse.Namespace, daemon: Cellard) -> int:
    api = Grpc(daemon.socket)
    try:
        direct = Direct(await RuntimeClient.connect(daemon.runtime_config(), start=False))
        supervisor_pid = (await direct.client.info())["supervisor_pid"]
        load = os.getloadavg()
        backend = detect(daemon.token)  # cellard's root: destroyed with it even if remove() is not reached
        backend.create("baseline")
        try:
            base_argv = baseline_script(backend.procs_files("baseline"))
            async with Starter(api, "bench") as via_grpc, Starter(direct, "direct") as via_direct:
                sbs = await side_by_side(via_grpc, via_direct, base_argv, args.runs, args.pause_ms / 1000)
                b2b = await back_to_back(via_grpc, via_direct, base_argv, args.runs)
        finally:
            backend.remove("baseline")
        log_path = daemon.runtime_config().supervisor_log
        first = via_grpc.count - 2 * args.runs  # the names of the measured runs: after the warm-up's
        sbs_names, b2b_names = range(first, first + args.runs), range(first + args.runs, first + 2 * args.runs)
        print(f"/bin/true, {args.runs} runs per row, ms                  p50      p99")
        ratio, p99 = report(f"side by side (rotating, {args.pause_ms:g} ms pause after each run)", sbs)
        breakdown("side by side", sbs, start_timings(log_path, "bench", sbs_names), start_timings(log_path, "direct", sbs_names))
        ratio_b2b, p99_b2b = report("back to back (each alone, no pause)", b2b)
        breakdown("back to back", b2b, start_timings(log_path, "bench", b2b_names), start_timings(log_path, "direct", b2b_names))
        print(
            f"targets for client-observed Start (p50 ratio <= 1.5, p99 < 20 ms): side by side {ratio:.2f}x / {p99:.1f} ms,"
            f" back to back {ratio_b2b:.2f}x / {p99_b2b:.1f} ms"
        )
        print(f"spawner: {spawner(supervisor_pid)}; cgroups: {backend.mode}; "
              f"load average before: {load[0]:.2f} {load[1]:.2f}")
        await containment(api, args.runs, args.pause_ms / 1000)
        plain, iso = await cycles(api, args.cycles, isolated=False), await cycles(api, args.cycles, isolated=True)
        d_plain, d_iso = await cycles(direct, args.cycles, isolated=False), await cycles(direct, args.cycles, isolated=True)
        print(f"allocate+free cycles/s over gRPC: plain {plain:.0f}, isolated (pid+mnt+uts+ipc+net) {iso:.0f}"
              f"  (supervisor direct: {d_plain:.0f}, {d_iso:.0f})")
        found = await idle_cells(api, daemon.pid, supervisor_pid, args.cells)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if found:
            print(f"FAILED: {found} processes belong to idle non-isolated cells (expected none)", file=sys.stderr)
            return 1
        return 0
    finally:
        await api.channel.close(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=20.0, help="side by side: pause after each run")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 runs, 20 cycles (--cells stays)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.cycles = min(args.runs, 30), min(args.cycles, 20)
    if os.geteuid() != 0:
        print("needs root (cgroups, namespaces)", file=sys.stderr)
        return 2
    interrupt_on_sigterm()
    daemon = Cellard()
    try:
        daemon.start()
        return asyncio.run(run(args, daemon))
    except KeyboardInterrupt:
        print("interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
