"""Model transfer through cellard's node-local Scaleout ModelService vs copying the file with ``cp``.

    python bench/models.py [--mib 256] [--rounds 3]

Starts its own cellard (temp dir, unique cgroup root), then, as a workload on this host would, talks
to the node-local endpoint's loopback TCP listener with the Scaleout wire protocol (1 MiB chunks):

(a) Upload of an N MiB model (metadata ``model-id`` + SHA-256 ``checksum``; cellard hashes, writes,
    fsyncs and renames it into the content-addressed store) vs ``cp SRC DST && sync DST`` (also durable);
(b) Download of the same model into a file, hashing it against the trailing ``checksum`` vs ``cp``
    of the stored blob to a new file;
and prints MB/s of each and the ratios (cellard time / cp time; best of ``--rounds``, side by side).
Everything (daemon, supervisor, cgroups, temp files) is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402
from proto.scaleout import scaleout_pb2 as pb  # noqa: E402
from proto.scaleout import scaleout_pb2_grpc  # noqa: E402

CHUNK = 1 << 20


def file_chunks(path: Path) -> Iterator[pb.FileChunk]:
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK):
            yield pb.FileChunk(data=data)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK):
            digest.update(data)
    return digest.hexdigest()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * CHUNK
    interrupt_on_sigterm()
    daemon = Cellard()
    try:
        daemon.start({"local": {"tcp_listen": "127.0.0.1:0"}, "models": {"max_bytes": 64 * 2**30}})
        addr = str(daemon.event("local.listening", "tcp")["tcp"])
        src = daemon.base / "model.bin"
        with open(src, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(CHUNK))
        checksum = sha256_of(src)
        channel = grpc.insecure_channel(addr)
        stub = scaleout_pb2_grpc.ModelServiceStub(channel)
        up, cp_up, down, cp_down = [], [], [], []
        for i in range(args.rounds):
            model_id = f"bench-{i}-{secrets.token_hex(4)}"
            # (a) upload vs cp + sync (both durable)
            dst = daemon.base / f"copy-{i}.bin"
            cp_up.append(timed(lambda dst=dst: subprocess.run(["sh", "-c", f'cp "{src}" "{dst}" && sync "{dst}"'],
                                                                check=True)))
            reply: list[pb.ModelResponse] = []
            up.append(timed(lambda model_id=model_id, reply=reply: reply.append(stub.Upload(
                file_chunks(src), metadata=(("model-id", model_id), ("checksum", checksum)), timeout=600))))
            assert reply[0].status == pb.ModelStatus.OK, reply[0]
            # (b) download (hash-verified) vs cp of the stored blob
            out = daemon.base / f"down-{i}.bin"

            def download(model_id: str = model_id, out: Path = out) -> None:
                digest = hashlib.sha256()
                call = stub.Download(pb.ModelRequest(model_id=model_id), timeout=600)
                with open(out, "wb") as fh:
                    for chunk in call:
                        digest.update(chunk.data)
                        fh.write(chunk.data)
                assert dict(call.trailing_metadata())["checksum"] == digest.hexdigest()

            down.append(timed(download))
            blob = daemon.base / "state" / "models" / "blobs" / checksum[:2] / checksum
            cp_down.append(timed(lambda blob=blob, i=i: subprocess.run(
                ["cp", str(blob), str(daemon.base / f"cp-down-{i}.bin")], check=True)))
            for path in (dst, out, daemon.base / f"cp-down-{i}.bin"):
                path.unlink()
        channel.close()

        def mbs(seconds: float) -> float:
            return size / seconds / 1e6

        rows = [("upload (stored, fsynced)", min(up), "cp + sync", min(cp_up)),
                ("download (hash-verified)", min(down), "cp", min(cp_down))]
        print(f"model of {args.mib} MiB, best of {args.rounds} rounds, node-local endpoint {addr}")
        for name, t, base_name, base_t in rows:
            print(f"{name:26s} {mbs(t):8.1f} MB/s ({t:6.3f} s)   {base_name:9s} {mbs(base_t):8.1f} MB/s "
                  f"({base_t:6.3f} s)   ratio {t / base_t:5.2f}x")
        total, base_total = min(up) + min(down), min(cp_up) + min(cp_down)
        print(f"{'round trip':26s} {2 * size / total / 1e6:8.1f} MB/s ({total:6.3f} s)   {'cp pair':9s} "
              f"{2 * size / base_total / 1e6:8.1f} MB/s ({base_total:6.3f} s)   ratio {total / base_total:5.2f}x")
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
