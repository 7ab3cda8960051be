"""Cost of forwarding (agent.forward): calls straight to an upstream vs the same calls through a relay.

    .venv/bin/python bench/forward.py [--calls N] [--stream M]

One process, one event loop: an upstream grpc.aio server on a Unix socket answers raw bytes for
``cellar.v1.Cells/Info`` (unary, echo) and ``cellar.v1.Logs/Read`` (server streaming, M messages of
100 bytes); a second server runs only the Forwarder for those services, pointing at the first. The
client measures N sequential unary calls and one M-message stream, direct and relayed, side by side,
and prints both rates and the ratio (relayed / direct). Runs as any user; nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

import proto.cellar.v1.cells_pb2  # noqa: E402,F401 (descriptors for the relay)
import proto.cellar.v1.logs_pb2  # noqa: E402,F401
from agent.config import FrontConfig  # noqa: E402
from agent.forward import Forwarder, Upstream  # noqa: E402


async def main(calls: int, stream: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cellar-bench-fw-", dir="/tmp") as tmp:
        up_sock, front_sock = os.path.join(tmp, "up.sock"), os.path.join(tmp, "front.sock")

        async def info(req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
            return req

        async def read(req: bytes, ctx: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
            chunk = b"x" * 100
            for _ in range(stream):
                yield chunk

        upstream = grpc.aio.server()
        upstream.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("cellar.v1.Cells", {"Info": grpc.unary_unary_rpc_method_handler(info)}),
            grpc.method_handlers_generic_handler("cellar.v1.Logs", {"Read": grpc.unary_stream_rpc_method_handler(read)}),
        ))
        upstream.add_insecure_port("unix:" + up_sock)
        await upstream.start()
        relays = [Upstream(name, FrontConfig(upstream="unix:" + up_sock)) for name in ("cellar.v1.Cells", "cellar.v1.Logs")]
        front = grpc.aio.server()
        for relay in relays:
            Forwarder(relay).add_to_server(front)
        front.add_insecure_port("unix:" + front_sock)
        await front.start()

        async def measure(sock: str) -> tuple[float, float]:
            async with grpc.aio.insecure_channel("unix:" + sock) as ch:
                unary = ch.unary_unary("/cellar.v1.Cells/Info")
                await unary(b"warm")
                t0 = time.perf_counter()
                for _ in range(calls):
                    await unary(b"ping")
                unary_rate = calls / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                n = 0
                async for _msg in ch.unary_stream("/cellar.v1.Logs/Read")(b""):
                    n += 1
                assert n == stream
                return unary_rate, stream / (time.perf_counter() - t0)

        try:
            direct = await measure(up_sock)
            relayed = await measure(front_sock)
        finally:
            await front.stop(0)
            for relay in relays:
                await relay.close()
            await upstream.stop(0)
    print(f"unary:     direct {direct[0]:9.0f} calls/s   relayed {relayed[0]:9.0f} calls/s   ratio {relayed[0] / direct[0]:.2f}")
    print(f"streaming: direct {direct[1]:9.0f} msgs/s    relayed {relayed[1]:9.0f} msgs/s    ratio {relayed[1] / direct[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stream", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.stream))
