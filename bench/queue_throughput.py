"""Queue throughput: send + receive + mark-done through the node-local endpoint vs SQLite in-process.

    sudo .venv/bin/python bench/queue_throughput.py [--messages N] [--batch B] [--synchronous full|normal]

Starts its own cellard (temp dir, unique cgroup root; removed at the end), then for N messages does
Send, Receive, MarkDone (B messages per RPC) over the local Unix socket, and the very same operations
on the same schema with :class:`agent.local.queue.store.QueueStore` called directly in this process (no
gRPC, no thread hop) in a temp file, side by side. Prints messages/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.protobuf import wrappers_pb2  # noqa: E402
from google.protobuf.any_pb2 import Any as AnyPb  # noqa: E402

from agent.local.queue.store import Outgoing, QueueStore  # noqa: E402
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc  # noqa: E402
from tests.support.api import running_cellard  # noqa: E402


def payload(i: int) -> AnyPb:
    out = AnyPb()
    out.Pack(wrappers_pb2.StringValue(value=f"message {i:08d} " + "x" * 64))
    return out


def via_endpoint(socket_path: str, n: int, batch: int) -> float:
    with grpc.insecure_channel("unix:" + socket_path) as ch:
        q = queue_pb2_grpc.QueueStub(ch)
        qid = q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name="bench"), timeout=10).id
        msgs = [queue_pb2.QueueMsg(payload=payload(i)) for i in range(batch)]
        q.Length(queue_pb2.LengthRequest(id=qid), timeout=10)  # warm the connection
        start = time.perf_counter()
        for _ in range(n // batch):
            q.Send(queue_pb2.SendRequest(id=qid, msg=msgs), timeout=10)
            got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=batch), timeout=10).message
            q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[m.msg_id for m in got]), timeout=10)
        elapsed = time.perf_counter() - start
        assert q.Length(queue_pb2.LengthRequest(id=qid), timeout=10).length == 0
    return (n // batch) * batch / elapsed


def in_process(n: int, batch: int, synchronous: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = QueueStore(os.path.join(d, "queue.db"), visibility_timeout_s=30, synchronous=synchronous).open()
        try:
            qid = store.create("host", "bench")
            start = time.perf_counter()
            for _ in range(n // batch):
                store.send("host", qid, [Outgoing(payload(i).SerializeToString()) for i in range(batch)])
                got = store.receive("host", qid, batch)
                store.mark_done("host", qid, [m.id for m in got])
            elapsed = time.perf_counter() - start
            assert store.length("host", qid) == 0
        finally:
            store.close()
    return (n // batch) * batch / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    args = p.parse_args()
    config = {"queue": {"synchronous": args.synchronous}}
    with running_cellard(config) as daemon:
        sock = str(Path(daemon.config["paths"]["run_dir"]) / "local.sock")
        rpc = via_endpoint(sock, args.messages, args.batch)
    local = in_process(args.messages, args.batch, args.synchronous)
    print(f"messages: {args.messages}, batch: {args.batch}, synchronous: {args.synchronous}")
    print(f"  local endpoint (Send+Receive+MarkDone, gRPC over local.sock): {rpc:10.0f} msg/s")
    print(f"  sqlite3 in-process (same statements, QueueStore direct):     {local:10.0f} msg/s")
    print(f"  ratio endpoint / in-process: {rpc / local:.3f}")


if __name__ == "__main__":
    main()
