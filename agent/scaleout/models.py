"""The model store: models by id, on disk, content-addressed, size-capped with LRU eviction.

Layout under ``root`` (``<state_dir>/models``)::

    index.db               SQLite: model id -> sha256, size, created, last used
    blobs/<ab>/<sha256>    the bytes, one file per distinct content (two ids may share one)
    tmp/<random>           uploads in flight

An upload is written to ``tmp/``, fsynced, renamed into ``blobs/`` and the directory fsynced before
its index row is committed, so a crash leaves either the whole model or nothing visible; start-up
removes ``tmp/`` leftovers and blobs no row points at. The cap (``[models] max_bytes``) counts
distinct blobs; storing a model evicts the least recently used ones (a download or
:meth:`ModelStore.path_for` counts as a use) until it fits. Models ``in_use`` names (those a queued
or running combiner task refers to) are never evicted: a client told to fetch a model must find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.scaleout.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelUnavailable,
    ResourceExhausted,
    UploadRejected,
)

log = structlog.get_logger("agent.scaleout.models")

CHUNK_BYTES = 1 << 20  # the Scaleout client's chunk size, used for downloads too
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_model_id(model_id: str, field: str = "model_id") -> str:
    """``model_id`` if it is 1-200 characters of ``[A-Za-z0-9._:@+=-]`` starting alphanumeric."""
    if not MODEL_ID.match(model_id):
        raise InvalidArgument(f"{field}: expected 1-200 characters [A-Za-z0-9._:@+=-] starting with a letter or digit, "
                              f"got {model_id[:80]!r}")
    return model_id


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    sha256: str
    size: int
    created_ns: int
    last_used_ns: int


class Upload:
    """One model arriving: chunks go to a temp file while the SHA-256 is computed on the way."""

    def __init__(self, store: ModelStore, model_id: str) -> None:
        self.store = store
        self.model_id = model_id
        self.size = 0
        self._hash = hashlib.sha256()
        self.tmp_path = store.tmp_dir / f"{secrets.token_hex(8)}.part"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data``; RESOURCE_EXHAUSTED as soon as the model outgrows the whole store."""
        self.size += len(data)
        if self.size > self.store.max_bytes:
            raise ResourceExhausted(f"model {self.model_id}: larger than the model store's cap "
                                    f"([models] max_bytes = {self.store.max_bytes})")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    async def commit(self, checksum: str | None) -> ModelInfo:
        """Make the model durable and visible; UploadRejected on a checksum mismatch."""
        sha = self._hash.hexdigest()
        if checksum is not None and checksum.lower() != sha:
            raise UploadRejected(f"model {self.model_id}: checksum mismatch: client sent {checksum[:80]!r}, "
                                 f"received bytes hash to {sha}")
        await asyncio.to_thread(os.fsync, self._fd)
        os.close(self._fd)
        self._fd = -1
        return await self.store._commit(self, sha)

    def abort(self) -> None:
        """Forget the upload and its temp file (idempotent; also after commit)."""
        if self._done:
            return
        self._done = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
        self.store._uploading.pop(self.model_id, None)


