"""Queue throughput: Send + Receive + MarkDone through the node-local endpoint vs SQLite in-process.

    sudo .venv/bin/python bench/queue_throughput.py [--messages N] [--batch B] [--synchronous full|normal]

Starts its own cellard (temp dir, unique cgroup root; removed at the end) and measures, side by side in
one run, each figure beside its in-process baseline (the same statements on the same schema through
:class:`agent.local.queue.store.QueueStore` called directly, in a temp file, no gRPC, no thread hop):

1. one client, one message per RPC (Send, Receive, MarkDone: three RPCs and three commits a message),
   then B messages per RPC (the batched Send/Receive/MarkDone a client should use; ``cellar queue`` does);
2. 8 producers + 8 consumers (threads, each on its own connection) over ``local.sock``, one message per
   RPC: total messages/s, beside 8 in-process threads on their own connections to one file doing
   the same ops (SQLite serialises their transactions: one fsync each), and the same 8 + 8 as asyncio
   tasks on ``QueueStore.write`` in-process (the group commit without gRPC: its ceiling, ops per commit);
3. the statement cache: in-process with sqlite3's cache off (every statement compiled anew) vs on
   (synchronous NORMAL, so that the compile time is not hidden behind fsyncs);
4. the hop: one unary round trip to a bare grpc.aio echo server, direct vs through the accept/splice
   proxy of ``local.sock`` (:class:`agent.auth.unixpeer.UnixPeerProxy`), as a share of one queue RPC.

Figures move with the host's load (fsync latency above all): each pair is measured in alternating
rounds and the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.protobuf import wrappers_pb2  # noqa: E402
from google.protobuf.any_pb2 import Any as AnyPb  # noqa: E402

from agent.local.queue.store import Outgoing, QueueStore  # noqa: E402
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw  # noqa: E402
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc  # noqa: E402
from tests.support.api import running_cellard  # noqa: E402

CONCURRENT = 8  # producers, consumers, in-process threads
ROUNDS = itertools.count()
HOP_ROUNDS = 10
WARM_COMMITS = 600  # commits before an in-process measurement (the WAL grows to its steady size)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # each client thread on its own connection

ECHO_SERVER = r"""
import asyncio, os, sys, grpc
sys.path.insert(0, sys.argv[2])
from agent.auth.unixpeer import UnixPeerProxy
async def echo(request, context):
    return request
