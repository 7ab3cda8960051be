"""The model store on its own: durable, content-addressed, size-capped, least recently used evicted."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.scaleout.combiner import Combiner
from agent.scaleout.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelUnavailable,
    ResourceExhausted,
    UploadRejected,
)
from agent.scaleout.models import MODEL_ID, ModelStore, check_model_id

MiB = 1 << 20


def store_model(store: ModelStore, model_id: str, data: bytes, checksum: str | None = None) -> None:
    upload = store.begin_upload(model_id)
    try:
        for i in range(0, len(data), MiB):
            upload.write(data[i:i + MiB])
        asyncio.run(upload.commit(checksum))
    finally:
        upload.abort()


def leftovers(store: ModelStore) -> list[str]:
    return os.listdir(store.tmp_dir)


def blobs(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blob_dir.glob("*/*"))


def test_store_and_read_back_by_id(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 8 * MiB)
    data = os.urandom(3 * MiB + 17)
    sha = hashlib.sha256(data).hexdigest()
    store_model(store, "m1", data, checksum=sha)
    info, chunks = store.chunks("m1")
    assert (info.size, info.sha256) == (len(data), sha)
    got = list(chunks)
    assert [len(c) for c in got] == [MiB, MiB, MiB, 17] and b"".join(got) == data
    assert store.path_for("m1").read_bytes() == data
    assert store.path_for("m1").name == sha  # content-addressed
    assert leftovers(store) == []


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 8 * MiB)
    with pytest.raises(UploadRejected, match="checksum mismatch"):
        store_model(store, "m1", b"abc", checksum="0" * 64)
    assert store.stored() == [] and blobs(store) == [] and leftovers(store) == []
    with pytest.raises(ModelUnavailable):
        store.info("m1")
    store_model(store, "m1", b"abc")  # the id is free again


def test_duplicate_id_is_rejected_even_while_arriving(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 8 * MiB)
    first = store.begin_upload("m1")
    first.write(b"x")
    with pytest.raises(FailedPrecondition, match="still arriving"):
        store.info("m1")
    with pytest.raises(UploadRejected, match="already exists"):
        store.begin_upload("m1")
    asyncio.run(first.commit(None))
    with pytest.raises(UploadRejected, match="already exists"):
        store.begin_upload("m1")
    assert [m.model_id for m in store.stored()] == ["m1"] and leftovers(store) == []


def test_larger_than_the_cap_is_refused_midstream(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 2 * MiB)
    with pytest.raises(ResourceExhausted, match="max_bytes"):
        store_model(store, "big", os.urandom(2 * MiB + 1))
    assert store.stored() == [] and leftovers(store) == [] and store.arriving() == []


def test_least_recently_used_is_evicted(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 3 * MiB)
    for name in ("a", "b", "c"):
        store_model(store, name, os.urandom(MiB))
    store.path_for("a")  # a use: "b" is now the least recently used
    store_model(store, "d", os.urandom(MiB))
    assert sorted(m.model_id for m in store.stored()) == ["a", "c", "d"]
    assert store.used_bytes() == 3 * MiB and len(blobs(store)) == 3


def test_a_model_a_pending_task_refers_to_is_not_evicted(tmp_path: Path) -> None:
    combiner = Combiner(tmp_path / "scaleout.db")
    store = ModelStore(tmp_path / "models", 3 * MiB, in_use=combiner.pending_model_ids)
    for name in ("a", "b", "c"):
        store_model(store, name, os.urandom(MiB))
    combiner.announce("client-1", "client-1", "client")
    task = combiner.push("client-1", "Fedn_ModelUpdate", "a")  # "a" is the least recently used, but wanted
    store_model(store, "d", os.urandom(MiB))
    assert sorted(m.model_id for m in store.stored()) == ["a", "c", "d"]
    store.path_for("c")
    store.path_for("d")
    combiner.push("client-1", "Fedn_Validation", "c")
    combiner.push("client-1", "Fedn_Prediction", "d")
    with pytest.raises(ResourceExhausted, match="3 model\\(s\\) are held by tasks not yet done"):
        store_model(store, "e", os.urandom(MiB))
    assert sorted(m.model_id for m in store.stored()) == ["a", "c", "d"] and leftovers(store) == []
    combiner.cancel(task.correlation_id)  # done: "a" may go again
    store_model(store, "e", os.urandom(MiB))
    assert sorted(m.model_id for m in store.stored()) == ["c", "d", "e"]
    combiner.close()


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", 3 * MiB)
    data = os.urandom(MiB)
    store_model(store, "a", data)
    store_model(store, "b", data)
    assert len(blobs(store)) == 1 and store.used_bytes() == MiB
    store.delete("a")
    assert store.path_for("b").read_bytes() == data  # still referenced
    store.delete("b")
    assert blobs(store) == []


def test_restart_keeps_models_and_drops_half_stored_ones(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = ModelStore(root, 8 * MiB)
    store_model(store, "kept", b"kept bytes")
    half = store.begin_upload("half")
    half.write(b"half")  # a crash now: the temp file stays behind
    orphan = store.blob_dir / "ab" / ("ab" + "0" * 62)  # renamed but never indexed
    orphan.parent.mkdir()
    orphan.write_bytes(b"orphan")
    store._db.close()
    again = ModelStore(root, 8 * MiB)
    assert [m.model_id for m in again.stored()] == ["kept"]
    assert again.path_for("kept").read_bytes() == b"kept bytes"
    assert leftovers(again) == [] and not orphan.exists()
    with pytest.raises(ModelUnavailable):
        again.info("half")


def test_download_answers() -> None:
    store = ModelStore.__new__(ModelStore)  # info() only needs these two
    store._uploading = {}
    store._row = lambda model_id: None  # type: ignore[method-assign]
    with pytest.raises(ModelUnavailable, match="empty"):
        store.info("")
    with pytest.raises(ModelUnavailable, match="not in the model store"):
        store.info("nope")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_model_id_rule(text: str) -> None:
    try:
        check_model_id(text)
    except InvalidArgument:
        assert not MODEL_ID.match(text)
    else:
        assert "/" not in text and "\0" not in text and text != ".." and 0 < len(text) <= 200
