"""``cellar start -i -t``: output capture rate of a terminal executable and the echo latency of a key
typed through ``attach``, beside a local pseudo-terminal read by a plain loop, in the same run.

    .venv/bin/python bench/tty_capture.py [--mib 128] [--keys 50] [--quick]

- capture: ``head -c MIB /dev/zero`` started with ``-i -t`` (its output goes through the pty master into
  the log store, cut into partial records: no newline ever), from the Start reply to its exit; beside
  the same command on a local pty whose master a blocking ``os.read`` loop drains.
- echo: one byte written through ``cellar.v1.Sessions/Attach`` to ``cat`` on the terminal until the
  terminal's echo of it comes back on the same stream (stdin -> master -> echo -> capture -> partial
  record after PARTIAL_AFTER_S -> log store -> follow -> gRPC); beside a byte written to a local pty's
  master and its echo read back.

Prints MiB/s, p50/p99 ms and the ratios. Run as root; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402
from cells.capture import PARTIAL_AFTER_S  # noqa: E402
from proto.aurae import runtime_pb2, runtime_pb2_grpc  # noqa: E402
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, exec_pb2, exec_pb2_grpc, types_pb2  # noqa: E402

CELL = "ttybench"


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def running(cells: cells_pb2_grpc.CellsStub, name: str) -> bool:
    info = cells.Inspect(cells_pb2.InspectCellRequest(cell_name=CELL), timeout=60)
    return any(e.name == name and e.state == types_pb2.EXECUTABLE_STATE_RUNNING for e in info.executables)


def remote_capture(runtime: runtime_pb2_grpc.CellServiceStub, cells: cells_pb2_grpc.CellsStub, mib: int, run: int) -> float:
    """Seconds from the Start reply of ``head`` on a terminal to its exit seen by Inspect."""
    name = f"head{run}"
    runtime.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
        cell_name=CELL, name=name, argv=["head", "-c", str(mib << 20), "/dev/zero"], stdin=True, tty=True)), timeout=60)
    t0 = time.perf_counter()
    while running(cells, name):
        time.sleep(0.005)
    return time.perf_counter() - t0


def local_capture(mib: int) -> float:
    master, slave = os.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(["head", "-c", str(mib << 20), "/dev/zero"], stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        while True:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:  # EIO: no slave left
                break
        proc.wait()
        return time.perf_counter() - t0
    finally:
        os.close(master)


def remote_echo(stub: exec_pb2_grpc.SessionsStub, keys: int) -> list[float]:
    pending: queue.Queue[exec_pb2.AttachRequest | None] = queue.Queue()
    pending.put(exec_pb2.AttachRequest(start=exec_pb2.AttachStart(cell_name=CELL, executable_name="cat")))

    def requests() -> Iterator[exec_pb2.AttachRequest]:
        while (item := pending.get()) is not None:
            yield item

    call = stub.Attach(requests(), timeout=600)
    try:
        assert next(call).started.tty
        out: list[float] = []
        for i in range(keys):
            key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
            t0 = time.perf_counter()
            pending.put(exec_pb2.AttachRequest(stdin=key))
            got = b""
            while key not in got:
                got += next(call).stdout
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        pending.put(None)
        call.cancel()


def local_echo(keys: int) -> list[float]:
    master, slave = os.openpty()
    proc = subprocess.Popen(["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    out: list[float] = []
    try:
        for i in range(keys):
            key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
            t0 = time.perf_counter()
            os.write(master, key)
            got = b""
            while key not in got:
                got += os.read(master, 4096)
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        proc.kill()
        proc.wait()
        os.close(slave)
        os.close(master)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 20 keys, 2 runs")
    args = parser.parse_args()
    mib, keys, runs = (32, 20, 2) if args.quick else (args.mib, args.keys, args.runs)
    interrupt_on_sigterm()
    daemon = Cellard()
    try:
        daemon.start()
        channel = grpc.insecure_channel("unix:" + daemon.socket)
        runtime = runtime_pb2_grpc.CellServiceStub(channel)
        cells = cells_pb2_grpc.CellsStub(channel)
        runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name=CELL)), timeout=60)
        remote_s: list[float] = []
        local_s: list[float] = []
        for run in range(runs):  # interleaved: the same load on both
            remote_s.append(remote_capture(runtime, cells, mib, run))
            local_s.append(local_capture(mib))
        runtime.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
            cell_name=CELL, name="cat", argv=["cat"], stdin=True, tty=True)), timeout=60)
        stub = exec_pb2_grpc.SessionsStub(channel)
        remote_ms = remote_echo(stub, keys)
        local_ms = local_echo(keys)
        remote_rate, local_rate = mib / min(remote_s), mib / min(local_s)
        print(f"terminal output capture, {mib} MiB without a newline, best of {runs}")
        print(f"  start -i -t, into the log store    {remote_rate:8.1f} MiB/s")
        print(f"  local pty, a plain read loop       {local_rate:8.1f} MiB/s")
        print(f"  ratio: {remote_rate / local_rate:.2f}x of the local reader")
        print(f"key echo, {keys} keys")
        print(f"  attach -> terminal -> log store -> attach   p50 {pct(remote_ms, 50):7.2f} ms  p99 {pct(remote_ms, 99):7.2f} ms")
        print(f"  local pty write -> echo read                p50 {pct(local_ms, 50):7.2f} ms  p99 {pct(local_ms, 99):7.2f} ms")
        print(f"  ratio p50: {pct(remote_ms, 50) / pct(local_ms, 50):.1f}x (the partial flush waits "
              f"{PARTIAL_AFTER_S * 1000:.0f} ms for a newline by design)")
        channel.close()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