async def main(base):
    internal = os.path.join(base, "internal")
    UnixPeerProxy.prepare_internal_dir(internal)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "b.B", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    proxy = UnixPeerProxy(os.path.join(base, "public.sock"), internal, 0o600, os.getgid())
    server.add_insecure_port("unix:" + proxy.internal_socket)
    await server.start()
    await proxy.start()
    print(proxy.internal_socket, proxy.public_path, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await proxy.close()
    await server.stop(0)
asyncio.run(main(sys.argv[1]))
"""


def payload(i: int) -> AnyPb:
    out = AnyPb()
    out.Pack(wrappers_pb2.StringValue(value=f"message {i:08d} " + "x" * 64))
    return out


def create_queue(target: str, name: str) -> IdRaw:
    """A new queue named ``name`` + a counter (each round its own)."""
    name = f"{name}-{next(ROUNDS)}"
    with grpc.insecure_channel(target) as ch:
        return queue_pb2_grpc.QueueStub(ch).CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name), timeout=10).id


def one_client(target: str, n: int, batch: int) -> float:
    """msg/s of one client doing Send, Receive, MarkDone of ``batch`` messages per RPC."""
    qid = create_queue(target, f"one{batch}")
    with grpc.insecure_channel(target) as ch:
        q = queue_pb2_grpc.QueueStub(ch)
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


def producers_consumers(target: str, n: int) -> float:
    """Total msg/s of CONCURRENT producers (Send, one message) and CONCURRENT consumers (Receive one,
    MarkDone it), each thread on its own connection, until all ``n`` messages are done."""
    qid = create_queue(target, "many")
    per = n // CONCURRENT
    done = [0]
    lock = threading.Lock()

    def produce() -> None:
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as ch:
            q = queue_pb2_grpc.QueueStub(ch)
            msg = [queue_pb2.QueueMsg(payload=payload(0))]
            for _ in range(per):
                q.Send(queue_pb2.SendRequest(id=qid, msg=msg), timeout=30)

    def consume() -> None:
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as ch:
            q = queue_pb2_grpc.QueueStub(ch)
            while done[0] < per * CONCURRENT:
                got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=1), timeout=30).message
                if not got:
                    time.sleep(0.001)
                    continue
                q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[m.msg_id for m in got]), timeout=30)
                with lock:
                    done[0] += len(got)

    return per * CONCURRENT / timed_threads([produce] * CONCURRENT + [consume] * CONCURRENT)


def timed_threads(targets: list[Callable[[], None]]) -> float:
    threads = [threading.Thread(target=t) for t in targets]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def cycle(store: QueueStore, qid: tuple[int, int], outgoing: list[Outgoing], times: int) -> None:
    for _ in range(times):
        store.send("host", qid, outgoing)
        got = store.receive("host", qid, len(outgoing))
        store.mark_done("host", qid, [m.id for m in got])


def in_process(n: int, batch: int, synchronous: str, cache: int | None = None) -> float:
    """msg/s of the one-client loop on QueueStore in this process. The file is warmed first, as
    cellard's is: appending to a fresh WAL file costs more per fsync than rewriting a grown one."""
    with tempfile.TemporaryDirectory() as d:
        store = QueueStore(os.path.join(d, "queue.db"), visibility_timeout_s=30, synchronous=synchronous)
        if cache is not None:
            store.statement_cache = cache
        store.open()
        try:
            qid = store.create("host", "bench")
            outgoing = [Outgoing(payload(i).SerializeToString()) for i in range(batch)]
            cycle(store, qid, outgoing, WARM_COMMITS // 3)
            start = time.perf_counter()
            cycle(store, qid, outgoing, n // batch)
            elapsed = time.perf_counter() - start
            assert store.length("host", qid) == 0
        finally:
            store.close()
    return (n // batch) * batch / elapsed


def in_process_threads(n: int, synchronous: str) -> float:
    """CONCURRENT threads, each on its own connection to one file, each Send, Receive, MarkDone a message."""
    per = n // CONCURRENT
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "queue.db")
        first = QueueStore(path, visibility_timeout_s=30, synchronous=synchronous).open()
        qid = first.create("host", "bench")
        stores = [first] + [QueueStore(path, visibility_timeout_s=30, synchronous=synchronous).open()
                            for _ in range(CONCURRENT - 1)]
        for s in stores:  # they wait for each other's transactions (sqlite3's 5 s is short on a busy host)
            s.db.execute("PRAGMA busy_timeout=120000")
        cycle(first, qid, [Outgoing(payload(0).SerializeToString())], WARM_COMMITS // 3)

        outgoing = [Outgoing(payload(0).SerializeToString())]

        def worker(store: QueueStore) -> Callable[[], None]:
            def run() -> None:
                for _ in range(per):
                    store.send("host", qid, outgoing)
                    got = store.receive("host", qid, 1)
                    store.mark_done("host", qid, [m.id for m in got])
            return run

        try:
            elapsed = timed_threads([worker(s) for s in stores])
        finally:
            for s in stores:
                s.close()
    return per * CONCURRENT / elapsed


def pair(rounds: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` run alternately ``rounds`` times (a shared host's load drifts)."""
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(rounds):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys)


def group_commit_in_process(n: int, synchronous: str) -> tuple[float, float]:
    """(msg/s, ops per commit) of CONCURRENT producer and CONCURRENT consumer tasks calling
    QueueStore.write (the servicer's path, without gRPC) on one store: the group commit's own ceiling."""
    per = n // CONCURRENT

    async def run(store: QueueStore, qid: tuple[int, int]) -> None:
        outgoing = [Outgoing(payload(0).SerializeToString())]
        left = [per * CONCURRENT]

        async def produce() -> None:
            for _ in range(per):
                await store.write(store.send_op, "host", qid, outgoing)

        async def consume() -> None:
            while left[0] > 0:
                got = await store.write(store.receive_op, "host", qid, 1)
                if not got:
                    await asyncio.sleep(0.001)
                    continue
                left[0] -= len(got)
                await store.write(store.mark_done_op, "host", qid, [m.id for m in got])

        await asyncio.gather(*[produce() for _ in range(CONCURRENT)], *[consume() for _ in range(CONCURRENT)])

    with tempfile.TemporaryDirectory() as d:
        store = QueueStore(os.path.join(d, "queue.db"), visibility_timeout_s=30, synchronous=synchronous).open()
        try:
            qid = store.create("host", "bench")
            cycle(store, qid, [Outgoing(payload(0).SerializeToString())], WARM_COMMITS // 3)
            start = time.perf_counter()
            asyncio.run(run(store, qid))
            elapsed = time.perf_counter() - start
            ratio = store.group.ops / store.group.groups
        finally:
            store.close()
    return per * CONCURRENT / elapsed, ratio


def hop(calls: int) -> tuple[float, float]:
    """Unary echo round trip (µs), direct to a grpc.aio server and through the accept/splice proxy."""
    with tempfile.TemporaryDirectory() as base:
        server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, base, str(REPO)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdin is not None
            direct, public = server.stdout.readline().split()
            times: dict[str, list[float]] = {direct: [], public: []}
            with grpc.insecure_channel("unix:" + direct) as a, grpc.insecure_channel("unix:" + public) as b:
                echoes = {path: ch.unary_unary("/b.B/Echo", request_serializer=None, response_deserializer=None)
                          for path, ch in ((direct, a), (public, b))}
                for _ in range(HOP_ROUNDS):  # alternately, so that both see the same load
                    for path, echo in echoes.items():
                        echo(b"x", timeout=10)
                        start = time.perf_counter()
                        for _ in range(calls // HOP_ROUNDS):
                            echo(b"x", timeout=10)
                        times[path].append((time.perf_counter() - start) / (calls // HOP_ROUNDS) * 1e6)
            out = [statistics.median(times[direct]), statistics.median(times[public])]
            server.stdin.close()
            server.wait(10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--messages", type=int, default=600)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    args = p.parse_args()
    n, batch, sync = args.messages, args.batch, args.synchronous
    config = {"queue": {"synchronous": sync, "visibility_timeout_s": 30.0}}
    with running_cellard(config) as daemon:
        target = "unix:" + str(Path(daemon.config["paths"]["run_dir"]) / "local.sock")
        one_client(target, WARM_COMMITS // 3, 1)  # warm cellard's database and this process's gRPC
        rpc1, local1 = pair(args.rounds, lambda: one_client(target, n, 1), lambda: in_process(n, 1, sync))
        rpcb, localb = pair(args.rounds, lambda: one_client(target, n * 5, batch), lambda: in_process(n * 5, batch, sync))
        many, threads = pair(args.rounds, lambda: producers_consumers(target, n), lambda: in_process_threads(n, sync))
    # synchronous NORMAL here: with an fsync per commit the compile time would hide in the disk's noise
    grouped, per_commit = group_commit_in_process(n, sync)
    uncached, cached = pair(args.rounds, lambda: in_process(n * 5, 1, "normal", cache=0),
                            lambda: in_process(n * 5, 1, "normal"))
    direct_us, proxy_us = hop(2000)
    rpc_us = 1e6 / (3 * rpc1)
    print(f"messages: {n} ({n * 5} batched), synchronous: {sync}, medians of {args.rounds} alternating rounds")
    print("1. one client, Send+Receive+MarkDone over local.sock vs QueueStore in-process (same statements)")
    print(f"   1 message per RPC:   endpoint {rpc1:9.0f} msg/s   in-process {local1:9.0f} msg/s   ratio {rpc1 / local1:.3f}")
    print(f"   {batch} messages per RPC: endpoint {rpcb:9.0f} msg/s   in-process {localb:9.0f} msg/s   ratio {rpcb / localb:.3f}")
    print(f"2. {CONCURRENT} producers + {CONCURRENT} consumers over local.sock (group commit), 1 message per RPC")
    print(f"   endpoint total {many:9.0f} msg/s   {CONCURRENT} in-process threads {threads:9.0f} msg/s   "
          f"ratio {many / threads:.3f}   vs one client {many / rpc1:.2f}x")
    print(f"   the same {CONCURRENT}+{CONCURRENT} as tasks on QueueStore.write in-process (group commit, no gRPC): "
          f"{grouped:9.0f} msg/s, {per_commit:.1f} ops per commit")
    print("3. statement cache (in-process, 1 message per op, synchronous normal)")
    print(f"   cache off {uncached:9.0f} msg/s   on {cached:9.0f} msg/s   on/off {cached / uncached:.3f}")
    print("4. the accept/splice hop of local.sock (unary echo round trip to a bare grpc.aio server)")
    print(f"   direct {direct_us:7.0f} us   through the proxy {proxy_us:7.0f} us   hop {proxy_us - direct_us:6.0f} us "
          f"= {(proxy_us - direct_us) / rpc_us:.1%} of one queue RPC ({rpc_us:.0f} us, from 1.)")


if __name__ == "__main__":
    main()
