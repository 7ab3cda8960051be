"""The floor of a one-message-per-line stream in grpc-python on this machine, for (d) of log_throughput.

    .venv/bin/python bench/grpc_floor.py [--messages N]

A bare grpc.aio server (no TLS, no interceptors, no log store) yields N seed ``LogItem`` messages of
99 characters from memory to a sync client over loopback TCP, the shape of the seed
GetSubProcessStream. Prints one line: ``floor <messages/s>``. What cellard's seed stream does on top
(mTLS, authorization, metrics, reading the log) shows as the ratio against this, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from proto.aurae import observe_pb2, observe_pb2_grpc  # noqa: E402


class _Floor(observe_pb2_grpc.ObserveServicer):
    def __init__(self, messages: int) -> None:
        self.messages = messages

    async def GetSubProcessStream(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        line = "x" * 99
        for _ in range(self.messages):
            yield observe_pb2.LogItem(channel="stdout", line=line, timestamp=1)


def _serve(messages: int, port_out: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        server = grpc.aio.server()
        observe_pb2_grpc.add_ObserveServicer_to_server(_Floor(messages), server)
        port_out.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def floor(messages: int) -> float:
    """Messages/s of one stream of ``messages`` (the server runs in a spawned child: no fork of grpc)."""
    ctx = multiprocessing.get_context("spawn")
    port_q = ctx.SimpleQueue()
    server = ctx.Process(target=_serve, args=(messages, port_q), daemon=True)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port_q.get()}") as channel:
            stub = observe_pb2_grpc.ObserveStub(channel)
            t = time.perf_counter()
            n = sum(1 for _ in stub.GetSubProcessStream(observe_pb2.GetSubProcessStreamRequest(), timeout=600))
            elapsed = time.perf_counter() - t
        assert n == messages, (n, messages)
        return n / elapsed
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    print(f"floor {floor(parser.parse_args().messages):.0f}")