class ModelStore:
    """Models by id. Single-threaded: call it from cellard's event loop only."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int,
                 in_use: Callable[[], set[str]] = set) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._in_use = in_use
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.blob_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # uploads a crash interrupted
        self.tmp_dir.mkdir(mode=0o700)
        self._db = sqlite3.connect(self.root / "index.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
            "size INTEGER NOT NULL, created_ns INTEGER NOT NULL, last_used_ns INTEGER NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS models_lru ON models (last_used_ns)")
        self._uploading: dict[str, Upload] = {}
        self._recover()

    # ------------------------------------------------------------ start-up

    def _recover(self) -> None:
        """Drop rows whose blob is gone and blobs no row points at (a crash between rename and commit)."""
        known = {row[0] for row in self._db.execute("SELECT DISTINCT sha256 FROM models")}
        for sha in list(known):
            if not self._blob_path(sha).is_file():
                self._db.execute("DELETE FROM models WHERE sha256 = ?", (sha,))
                log.warning("models.missing_blob", sha256=sha)
                known.discard(sha)
        for sub in self.blob_dir.iterdir():
            for blob in sub.iterdir() if sub.is_dir() else ():
                if blob.name not in known:
                    blob.unlink(missing_ok=True)
                    log.info("models.orphan_removed", sha256=blob.name)

    def close(self) -> None:
        for upload in list(self._uploading.values()):
            upload.abort()
        self._db.close()

    # ------------------------------------------------------------ uploads

    def begin_upload(self, model_id: str) -> Upload:
        """Start storing ``model_id``; UploadRejected when the id is taken or already arriving."""
        check_model_id(model_id, "model-id")
        if model_id in self._uploading or self._row(model_id) is not None:
            raise UploadRejected(f"model {model_id}: already exists (model ids are immutable)")
        upload = Upload(self, model_id)
        self._uploading[model_id] = upload
        return upload

    async def _commit(self, upload: Upload, sha: str) -> ModelInfo:
        try:
            blob = self._blob_path(sha)
            fresh = not blob.exists()
            if fresh:
                self._make_room(upload.size, keep=upload.model_id)
                blob.parent.mkdir(mode=0o700, exist_ok=True)
                os.rename(upload.tmp_path, blob)
                await asyncio.to_thread(_fsync_dir, blob.parent)
            now = time.time_ns()
            self._db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?)", (upload.model_id, sha, upload.size, now, now))
            log.info("models.stored", model_id=upload.model_id, sha256=sha, size=upload.size, deduplicated=not fresh)
            return ModelInfo(upload.model_id, sha, upload.size, now, now)
        finally:
            upload.abort()

    def _make_room(self, size: int, keep: str) -> None:
        """Evict least recently used models until ``size`` more bytes fit under the cap."""
        used = self.used_bytes()
        if used + size <= self.max_bytes:
            return
        pinned = self._in_use()
        rows = self._db.execute("SELECT model_id, sha256, size FROM models ORDER BY last_used_ns").fetchall()
        for model_id, sha, blob_size in rows:
            if used + size <= self.max_bytes:
                break
            if model_id == keep or model_id in pinned:
                continue
            freed = self._delete(model_id, sha, blob_size)
            used -= freed
            log.info("models.evicted", model_id=model_id, sha256=sha, freed_bytes=freed)
        if used + size > self.max_bytes:
            held = f"; {len(pinned)} model(s) are held by tasks not yet done" if pinned else ""
            raise ResourceExhausted(f"model {keep}: {size} bytes do not fit in the model store "
                                    f"({used} of {self.max_bytes} bytes used{held})")

    # ------------------------------------------------------------ reads

    def info(self, model_id: str) -> ModelInfo:
        """The stored model; ModelUnavailable if unknown, FailedPrecondition while still arriving."""
        if not model_id:
            raise ModelUnavailable("model_id: empty")
        row = self._row(model_id)
        if row is None:
            if model_id in self._uploading:
                raise FailedPrecondition(f"model {model_id}: still arriving, retry later")
            raise ModelUnavailable(
                f"model {model_id[:200]}: not found (not in the model store; `cellar fl models` lists it)")
        return ModelInfo(*row)

    def touch(self, model_id: str) -> None:
        self._db.execute("UPDATE models SET last_used_ns = ? WHERE model_id = ?", (time.time_ns(), model_id))

    def path_for(self, model_id: str) -> Path:
        """Path of ``model_id``'s bytes (read-only; for stage-in). Counts as a use for eviction."""
        info = self.info(model_id)
        self.touch(model_id)
        return self._blob_path(info.sha256)

    def chunks(self, model_id: str) -> tuple[ModelInfo, Generator[bytes, None, None]]:
        """(info, 1 MiB chunks). The file is opened now, so a later eviction cannot cut the stream short."""
        info = self.info(model_id)
        fh = open(self._blob_path(info.sha256), "rb")  # noqa: SIM115 - closed by the generator
        self.touch(model_id)

        def read() -> Generator[bytes, None, None]:
            with fh:
                while data := fh.read(CHUNK_BYTES):
                    yield data

        return info, read()

    def stored(self) -> list[ModelInfo]:
        rows = self._db.execute("SELECT * FROM models ORDER BY created_ns").fetchall()
        return [ModelInfo(*row) for row in rows]

    def arriving(self) -> list[tuple[str, int]]:
        """(model id, bytes so far) of uploads in flight."""
        return [(u.model_id, u.size) for u in self._uploading.values()]

    def used_bytes(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT sha256, size FROM models)").fetchone()
        return int(row[0])

    def delete(self, model_id: str) -> None:
        info = self.info(model_id)
        self._delete(model_id, info.sha256, info.size)

    # ------------------------------------------------------------ internals

    def _row(self, model_id: str) -> tuple[str, str, int, int, int] | None:
        row = self._db.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    def _delete(self, model_id: str, sha: str, size: int) -> int:
        """Remove the row; the blob too when no other id shares it. Returns the bytes freed."""
        self._db.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
        if self._db.execute("SELECT 1 FROM models WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
            return 0
        self._blob_path(sha).unlink(missing_ok=True)
        return size

    def _blob_path(self, sha: str) -> Path:
        assert _SHA256.match(sha), sha
        return self.blob_dir / sha[:2] / sha


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
