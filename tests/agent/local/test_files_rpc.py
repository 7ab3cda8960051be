"""file.v1.File through the node-local endpoint: every path rule and state transition of services.md,
each with its exact parigot error (number and name in the trailing metadata) and gRPC status.

The test process is not in a cell, so it works in the ``host`` scope; cell scopes are in
test_cell_endpoint.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import grpc
import pytest

from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from tests.support.local import parigot_error, state_dir

pytestmark = pytest.mark.root
S = grpc.StatusCode
ERR = file_pb2.FileErr


@pytest.fixture
def f(local_ch: grpc.Channel) -> file_pb2_grpc.FileStub:
    return file_pb2_grpc.FileStub(local_ch)


@pytest.fixture
def base() -> str:
    """A fresh directory per test: the module shares one daemon."""
    return f"/parigot/app/t{secrets.token_hex(4)}"


def expect(name: str, status: grpc.StatusCode, call: Any) -> None:
    assert parigot_error(call) == (status, ERR.Value(name), name)


def create(f: file_pb2_grpc.FileStub, path: str, content: str = "") -> file_pb2.CreateResponse:
    return f.Create(file_pb2.CreateRequest(path=path, content=content), timeout=10)


def put(f: file_pb2_grpc.FileStub, path: str, data: bytes) -> IdRaw:
    reply = create(f, path)
    for i in range(0, len(data), 2048):
        f.Write(file_pb2.WriteRequest(id=reply.id, buf=data[i : i + 2048]), timeout=10)
    f.Close(file_pb2.CloseRequest(id=reply.id), timeout=10)
    return reply.id


def get(f: file_pb2_grpc.FileStub, path: str) -> bytes:
    opened = f.Open(file_pb2.OpenRequest(path=path), timeout=10)
    out = b""
    try:
        while True:
            try:
                out += f.Read(file_pb2.ReadRequest(id=opened.id), timeout=10).data
            except grpc.RpcError as exc:
                assert isinstance(exc, grpc.Call) and exc.code() == S.OUT_OF_RANGE
                break
    finally:
        f.Close(file_pb2.CloseRequest(id=opened.id), timeout=10)
    return out


# ------------------------------------------------------------------------------------------ path rules


@pytest.mark.parametrize("char", list("*?><|&;$\\`\"'") + ["\x00", "\x01", "\n", "\t", "\x1f", "\x7f"])
def test_forbidden_characters(f: file_pb2_grpc.FileStub, base: str, char: str) -> None:
    path = f"{base}/a{char}b"
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, path))
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: f.Open(file_pb2.OpenRequest(path=path)))
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: f.Stat(file_pb2.StatRequest(path=path)))
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: f.Delete(file_pb2.DeleteRequest(path=path)))


@pytest.mark.parametrize("path", [
    "", "/", "parigot/app/x", "/parigot/app", "/parigot/ap/x", "/Parigot/app/x", "//parigot/app/x",
    "/parigot//app/x", " /parigot/app/x", "/tmp/x", "/parigot/application/x",
])
def test_must_start_with_the_prefix(f: file_pb2_grpc.FileStub, path: str) -> None:
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, path))


@pytest.mark.parametrize("rest", [".", "..", "./x", "../x", "a/./b", "a/../b", "a/..", "a/.", "../../../etc/passwd"])
def test_no_dot_components(f: file_pb2_grpc.FileStub, rest: str) -> None:
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, "/parigot/app/" + rest))


def test_dots_inside_names_are_fine(f: file_pb2_grpc.FileStub, base: str) -> None:
    put(f, f"{base}/.hidden", b"1")
    put(f, f"{base}/a..b", b"2")
    assert get(f, f"{base}/.hidden") == b"1" and get(f, f"{base}/a..b") == b"2"


def test_at_most_twenty_parts_after_cleaning(f: file_pb2_grpc.FileStub, base: str) -> None:
    # base is /parigot/app/tXXXX: 3 parts; 17 more make 20.
    ok = base + "".join(f"/d{i}" for i in range(17))
    assert len(ok.strip("/").split("/")) == 20
    reply = create(f, ok.replace("/d3/", "//d3///") + "/")  # doubled and trailing slashes collapse
    assert reply.path == ok
    f.Close(file_pb2.CloseRequest(id=reply.id))
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, ok + "/x"))


def test_byte_bounds(f: file_pb2_grpc.FileStub, base: str) -> None:
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, f"{base}/{'x' * 256}"))
    put(f, f"{base}/{'x' * 255}", b"ok")


def test_the_root_is_a_directory_not_a_file(f: file_pb2_grpc.FileStub) -> None:
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: create(f, "/parigot/app/"))
    expect("InvalidPathError", S.INVALID_ARGUMENT, lambda: f.Delete(file_pb2.DeleteRequest(path="/parigot/app/")))
    assert f.Stat(file_pb2.StatRequest(path="/parigot/app/")).file_info.is_dir


# ------------------------------------------------------------------------------------------ states


def test_create_write_close_open_read(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/a/b/c.txt"
    reply = create(f, path, "head:")
    assert reply.path == path and not reply.truncated
    assert reply.id.high >> 56 == ord("f")
    assert f.Write(file_pb2.WriteRequest(id=reply.id, buf=b"x" * 2048)).num_write == 2048
    f.Close(file_pb2.CloseRequest(id=reply.id))
    opened = f.Open(file_pb2.OpenRequest(path=path))
    assert (opened.id.high, opened.id.low) == (reply.id.high, reply.id.low), "a file keeps its id"
    first = f.Read(file_pb2.ReadRequest(id=opened.id, buf=bytes(3)))
    assert (first.num_read, first.data) == (3, b"hea")
    rest = f.Read(file_pb2.ReadRequest(id=opened.id))  # empty buf: up to 2048 bytes (cellar)
    assert rest.data == b"d:" + b"x" * 2046 and rest.num_read == 2048
    assert f.Read(file_pb2.ReadRequest(id=opened.id)).data == b"xx"
    expect("EOFError", S.OUT_OF_RANGE, lambda: f.Read(file_pb2.ReadRequest(id=opened.id)))
    f.Close(file_pb2.CloseRequest(id=opened.id))


def test_create_truncates_a_closed_file(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/t"
    first = put(f, path, b"old content")
    again = create(f, path, "new")
    assert again.truncated and (again.id.high, again.id.low) == (first.high, first.low)
    f.Close(file_pb2.CloseRequest(id=again.id))
    assert get(f, path) == b"new"


def test_one_handle_per_path(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/busy"
    w = create(f, path)
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: create(f, path))
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: f.Open(file_pb2.OpenRequest(path=path)))
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: f.Delete(file_pb2.DeleteRequest(path=path)))
    f.Close(file_pb2.CloseRequest(id=w.id))
    r = f.Open(file_pb2.OpenRequest(path=path))
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: create(f, path))
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: f.Open(file_pb2.OpenRequest(path=path)))
    expect("AlreadyInUseError", S.FAILED_PRECONDITION, lambda: f.Delete(file_pb2.DeleteRequest(path=path)))
    f.Close(file_pb2.CloseRequest(id=r.id))


def test_read_and_write_need_the_matching_state(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/rw"
    w = create(f, path, "abc")
    expect("ReadError", S.FAILED_PRECONDITION, lambda: f.Read(file_pb2.ReadRequest(id=w.id)))
    f.Close(file_pb2.CloseRequest(id=w.id))
    r = f.Open(file_pb2.OpenRequest(path=path))
    expect("WriteError", S.FAILED_PRECONDITION, lambda: f.Write(file_pb2.WriteRequest(id=r.id, buf=b"x")))
    f.Close(file_pb2.CloseRequest(id=r.id))


def test_closed_files(f: file_pb2_grpc.FileStub, base: str) -> None:
    fid = put(f, f"{base}/closed", b"abc")
    expect("FileClosedError", S.FAILED_PRECONDITION, lambda: f.Read(file_pb2.ReadRequest(id=fid)))
    expect("FileClosedError", S.FAILED_PRECONDITION, lambda: f.Write(file_pb2.WriteRequest(id=fid, buf=b"x")))
    expect("FileClosedError", S.FAILED_PRECONDITION, lambda: f.Close(file_pb2.CloseRequest(id=fid)))


@pytest.mark.parametrize("raw", [IdRaw(), IdRaw(high=ord("f") << 56, low=1), IdRaw(high=2**64 - 1, low=2**64 - 1)])
def test_unknown_ids(f: file_pb2_grpc.FileStub, raw: IdRaw) -> None:
    expect("NotExistError", S.NOT_FOUND, lambda: f.Read(file_pb2.ReadRequest(id=raw)))
    expect("NotExistError", S.NOT_FOUND, lambda: f.Write(file_pb2.WriteRequest(id=raw, buf=b"x")))
    expect("NotExistError", S.NOT_FOUND, lambda: f.Close(file_pb2.CloseRequest(id=raw)))


def test_buffers_over_2048_bytes(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/big"
    expect("LargeBufError", S.INVALID_ARGUMENT, lambda: create(f, path, "x" * 2049))
    w = create(f, path)
    expect("LargeBufError", S.INVALID_ARGUMENT, lambda: f.Write(file_pb2.WriteRequest(id=w.id, buf=bytes(2049))))
    f.Close(file_pb2.CloseRequest(id=w.id))
    r = f.Open(file_pb2.OpenRequest(path=path))
    expect("LargeBufError", S.INVALID_ARGUMENT, lambda: f.Read(file_pb2.ReadRequest(id=r.id, buf=bytes(2049))))
    f.Close(file_pb2.CloseRequest(id=r.id))


def test_open_needs_an_existing_file(f: file_pb2_grpc.FileStub, base: str) -> None:
    expect("NotExistError", S.NOT_FOUND, lambda: f.Open(file_pb2.OpenRequest(path=f"{base}/missing")))
    expect("NotExistError", S.NOT_FOUND, lambda: f.Open(file_pb2.OpenRequest(path=f"{base}/no/such/dir/x")))
    put(f, f"{base}/d/x", b"1")
    expect("OpenError", S.FAILED_PRECONDITION, lambda: f.Open(file_pb2.OpenRequest(path=f"{base}/d")))


def test_create_through_a_file_is_refused(f: file_pb2_grpc.FileStub, base: str) -> None:
    put(f, f"{base}/plain", b"1")
    expect("CreateError", S.FAILED_PRECONDITION, lambda: create(f, f"{base}/plain/child"))
    put(f, f"{base}/dir/x", b"1")
    expect("CreateError", S.FAILED_PRECONDITION, lambda: create(f, f"{base}/dir"))


def test_delete(f: file_pb2_grpc.FileStub, base: str) -> None:
    path = f"{base}/del"
    fid = put(f, path, b"1")
    expect("NotExistError", S.NOT_FOUND, lambda: f.Delete(file_pb2.DeleteRequest(path=f"{base}/nope")))
    expect("DeleteError", S.FAILED_PRECONDITION, lambda: f.Delete(file_pb2.DeleteRequest(path=base)))
    reply = f.Delete(file_pb2.DeleteRequest(path=path))
    assert reply.path == path and (reply.id.high, reply.id.low) == (fid.high, fid.low)
    expect("NotExistError", S.NOT_FOUND, lambda: f.Open(file_pb2.OpenRequest(path=path)))
    expect("NotExistError", S.NOT_FOUND, lambda: f.Delete(file_pb2.DeleteRequest(path=path)))
    expect("NotExistError", S.NOT_FOUND, lambda: f.Close(file_pb2.CloseRequest(id=fid)))
    fresh = create(f, path)
    assert (fresh.id.high, fresh.id.low) != (fid.high, fid.low), "a deleted file's id is not reused"
    f.Close(file_pb2.CloseRequest(id=fresh.id))


def test_stat_file_and_directory_aggregate(f: file_pb2_grpc.FileStub, base: str) -> None:
    put(f, f"{base}/s/a", b"x" * 10)
    put(f, f"{base}/s/sub/b", b"y" * 20)
    put(f, f"{base}/s/sub/deeper/c", b"z" * 5)
    info = f.Stat(file_pb2.StatRequest(path=f"{base}/s/a")).file_info
    assert (info.path, info.is_dir, info.size) == (f"{base}/s/a", False, 10)
    assert info.mod_time.seconds > 0 and info.create_time.seconds > 0
    reply = f.Stat(file_pb2.StatRequest(path=f"{base}/s"))
    assert (reply.file_info.is_dir, reply.file_info.size) == (True, 35)
    assert [(e.path, e.is_dir, e.size) for e in reply.entries] == [(f"{base}/s/a", False, 10), (f"{base}/s/sub", True, 25)]
    expect("NotExistError", S.NOT_FOUND, lambda: f.Stat(file_pb2.StatRequest(path=f"{base}/s/none")))


def test_load_test_data_is_refused_on_the_local_endpoint(f: file_pb2_grpc.FileStub) -> None:
    req = file_pb2.LoadTestDataRequest(dir_path="/etc", mount_location="/parigot/app/etc")
    expect("DispatchError", S.UNIMPLEMENTED, lambda: f.LoadTestData(req))


def test_files_are_real_files_in_the_host_tree(f: file_pb2_grpc.FileStub, base: str, local_daemon: Any) -> None:
    put(f, f"{base}/real.txt", b"on disk")
    on_disk = state_dir(local_daemon) / "files" / "host" / base.removeprefix("/parigot/app/") / "real.txt"
    assert on_disk.read_bytes() == b"on disk"


def test_admin_on_the_main_socket_names_a_scope(main_ch: grpc.Channel, base: str) -> None:
    main = file_pb2_grpc.FileStub(main_ch)
    md = (("cellar-scope", "cell:someone"),)
    reply = main.Create(file_pb2.CreateRequest(path=f"{base}/x", content="theirs"), metadata=md)
    main.Close(file_pb2.CloseRequest(id=reply.id), metadata=md)
    expect("NotExistError", S.NOT_FOUND, lambda: main.Open(file_pb2.OpenRequest(path=f"{base}/x")))  # host scope
    with pytest.raises(grpc.RpcError) as info:
        main.Stat(file_pb2.StatRequest(path="/parigot/app/"), metadata=(("cellar-scope", "cell:../x"),))
    assert info.value.code() == S.INVALID_ARGUMENT  # type: ignore[attr-defined]
