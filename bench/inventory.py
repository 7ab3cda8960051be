"""Inventory collection vs ``ss -ltnu`` + ``ip -j addr``, side by side, with many listening sockets.

    .venv/bin/python bench/inventory.py [--sockets 5000] [--repeat 7]

Creates its own netns ``cellar-bench-<hex>`` (lo up, a veth pair inside it with IPv4 + IPv6
addresses), a helper process in it holding ``--sockets`` listeners (half TCP, half UDP; at most
20,000), then times, median of ``--repeat``:
- cellar: ``observe.inventory.Collector.collect([netns])`` — host netns + the bench netns, links,
  addresses, listeners, and attribution (process names via /proc; cached after the first run, the
  steady state of the reporter; the first, cold run is printed too);
- baseline: ``ss -N <netns> -ltnu`` and ``ip -n <netns> -j addr`` run as processes, as an operator
  would (no attribution). Ratio = cellar / baseline; target <= 1.
Everything is removed at the end, also on failure. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from observe.inventory import Collector  # noqa: E402

MAX_SOCKETS = 20_000

HELPER = r"""
import resource, socket, sys
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
held = []
for i in range(n):
    fam, ip = (socket.AF_INET, "10.88.0.1") if i % 4 < 2 else (socket.AF_INET6, "fd88::1")
    if i % 8 == 0:
        ip = "0.0.0.0" if fam == socket.AF_INET else "::"
    s = socket.socket(fam, socket.SOCK_STREAM if i % 2 == 0 else socket.SOCK_DGRAM)
    s.bind((ip, 0))
    if i % 2 == 0:
        s.listen()
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    n = min(args.sockets, MAX_SOCKETS)
    name = f"cellar-bench-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    helper = None
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "add", "ba", "type", "veth", "peer", "name", "bb")
        sh("ip", "-n", name, "addr", "add", "10.88.0.1/24", "dev", "ba")
        sh("ip", "-n", name, "addr", "add", "fd88::1/64", "dev", "ba", "nodad")
        sh("ip", "-n", name, "link", "set", "ba", "up")
        sh("ip", "-n", name, "link", "set", "bb", "up")
        helper = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", HELPER, str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert helper.stdout is not None and helper.stdout.readline().strip() == "ready"

        def baseline() -> None:
            subprocess.run(["ss", "-N", name, "-ltnu"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["ip", "-n", name, "-j", "addr"], check=True, stdout=subprocess.DEVNULL)

        async def measure() -> tuple[int, float, float, float]:
            """One event loop, as in cellard; runs alternate with the baseline so load hits both alike."""
            collector = Collector("bench")
            t = time.perf_counter()
            placed = (await collector.collect([name])).listener_count()
            cold = time.perf_counter() - t
            ours, base = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                await collector.collect([name])
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                baseline()
                base.append(time.perf_counter() - t)
            return placed, cold, statistics.median(ours), statistics.median(base)

        placed, cold, ours, base = asyncio.run(measure())
        out = subprocess.run(["ss", "-N", name, "-ltnuH"], check=True, capture_output=True, text=True).stdout
        print(json.dumps({"sockets": n, "ss_lines": len(out.splitlines()), "placed_ports": placed}))
        print(f"cellar collect (cold, first run)   {cold * 1000:8.1f} ms")
        print(f"cellar collect (steady, median)    {ours * 1000:8.1f} ms")
        print(f"ss -ltnu + ip -j addr (median)     {base * 1000:8.1f} ms")
        print(f"ratio cellar/baseline              {ours / base:8.2f}   (target <= 1)")
        print(f"ratio cold/baseline                {cold / base:8.2f}")
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


if __name__ == "__main__":
    main()
