"""Attacks on the file store through the node-local endpoint (issue 13).

- A handle belongs to the scope that opened it: another scope naming its id (Read, Close) is told
  NotExistError, and the owner's handle stays usable.
- A handle whose client died is released with its connection (node-local endpoint or main socket):
  before, Create, Open, Delete (and ``cellar files rm``) answered AlreadyInUseError for that path
  until cellard restarted.
- Seed fidelity: LoadTestData of a directory holding no file is NoDataFoundError. The seed's enum
  (proto/parigot/file/v1/file.proto) names ``NoDataFoundError = 14`` without a comment; the issue's
  finding, quoted: "LoadTestData of an empty directory is NoDataFoundError".
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.local.jobs.ids import format_file_id
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from tests.security.localcaller import NOBODY, call
from tests.support import REPO
from tests.support.cellard import StartCellard
from tests.support.local import local_socket, parigot_error

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(cellard_factory: StartCellard) -> Any:
    return cellard_factory({"local": {"tcp_listen": ""}}, base_mode=0o755)



def until_ok(sock: str, action: list[Any], uid: int, timeout: float = 10.0) -> list[Any]:
    """Repeat ``action`` until it answers OK (a closed connection is released asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = call(sock, [action], uid=uid)[0]
        if got[0] == "OK" or time.monotonic() > deadline:
            return got  # type: ignore[no-any-return]
        time.sleep(0.1)


def test_another_scope_cannot_use_a_handle_by_its_id(daemon: Any) -> None:
    sock = local_socket(daemon)
    with grpc.insecure_channel("unix:" + sock) as ch:  # root: the host scope
        files = file_pb2_grpc.FileStub(ch)
        created = files.Create(file_pb2.CreateRequest(path="/parigot/app/h.txt", content="host data"), timeout=10)
        files.Close(file_pb2.CloseRequest(id=created.id), timeout=10)
        opened = files.Open(file_pb2.OpenRequest(path="/parigot/app/h.txt"), timeout=10)
        fid = format_file_id(opened.id.high, opened.id.low)
        got = call(sock, [["read_id", fid], ["close_id", fid]], uid=NOBODY)
        assert [g[:2] for g in got] == [["NOT_FOUND", "NotExistError"]] * 2, got
        read = files.Read(file_pb2.ReadRequest(id=opened.id, buf=b"\0" * 64), timeout=10)
        assert read.data == b"host data"
        files.Close(file_pb2.CloseRequest(id=opened.id), timeout=10)


@pytest.mark.parametrize("uid", [NOBODY, 0], ids=["user", "root"])
def test_a_handle_of_a_client_that_died_is_released(daemon: Any, uid: int) -> None:
    sock, path = local_socket(daemon), "/parigot/app/left-open.txt"
    got = call(sock, [["create", path], ["exit"]], uid=uid)
    assert got == [], got  # it exited holding the handle
    assert until_ok(sock, ["write", path, "again"], uid)[0] == "OK"
    assert call(sock, [["read", path], ["delete", path]], uid=uid) == [["OK", "again"], ["OK"]]
    # and one left open for reading
    call(sock, [["write", path, "x"]], uid=uid)
    call(sock, [["create", path], ["exit"]], uid=uid)
    assert until_ok(sock, ["delete", path], uid)[0] == "OK"


def test_a_handle_left_open_on_the_main_socket_is_released_too(daemon: Any) -> None:
    """``cellar files rm`` answered AlreadyInUseError for a file a dead client had left open."""
    path = "/parigot/app/left-open-main.txt"
    assert call(daemon.socket, [["create", path], ["exit"]]) == []
    deadline = time.monotonic() + 10
    while True:
        rm = subprocess.run([sys.executable, "-m", "agent.cli", "--addr", daemon.socket, "files", "rm", path],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
        if rm.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rm.returncode == 0, rm.stdout + rm.stderr


def test_load_test_data_of_an_empty_directory_is_no_data_found(daemon: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # directories, but no file
    with daemon.channel() as ch:
        files = file_pb2_grpc.FileStub(ch)
        code, number, name = parigot_error(lambda: files.LoadTestData(
            file_pb2.LoadTestDataRequest(dir_path=str(empty), mount_location="/parigot/app/t/"), timeout=10))
    assert (code, number, name) == (grpc.StatusCode.NOT_FOUND, 14, "NoDataFoundError")


def test_a_handle_left_open_over_mtls_is_released_with_its_connection(cellard_factory: StartCellard) -> None:
    """Over mTLS a handle was tied to no connection (gRPC's own TCP listener gave no way to learn
    that one closed): kept until cellard restarted. The TLS front's connections close like the
    main socket's, and take their handles with them."""
    daemon = cellard_factory({"local": {"tcp_listen": ""}}, tcp=True)
    path = "/parigot/app/left-open-mtls.txt"
    with daemon.tls_channel("admin-user") as ch:
        file_pb2_grpc.FileStub(ch).Create(file_pb2.CreateRequest(path=path, content="x"), timeout=10)
    deadline = time.monotonic() + 10
    while True:
        with daemon.tls_channel("admin-user") as ch:
            try:
                created = file_pb2_grpc.FileStub(ch).Create(file_pb2.CreateRequest(path=path, content="y"), timeout=10)
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"the handle of a closed mTLS connection is still held: {exc.details()}")
                time.sleep(0.1)
                continue
            file_pb2_grpc.FileStub(ch).Close(file_pb2.CloseRequest(id=created.id), timeout=10)
            break
