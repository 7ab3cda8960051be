"""Log store throughput vs plain file I/O of the same bytes, measured side by side in one run.

    .venv/bin/python bench/log_store.py [--lines 2000000] [--size 100] [--batch 1000]

Write: LogWriter.append_lines on batches of ``--batch`` lines vs one os.write of the same lines
joined with newlines. Read: LogReader.read() (records with seq, ts, stream) and a follower vs
reading the plain file back and splitting it into lines. Ratios > 1 mean faster than the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from observe.logread import LogReader  # noqa: E402
from observe.logstore import LogWriter  # noqa: E402
from observe.records import Stream  # noqa: E402


def best(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-"))
    batch = [(b"%09d " % i + b"x" * (args.size - 10), False) for i in range(args.batch)]
    nbatches = args.lines // args.batch
    n = nbatches * args.batch
    try:

        def store_write() -> None:
            shutil.rmtree(root / "run", ignore_errors=True)
            w = LogWriter(root / "run")  # defaults: 10 MiB x 5 segments, so rotation is included
            for _ in range(nbatches):
                w.append_lines(Stream.STDOUT, batch)
            w.close()

        def plain_write() -> None:
            fd = os.open(root / "plain", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            for _ in range(nbatches):
                os.write(fd, b"\n".join(data for data, _ in batch) + b"\n")
            os.close(fd)

        # A run that keeps everything, for reading.
        shutil.rmtree(root / "keep", ignore_errors=True)
        w = LogWriter(root / "keep", segment_bytes=64 * 2**20, max_segments=1000)
        for _ in range(nbatches):
            w.append_lines(Stream.STDOUT, batch)
        w.close()
        plain_write()

        def store_read() -> None:
            count = sum(1 for _ in LogReader(root / "keep").read())
            assert count == n, count

        def follow_read() -> None:
            async def go() -> int:
                got = 0
                async for recs in LogReader(root / "keep").follow(max_batch=1000):
                    got += len(recs)
                    if got >= n:
                        break
                return got

            assert asyncio.run(go()) == n

        def plain_read() -> None:
            count = 0
            rest = b""
            with open(root / "plain", "rb") as f:
                while chunk := f.read(1 << 20):
                    parts = (rest + chunk).split(b"\n")
                    rest = parts.pop()
                    count += len(parts)
            assert count == n, count

        tw, tpw = best(store_write), best(plain_write)
        tr, tf, tpr = best(store_read), best(follow_read), best(plain_read)
        print(f"lines: {n} x {args.size} B, batches of {args.batch}")
        print(
            f"write   store {n / tw:12,.0f} lines/s   plain {n / tpw:12,.0f} lines/s   ratio {tpw / tw:.2f}"
        )
        print(
            f"read    store {n / tr:12,.0f} recs/s    plain {n / tpr:12,.0f} lines/s   ratio {tpr / tr:.2f}"
        )
        print(
            f"follow  store {n / tf:12,.0f} recs/s    plain {n / tpr:12,.0f} lines/s   ratio {tpr / tf:.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
