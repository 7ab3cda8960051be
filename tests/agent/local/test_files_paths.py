"""Hypothesis: no path a caller sends makes the file store touch anything outside the caller's tree.

Store-level (fast, many examples) and through a real cellard's local endpoint (fewer examples), plus
symlinks planted inside a tree that must not be followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.local.files.errors import FileError
from agent.local.files.paths import parse_path
from agent.local.files.store import FileStore
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from tests.support.local import state_dir

PIECES = st.sampled_from(["a", "b", ".", "..", "...", "/", "//", "%", "~", "-", " ", "\\", "\x00", "\n", "é", "$x",
                          "parigot", "app", "cell", "host", "index.db", "x" * 300])
PATHS = st.one_of(
    st.lists(PIECES, max_size=12).map(lambda p: "/parigot/app/" + "".join(p)),
    st.lists(PIECES, max_size=12).map("".join),
    st.text(max_size=40).map(lambda t: "/parigot/app/" + t),
)


def files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileStore, Path, Path]]:
    base = tmp_path_factory.mktemp("files")
    outside = base / "outside"
    outside.mkdir()
    fs = FileStore(str(base / "files")).open()
    # A symlink planted inside the tree (as if another process made it) must never be followed.
    tree = base / "files" / "cell" / "c1"
    tree.mkdir(parents=True)
    (tree / "link").symlink_to(outside)
    (tree / "filelink").symlink_to(outside / "target")
    try:
        yield fs, base, outside
    finally:
        fs.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, scope=st.sampled_from(["host", "cell:c1", "cell:a/b"]))
def test_store_paths_never_escape(store: tuple[FileStore, Path, Path], path: str, scope: str) -> None:
    fs, base, outside = store
    before = files_under(base)
    try:
        _, fid, _ = fs.create(scope, path, b"x")
    except FileError as exc:
        assert exc.name in ("InvalidPathError", "CreateError", "AlreadyInUseError"), exc
        assert files_under(base) - before <= {base / "files" / "index.db-wal", base / "files" / "index.db-shm"}
        return
    fs.close_file(scope, fid)
    parts = parse_path(path)
    tree = (base / "files" / ("host" if scope == "host" else "cell/" + scope[5:].replace("/", "%"))).resolve()
    made = (tree / Path(*parts)).resolve()
    assert made.is_file() and tree in made.parents
    assert not any(outside.iterdir()), "nothing reached the directory behind the symlink"
    fs.delete(scope, path)


def test_symlinks_in_a_tree_are_refused(store: tuple[FileStore, Path, Path]) -> None:
    fs, _, outside = store
    for call in (lambda: fs.create("cell:c1", "/parigot/app/link/x"),
                 lambda: fs.create("cell:c1", "/parigot/app/filelink"),
                 lambda: fs.open_file("cell:c1", "/parigot/app/filelink"),
                 lambda: fs.stat("cell:c1", "/parigot/app/link/x")):
        with pytest.raises(FileError):
            call()
    with pytest.raises(FileError) as info:
        fs.delete("cell:c1", "/parigot/app/filelink")
    assert info.value.name == "DeleteError"
    assert not any(outside.iterdir())


@pytest.mark.root
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS)
def test_rpc_paths_never_escape(local_ch: grpc.Channel, local_daemon: Any, path: str) -> None:
    f = file_pb2_grpc.FileStub(local_ch)
    base = state_dir(local_daemon).parent
    try:
        reply = f.Create(file_pb2.CreateRequest(path=path, content="x"), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)  # type: ignore[attr-defined]
        return
    f.Close(file_pb2.CloseRequest(id=reply.id), timeout=10)
    tree = (state_dir(local_daemon) / "files" / "host").resolve()
    made = (tree / reply.path.removeprefix("/parigot/app/")).resolve()
    assert made.is_file() and tree in made.parents
    f.Delete(file_pb2.DeleteRequest(path=reply.path), timeout=10)
    assert local_daemon.proc.poll() is None and base.is_dir()
