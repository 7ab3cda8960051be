"""CPU per accepted connection of the mTLS front's silent phase: native thread vs the event loop.

    .venv/bin/python bench/tls_accept.py [--connections 19000] [--per-address 256]

A flood's first burst must be accepted before the kernel's accept queue (4,096) holds SYNs again
(agent.auth.tlsfront). This runs :class:`agent.auth.tlsfront.TlsFront` in this process, once with
the native silent phase (agent/auth/_front.c) and once with the event-loop one, against a flooder
process opening ``--connections`` idle connections from 127.0.0.1 (all but ``--per-address`` of them
displaced), and prints the CPU time this process spent per accepted connection, the wall time to
accept them all, and the native/event-loop ratio. Loopback only; the host's load average is printed
beside the figures (other work on a shared host moves them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.auth import tlsfront  # noqa: E402

FLOODER = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, count = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
print("opened", flush=True)
sys.stdin.read()
"""


def accepted(front: tlsfront.TlsFront) -> int:
    if front._pool is not None:
        return int(front._pool.stats()["accepted"])
    return front.admission.displaced + front.admission.open


async def run(native: bool, count: int, per_address: int) -> tuple[float, float]:
    """(CPU seconds of this process per connection, wall seconds until all were accepted)."""
    with tempfile.TemporaryDirectory(prefix="tls-accept-") as internal:
        front = tlsfront.TlsFront("127.0.0.1:0", internal, per_address, 100_000, 60.0, native=native)
        await front.start(own_thread=True)
        port = int(front.address.rsplit(":", 1)[1])
        cpu0, wall0 = sum(os.times()[:2]), time.monotonic()
        flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(port), str(count)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while accepted(front) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu, wall = sum(os.times()[:2]) - cpu0, time.monotonic() - wall0
            done = accepted(front)
        finally:
            assert flooder.stdin is not None
            flooder.stdin.close()
            flooder.wait()
            await front.close()
    if done < count:
        print(f"  ({'native' if native else 'event loop'}: only {done} of {count} accepted in 120 s)")
    return cpu / max(done, 1), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=19000, help="idle connections (max 19000)")
    parser.add_argument("--per-address", type=int, default=256, help="max_tcp_connections_per_address")
    args = parser.parse_args()
    count = min(args.connections, 19000)
    if tlsfront._c_front is None:
        sys.exit("agent.auth._front is not built: .venv/bin/python setup.py -q build_ext --inplace")
    print(f"{count} idle connections from one address, per-address cap {args.per_address}; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {}
    for native in (False, True):
        per_conn, wall = asyncio.run(run(native, count, args.per_address))
        results[native] = per_conn
        print(f"  {'native thread' if native else 'event loop':14s} {per_conn * 1e6:7.1f} us CPU per connection, "
              f"all accepted after {wall:5.2f} s")
    print(f"  native/event loop: {results[True] / results[False]:.2f} of the CPU per connection; "
          f"load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
