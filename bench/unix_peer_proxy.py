"""Cost of the SO_PEERCRED accept-proxy (agent.auth.unixpeer) on the Unix socket, side by side with grpc direct.

    .venv/bin/python bench/unix_peer_proxy.py [--calls 2000] [--messages 100000] [--big 2000]

One process serves a grpc.aio server on an internal socket plus the proxy on a public socket, as
cellard does; the client is a separate process (sync grpc) and runs each case against the direct
socket (baseline) and through the proxy. Prints absolute figures and proxy/direct ratios for:
unary round trips, a server stream of small (100 B) messages, and a stream of 64 KiB messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import grpc  # noqa: E402

from agent.auth.unixpeer import UnixPeerProxy  # noqa: E402

CLIENT = r"""
import json, sys, time, grpc
target, calls, messages, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ch = grpc.insecure_channel(target)
unary = ch.unary_unary("/b.B/Echo")
stream = ch.unary_stream("/b.B/Stream")
unary(b"x")
t = time.perf_counter()
for _ in range(calls):
    unary(b"x")
rtt = (time.perf_counter() - t) / calls
t = time.perf_counter()
n = sum(1 for _ in stream(json.dumps([messages, 100]).encode()))
small = n / (time.perf_counter() - t)
t = time.perf_counter()
n = sum(1 for _ in stream(json.dumps([big, 65536]).encode()))
mbps = n * 65536 / (time.perf_counter() - t) / 1e6
print(json.dumps({"unary_rtt_us": rtt * 1e6, "small_msgs_per_s": small, "big_MB_per_s": mbps}))
"""


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    count, size = json.loads(request)
    payload = b"x" * size
    for _ in range(count):
        yield payload


def run_client(target: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, target, str(args.calls), str(args.messages), str(args.big)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def main(args: argparse.Namespace) -> None:
    base = tempfile.mkdtemp(prefix="cellar-bench-")
    internal = os.path.join(base, "internal")
    UnixPeerProxy.prepare_internal_dir(internal)
    server = grpc.aio.server()
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("b.B", handlers),))
    proxy = UnixPeerProxy(os.path.join(base, "public.sock"), internal, 0o600, os.getgid())
    server.add_insecure_port("unix:" + proxy.internal_socket)
    await server.start()
    await proxy.start(own_thread=args.thread)
    results = {}
    for name, target in (("direct", "unix:" + proxy.internal_socket), ("proxy", "unix:" + proxy.public_path)):
        results[name] = await asyncio.to_thread(run_client, target, args)
    await proxy.close()
    await server.stop(0)
    d, p = results["direct"], results["proxy"]
    print(f"{'metric':<20}{'direct':>12}{'proxy':>12}{'proxy/direct':>14}")
    for key in d:
        print(f"{key:<20}{d[key]:>12.1f}{p[key]:>12.1f}{p[key] / d[key]:>14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--thread", action="store_true", help="run the proxy on its own event-loop thread")
    started = time.monotonic()
    asyncio.run(main(parser.parse_args()))
    print(f"({time.monotonic() - started:.1f} s)")
