"""Cold start of the supervisor: through its keeper (as cellard starts it) against the supervisor alone.

    .venv/bin/python bench/supervisor_start.py [--runs 20]

Each run: fresh state/run/log directories and cgroup root, then the time from the start request to
the first answered ping. "keeper": ``RuntimeClient.connect`` (cells.keeper, which starts
cells.supervisor); "direct": ``python -m cells.supervisor`` started the way the client did before the
keeper, polled the same way. The two alternate, so both see the same load. Also printed: the RSS of
the keeper and of the supervisor. Run as root; everything is stopped and removed after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def config(directory: str) -> RuntimeConfig:
    tag = uuid.uuid4().hex
    return RuntimeConfig(
        state_dir=os.path.join(directory, "state"),
        log_dir=os.path.join(directory, "logs"),
        run_dir=os.path.join(directory, "run"),
        cgroup_root_name=f"cellar-bench-{tag[:8]}",
        netns_prefix=f"cb{tag[8:14]}-",
    )


async def via_keeper(cfg: RuntimeConfig) -> tuple[float, int, int]:
    t = time.perf_counter()
    client = await RuntimeClient.connect(cfg)
    elapsed = time.perf_counter() - t
    info = await client.info()
    sizes = rss_kb(info["keeper_pid"]), rss_kb(info["supervisor_pid"])
    await client.shutdown_supervisor(kill_workloads=True)
    if client.process is not None:
        client.process.wait(10)
    return elapsed, *sizes


async def direct(cfg: RuntimeConfig) -> float:
    env = {**os.environ, "PYTHONPATH": REPO}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cells.supervisor", "--config-json", cfg.to_json()],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd="/", env=env,
    )
    client = RuntimeClient(cfg)
    while not await client._answers():
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t
    await client.shutdown_supervisor(kill_workloads=True)
    proc.wait(10)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    keeper_s: list[float] = []
    direct_s: list[float] = []
    keeper_rss: list[int] = []
    sup_rss: list[int] = []
    for i in range(args.runs * 2):
        directory = tempfile.mkdtemp(prefix="cellar-bench-")
        cfg = config(directory)
        try:
            if i % 2 == 0:
                elapsed, k, s = asyncio.run(via_keeper(cfg))
                keeper_s.append(elapsed)
                keeper_rss.append(k)
                sup_rss.append(s)
            else:
                direct_s.append(asyncio.run(direct(cfg)))
        finally:
            detect(cfg.cgroup_root_name).remove_root()
            shutil.rmtree(directory, ignore_errors=True)

    def show(name: str, values: list[float]) -> None:
        ordered = sorted(values)
        print(f"{name:28s} p50 {statistics.median(values) * 1000:7.1f} ms   "
              f"max {ordered[-1] * 1000:7.1f} ms   (n={len(values)})")

    show("cold start, keeper", keeper_s)
    show("cold start, supervisor alone", direct_s)
    print(f"ratio p50 keeper/alone        {statistics.median(keeper_s) / statistics.median(direct_s):.3f}")
    print(f"RSS keeper                    {statistics.median(keeper_rss) / 1024:.1f} MiB")
    print(f"RSS supervisor (idle, empty)  {statistics.median(sup_rss) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
